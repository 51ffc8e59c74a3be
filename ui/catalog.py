"""What the LoRA pickers offer: LoRAs with their metadata (models, families and
ControlNets come from the engine: manager.models(kind), registry.family_of,
controlnets.names(family)).

Read from the engine on every refresh (folders may change while serving).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.manager import PipelineManager

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraChoice:
    name: str
    family: str | None  # None = unknown, offered for every family
    title: str
    triggers: tuple[str, ...]
    preferred_weight: float | None
    preview: Path | None
    activation_text: str = ""

    def label(self) -> str:
        extra = f" [{', '.join(self.triggers)}]" if self.triggers else ""
        same = not self.title or self.title == self.name
        title = self.name if same else f"{self.title} ({self.name})"
        return title + extra


def lora_choices(manager: PipelineManager, family: str | None) -> list[LoraChoice]:
    """LoRAs for `family`, with metadata when the library provides `entries()`;
    otherwise (older engine) every name, without metadata."""
    library = manager.loras
    entries = getattr(library, "entries", None)
    if entries is None:
        return [LoraChoice(n, None, n, (), None, None) for n in library.names()]
    out = []
    for e in entries(family):
        out.append(
            LoraChoice(
                name=e.name,
                family=getattr(e, "family", None),
                title=getattr(e, "title", "") or e.name,
                triggers=tuple(getattr(e, "triggers", ()) or ()),
                preferred_weight=getattr(e, "preferred_weight", None),
                preview=getattr(e, "preview", None),
                activation_text=getattr(e, "activation_text", "") or "",
            )
        )
    return out


def rescan_loras(manager: PipelineManager) -> None:
    rescan = getattr(manager.loras, "rescan", None)
    if rescan is not None:
        rescan()
