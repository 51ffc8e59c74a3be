"""What every part of the studio shares: the engine, where images go, who is
asking, and the one concurrency group of every event that runs on a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ui.runner import ImageStore

if TYPE_CHECKING:
    import gradio as gr

    from pipelines.manager import PipelineManager

# Every event that submits engine jobs uses this id, with no Gradio limit: each such
# event reaches the engine at once, where admission refuses it (queue_size,
# max_jobs_per_user, max_work) or it waits in the engine's line, which places and
# counts the jobs of every front end alike. (A Gradio limit would hold events in
# Gradio's own queue, where they are neither refused nor counted.)
GPU_GROUP = "atelier-gpu"
THREADS = 40  # Gradio's own default worker threads, for everything else
HISTORY_LIMIT = 200  # images kept in a session's history gallery


@dataclass
class StudioContext:
    manager: PipelineManager  # not imported at run time: no torch at import
    store: ImageStore

    @classmethod
    def create(cls, manager: PipelineManager, outputs_dir: str | Path | None) -> StudioContext:
        folder = None if outputs_dir in (None, "", "off") else Path(str(outputs_dir)).expanduser()
        return cls(manager, ImageStore(folder))

    @property
    def slots(self) -> int:
        return len(self.manager.slots)

    @property
    def default_model(self) -> str:
        return self.manager.settings.default_model

    def gpu_event(self) -> dict[str, Any]:
        """Keyword arguments of every event that runs the engine."""
        return {"concurrency_id": GPU_GROUP, "concurrency_limit": None}

    def max_threads(self) -> int:
        """Gradio's worker threads: a job's handler holds one while its job waits or
        runs, so there are enough for every slot busy and the engine's line full."""
        queue_size = self.manager.jobs.limits.queue_size or 64
        return THREADS + self.slots + queue_size

    def caller(self, request: gr.Request | None) -> str:
        """Who submits a job, for the engine's per-user limit: the logged-in user, else
        the client's address. (A Gradio session id is no identity: every new client
        gets a new one.)"""
        if request is None:
            return "local"
        if getattr(request, "username", None):
            return f"user:{request.username}"
        client = getattr(request, "client", None)
        return f"addr:{getattr(client, 'host', None) or 'unknown'}"
