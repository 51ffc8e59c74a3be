"""Placement of a model on a device slot: where each component's weights live.

One decision per model and slot, from the model's size (bytes of each component at
the dtype it loads in, read from the safetensors headers: nothing is loaded) and the
slot's memory (its cache budget; the other GPUs of a "cuda:0+cuda:1" slot at 90%).
In order of preference, the first that fits:

1. whole     - every component on the slot's first device (fastest; CPU slots always).
2. balanced  - a slot over several GPUs: diffusers' pipeline-level device_map="balanced"
               places whole components over them (largest first, zig-zag over the GPUs
               by free memory: the same walk as diffusers, simulated here so that a
               component that would spill to the CPU rules it out).
3. staged    - text encoders live in CPU RAM; for each job they are moved onto the
               device, encode the prompts, and are moved back before the denoiser runs.
               The denoiser and the VAE stay resident (the VAE decodes where the
               encoders were). SD 1.x / SDXL only: their prompts are encoded by the
               engine (prompt_encoding), and the denoising call gets embeddings only.
4. model_offload - each component on the GPU only while it runs (diffusers'
               enable_model_cpu_offload): the largest component must fit.
5. group_offload - groups of layers onloaded as they run: the last resort.

"fits" keeps a reserve for activations: 1 GiB + 10% of the denoiser (a guess that errs
on the safe side for 1024px SDXL / Flux; `reserve=` overrides it in decide()).

Overrides, strongest first: the model's own `atelier.json` ({"placement": "staged"}, in
a model folder or a single file's NAME.atelier.json sidecar); the --offload setting
(model or group: every model offloaded, as before); else "auto" (the walk above).

The decision is recorded per model and slot (PlacingPool.placement_of), written into
the infotext ("Placement: staged") when it is not "whole", and shown in the UI status.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .cache import module_bytes
from .errors import ModelUnavailableError
from .infotext import quote
from .loading import DTYPES, choose_dtype, load_pipeline
from .registry import ModelEntry
from .slots import DeviceSlot, SlotPool, model_key

log = logging.getLogger(__name__)

MODES = ("whole", "balanced", "staged", "model_offload", "group_offload")
STAGEABLE = ("sd15", "sdxl")  # families whose prompts the engine encodes itself
GIB = 2**30
_FLOAT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1}
_INT_BYTES = {"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class ModelSize:
    """Bytes per component at the load dtype."""

    text_encoders: Mapping[str, int] = field(default_factory=dict)
    denoiser: Mapping[str, int] = field(default_factory=dict)  # unet / transformer(s), rest
    vae: int = 0

    @property
    def total(self) -> int:
        return sum(self.text_encoders.values()) + sum(self.denoiser.values()) + self.vae

    def parts(self) -> dict[str, int]:
        return {**self.text_encoders, **self.denoiser, "vae": self.vae}


@dataclass(frozen=True)
class SlotMemory:
    kind: str  # "cuda", "cpu", "mps"
    devices: tuple[int, ...]  # usable bytes on each device of the slot, first = main


@dataclass(frozen=True)
class Placement:
    mode: str
    reason: str
    chosen_by: str = "auto"  # "auto" | "model" (atelier.json) | "setting" (--offload)
    device_map: Mapping[str, int] = field(default_factory=dict)  # balanced: part -> GPU

    def __str__(self) -> str:
        return self.mode if self.chosen_by == "auto" else f"{self.mode} ({self.chosen_by})"


WHOLE = Placement("whole", "fits")


def default_reserve(size: ModelSize) -> int:
    return GIB + sum(size.denoiser.values()) // 10


def decide(
    size: ModelSize,
    memory: SlotMemory,
    override: str = "auto",
    stageable: bool = True,
    reserve: int | None = None,
    chosen_by: str = "model",
) -> Placement:
    """The placement of a model of `size` on a slot with `memory` (a pure function)."""
    if override != "auto":
        if override not in MODES:
            raise ValueError(f"placement must be auto or one of {', '.join(MODES)}, "
                             f"got {override!r}")  # fmt: skip
        return Placement(override, f"set by the {chosen_by}", chosen_by)
    if memory.kind == "cpu":
        return Placement("whole", "a CPU slot keeps every component in RAM")
    keep = default_reserve(size) if reserve is None else reserve
    main = memory.devices[0]
    gib = _gib
    if size.total + keep <= main:
        return Placement("whole", f"{gib(size.total)} + {gib(keep)} reserve <= {gib(main)}")
    if len(memory.devices) > 1:
        mapping = balanced_map(size.parts(), memory.devices, keep)
        if mapping is not None:
            return Placement("balanced", f"{gib(size.total)} over {len(memory.devices)} GPUs",
                             device_map=mapping)  # fmt: skip
    resident = sum(size.denoiser.values()) + size.vae
    largest_te = max(size.text_encoders.values(), default=0)
    if stageable and size.text_encoders and resident + largest_te + keep <= main:
        return Placement("staged", f"denoiser+VAE {gib(resident)} + largest text encoder "
                                   f"{gib(largest_te)} + {gib(keep)} <= {gib(main)}")  # fmt: skip
    largest = max(size.parts().values(), default=0)
    if largest + keep <= main:
        return Placement("model_offload", f"largest component {gib(largest)} + "
                                          f"{gib(keep)} <= {gib(main)}")  # fmt: skip
    return Placement("group_offload", f"largest component {gib(largest)} does not fit "
                                      f"{gib(main)}")  # fmt: skip


def balanced_map(parts: Mapping[str, int], devices: tuple[int, ...], keep: int) -> dict | None:
    """diffusers' "balanced" walk (pipeline_loading_utils._assign_components_to_devices):
    components largest first, GPUs by memory, zig-zag; a GPU keeps `keep` free. None when
    a component would go to the CPU (diffusers' fallback), so balanced does not fit."""
    free = {i: m - keep for i, m in sorted(enumerate(devices), key=lambda x: -x[1])}
    cycle = list(free) + list(free)[::-1]
    out = {}
    for k, (name, nbytes) in enumerate(sorted(parts.items(), key=lambda x: -x[1])):
        gpu = cycle[k % len(cycle)]
        if nbytes > free[gpu]:
            return None
        out[name] = gpu
        free[gpu] -= nbytes
    return out


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


# -- sizes from the files (safetensors headers only) --------------------------
def tensor_bytes(path: Path, itemsize: int) -> dict[str, int]:
    """Bytes of each tensor of a .safetensors file when floats load at `itemsize`."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        count = 1
        for d in info["shape"]:
            count *= d
        dtype = info["dtype"]
        out[key] = count * (itemsize if dtype in _FLOAT_BYTES else _INT_BYTES.get(dtype, 4))
    return out


def _weights(folder: Path) -> list[Path]:
    """The files diffusers loads without a variant: x.safetensors and x-00001-of-00002.
    safetensors, not x.fp16.safetensors (nor x.fp16-00001-of-00002.safetensors)."""
    files = sorted(folder.glob("*.safetensors"))
    plain = [p for p in files if len(p.name.split(".")) == 2]
    return plain or files


def _folder_bytes(folder: Path, itemsize: int) -> int:
    """A component folder's weights at `itemsize`; pickled .bin weights by file size."""
    files = _weights(folder)
    if files:
        return sum(sum(tensor_bytes(f, itemsize).values()) for f in files)
    return sum(f.stat().st_size for f in folder.glob("*.bin"))


def _kind(name: str) -> str:
    if name.startswith("text_encoder"):
        return "te"
    return "vae" if name == "vae" else "denoiser"


def model_size(entry: ModelEntry, itemsize: int) -> ModelSize:
    """Component sizes of a model folder (its subfolders) or single file (key prefixes)."""
    te: dict[str, int] = {}
    den: dict[str, int] = {}
    vae = 0
    path = Path(entry.path)
    if path.is_file():
        for key, n in tensor_bytes(path, itemsize).items():
            if key.startswith("first_stage_model."):
                vae += n
            elif key.startswith(("cond_stage_model.", "conditioner.")):
                part = ".".join(key.split(".")[:3]) if key.startswith("conditioner.") else "te"
                name = "text_encoder" + ("" if part in ("te", "conditioner.embedders.0")
                                         else f"_{part.rsplit('.', 1)[-1]}")  # fmt: skip
                te[name] = te.get(name, 0) + n
            else:
                den["denoiser"] = den.get("denoiser", 0) + n
        return ModelSize(te, den, vae)
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        n = _folder_bytes(sub, itemsize)
        if not n:
            continue
        kind = _kind(sub.name)
        if kind == "te":
            te[sub.name] = n
        elif kind == "vae":
            vae = n
        else:
            den[sub.name] = n
    return ModelSize(te, den, vae)


def model_override(entry: ModelEntry) -> str | None:
    """The "placement" of the model's atelier.json (folder) or NAME.atelier.json (file)."""
    path = Path(entry.path)
    side = path.with_name(path.stem + ".atelier.json") if path.is_file() else path / "atelier.json"
    if not side.is_file():
        return None
    try:
        value = json.loads(side.read_text()).get("placement")
    except (OSError, ValueError, AttributeError):
        return None  # the registry reports a broken atelier.json
    if value is None or value == "auto":
        return None
    if value not in MODES:
        rule = f"atelier.json placement must be auto or one of {', '.join(MODES)}, got {value!r}"
        raise ModelUnavailableError(f"{entry.name}: {rule}")
    return value


# -- the slot pool that follows the decisions ------------------------------------
class PlacingPool(SlotPool):
    """A SlotPool whose loads follow a placement decision per model and slot.

    Lives here (not in slots.py) so that placement is one module; `load` repeats
    SlotPool.load's bookkeeping around a different load call (keep the two in step).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._placements: dict[tuple[str, str], Placement] = {}

    def memory_of(self, slot: DeviceSlot) -> SlotMemory:
        main = slot.cache.budget_bytes or 0
        others = [int(torch.cuda.get_device_properties(torch.device(d)).total_memory * 0.9)
                  for d in slot.span[1:]]  # fmt: skip
        return SlotMemory(slot.device.type, (main, *others))

    def decide(self, slot: DeviceSlot, entry: ModelEntry) -> Placement:
        dtype = choose_dtype(self.load_options.dtype, entry.family, slot.device)
        override, chosen_by = model_override(entry), "model"
        if override is None and self.load_options.offload != "none":
            override, chosen_by = f"{self.load_options.offload}_offload", "setting"
        size = model_size(entry, dtype.itemsize)
        stageable = entry.family.name in STAGEABLE
        if override == "staged" and not stageable:
            raise ModelUnavailableError(f"{entry.name}: placement staged needs an SD 1.x or SDXL "
                                        f"model (its prompts encoded by the engine)")  # fmt: skip
        decision = decide(size, self.memory_of(slot), override or "auto", stageable,
                          chosen_by=chosen_by)  # fmt: skip
        log.info("placement of %s on %s: %s (%s)", entry.name, slot.name, decision,
                 decision.reason)  # fmt: skip
        return decision

    def placement_of(self, slot: DeviceSlot, entry: ModelEntry) -> Placement:
        return self._placements.get((slot.name, model_key(entry)), WHOLE)

    def place(self, slot: DeviceSlot, entry: ModelEntry, key: str) -> tuple[Any, int]:
        """SlotPool.place by this pool's decision (recorded for placement_of)."""
        decision = self.decide(slot, entry)
        dtype = choose_dtype(self.load_options.dtype, entry.family, slot.device)
        size = model_size(entry, dtype.itemsize)
        staged = sum(size.text_encoders.values()) if decision.mode == "staged" else 0
        slot.cache.make_room(size.total - staged)  # what will sit on the device
        pipe = load_placed(entry, slot, decision, self.load_options)
        self._placements[(slot.name, key)] = decision
        return pipe, resident_bytes(pipe, decision)


def load_placed(entry: ModelEntry, slot: DeviceSlot, decision: Placement, options: Any) -> Any:
    """loading.load_pipeline with the options and devices the decision asks for."""
    first = slot.span[:1]
    if decision.mode == "balanced":
        return load_pipeline(entry, slot.device, replace(options, offload="none"), slot.span)
    if decision.mode in ("model_offload", "group_offload"):
        offload = decision.mode.split("_")[0]
        return load_pipeline(entry, slot.device, replace(options, offload=offload), first)
    if decision.mode == "whole":
        return load_pipeline(entry, slot.device, replace(options, offload="none"), first)
    # staged: load into RAM at the device's dtype, then move all but the text encoders
    dtype = choose_dtype(options.dtype, entry.family, slot.device)
    name = next(k for k, v in DTYPES.items() if v == dtype)
    cpu = replace(options, dtype=name, offload="none")
    pipe = load_pipeline(entry, torch.device("cpu"), cpu, None)
    for part, module in pipe.components.items():
        if isinstance(module, torch.nn.Module) and _kind(part) != "te":
            module.to(slot.device)
    return pipe


def text_encoder_names(pipe: Any) -> list[str]:
    return [k for k, v in pipe.components.items()
            if _kind(k) == "te" and isinstance(v, torch.nn.Module)]  # fmt: skip


def resident_bytes(pipe: Any, decision: Placement) -> int:
    """What the model holds on the slot's device(s): staged text encoders live in RAM."""
    if decision.mode != "staged":
        return module_bytes(pipe)
    return module_bytes(pipe) - sum(module_bytes(pipe.components[k])
                                    for k in text_encoder_names(pipe))  # fmt: skip


@contextmanager
def encoding(pipe: Any, decision: Placement, device: torch.device) -> Iterator[None]:
    """Staged: the text encoders on `device` for the prompt encoding, back in RAM after
    (before the denoiser runs). Other placements: nothing to do."""
    if decision.mode != "staged":
        yield
        return
    names = text_encoder_names(pipe)
    try:
        for k in names:
            pipe.components[k].to(device)
        yield
    finally:
        for k in names:
            pipe.components[k].to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()


def without_text_encoders(pipe: Any, decision: Placement) -> None:
    """Staged: a job's own pipeline object runs on embeddings only (no encoder is touched
    while the denoiser runs; the cached pipeline keeps its encoders)."""
    if decision.mode == "staged":
        pipe.register_modules(**dict.fromkeys(text_encoder_names(pipe)))


def placement_for(pool: SlotPool, slot: DeviceSlot, entry: ModelEntry) -> Placement:
    """The decision a pool made for `entry` on `slot` ("whole" for a plain SlotPool)."""
    return pool.placement_of(slot, entry) if isinstance(pool, PlacingPool) else WHOLE


def with_placement(infotext: str, placed: Placement) -> str:
    """The infotext with "Placement: <mode>" on its params line, unless it is "whole"
    (the default, left out as A1111 leaves defaults out)."""
    if placed.mode == "whole":
        return infotext
    return f"{infotext}, Placement: {quote(str(placed))}"
