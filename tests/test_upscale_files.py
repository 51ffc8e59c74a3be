"""Tiny upscaler models spandrel recognises, built offline with random weights
(imported by the hires, upscale and X/Y/Z tests; no tests here)."""

from __future__ import annotations

from pathlib import Path


def tiny_upscaler(path: Path, scale: int = 2, seed: int = 0, arch: str = "compact") -> Path:
    """A Real-ESRGAN Compact (SRVGGNet) or an ESRGAN (RRDB) state dict as .safetensors."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    if arch == "compact":
        from spandrel.architectures.Compact import Compact

        net = Compact(num_feat=8, num_conv=2, upscale=scale)
    else:
        from spandrel.architectures.ESRGAN import ESRGAN

        net = ESRGAN(num_filters=8, num_blocks=1, scale=scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path
