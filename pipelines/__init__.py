"""Atelier's generation engine. Never imports gradio: usable from a notebook,
the CLI, the UI and any API in the same way.

    from pipelines import PipelineManager, GenerationRequest
    manager = PipelineManager()
    result = manager.generate(GenerationRequest(prompt="a red fox", seed=1))
    result.images[0].save("fox.png")

Names are imported lazily, so `import pipelines.infotext` (say) does not pull
in torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AtelierError": "errors",
    "Cancelled": "errors",
    "ModelUnavailableError": "errors",
    "RequestError": "errors",
    "CancelToken": "progress",
    "EngineSettings": "manager",
    "GenerationResult": "manager",
    "PipelineManager": "manager",
    "ProgressEvent": "progress",
    "GenerationRequest": "request",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
