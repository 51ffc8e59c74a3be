"""Atelier's generation engine. Never imports gradio: usable from a notebook,
the CLI, the UI and any API in the same way.

    from pipelines import PipelineManager, GenerationRequest
    manager = PipelineManager()
    result = manager.generate(GenerationRequest(prompt="a red fox", seed=1))
    result.images[0].save("fox.png")

    job = manager.submit(ImageJob(GenerationRequest(prompt="a red fox")))  # the job API
    for event in job.events():
        print(event.kind, event.step, event.total, event.eta)

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
    "EngineSettings": "core",
    "GenerationResult": "image_job",
    "ImageJob": "image_job",
    "Job": "jobs",
    "JobEvent": "jobs",
    "LimitError": "errors",
    "PipelineManager": "manager",
    "ProgressEvent": "progress",
    "GenerationRequest": "request",
    "VideoJob": "video",
    "VideoRequest": "video",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
