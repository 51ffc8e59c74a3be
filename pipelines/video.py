"""Video requests for the Wan models: validated up front, run on the same manager.

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

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .errors import RequestError
from .families import CFG_RANGE, FLOW_SHIFT_RANGE, FPS_RANGE, Family
from .loading import compose, fresh_pipeline
from .loras import check_family
from .progress import step_callback
from .request import (
    MAX_SEED,
    MAX_STEPS,
    _int,
    _number,
    _text,
    check_name,
    check_size,
    fields_of,
    split_lora_tags,
)
from .schedulers import build_scheduler, get_spec

if TYPE_CHECKING:
    from .manager import CancelToken, PipelineManager, ProgressEvent

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
        if isinstance(self.loras, dict):
            object.__setattr__(self, "loras", tuple(self.loras.items()))

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


def resolve(req: VideoRequest, model: str, family: Family, flow_shift: float) -> VideoRequest:
    prompt, tagged = (
        split_lora_tags(req.prompt) if isinstance(req.prompt, str) else (req.prompt, ())
    )
    loras = {**dict(tagged), **dict(req.loras)}
    seed = req.seed if req.seed != -1 else secrets.randbelow(MAX_SEED + 1)
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
        num_inference_steps=req.num_inference_steps or family.default_steps,
        guidance_scale=req.guidance_scale if req.guidance_scale is not None else family.default_cfg,
        guidance_scale_2=(
            req.guidance_scale_2
            if req.guidance_scale_2 is not None
            else (family.default_cfg if family.experts == 2 else None)
        ),  # fmt: skip
        flow_shift=req.flow_shift if req.flow_shift is not None else flow_shift,
        seed=seed,
        loras=tuple(loras.items()),
    )


def validate(req: VideoRequest, family: Family, has_image: bool) -> None:
    _text("prompt", req.prompt)
    _text("negative_prompt", req.negative_prompt)
    frames = req.num_frames
    _int("num_frames", frames, 5, MAX_FRAMES)
    if (frames - 1) % 4:
        near = f"{frames - (frames - 1) % 4} or {frames - (frames - 1) % 4 + 4}"
        raise RequestError(
            "num_frames", f"must be 4k+1 (5, 9, 13, ... 81), got {frames}; try {near}"
        )
    _int("fps", req.fps, *FPS_RANGE)
    for name in ("width", "height"):
        check_size(name, getattr(req, name), family)
    _int("num_inference_steps", req.num_inference_steps, 1, MAX_STEPS)
    _number("guidance_scale", req.guidance_scale, *CFG_RANGE)
    if req.guidance_scale_2 is not None:
        if family.experts != 2:
            raise RequestError(
                "guidance_scale_2", f"{family.label} models have one expert; leave it empty"
            )
        _number("guidance_scale_2", req.guidance_scale_2, *CFG_RANGE)
    _number("flow_shift", req.flow_shift, *FLOW_SHIFT_RANGE)
    if req.seed != -1:
        _int("seed", req.seed, 0, MAX_SEED)
    if family.start_image == "required" and not has_image:
        raise RequestError("image", f"{family.label} models need a start image")
    if family.start_image == "none" and has_image:
        raise RequestError("image", f"{family.label} is text-to-video; it takes no start image")
    for name, weight in req.loras:
        check_name("loras", name, "LoRA")
        _number(f"loras[{name}]", weight, -2.0, 2.0)
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


def run_video(
    manager: PipelineManager,
    request: VideoRequest,
    image: Image.Image | None,
    end_image: Image.Image | None,
    on_progress: Callable[[ProgressEvent], None] | None,
    cancel: CancelToken | None,
) -> VideoResult:
    from .schedulers import flow_shift_of

    t0 = time.perf_counter()
    # 1. resolve the model and validate everything before any work
    if not isinstance(request, VideoRequest):
        raise RequestError("request", "must be a VideoRequest")
    name = request.model or DEFAULT_VIDEO_MODEL
    check_name("model", name, "model")
    entry = manager.registry.resolve(name)
    family = entry.family
    if family.kind != "video":
        raise RequestError("model", f"'{name}' is a {family.label} image model; use generate")
    if end_image is not None and not family.end_image:
        raise RequestError("end_image", f"{family.label} models take no end image")
    shift = flow_shift_of(_scheduler_config(entry.path))
    req = resolve(request, name, family, shift)
    validate(req, family, image is not None)
    get_spec(req.scheduler, family)
    loras = [(manager.loras.get(n), w) for n, w in req.loras]
    for lora, _ in loras:
        check_family(lora, family.name, name)
    timings = {"prepare": time.perf_counter() - t0}
    # 2. a slot with the model; 3. one call with a fresh scheduler and pipeline object
    with manager.model_on_slot(entry, cancel, timings) as (slot, loaded):
        scheduler = build_scheduler(req.scheduler, family, loaded.pristine_scheduler, [req.seed],
                                    flow_shift=req.flow_shift)  # fmt: skip
        pipe = fresh_pipeline(loaded.pipeline, scheduler)
        if (
            family.start_image != "none"
            and image is not None
            and type(pipe).__name__ == "WanPipeline"
        ):
            pipe = _image_pipeline(pipe)  # TI2V-5B: same modules, the image-to-video class
        callback = step_callback(family.name, 0, 1, req.height, req.width, on_progress, cancel,
                                 manager.settings.preview_every)  # fmt: skip
        with manager.lora_scope(loaded, loras, req.lora_experts):
            out = pipe(**call_arguments(req, family, image, end_image),
                       callback_on_step_end=callback,
                       callback_on_step_end_tensor_inputs=["latents"])  # fmt: skip
        frames = np.asarray(out.frames[0], dtype=np.float32)
    timings["total"] = time.perf_counter() - t0
    params = {**req.to_dict(), "family": family.name, "model_hash": loaded.model_hash,
              "start_image": image is not None, "end_image": end_image is not None,
              "lora_hashes": {e.name: e.short_hash for e, _ in loras},
              "memory": {"offload": manager.settings.load.offload,
                         "vae_tiling": manager.settings.load.vae_tiling,
                         "devices": slot.span}}  # fmt: skip
    return VideoResult(req, frames, req.seed, params, slot.name, timings)


def _scheduler_config(folder: Any) -> dict[str, Any]:
    import json
    from pathlib import Path

    path = Path(folder) / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _image_pipeline(pipe: Any) -> Any:
    """TI2V-5B with a start image: the image-to-video class over the same modules."""
    from diffusers import WanImageToVideoPipeline

    return compose(WanImageToVideoPipeline, pipe, pipe.scheduler, expand_timesteps=True)
