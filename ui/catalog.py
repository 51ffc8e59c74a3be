"""What the pickers offer: image models with their families, LoRAs with their metadata.

Read from the engine on every refresh (folders may change while serving).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.families import FAMILIES, Family

log = logging.getLogger(__name__)


def family_of(manager: Any, name: str) -> Family:
    """A model's family. Built-in models are known by name, so listing them does not
    build every one of them (the registry's resolve() builds on first use)."""
    from pipelines.builtin import BUILTIN_MODELS

    if name in BUILTIN_MODELS:
        return FAMILIES[BUILTIN_MODELS[name]]
    return manager.registry.resolve(name).family


def image_models(manager: Any) -> dict[str, Family]:
    """Models the Generate tab can run (kind "image"), in the registry's order."""
    from pipelines.errors import AtelierError

    out: dict[str, Family] = {}
    for name in manager.registry.names():
        try:
            family = family_of(manager, name)
        except AtelierError as e:  # a broken folder must not take the dropdown down
            log.warning("model %s is not offered: %s", name, e)
            continue
        if family.kind == "image":
            out[name] = family
    return out


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


def lora_choices(manager: Any, family: str | None) -> list[LoraChoice]:
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


def rescan_loras(manager: Any) -> None:
    rescan = getattr(manager.loras, "rescan", None)
    if rescan is not None:
        rescan()
