"""Image jobs: text-to-image, image-to-image, inpainting and ControlNet.

The runner of `ImageJob`s over the engine core (see jobs.py for the job API):
`prepare` validates and resolves a request up front; `run` takes a slot holding
the model and makes every image.

Per job: a fresh scheduler built from the model's pristine config and a fresh
pipeline object sharing the cached modules (swapping sampler never reloads
weights); the job's LoRAs active on the cached model only while it runs; one CPU
generator per image (seed, seed+1, ...: any image of a batch reproduces alone,
on any device); cancel raises from the step callback, so the run stops within
one step and skips the VAE decode.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from . import hires, placement, preprocess
from .cache import module_bytes
from .controlnets import load_controlnet
from .core import EngineCore
from .embeddings import EmbeddingEntry
from .errors import Cancelled, RequestError
from .hashes import folder_model_hash
from .jobs import JobContext, Prepared
from .loading import fresh_pipeline
from .loras import LoraEntry, check_family
from .outputs import check_task_id, save_image
from .parameters import infotext_for
from .progress import step_callback
from .prompt_encoding import Conditioning, condition
from .registry import ModelEntry
from .request import GenerationRequest, check_name, chosen_seed, resolve_defaults, validate
from .schedulers import build_scheduler, get_spec
from .slots import DeviceSlot, LoadedModel, lora_scope
from .styles import expand as expand_styles
from .tasks import Inputs, check_inputs, crop_inputs, dtype_of, paste_back, task_arguments, task_of
from .tasks import build as build_task
from .vaes import AUTOMATIC, load_vae


@dataclass(frozen=True)
class ImageJob:
    request: GenerationRequest
    inputs: Inputs = field(default_factory=Inputs)  # init image, mask, control images
    # Where each image is saved (PNG with infotext) as soon as its call is decoded, so
    # a crash or cancel mid-batch loses only unfinished images; None = not saved.
    save_to: Path | None = None
    task_id: str | None = None  # names the files <task_id>-<n>.png


@dataclass
class GenerationResult:
    request: GenerationRequest  # resolved: defaults filled in, seed chosen
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    slot: str
    timings: dict[str, float]  # seconds: prepare, queue, load, run, total
    paths: list[Path] = field(default_factory=list)  # where the images were saved, if saved
    warnings: list[str] = field(default_factory=list)  # e.g. prompt syntax a model ignores
    placement: str = "whole"  # where the model's components lived (pipelines/placement.py)
    urls: list[str] = field(default_factory=list)  # S3 URLs of `paths`, when uploaded


@dataclass(frozen=True)
class _Ready:
    job: ImageJob
    entry: ModelEntry
    inputs: Inputs
    loras: list[tuple[LoraEntry, float]]
    embeddings: list[EmbeddingEntry]  # textual inversions the prompts use
    t0: float
    prepare_s: float


@dataclass
class _Made:
    """What a run has made so far (kept, and saved, call by call)."""

    images: list[Image.Image] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    placement: str = "whole"


def image_work(req: GenerationRequest) -> int:
    """What the work budget counts: width x height x steps x images (both hires passes)."""
    return req.width * req.height * req.num_inference_steps * req.image_count() + (
        hires.hires_work(req))  # fmt: skip


class ImageRunner:
    kind = "image"

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    # -- 1. validate and resolve (no slot needed) -------------------------------
    def resolve(
        self, request: GenerationRequest, inputs: Inputs | None = None
    ) -> tuple[GenerationRequest, ModelEntry]:
        """Resolve defaults, validate (images too), and choose the seed. Raises RequestError."""
        if not isinstance(request, GenerationRequest):
            raise RequestError("request", "must be a GenerationRequest")
        core = self.core
        name = request.model or core.settings.default_model
        check_name("model", name, "model")
        entry = core.registry.resolve(name)
        if entry.family.kind != "image":
            rule = f"'{name}' is a {entry.family.label} video model; use the video command"
            raise RequestError("model", rule)
        request = expand_styles(request, core.styles)  # A1111: the infotext has the result
        req = hires.normalise(resolve_defaults(request, name, entry.family))
        validate(req, entry.family)
        hires.check(req, entry.family, task_of(req, inputs or Inputs()), core.upscalers)
        get_spec(req.scheduler, entry.family)  # unknown scheduler -> list of valid ones
        for lora_name, _ in req.loras:
            check_family(core.loras.get(lora_name), entry.family.name, name)
        check_inputs(req, inputs or Inputs(), entry.family.name, name)
        if req.vae in ("", AUTOMATIC):
            req = replace(req, vae=None)
        if req.vae is not None:
            check_name("vae", req.vae, "VAE")
            core.vaes.get(req.vae).check_family(entry.family.name, name)
        if entry.inpaint and not task_of(req, inputs or Inputs()).startswith("inpaint"):
            rule = (f"'{name}' is an inpainting checkpoint (9-channel UNet): use it to inpaint, "
                    "with an init image and a mask")  # fmt: skip
            raise RequestError("model", rule)
        for i, unit in enumerate(req.controlnets):
            cn = core.controlnets.get(unit.model, f"controlnets[{i}].model")
            cn.check_family(entry.family.name, name, f"controlnets[{i}].model")
            preprocess.check(unit.module, core.settings.annotators_dir, f"controlnets[{i}].module")
        return replace(req, seed=chosen_seed(req.seed)), entry

    def prepare(self, job: ImageJob) -> Prepared:
        t0 = time.perf_counter()
        if not isinstance(job, ImageJob):
            raise RequestError("request", "must be an ImageJob")
        check_task_id(job.task_id)
        inputs = job.inputs or Inputs()
        req, entry = self.resolve(job.request, inputs)
        loras = [(self.core.loras.get(n), w) for n, w in req.loras]
        embeddings = self._embeddings(req, entry)
        ready = _Ready(job, entry, inputs, loras, embeddings, t0, time.perf_counter() - t0)
        return Prepared(req, image_work(req), entry.name, ready)

    # -- 2. run on a slot ------------------------------------------------------
    def run(self, prepared: Prepared, ctx: JobContext) -> GenerationResult:
        req: GenerationRequest = prepared.spec
        ready: _Ready = prepared.data
        timings = {"prepare": ready.prepare_s}
        made = _Made()
        units = [self.core.controlnets.get(u.model) for u in req.controlnets]
        ctx.fetch([ready.entry.pending, *(u.pending for u in units)])  # no slot held
        # The model hash (cached by path, size and mtime) now, with progress, not under
        # the slot's lock: a big single file's first hash takes seconds per GB.
        self.core.registry.model_hash(ready.entry, ctx.on_hashing)
        pool = self.core.pool
        with pool.model_on_slot(ready.entry, ctx.job, timings, ctx.on_slot) as (slot, loaded):
            self._images(slot, loaded, req, ready, ctx, made)
        timings["total"] = time.perf_counter() - ready.t0
        return GenerationResult(req, made.images, made.seeds, made.infotexts, slot.name,
                                timings, made.paths, made.warnings,
                                placement=made.placement)  # fmt: skip

    def _embeddings(self, req: GenerationRequest, entry: ModelEntry) -> list[EmbeddingEntry]:
        family = entry.family.name
        if family not in ("sd15", "sdxl"):
            return []  # A1111's embeddings are CLIP vectors of SD/SDXL
        texts = {"prompt": req.prompt, "negative_prompt": req.negative_prompt}
        return self.core.embeddings.used_in(texts, family, entry.name)

    def _describe(self, req: GenerationRequest, ready: _Ready, model_hash: str) -> Any:
        """infotext(seed) for this job's images."""
        lora_hashes = {e.name: e.short_hash for e, _ in ready.loras}
        cn_hashes = {u.model: folder_model_hash(self.core.controlnets.get(u.model).path)
                     for u in req.controlnets}  # fmt: skip
        task = task_of(req, ready.inputs)
        ti_hashes = {e.name: e.short_hash for e in ready.embeddings}
        vae_hash = None if req.vae is None else self.core.vaes.get(req.vae).short_hash
        return lambda seed: hires.add_to_infotext(
            infotext_for(req, seed, model_hash, lora_hashes, task, cn_hashes, ti_hashes,
                         vae_hash), req)  # fmt: skip

    def _images(
        self, slot: DeviceSlot, loaded: LoadedModel, req: GenerationRequest, ready: _Ready,
        ctx: JobContext, made: _Made,
    ) -> None:  # fmt: skip
        family = loaded.entry.family
        settings = self.core.settings
        job = ready.job
        placed = placement.placement_for(self.core.pool, slot, loaded.entry)
        made.placement = str(placed)
        described = self._describe(req, ready, loaded.model_hash)
        infotext = lambda seed: placement.with_placement(described(seed), placed)  # noqa: E731
        whole = inputs = ready.inputs
        task = task_of(req, inputs)
        box = None
        if task.startswith("inpaint") and req.inpaint_area == "masked":
            inputs, box = crop_inputs(req, whole)  # generate the box, paste it back below
        with (
            self._controlnets(slot, loaded, req) as controlnets,
            self._vae(slot, loaded, req) as vae,
            lora_scope(loaded, ready.loras),
            ExitStack() as later,
        ):
            made.warnings.extend(loaded.adapters.warnings(ready.loras))
            maps = [preprocess.run(u.module, inputs.control_images[i], req.width, req.height,
                                   settings.annotators_dir, u.low_threshold,
                                   u.high_threshold, req.seed)
                    for i, u in enumerate(req.controlnets)]  # fmt: skip
            with placement.encoding(loaded.pipeline, placed, slot.device):  # staged: encoders in
                cond = self._condition(loaded, req, task, ready, made)  # once, LoRAs active
            hr = later.enter_context(hires.second_pass(  # None without hires fix
                self, slot, loaded, req, cond, vae=vae, ctx=ctx,
                encode=lambda r: self._condition(loaded, r, "img2img", ready, made)))  # fmt: skip
            for call in range(req.batch_count):
                if ctx.cancel.cancelled:
                    raise Cancelled("cancelled")
                seeds = [req.seed + call * req.batch_size + i for i in range(req.batch_size)]
                scheduler = build_scheduler(req.scheduler, family, loaded.pristine_scheduler, seeds)
                if task == "txt2img":
                    pipe = fresh_pipeline(loaded.pipeline, scheduler)
                else:
                    pipe = build_task(loaded.pipeline, family.name, task, scheduler, controlnets)
                if vae is not None:  # this call's own pipeline object; the cached one keeps its VAE
                    pipe.register_modules(vae=vae)
                placement.without_text_encoders(pipe, placed)  # staged: embeddings only
                progress = step_callback(family.name, call, req.batch_count, req.height,
                                         req.width, hr.progress.first_pass if hr else
                                         ctx.on_progress, ctx.cancel,
                                         settings.preview_every)  # fmt: skip
                callback, tensor_inputs = cond.callback(family.name, progress)
                args = {**call_arguments(req, family.name, seeds),
                        **task_arguments(req, task, inputs, maps)}  # fmt: skip
                del args["prompt"]
                args.pop("negative_prompt", None)
                args.update(cond.kwargs)
                if hr is not None:
                    args.update(hr.first_pass_arguments())
                if "width" not in inspect.signature(pipe.__call__).parameters:
                    del args["width"], args["height"]  # img2img: the resized init image's size
                out = pipe(**args, callback_on_step_end=callback,
                           callback_on_step_end_tensor_inputs=tensor_inputs)  # fmt: skip
                if hr is not None:  # the hires pass: upscale, then image to image
                    out.images = hr.run(out.images, seeds, call)
                if box is not None:
                    out.images = [paste_back(im, whole, box, req.mask_blur) for im in out.images]
                for image, seed in zip(out.images, seeds, strict=True):
                    made.images.append(image)
                    made.seeds.append(seed)
                    made.infotexts.append(infotext(seed))
                    if job.save_to is not None:  # saved now: a later failure cannot lose it
                        n = len(made.images) - 1
                        made.paths.append(save_image(image, job.save_to, made.infotexts[-1],
                                                     seed, n, job.task_id))  # fmt: skip

    def _condition(
        self, loaded: LoadedModel, req: GenerationRequest, task: str, ready: _Ready, made: _Made
    ) -> Conditioning:
        """The job's prompts encoded once (A1111's language; see prompt_encoding.py)."""
        family = loaded.entry.family.name
        settings = self.core.settings
        ignored = family == "sdxl" and not settings.sdxl_clip_l_skip  # A1111's default
        cond = condition(loaded.pipeline, family, req.prompt, req.negative_prompt,
                         req.num_inference_steps, req.guidance_scale or 0.0,
                         clip_skip=1 if ignored else req.clip_skip,
                         embeddings=self.core.embeddings.vectors(ready.embeddings),
                         sdxl_clip_l_skip=settings.sdxl_clip_l_skip)  # fmt: skip
        if req.clip_skip != 1 and family == "flux":
            made.warnings.append("flux: clip skip is not applied to Flux's text encoders")
        elif req.clip_skip != 1 and ignored:
            made.warnings.append("sdxl: clip skip is ignored on SDXL (as in A1111) unless the "
                                 "sdxl_clip_l_skip setting is on")  # fmt: skip
        if family == "sdxl" and task == "inpaint+cn" and len(cond.schedule) > 1:
            # its loop never reads add_text_embeds back from the step callback
            made.warnings.append("SDXL ControlNet inpainting: prompt editing switches the "
                                 "prompt but keeps the first step's pooled embedding")  # fmt: skip
        made.warnings.extend(cond.warnings)
        return cond

    @contextmanager
    def _vae(self, slot: DeviceSlot, loaded: LoadedModel, req: GenerationRequest) -> Iterator[Any]:
        """The request's VAE (None = the model's own), in the slot's cache, locked while used."""
        if req.vae is None:
            yield None
            return
        entry = self.core.vaes.get(req.vae)
        if entry.key not in slot.cache:
            model = load_vae(entry, loaded.pipeline.vae, slot.device, dtype_of(loaded.pipeline))
            slot.cache.put(entry.key, model, module_bytes(model))
        with slot.cache.locked(entry.key) as model:
            yield model

    @contextmanager
    def _controlnets(
        self, slot: DeviceSlot, loaded: LoadedModel, req: GenerationRequest
    ) -> Iterator[list[Any]]:
        """The request's ControlNets, loaded into the slot's cache and locked while used."""
        with ExitStack() as stack:
            models = []
            for unit in req.controlnets:
                cn = self.core.controlnets.get(unit.model)
                if cn.key not in slot.cache:
                    model = load_controlnet(cn, slot.device, dtype_of(loaded.pipeline))
                    slot.cache.put(cn.key, model, module_bytes(model))
                models.append(stack.enter_context(slot.cache.locked(cn.key)))
            yield models


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
