"""`/sdapi/v1/options` per caller: what A1111 keeps server-wide, Atelier keeps per caller.

In A1111, `POST /sdapi/v1/options {"sd_model_checkpoint": ...}` switches the model for
everyone. Here it sets that caller's default model (and VAE, clip skip) for their
later txt2img/img2img calls; other callers, and the studio page, are not affected.
The same keys work per request in `override_settings`.

Writable keys: sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers. Read-only keys
(samples_format, show_progress_every_n_steps) are accepted when unchanged, so a
client may post back what it read (another value is a 422 naming it); other keys are
ignored, as A1111 ignores keys it does not know (logged).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from pipelines.errors import RequestError

log = logging.getLogger(__name__)

WRITABLE = ("sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers")
MAX_CALLERS = 10_000  # callers whose options are remembered (least recently used go)


def check_options(values: Mapping[str, Any], read_only: Mapping[str, Any] | None = None,
                  ignored: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """The writable options of `values`, their types checked (existence is checked
    against the engine by OptionStore.set, and by the engine for a request). A read-only
    key with another value is a RequestError; a key A1111 may know but Atelier does not
    is left out (as A1111 leaves out keys it does not know) and added to `ignored`."""
    from pipelines.request import MAX_CLIP_SKIP

    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in WRITABLE:
            out[key] = value
        elif read_only is not None and key in read_only:
            if value != read_only[key]:
                raise RequestError(key, f"is fixed on this server ({read_only[key]!r})")
        elif ignored is not None:
            ignored.append(str(key))
    if "sd_model_checkpoint" in out and not isinstance(out["sd_model_checkpoint"], str):
        raise RequestError("sd_model_checkpoint", "must be a model name")
    if "sd_vae" in out and not isinstance(out["sd_vae"], str | None):
        raise RequestError("sd_vae", "must be a VAE name, 'Automatic' or 'None'")
    skip = out.get("CLIP_stop_at_last_layers", 1)
    if isinstance(skip, bool) or not isinstance(skip, int) or not 1 <= skip <= MAX_CLIP_SKIP:
        raise RequestError(
            "CLIP_stop_at_last_layers",
            f"must be a whole number from 1 to {MAX_CLIP_SKIP}, got {skip!r}",
        )
    return out


class OptionStore:
    """Each caller's options over the server's defaults. Thread-safe."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self._lock = threading.Lock()
        self._by_caller: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def defaults(self) -> dict[str, Any]:
        return {"sd_model_checkpoint": self.manager.settings.default_model,
                "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1}  # fmt: skip

    def read_only(self) -> dict[str, Any]:
        return {"samples_format": "png",
                "show_progress_every_n_steps": self.manager.settings.preview_every}  # fmt: skip

    def get(self, caller: str) -> dict[str, Any]:
        with self._lock:
            mine = dict(self._by_caller.get(caller, {}))
        return {**self.defaults(), **mine}

    def all(self, caller: str) -> dict[str, Any]:
        """What GET /sdapi/v1/options returns."""
        return {**self.get(caller), **self.read_only()}

    def set(self, caller: str, values: Mapping[str, Any]) -> None:
        """Check `values` (the model and VAE must exist) and keep them for `caller`."""
        from ui.a1111.payload import model_name

        if not isinstance(values, Mapping):
            raise RequestError("body", "must be a JSON object of option: value")
        ignored: list[str] = []
        new = check_options(values, self.read_only(), ignored)
        if ignored:
            log.info("options of %s ignored (not Atelier options): %s", caller, ignored)
        if "sd_model_checkpoint" in new:
            name = model_name(new["sd_model_checkpoint"])
            family = self.manager.registry.family_of(name)  # RequestError if unknown
            if family.kind != "image":
                raise RequestError("sd_model_checkpoint", f"'{name}' is not an image model")
            new["sd_model_checkpoint"] = name
        vae = new.get("sd_vae")
        if vae not in (None, "Automatic", "None") and vae not in self.manager.vaes.names():
            valid = ", ".join(["Automatic", *self.manager.vaes.names()])
            raise RequestError("sd_vae", f"unknown VAE {vae!r}; available: {valid}")
        with self._lock:
            mine = self._by_caller.pop(caller, {})
            mine.update(new)
            self._by_caller[caller] = mine
            while len(self._by_caller) > MAX_CALLERS:
                self._by_caller.popitem(last=False)
