"""ControlNet models: identification (which exist, for which family) and loading.

A ControlNet is the built-in `tiny-sd-controlnet`, a diffusers ControlNetModel
folder inside the controlnets folder (its folder name is its name), or a Hub id.
Its family comes from its config: SDXL ControlNets carry SDXL's "text_time"
added conditioning (or a 2048-wide cross-attention); the others are SD 1.x/2.x.
Loaded ControlNets live in the device slot's model cache next to the models,
are locked while a request uses them and evicted like any other entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import builtin
from .errors import RequestError
from .hub import HubPolicy, Plan
from .hub import resolve as resolve_repo
from .loading import LOAD_LOCK
from .request import check_name


@dataclass(frozen=True)
class ControlNetEntry:
    name: str
    path: Path
    family: str  # "sd15" or "sdxl"
    pending: Plan | None = None  # Hub ControlNets: weights a job downloads before it runs

    @property
    def key(self) -> str:
        return f"controlnet:{self.name}@{self.path}"

    def check_family(self, family: str, model: str, field_name: str) -> None:
        if self.family != family:
            rule = f"'{self.name}' is a ControlNet for {self.family}; model '{model}' is {family}"
            raise RequestError(field_name, rule)


def family_of(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    if (
        config.get("addition_embed_type") == "text_time"
        or config.get("cross_attention_dim") == 2048
    ):
        return "sdxl"
    return "sd15"


# The built-in ControlNets and the model each was made for.
BUILT_FOR = {builtin.TINY_CONTROLNET: "tiny-sd", builtin.SHIPPED_CONTROLNET: builtin.SHIPPED_MODEL}


class ControlNetLibrary:
    def __init__(
        self,
        controlnets_dir: Path | None,
        cache_root: Path | None = None,
        allow_hub: bool = True,
        hub_policy: HubPolicy | None = None,
    ) -> None:
        self.controlnets_dir = Path(controlnets_dir) if controlnets_dir else None
        self.cache_root = cache_root
        self.hub_policy = hub_policy or HubPolicy("any" if allow_hub else "off")

    def _user_folders(self) -> dict[str, Path]:
        """ControlNet folders in the controlnets folder, by name (the built-in excluded)."""
        found: dict[str, Path] = {}
        if self.controlnets_dir and self.controlnets_dir.is_dir():
            for child in sorted(self.controlnets_dir.iterdir()):
                if (child / "config.json").is_file() and child.name != builtin.TINY_CONTROLNET:
                    found[child.name] = child
        return found

    def names(self, family: str | None = None, model: str | None = None) -> list[str]:
        """ControlNet names (of one family), without building or loading anything.

        With `model`: the built-in ControlNets are each made for one built-in model
        (BUILT_FOR; other shapes of UNet cannot take them), so only the one made for
        `model` is listed, first; the user's ControlNets follow."""
        found = {builtin.TINY_CONTROLNET: "sd15"}
        if builtin.shipped_controlnet() is not None:
            found[builtin.SHIPPED_CONTROLNET] = "sd15"
        found.update((n, family_of(p)) for n, p in self._user_folders().items())
        names = [n for n, f in found.items() if family is None or f == family]
        if model is None:
            return names
        made_for = [n for n in names if BUILT_FOR.get(n) == model]
        return made_for + [n for n in names if n not in BUILT_FOR]

    def get(self, name: str, field_name: str = "controlnets") -> ControlNetEntry:
        check_name(field_name, name, "ControlNet")
        folders = self._user_folders()
        if name == builtin.TINY_CONTROLNET:
            folders[name] = builtin.ensure_controlnet(self.cache_root)  # built only when used
        if name == builtin.SHIPPED_CONTROLNET and builtin.shipped_controlnet() is not None:
            folders[name] = builtin.shipped_controlnet()
        if name in folders:
            return ControlNetEntry(name, folders[name], family_of(folders[name]))
        if "/" in name and self.hub_policy.mode != "off":
            plan = resolve_repo(name, self.hub_policy, field_name, kind="controlnet")
            return ControlNetEntry(name, plan.folder, family_of(plan.folder),
                                   plan if plan.weights else None)  # fmt: skip
        valid = ", ".join([builtin.TINY_CONTROLNET, *folders])
        raise RequestError(field_name, f"unknown ControlNet '{name}'; available: {valid}")


def load_controlnet(entry: ControlNetEntry, device: torch.device, dtype: torch.dtype):
    from diffusers import ControlNetModel

    with LOAD_LOCK:
        model = ControlNetModel.from_pretrained(str(entry.path), dtype=dtype)
    return model.to(device).eval()
