"""`atelier-shapes`: a small SD-1.x model trained in-repo on synthetic shape scenes.

- `scenes`: the deterministic scene renderer and caption grammar (the training data).
- `judge`: a pixel classifier that reads a picture back (background colour, shape
  colour, shape kind), used by tests and the accuracy table.
- `train`: the one training command (VAE, UNet + text encoder, ControlNet, LoRA).

Nothing here is imported by the engine at import time; torch/diffusers are imported
only inside `train`.
"""
