"""What every part of the studio shares: the engine, where images go, and the
one concurrency group of every event that runs on a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ui.runner import ImageStore

# Every GPU-bound event uses this id: Gradio limits the group to the lowest
# concurrency_limit of its events, which is the number of device slots.
GPU_GROUP = "atelier-gpu"
HISTORY_LIMIT = 200  # images kept in a session's history gallery


@dataclass
class StudioContext:
    manager: Any  # pipelines.PipelineManager (not imported: no torch at import)
    store: ImageStore

    @classmethod
    def create(cls, manager: Any, outputs_dir: str | Path | None) -> StudioContext:
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
        return {"concurrency_id": GPU_GROUP, "concurrency_limit": self.slots}
