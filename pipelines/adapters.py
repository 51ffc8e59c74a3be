"""LoRA adapters resident on one cached model (so on one device slot).

Policy
- Adapters stay loaded once used (an LRU bounded by count and bytes, per cached
  model); switching between resident adapters is `set_adapters` only: no reload
  of the base model or of the adapter. Eviction is `delete_adapters`, which
  frees the adapter's tensors.
- All adapter state lives on the shared modules, so every method here runs under
  the slot's lock, and `deactivate` runs before that lock is released: the
  cached model is clean (no adapter active, nothing fused) for any request that
  does not ask for LoRAs.
- Modes (settings `lora_mode`):
  * "switch" (default): unfused adapters, activated per request.
  * "fused": for a run of requests with the same LoRA set the weights are fused
    once (no per-step LoRA cost); before any request with another set, or none,
    the original weights are copied back exactly (saved before fusing: peft's
    unmerge subtracts the delta again, which is not bit-exact).
  * "hotswap": for torch.compile users. `enable_lora_hotswap(target_rank=...)`
    before the first load; the k-th LoRA of a request always lives in adapter
    slot `hot{k}` and a new file is copied into its tensors (`hotswap=True`), so
    the compiled graph sees the same modules. Limits: a later LoRA must target
    the same layers or a subset, with rank <= target_rank; text-encoder LoRAs
    cannot be hotswapped (refused). A failed hotswap deletes the slot's adapter
    in peft: it is forgotten here and loaded fresh next time.
- Any failure while loading leaves no half-loaded adapter behind.
- A file whose layers only partly fit the model loads what fits (as A1111 does) and
  says so: the layers the file holds are counted against those loaded, and the
  request's result carries a warning naming the LoRA (`warnings`). diffusers skips
  keys it cannot map without a word (e.g. a file mixing `lora.down` and `lora_A`
  names loses every `lora.down` layer).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import RequestError
from .loading import LOAD_LOCK
from .loras import LoraEntry

log = logging.getLogger(__name__)

MODES = ("switch", "fused", "hotswap")
# The "down" (A) matrix of one LoRA layer in the formats diffusers reads: PEFT/diffusers
# (lora_A), Kohya (lora_down), old diffusers (lora.down, lora_linear_layer.down).
_DOWN_KEY = re.compile(r"(?:lora_A|lora_down|lora\.down|lora_linear_layer\.down)\.weight$")


def file_layers(path: Any) -> int:
    """How many LoRA layers a .safetensors file holds (its "down" matrices), from the
    header alone; 0 for formats not counted this way (LoHa, LoKr)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return sum(1 for k in f.keys() if _DOWN_KEY.search(k))  # noqa: SIM118 (not iterable)


@dataclass
class Resident:
    adapter: str  # peft adapter name
    identity: str  # LoraEntry.identity: tensors and key names
    nbytes: int
    last_used: float


def present_adapters(pipe: Any) -> set[str]:
    try:
        return {a for names in pipe.get_list_adapters().values() for a in names}
    except ValueError:  # no PEFT layers yet
        return set()


def _drop(pipe: Any, adapter: str) -> None:
    if adapter in present_adapters(pipe):
        pipe.delete_adapters(adapter)


def _loaded_layers(layers: list[Any], adapter: str) -> int:
    """Layers of `adapter` that got weights from the file. peft may wrap a module the
    file names in a form it then does not load; such a layer keeps its initial lora_B,
    all zeros (so it does nothing), and is not counted."""
    with torch.no_grad():
        return sum(1 for m in layers if bool(m.lora_B[adapter].weight.any()))


