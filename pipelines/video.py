"""Video jobs for the Wan models: validated up front, a peer of image jobs (jobs.py).

Same machinery as images: a device slot, the cached model, a fresh scheduler
and pipeline object per request, LoRAs for this request only, progress,
previews (the middle frame of the latent video) and cancel. Cancel raises from
the step callback, so it skips the VAE decode, which is the expensive part of a
video.

Rules (diffusers would silently round; we refuse and say the rule):
- num_frames = 4k + 1 (the VAE compresses 4 frames into one latent frame);
- width and height multiples of 16 (32 for Wan 2.2 TI2V-5B);
- image-to-video models need a start image; text-to-video models take none.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .core import EngineCore
from .errors import RequestError
from .families import CFG_RANGE, FLOW_SHIFT_RANGE, FPS_RANGE, Family
from .jobs import JobContext, Prepared
from .loading import compose, fresh_pipeline
from .loras import check_family
from .progress import step_callback
from .request import (
    check_common,
    check_int,
    check_name,
    check_number,
    check_size,
    chosen_seed,
    fields_of,
    lora_pairs,
    prompt_loras,
)
from .schedulers import build_scheduler, flow_shift_of, get_spec
from .slots import lora_scope

MAX_FRAMES = 241
DEFAULT_VIDEO_MODEL = "tiny-wan"


@dataclass(frozen=True)
class VideoRequest:
    prompt: str
    negative_prompt: str = ""
    model: str | None = None
    scheduler: str | None = None
    num_frames: int | None = None
    fps: int = 16
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    guidance_scale_2: float | None = None  # Wan 2.2 A14B: CFG of the low-noise expert
    flow_shift: float | None = None  # None = the model's own
    lora_experts: str = "both"  # Wan 2.2 A14B: LoRAs into "both" experts, "high" or "low"
    seed: int = -1
    loras: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "loras", lora_pairs(self.loras))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loras"] = dict(self.loras)
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoRequest:
        aliases = {"steps": "num_inference_steps", "cfg": "guidance_scale",
                   "cfg2": "guidance_scale_2", "frames": "num_frames"}  # fmt: skip
        return cls(**fields_of(cls, data, "request", aliases))


@dataclass
class VideoResult:
    request: VideoRequest  # resolved
    frames: np.ndarray  # (frames, height, width, 3) float32 in [0, 1]
    seed: int
    parameters: dict[str, Any]  # what made it, for the file's metadata
    slot: str
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)  # e.g. LoRA layers that did not load


def resolve(req: VideoRequest, model: str, family: Family, flow_shift: float) -> VideoRequest:
    prompt, loras = prompt_loras(req.prompt, req.loras)
    seed = chosen_seed(req.seed) if isinstance(req.seed, int) else req.seed
    return replace(
        req,
        prompt=prompt,
        model=model,
        scheduler=req.scheduler or family.default_scheduler,
        num_frames=req.num_frames if req.num_frames is not None else family.default_frames,
        width=req.width if req.width is not None else family.default_size,
        height=req.height
        if req.height is not None
        else (family.default_height or family.default_size),
        num_inference_steps=req.num_inference_steps
        if req.num_inference_steps is not None
        else family.default_steps,
        guidance_scale=req.guidance_scale if req.guidance_scale is not None else family.default_cfg,
        guidance_scale_2=(
            req.guidance_scale_2
            if req.guidance_scale_2 is not None
            else (family.default_cfg if family.experts == 2 else None)
        ),  # fmt: skip
        flow_shift=req.flow_shift if req.flow_shift is not None else flow_shift,
        seed=seed,
        loras=loras,
    )


def validate(req: VideoRequest, family: Family, has_image: bool) -> None:
    check_common(req.prompt, req.negative_prompt, req.num_inference_steps, req.seed, req.loras)
    frames = req.num_frames
    check_int("num_frames", frames, 5, MAX_FRAMES)
    if (frames - 1) % 4:
        near = f"{frames - (frames - 1) % 4} or {frames - (frames - 1) % 4 + 4}"
        raise RequestError(
            "num_frames", f"must be 4k+1 (5, 9, 13, ... 81), got {frames}; try {near}"
        )
    check_int("fps", req.fps, *FPS_RANGE)
    for name in ("width", "height"):
        check_size(name, getattr(req, name), family)
    check_number("guidance_scale", req.guidance_scale, *CFG_RANGE)
    if req.guidance_scale_2 is not None:
        if family.experts != 2:
            raise RequestError(
                "guidance_scale_2", f"{family.label} models have one expert; leave it empty"
            )
        check_number("guidance_scale_2", req.guidance_scale_2, *CFG_RANGE)
    check_number("flow_shift", req.flow_shift, *FLOW_SHIFT_RANGE)
    if family.start_image == "required" and not has_image:
        raise RequestError("image", f"{family.label} models need a start image")
    if family.start_image == "none" and has_image:
        raise RequestError("image", f"{family.label} is text-to-video; it takes no start image")
    if req.lora_experts not in ("both", "high", "low"):
        rule = f"must be 'both', 'high' or 'low', got {req.lora_experts!r}"
        raise RequestError("lora_experts", rule)
    if req.lora_experts != "both" and family.experts != 2:
        raise RequestError("lora_experts", f"{family.label} models have one expert; use 'both'")


def call_arguments(req: VideoRequest, family: Family, image: Image.Image | None,
                   end_image: Image.Image | None) -> dict[str, Any]:  # fmt: skip
    """The diffusers __call__ arguments (shared with the parity tests)."""
    args: dict[str, Any] = {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt or None,
        "height": req.height,
        "width": req.width,
        "num_frames": req.num_frames,
        "num_inference_steps": req.num_inference_steps,
        "guidance_scale": req.guidance_scale,
        "generator": torch.Generator("cpu").manual_seed(req.seed),
        "output_type": "np",
    }
    if family.experts == 2:
        args["guidance_scale_2"] = req.guidance_scale_2
    if image is not None:
        args["image"] = image.convert("RGB").resize((req.width, req.height), Image.LANCZOS)
    if end_image is not None:
        args["last_image"] = end_image.convert("RGB").resize((req.width, req.height), Image.LANCZOS)
    return args


@dataclass(frozen=True)
class VideoJob:
    request: VideoRequest
    image: Image.Image | None = None  # start image (image-to-video models)
    end_image: Image.Image | None = None  # last frame (where the model takes one)


def video_work(req: VideoRequest) -> int:
    """What the work budget counts: width x height x steps x frames."""
    return req.width * req.height * req.num_inference_steps * req.num_frames


class VideoRunner:
    kind = "video"

    def __init__(self, core: EngineCore) -> None:
        self.core = core

    def prepare(self, job: VideoJob) -> Prepared:
        t0 = time.perf_counter()
        # 1. resolve the model and validate everything before any work
        if not isinstance(job, VideoJob) or not isinstance(job.request, VideoRequest):
            raise RequestError("request", "must be a VideoRequest")
        request, image, end_image = job.request, job.image, job.end_image
        name = request.model or DEFAULT_VIDEO_MODEL
        check_name("model", name, "model")
        entry = self.core.registry.resolve(name)
        family = entry.family
        if family.kind != "video":
            raise RequestError("model", f"'{name}' is a {family.label} image model; use generate")
        if end_image is not None and not family.end_image:
            raise RequestError("end_image", f"{family.label} models take no end image")
        shift = flow_shift_of(_scheduler_config(entry.path))
        req = resolve(request, name, family, shift)
        validate(req, family, image is not None)
        get_spec(req.scheduler, family)
        loras = [(self.core.loras.get(n), w) for n, w in req.loras]
        for lora, _ in loras:
            check_family(lora, family.name, name)
        data = (entry, loras, t0, time.perf_counter() - t0)
        return Prepared(replace(job, request=req), video_work(req), name, data)

    def run(self, prepared: Prepared, ctx: JobContext) -> VideoResult:
        job: VideoJob = prepared.spec
        req, image, end_image = job.request, job.image, job.end_image
        entry, loras, t0, prepare_s = prepared.data
        family = entry.family
        settings = self.core.settings
        timings = {"prepare": prepare_s}
        ctx.fetch([entry.pending])  # Hub weights, if any: downloaded holding no slot
        self.core.registry.model_hash(entry, ctx.on_hashing)  # cached; first time with progress
        # 2. a slot with the model; 3. one call with a fresh scheduler and pipeline object
        with self.core.pool.model_on_slot(entry, ctx.job, timings, ctx.on_slot) as (slot, loaded):
            scheduler = build_scheduler(req.scheduler, family, loaded.pristine_scheduler,
                                        [req.seed], flow_shift=req.flow_shift)  # fmt: skip
            pipe = fresh_pipeline(loaded.pipeline, scheduler)
            if (
                family.start_image != "none"
                and image is not None
                and type(pipe).__name__ == "WanPipeline"
            ):
                pipe = _image_pipeline(pipe)  # TI2V-5B: same modules, the image-to-video class
            callback = step_callback(family.name, 0, 1, req.height, req.width, ctx.on_progress,
                                     ctx.cancel, settings.preview_every)  # fmt: skip
            with lora_scope(loaded, loras, req.lora_experts):
                warnings = loaded.adapters.warnings(loras)
                out = pipe(**call_arguments(req, family, image, end_image),
                           callback_on_step_end=callback,
                           callback_on_step_end_tensor_inputs=["latents"])  # fmt: skip
            frames = np.asarray(out.frames[0], dtype=np.float32)
        timings["total"] = time.perf_counter() - t0
        params = {**req.to_dict(), "family": family.name, "model_hash": loaded.model_hash,
                  "start_image": image is not None, "end_image": end_image is not None,
                  "lora_hashes": {e.name: e.short_hash for e, _ in loras},
                  "memory": {"offload": settings.load.offload,
                             "vae_tiling": settings.load.vae_tiling,
                             "devices": slot.span}}  # fmt: skip
        return VideoResult(req, frames, req.seed, params, slot.name, timings, warnings)


def _scheduler_config(folder: Any) -> dict[str, Any]:
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _image_pipeline(pipe: Any) -> Any:
    """TI2V-5B with a start image: the image-to-video class over the same modules."""
    from diffusers import WanImageToVideoPipeline

    return compose(WanImageToVideoPipeline, pipe, pipe.scheduler, expand_timesteps=True)
