"""PipelineManager: the one owner of models, devices, caches and locks.

Policy
- One DeviceSlot per device (default: every CUDA GPU, else one CPU slot). A slot
  runs one request at a time under its own lock and has its own model cache
  and an explicit torch.device; nothing is global or thread-local.
- A request goes to a free slot, preferring one that already holds its model.
- Per request: a fresh scheduler built from the model's pristine config and a
  fresh pipeline object sharing the cached modules. Swapping scheduler or
  sampler never reloads weights.
- LoRAs are activated on the cached model for this request only, under the
  slot's lock, and deactivated before the lock is released.
- Seeds: one CPU generator per image, seed, seed+1, ...: any image of a batch
  reproduces alone, on any device.
- Cancel raises from the step callback, so the run stops within one step and
  skips the VAE decode.

Threads: any number of caller threads may call `generate`. Lock order:
`_cond` (slot choice) -> slot.lock -> slot.cache's lock. `_cond` is never held
while a model loads or runs.
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from . import preprocess
from .adapters import AdapterSet
from .cache import ModelCache, module_bytes
from .controlnets import ControlNetLibrary, load_controlnet
from .errors import Cancelled, RequestError
from .hashes import folder_model_hash
from .loading import LoadOptions, fresh_pipeline, load_pipeline
from .loras import LoraEntry, LoraLibrary, check_family
from .parameters import infotext_for
from .progress import CancelToken, ProgressEvent, step_callback
from .registry import ModelEntry, ModelRegistry
from .request import MAX_SEED, GenerationRequest, check_name, resolve_defaults, validate
from .schedulers import build_scheduler, get_spec
from .tasks import (
    Inputs,
    check_inputs,
    crop_inputs,
    dtype_of,
    paste_back,
    task_arguments,
    task_of,
)
from .tasks import build as build_task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    devices: tuple[str, ...] = ()  # () = every CUDA GPU, else one CPU slot
    default_model: str = "tiny-sd"
    models_dir: Path | None = None
    loras_dir: Path | None = None
    controlnets_dir: Path | None = None
    annotators_dir: Path | None = None  # weights of the ControlNet preprocessors
    cache_root: Path | None = None  # built-in models; None = ~/.cache/atelier
    cache_budget_mb: int | None = None  # per slot; None = 90% of GPU memory / half the RAM
    allow_hub: bool = True
    preview_every: int = 0  # steps between previews; 0 = none
    lora_mode: str = "switch"  # "switch" | "fused" | "hotswap" (see adapters.py)
    lora_cache_count: int = 16  # resident adapters per cached model
    lora_cache_mb: int = 2048
    lora_hotswap_rank: int = 64
    load: LoadOptions = field(default_factory=LoadOptions)


@dataclass
class GenerationResult:
    request: GenerationRequest  # resolved: defaults filled in, seed chosen
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    slot: str
    timings: dict[str, float]  # seconds: prepare, queue, load, run, total


@dataclass
class LoadedModel:
    entry: ModelEntry
    pipeline: Any
    pristine_scheduler: dict[str, Any]  # as shipped; every scheduler is built from it
    model_hash: str
    adapters: AdapterSet


class DeviceSlot:
    def __init__(
        self, name: str, device: torch.device, budget_bytes: int | None, span: list[str]
    ) -> None:
        self.name = name
        self.device = device  # where inputs go; a slot may span several GPUs (device_map)
        self.span = span
        self.cache = ModelCache(budget_bytes, device)
        self.lock = threading.Lock()
        self.busy = False  # guarded by the manager's condition
        self.loads = 0  # base models loaded from disk (tests count them)

    def __repr__(self) -> str:
        return f"DeviceSlot({self.name}, models={self.cache.names()})"


def default_devices() -> tuple[str, ...]:
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return tuple(f"cuda:{i}" for i in range(n)) or ("cpu",)


def default_budget(device: torch.device, n_slots_on_device: int) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.9)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(ram * 0.5 / max(1, n_slots_on_device))


class PipelineManager:
    def __init__(
        self,
        settings: EngineSettings | None = None,
        registry: ModelRegistry | None = None,
        loras: LoraLibrary | None = None,
    ) -> None:
        self.settings = s = settings or EngineSettings()
        self.registry = registry or ModelRegistry(s.models_dir, s.cache_root, s.allow_hub)
        self.loras = loras or LoraLibrary(s.loras_dir, s.cache_root)
        self.controlnets = ControlNetLibrary(s.controlnets_dir, s.cache_root, s.allow_hub)
        devices = s.devices or default_devices()
        self.slots: list[DeviceSlot] = []
        for i, spec in enumerate(devices):
            span = spec.split("+")  # "cuda:0+cuda:1": one slot over two GPUs (big models)
            dev = span[0]
            device = torch.device(dev)
            same = sum(1 for d in devices if torch.device(d.split("+")[0]).type == device.type)
            budget = s.cache_budget_mb * 2**20 if s.cache_budget_mb else None
            budget = budget or default_budget(device, same)
            self.slots.append(DeviceSlot(f"{spec}#{i}", device, budget, span))
        self._cond = threading.Condition()

    # -- 1. preparing a request (no slot needed) -----------------------------
    def prepare(
        self, request: GenerationRequest, inputs: Inputs | None = None
    ) -> tuple[GenerationRequest, ModelEntry]:
        """Resolve defaults, validate (images too), and choose the seed. Raises RequestError."""
        if not isinstance(request, GenerationRequest):
            raise RequestError("request", "must be a GenerationRequest")
        name = request.model or self.settings.default_model
        check_name("model", name, "model")
        entry = self.registry.resolve(name)
        if entry.family.kind != "image":
            rule = f"'{name}' is a {entry.family.label} video model; use the video command"
            raise RequestError("model", rule)
        req = resolve_defaults(request, name, entry.family)
        validate(req, entry.family)
        get_spec(req.scheduler, entry.family)  # unknown scheduler -> list of valid ones
        for lora_name, _ in req.loras:
            check_family(self.loras.get(lora_name), entry.family.name, name)
        check_inputs(req, inputs or Inputs(), entry.family.name, name)
        for i, unit in enumerate(req.controlnets):
            cn = self.controlnets.get(unit.model, f"controlnets[{i}].model")
            cn.check_family(entry.family.name, name, f"controlnets[{i}].model")
            preprocess.check(unit.module, self.settings.annotators_dir, f"controlnets[{i}].module")
        if req.seed == -1:
            req = replace(req, seed=secrets.randbelow(MAX_SEED + 1))
        return req, entry

    # -- 2. slots ------------------------------------------------------------
    @contextmanager
    def _slot_for(self, key: str, cancel: CancelToken | None) -> Iterator[DeviceSlot]:
        with self._cond:
            while True:
                free = [s for s in self.slots if not s.busy]
                if free:
                    # Prefer the slot that holds the model; else the emptiest one.
                    slot = max(free, key=lambda s: (key in s.cache, -s.cache.total_bytes()))
                    slot.busy = True
                    break
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("cancelled while waiting for a device")
                self._cond.wait(timeout=0.2)  # wakes on release; timeout only to see cancel
        try:
            with slot.lock:
                yield slot
        finally:
            with self._cond:
                slot.busy = False
                self._cond.notify_all()

    def _loaded(self, slot: DeviceSlot, entry: ModelEntry) -> str:
        """The cache key of `entry` on `slot`, loading it if needed."""
        key = f"{entry.name}@{entry.path}"
        if key in slot.cache:
            return key
        slot.cache.make_room(_disk_bytes(entry.path))
        pipe = load_pipeline(entry, slot.device, self.settings.load, slot.span)
        slot.loads += 1
        s = self.settings
        loaded = LoadedModel(
            entry=entry,
            pipeline=pipe,
            pristine_scheduler=dict(pipe.scheduler.config),
            model_hash=folder_model_hash(entry.path),
            adapters=AdapterSet(
                pipe, s.lora_mode, s.lora_cache_count, s.lora_cache_mb * 2**20, s.lora_hotswap_rank
            ),  # fmt: skip
        )
        slot.cache.put(key, loaded, module_bytes(pipe))
        return key

    # -- 3. running ----------------------------------------------------------
    @contextmanager
    def model_on_slot(
        self, entry: ModelEntry, cancel: CancelToken | None, timings: dict[str, float]
    ) -> Iterator[tuple[DeviceSlot, LoadedModel]]:
        """A free slot holding `entry`, loaded and locked against eviction, for one run."""
        t0 = time.perf_counter()
        key = f"{entry.name}@{entry.path}"
        with self._slot_for(key, cancel) as slot:
            t1 = time.perf_counter()
            key = self._loaded(slot, entry)
            t2 = time.perf_counter()
            timings.update(queue=t1 - t0, load=t2 - t1)
            with slot.cache.locked(key) as loaded:
                yield slot, loaded
            timings["run"] = time.perf_counter() - t2

    def generate(
        self,
        request: GenerationRequest,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        cancel: CancelToken | None = None,
        inputs: Inputs | None = None,
    ) -> GenerationResult:
        """Text-to-image, or image-to-image / inpainting / ControlNet with `inputs`."""
        t0 = time.perf_counter()
        inputs = inputs or Inputs()
        # 1. validate and resolve
        req, entry = self.prepare(request, inputs)
        loras = [(self.loras.get(n), w) for n, w in req.loras]
        timings = {"prepare": time.perf_counter() - t0}
        # 2. a slot holding the model (preferring one that has it), 3. run every call
        with self.model_on_slot(entry, cancel, timings) as (slot, loaded):
            images, seeds = self._run(slot, loaded, req, loras, inputs, on_progress, cancel)
        # 4. describe each image
        lora_hashes = {e.name: e.short_hash for e, _ in loras}
        cn_hashes = {u.model: folder_model_hash(self.controlnets.get(u.model).path)
                     for u in req.controlnets}  # fmt: skip
        task = task_of(req, inputs)
        infotexts = [infotext_for(req, s, loaded.model_hash, lora_hashes, task, cn_hashes)
                     for s in seeds]  # fmt: skip
        timings["total"] = time.perf_counter() - t0
        return GenerationResult(req, images, seeds, infotexts, slot.name, timings)

    def generate_video(
        self,
        request: Any,
        image: Image.Image | None = None,
        end_image: Image.Image | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> Any:
        """Text/image-to-video with the Wan models; see pipelines/video.py."""
        from .video import run_video

        return run_video(self, request, image, end_image, on_progress, cancel)

    def _run(
        self,
        slot: DeviceSlot,
        loaded: LoadedModel,
        req: GenerationRequest,
        loras: list[tuple[LoraEntry, float]],
        inputs: Inputs,
        on_progress: Callable[[ProgressEvent], None] | None,
        cancel: CancelToken | None,
    ) -> tuple[list[Image.Image], list[int]]:
        family = loaded.entry.family
        task = task_of(req, inputs)
        whole, box = inputs, None
        if task.startswith("inpaint") and req.inpaint_area == "masked":
            inputs, box = crop_inputs(req, whole)  # generate the box, paste it back below
        images: list[Image.Image] = []
        all_seeds: list[int] = []
        with self._controlnets(slot, loaded, req) as controlnets, self.lora_scope(loaded, loras):
            maps = [preprocess.run(u.module, inputs.control_images[i], req.width, req.height,
                                   self.settings.annotators_dir, u.low_threshold,
                                   u.high_threshold, req.seed)
                    for i, u in enumerate(req.controlnets)]  # fmt: skip
            for call in range(req.batch_count):
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("cancelled")
                seeds = [req.seed + call * req.batch_size + i for i in range(req.batch_size)]
                scheduler = build_scheduler(req.scheduler, family, loaded.pristine_scheduler, seeds)
                if task == "txt2img":
                    pipe = fresh_pipeline(loaded.pipeline, scheduler)
                else:
                    pipe = build_task(loaded.pipeline, family.name, task, scheduler, controlnets)
                callback = step_callback(family.name, call, req.batch_count, req.height,
                                         req.width, on_progress, cancel,
                                         self.settings.preview_every)  # fmt: skip
                args = {**call_arguments(req, family.name, seeds),
                        **task_arguments(req, task, inputs, maps)}  # fmt: skip
                if "width" not in inspect.signature(pipe.__call__).parameters:
                    del args["width"], args["height"]  # img2img: the resized init image's size
                out = pipe(**args, callback_on_step_end=callback,
                           callback_on_step_end_tensor_inputs=["latents"])  # fmt: skip
                if box is not None:
                    out.images = [paste_back(im, whole, box, req.mask_blur) for im in out.images]
                images.extend(out.images)
                all_seeds.extend(seeds)
        return images, all_seeds

    @contextmanager
    def _controlnets(
        self, slot: DeviceSlot, loaded: LoadedModel, req: GenerationRequest
    ) -> Iterator[list[Any]]:
        """The request's ControlNets, loaded into the slot's cache and locked while used."""
        with ExitStack() as stack:
            models = []
            for unit in req.controlnets:
                cn = self.controlnets.get(unit.model)
                if cn.key not in slot.cache:
                    model = load_controlnet(cn, slot.device, dtype_of(loaded.pipeline))
                    slot.cache.put(cn.key, model, module_bytes(model))
                models.append(stack.enter_context(slot.cache.locked(cn.key)))
            yield models

    @contextmanager
    def lora_scope(
        self, loaded: LoadedModel, loras: list[tuple[LoraEntry, float]], experts: str = "both"
    ) -> Iterator[None]:
        """This request's LoRAs on the shared modules; deactivated before the slot frees."""
        try:
            loaded.adapters.activate(loras, experts)
            yield
        except BaseException:
            loaded.adapters.clean()
            raise
        finally:
            loaded.adapters.deactivate()

    # -- queries -------------------------------------------------------------
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no slot runs a request; False if `timeout` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not any(s.busy for s in self.slots), timeout)


def call_arguments(req: GenerationRequest, family: str, seeds: list[int]) -> dict[str, Any]:
    """The diffusers __call__ arguments of one call (shared with the parity tests)."""
    args: dict[str, Any] = {
        "prompt": req.prompt,
        "num_inference_steps": req.num_inference_steps,
        "guidance_scale": req.guidance_scale,
        "width": req.width,
        "height": req.height,
        "num_images_per_prompt": req.batch_size,
        "generator": [torch.Generator("cpu").manual_seed(s) for s in seeds],
    }
    if family != "flux":
        args["negative_prompt"] = req.negative_prompt or None
    return args


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*.safetensors"))