class AdapterSet:
    def __init__(
        self,
        pipe: Any,
        mode: str = "switch",
        max_count: int = 16,
        max_bytes: int = 2 * 2**30,
        hotswap_rank: int = 64,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"lora_mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.pipe = pipe
        self.mode = mode
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.hotswap_rank = hotswap_rank
        self.resident: dict[str, Resident] = {}  # identity (switch/fused) or "hotK" -> record
        self.loads = 0  # adapter files loaded (tests and benchmarks count them)
        self._fused_key: tuple | None = None
        self._saved_weights: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._hotswap_ready = False
        self._layers: list[Any] | None = None  # every peft LoRA layer; reset on load/delete
        self._partial: dict[str, str] = {}  # identity -> warning: layers that fit no module

    # -- loading ------------------------------------------------------------
    def _load(
        self, lora: LoraEntry, adapter: str, hotswap: bool = False, experts: str = "both"
    ) -> None:
        """Load a file as `adapter`. On a two-expert Wan model, `experts` says where:
        "high" (transformer), "low" (transformer_2) or "both"."""
        two = getattr(self.pipe, "transformer_2", None) is not None
        try:
            with LOAD_LOCK:
                path = str(lora.path)
                if not two or experts in ("both", "high"):
                    self.pipe.load_lora_weights(path, adapter_name=adapter, hotswap=hotswap)
                if two and experts in ("both", "low"):
                    self.pipe.load_lora_weights(
                        path, adapter_name=adapter, hotswap=hotswap, load_into_transformer_2=True
                    )
        except Exception as e:
            # A failed plain load may leave partial layers; a failed hotswap has
            # already deleted the adapter in peft. Either way: nothing stays.
            _drop(self.pipe, adapter)
            self._layers = None
            self.resident.pop(adapter, None)
            raise RequestError("loras", f"'{lora.name}' could not be loaded: {e}") from e
        self._layers = None
        if adapter not in present_adapters(self.pipe):
            raise RequestError("loras", f"'{lora.name}' has no layers that fit this model")
        self.loads += 1
        if not two and not hotswap:
            self._count_layers(lora, adapter)

    def _count_layers(self, lora: LoraEntry, adapter: str) -> None:
        """Record a warning when fewer layers loaded than the file holds."""
        held, loaded = file_layers(lora.path), _loaded_layers(self._lora_layers([adapter]), adapter)
        if loaded < held:
            note = (f"loras: '{lora.name}': {held - loaded} of its {held} layers were not "
                    f"loaded (their names fit no module of this model)")  # fmt: skip
            log.warning(note)
            self._partial[lora.identity] = note
        else:
            self._partial.pop(lora.identity, None)

    def warnings(self, loras: Sequence[tuple[LoraEntry, float]]) -> list[str]:
        """What a request using `loras` should be told (layers left out at load)."""
        return [self._partial[lo.identity] for lo, _ in loras if lo.identity in self._partial]

    def _evict_for(self, keep: set[str]) -> None:
        def over() -> bool:
            total = sum(r.nbytes for r in self.resident.values())
            return len(self.resident) > self.max_count or total > self.max_bytes

        for key, rec in sorted(self.resident.items(), key=lambda kv: kv[1].last_used):
            if not over():
                break
            if key in keep:
                continue
            _drop(self.pipe, rec.adapter)
            self._layers = None
            del self.resident[key]
            log.info("evicted LoRA adapter %s", rec.adapter)

    def _ensure_switch(
        self, loras: Sequence[tuple[LoraEntry, float]], experts: str = "both"
    ) -> list[str]:
        names, keep = [], set()
        for lora, _ in loras:
            key = lora.identity if experts == "both" else f"{lora.identity}:{experts}"
            rec = self.resident.get(key)
            if rec is None:
                suffix = "" if experts == "both" else f"_{experts}"
                rec = Resident(f"lora_{lora.identity[:16]}{suffix}", lora.identity,
                               lora.path.stat().st_size, 0.0)  # fmt: skip
                self._load(lora, rec.adapter, experts=experts)
                self.resident[key] = rec
            rec.last_used = time.monotonic()
            names.append(rec.adapter)
            keep.add(key)
        self._evict_for(keep)
        return names

    def _ensure_hotswap(self, loras: Sequence[tuple[LoraEntry, float]]) -> list[str]:
        if not self._hotswap_ready:
            if present_adapters(self.pipe):
                raise RequestError("loras", "hotswap mode must be enabled before any LoRA load")
            self.pipe.enable_lora_hotswap(target_rank=self.hotswap_rank)
            self._hotswap_ready = True
        names = []
        for k, (lora, _) in enumerate(loras):
            if lora.text_encoder:
                raise RequestError(
                    "loras", f"'{lora.name}' has text-encoder layers, which cannot be hotswapped"
                )
            if lora.rank is not None and lora.rank > self.hotswap_rank:
                rule = f"'{lora.name}' has rank {lora.rank} > the hotswap target rank"
                raise RequestError("loras", f"{rule} {self.hotswap_rank}")
            slot = f"hot{k}"
            rec = self.resident.get(slot)
            if rec is None or rec.identity != lora.identity:
                self._load(lora, slot, hotswap=rec is not None)
                self.resident[slot] = Resident(slot, lora.identity, lora.path.stat().st_size, 0.0)
            self.resident[slot].last_used = time.monotonic()
            names.append(slot)
        return names

    # -- fusing -------------------------------------------------------------
    def _all_layers(self) -> list[Any]:
        if self._layers is None:
            from peft.tuners.tuners_utils import BaseTunerLayer

            self._layers = [
                module
                for component in self.pipe.components.values()
                if isinstance(component, torch.nn.Module)
                for module in component.modules()
                if isinstance(module, BaseTunerLayer)
            ]
        return self._layers

    def _lora_layers(self, names: list[str]) -> list[Any]:
        return [m for m in self._all_layers() if set(names) & set(getattr(m, "lora_A", {}))]

    def _none_active(self) -> None:
        """No adapter active on any layer: the layers compute the base model exactly.
        (Cheaper than disable_lora + enable_lora, which both re-walk every adapter.)"""
        for layer in self._all_layers():
            layer.set_adapter([])

    def _fuse(self, names: list[str], key: tuple) -> None:
        layers = self._lora_layers(names)
        self._saved_weights = [(w := m.get_base_layer().weight, w.detach().clone()) for m in layers]
        self.pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        self._fused_key = key

    def _unfuse_exactly(self) -> None:
        if self._fused_key is None:
            return
        self.pipe.unfuse_lora()
        with torch.no_grad():
            for weight, original in self._saved_weights:
                weight.copy_(original)
        self._saved_weights = []
        self._fused_key = None

    # -- the request's view -------------------------------------------------
    def activate(self, loras: Sequence[tuple[LoraEntry, float]], experts: str = "both") -> None:
        """Make exactly these LoRAs, at these weights, active on the shared modules
        (on a two-expert Wan model: in the `experts` "both", "high" or "low")."""
        key = (experts, *((lora.identity, float(w)) for lora, w in loras))
        if self._fused_key is not None and self._fused_key != key:
            self._unfuse_exactly()
        if not loras:
            self._none_active()
            return
        if self.mode == "hotswap":
            names = self._ensure_hotswap(loras)
        else:
            names = self._ensure_switch(loras, experts)
        if self._fused_key == key:
            return  # already fused with this very set
        self.pipe.set_adapters(names, [float(w) for _, w in loras])
        if self.mode == "fused":
            self._fuse(names, key)

    def deactivate(self) -> None:
        """After a request: no adapter active, unless fused for a run of same-set requests."""
        if self._fused_key is None:
            self._none_active()

    def clean(self) -> None:
        """Back to the base weights with no adapter active (after errors)."""
        self._unfuse_exactly()
        self._none_active()
