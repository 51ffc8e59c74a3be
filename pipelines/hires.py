"""Hires fix: A1111's second pass, as one job with the first.

    GenerationRequest(prompt="castle", width=512, height=512, enable_hr=True,
                      hr_scale=2, hr_upscaler="Latent", strength=0.7)

1. the first pass generates at width x height (text to image);
2. its result is upscaled to the hires size: `Latent*` modes resize the 4-channel
   latents (torch interpolate, A1111's modes and antialias flags) and never decode;
   pixel upscalers (Lanczos, Nearest, None, or an upscaler model of upscaler.py)
   work on the decoded image;
3. image to image at the hires size with `strength` (A1111's `denoising_strength`)
   over `hr_second_pass_steps` (0 = the first pass's steps), with `hr_prompt` /
   `hr_negative_prompt` / `hr_sampler_name` when given (blank = the first pass's).
   diffusers' img2img takes 4-channel latents as they are (no VAE encode).

Sizes follow A1111 (`processing.py`): `hr_scale` x the base size, or
`hr_resize_x`/`hr_resize_y` (0 = from the other side by the base ratio; both given
= scaled to cover and cropped to exactly that size). The hires size must obey the
family's size rules: nothing is rounded. The second pass uses fresh CPU generators
seeded with each image's seed, so `second_pass` equals a direct diffusers img2img
call on the upscaled image with those generators (the parity test).

Progress is one bar over both passes of every call; cancel stops either pass
within a step; the work budget counts both passes (`hires_work`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from .errors import RequestError
from .families import Family
from .infotext import format_value, quote
from .progress import ProgressEvent
from .request import MAX_STEPS, check_int, check_number, check_text
from .upscale import RESAMPLERS, UpscalerLibrary

# A1111's `shared.latent_upscale_modes`: name -> (torch interpolate mode, antialias)
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
SAME_SAMPLER = "Use same sampler"
HR_SCALE_RANGE = (1.0, 4.0)  # A1111's slider
LATENT_FAMILIES = ("sd15", "sdxl")  # 4-channel latents img2img takes as they are
OPT_F = 8  # A1111's latent factor (truncation in latent pixels)


def upscaler_names(library: UpscalerLibrary | None) -> list[str]:
    """What hr_upscaler accepts, in A1111's order: latent modes, pixel, models."""
    models = library.names() if library is not None else []
    return [*LATENT_MODES, *RESAMPLERS, *models]


@dataclass(frozen=True)
class HiresSize:
    upscale_to: tuple[int, int]  # what the upscaler makes
    target: tuple[int, int]  # after the crop (both resize sides given), else upscale_to

    @property
    def crop(self) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) in pixels, or None: A1111's latent truncation."""
        (uw, uh), (tw, th) = self.upscale_to, self.target
        if (uw, uh) == (tw, th):
            return None
        tx, ty = (uw - tw) // OPT_F, (uh - th) // OPT_F
        left, top = (tx // 2) * OPT_F, (ty // 2) * OPT_F
        return left, top, left + tw, top + th


def hires_size(req: Any) -> HiresSize:
    """A1111's hr_upscale_to_x/y (and the cropped target when both resize sides are set)."""
    w, h = req.width, req.height
    rx, ry = req.hr_resize_x, req.hr_resize_y
    if not rx and not ry:
        size = (int(w * req.hr_scale), int(h * req.hr_scale))
        return HiresSize(size, size)
    if not ry:
        size = (rx, rx * h // w)
        return HiresSize(size, size)
    if not rx:
        size = (ry * w // h, ry)
        return HiresSize(size, size)
    up = (rx, rx * h // w) if w / h < rx / ry else (ry * w // h, ry)
    return HiresSize(up, (rx, ry))


def second_pass_steps(req: Any) -> int:
    """Steps the second pass asks for (A1111: 0 = the first pass's)."""
    return req.hr_second_pass_steps or req.num_inference_steps


def steps_run(req: Any) -> int:
    """Steps img2img runs in the second pass (diffusers: int(steps x strength))."""
    steps = second_pass_steps(req)
    return min(int(steps * req.strength), steps)


def hires_work(req: Any) -> int:
    """The second pass's work (width x height x steps x images); 0 without hires."""
    if not req.enable_hr:
        return 0
    w, h = hires_size(req).upscale_to
    return w * h * steps_run(req) * req.image_count()


def normalise(req: Any) -> Any:
    """Blank optional hires values in their canonical form (before validation)."""
    sampler = req.hr_sampler_name
    if sampler in ("", SAME_SAMPLER):
        sampler = None
    return replace(req, hr_sampler_name=sampler, hr_prompt=req.hr_prompt or "",
                   hr_negative_prompt=req.hr_negative_prompt or "")  # fmt: skip


def check(req: Any, family: Family, task: str, library: UpscalerLibrary | None) -> None:
    """The hires fields of a resolved request. Raises RequestError naming the field."""
    from .request import check_size
    from .schedulers import get_spec

    if not isinstance(req.enable_hr, bool):
        raise RequestError("enable_hr", f"must be true or false, got {req.enable_hr!r}")
    if not req.enable_hr:
        return
    if task != "txt2img":
        rule = ("hires fix is a second pass of text to image; it does not combine with an "
                "init image, a mask or ControlNet")  # fmt: skip
        raise RequestError("enable_hr", rule)
    check_number("hr_scale", req.hr_scale, *HR_SCALE_RANGE)
    check_int("hr_resize_x", req.hr_resize_x, 0, family.max_size)
    check_int("hr_resize_y", req.hr_resize_y, 0, family.max_size)
    names = upscaler_names(library)
    if req.hr_upscaler not in names:
        raise RequestError("hr_upscaler", f"unknown upscaler {req.hr_upscaler!r}; "
                           f"upscalers: {', '.join(names)}")  # fmt: skip
    if req.hr_upscaler in LATENT_MODES and family.name not in LATENT_FAMILIES:
        rule = (f"latent upscaling is for SD and SDXL models; {family.label} takes a pixel "
                "upscaler (Lanczos, Nearest or an upscaler model)")  # fmt: skip
        raise RequestError("hr_upscaler", rule)
    check_int("hr_second_pass_steps", req.hr_second_pass_steps, 0, MAX_STEPS)
    check_text("hr_prompt", req.hr_prompt)
    check_text("hr_negative_prompt", req.hr_negative_prompt)
    if "<lora:" in req.hr_prompt:
        raise RequestError("hr_prompt", "LoRA tags go in the prompt: the hires pass runs with "
                           "the job's LoRAs")  # fmt: skip
    if req.hr_sampler_name is not None:
        get_spec(req.hr_sampler_name, family)
    size = hires_size(req)
    which = "hr_scale" if not (req.hr_resize_x or req.hr_resize_y) else "hr_resize_x"
    for value, side in zip(size.target, ("width", "height"), strict=True):
        try:
            check_size(side, value, family)
        except RequestError as e:
            raise RequestError(which, f"makes a hires {side} of {value}: {e.rule}") from None
    if steps_run(req) < 1:
        rule = (f"{req.strength} x {second_pass_steps(req)} hires steps leaves no step to "
                "run; raise the denoising strength or hr_second_pass_steps")  # fmt: skip
        raise RequestError("strength", rule)


# -- infotext ---------------------------------------------------------------------
def infotext_params(req: Any) -> dict[str, object]:
    """The keys A1111 writes for a hires job (processing.py), in its order."""
    if not req.enable_hr:
        return {}
    resized = bool(req.hr_resize_x or req.hr_resize_y)

    def num(v: float) -> float:
        return int(v) if float(v).is_integer() else v

    return {
        "Denoising strength": num(req.strength),
        "Hires upscale": None if resized else num(req.hr_scale),
        "Hires resize": f"{req.hr_resize_x}x{req.hr_resize_y}" if resized else None,
        "Hires steps": req.hr_second_pass_steps or None,
        "Hires upscaler": req.hr_upscaler,
        "Hires sampler": req.hr_sampler_name,
        "Hires prompt": req.hr_prompt or None,
        "Hires negative prompt": req.hr_negative_prompt or None,
    }


def add_to_infotext(text: str, req: Any) -> str:
    """`text` (an infotext) with the hires keys inserted before its Version key (or at
    the end of its params line)."""
    params = infotext_params(req)
    pairs = ", ".join(f"{k}: {quote(format_value(v))}" for k, v in params.items() if v is not None)
    if not pairs:
        return text
    head, _, last = text.rpartition("\n")
    at = last.rfind(", Version: ")
    last = f"{last[:at]}, {pairs}{last[at:]}" if at >= 0 else f"{last}, {pairs}"
    return f"{head}\n{last}" if head else last


def fields_from_params(params: dict[str, str]) -> dict[str, object]:
    """Request fields of an infotext's params (A1111's paste rules: hires is on when
    "Denoising strength" and a Hires upscale/resize/upscaler key are there)."""
    hires = any(k in params for k in ("Hires upscale", "Hires resize", "Hires upscaler"))
    if not hires or "Denoising strength" not in params:
        return {}
    out: dict[str, object] = {"enable_hr": True}
    try:
        if "Hires upscale" in params:
            out["hr_scale"] = float(params["Hires upscale"])
        if "Hires resize" in params:
            x, y = params["Hires resize"].lower().split("x")
            out["hr_resize_x"], out["hr_resize_y"] = int(x), int(y)
        if "Hires steps" in params:
            out["hr_second_pass_steps"] = int(params["Hires steps"])
    except ValueError:
        raise RequestError("Hires", "unreadable hires fix parameters") from None
    for key, name in (("Hires upscaler", "hr_upscaler"), ("Hires sampler", "hr_sampler_name"),
                      ("Hires prompt", "hr_prompt"),
                      ("Hires negative prompt", "hr_negative_prompt")):  # fmt: skip
        if key in params:
            out[name] = params[key]
    return out


def request_from_infotext(text: str) -> Any:
    """parameters.request_from_infotext plus the hires fields (PNG Info round trip)."""
    from .infotext import parse_infotext
    from .parameters import request_from_infotext as base

    return replace(base(text), **fields_from_params(parse_infotext(text)[2]))


# -- the second pass ----------------------------------------------------------------
def upscale_latents(latents: torch.Tensor, mode: str, size: HiresSize) -> torch.Tensor:
    """A1111's latent upscale (F.interpolate to the hires size / 8), then its truncation."""
    interp, antialias = LATENT_MODES[mode]
    w, h = size.upscale_to
    out = torch.nn.functional.interpolate(latents, size=(h // OPT_F, w // OPT_F), mode=interp,
                                          antialias=antialias)  # fmt: skip
    crop = size.crop
    if crop is not None:
        left, top, right, bottom = (c // OPT_F for c in crop)
        out = out[:, :, top:bottom, left:right]
    return out


def upscale_pixels(images: list[Image.Image], name: str, size: HiresSize, model: Any,
                   cancelled: Callable[[], bool]) -> list[Image.Image]:  # fmt: skip
    from .upscale import upscale

    w, h = size.upscale_to
    out = [upscale(im, name, w, h, model, cancelled) for im in images]
    return out if size.crop is None else [im.crop(size.crop) for im in out]


class Progress:
    """One progress bar over both passes of every call: maps step_callback's per-pass
    events (done over `calls` x steps of that pass) to the job's total."""

    def __init__(self, on_progress: Callable[[ProgressEvent], None], calls: int,
                 first_steps: int, second_steps: int) -> None:  # fmt: skip
        self.on_progress = on_progress
        self.calls = calls
        self.first = first_steps
        self.second = second_steps

    def _emit(self, event: ProgressEvent, offset: int, planned: int) -> None:
        per = max(1, event.total // self.calls)
        call, i = divmod(event.step - 1, per)
        if offset == 0:
            self.first = per  # what the sampler really runs (some run 2 evals a step)
        per_call = self.first + self.second
        done = call * per_call + offset + i + 1
        self.on_progress(ProgressEvent(done, per_call * self.calls, event.preview))

    def first_pass(self, event: ProgressEvent) -> None:
        self._emit(event, 0, self.first)

    def second_pass(self, event: ProgressEvent) -> None:
        self.second = max(1, event.total // self.calls)
        self._emit(event, self.first, self.second)


def pixel_parity_arguments(req: Any, seeds: list[int]) -> dict[str, Any]:
    """The img2img arguments of the second pass but image and prompts (shared with tests)."""
    return {
        "strength": req.strength,
        "num_inference_steps": second_pass_steps(req),
        "guidance_scale": req.guidance_scale,
        "num_images_per_prompt": req.batch_size,
        "generator": [torch.Generator("cpu").manual_seed(s) for s in seeds],
    }


def planned_total(req: Any) -> int:
    """Steps of a resolved request's job as planned, over both passes and every call."""
    return req.batch_count * (req.num_inference_steps + (steps_run(req) if req.enable_hr else 0))


@contextmanager
def second_pass(
    runner: Any, slot: Any, loaded: Any, req: Any, cond: Any, encode: Callable[[Any], Any],
    vae: Any, ctx: Any,
) -> Iterator[SecondPass | None]:  # fmt: skip
    """The job's hires pass (None without hires), its upscaler model locked in the slot's
    cache while the job runs. `encode(request)` encodes other prompts (ImageRunner's
    _condition, LoRAs active); `cond` is the first pass's conditioning."""
    if not req.enable_hr:
        yield None
        return
    from .placement import placement_for

    core = runner.core
    placed = placement_for(core.pool, slot, loaded.entry)  # staged: encoders in RAM
    name = req.hr_upscaler
    if name in LATENT_MODES or name in RESAMPLERS:
        yield SecondPass(core, loaded, req, cond, encode, vae, ctx, None, (placed, slot.device))
        return
    from .cache import module_bytes
    from .upscale import load_upscaler

    entry = core.upscalers.get(name, "hr_upscaler")
    if entry.key not in slot.cache:
        model = load_upscaler(entry, slot.device)
        slot.cache.put(entry.key, model, module_bytes(model.model))
    with slot.cache.locked(entry.key) as model:
        yield SecondPass(core, loaded, req, cond, encode, vae, ctx, model, (placed, slot.device))


class SecondPass:
    """Upscale and img2img for each call of a hires job (see the module docstring)."""

    def __init__(self, core: Any, loaded: Any, req: Any, cond: Any,
                 encode: Callable[[Any], Any], vae: Any, ctx: Any, model: Any,
                 placed: tuple[Any, Any]) -> None:  # fmt: skip
        self.core, self.loaded, self.req, self.vae, self.ctx, self.model = (
            core, loaded, req, vae, ctx, model)  # fmt: skip
        self.size = hires_size(req)
        self.latent = req.hr_upscaler in LATENT_MODES
        self.progress = Progress(ctx.on_progress, req.batch_count, req.num_inference_steps,
                                 steps_run(req))  # fmt: skip
        from .placement import encoding

        self.placed = placed[0]
        same = not req.hr_prompt and not req.hr_negative_prompt
        if same and len(cond.schedule) <= 1:
            self.cond = cond  # the same embeddings; no schedule to re-time
        else:
            with encoding(loaded.pipeline, *placed):
                self.cond = encode(replace(req, prompt=req.hr_prompt or req.prompt,
                                       negative_prompt=req.hr_negative_prompt
                                       or req.negative_prompt,
                                       num_inference_steps=steps_run(req)))  # fmt: skip

    def first_pass_arguments(self) -> dict[str, Any]:
        """What the first pass's call adds: latents out for the Latent modes."""
        return {"output_type": "latent"} if self.latent else {}

    def upscaled(self, first: Any) -> Any:
        """The first pass's output (latents or images) at the hires size."""
        if self.latent:
            return upscale_latents(first, self.req.hr_upscaler, self.size)
        return upscale_pixels(list(first), self.req.hr_upscaler, self.size, self.model,
                              lambda: self.ctx.cancel.cancelled)  # fmt: skip

    def run(self, first: Any, seeds: list[int], call: int) -> list[Image.Image]:
        """The hires images of one call from its first pass's output."""
        from .errors import Cancelled
        from .placement import without_text_encoders
        from .progress import step_callback
        from .schedulers import build_scheduler
        from .tasks import build

        req, loaded = self.req, self.loaded
        family = loaded.entry.family
        if self.ctx.cancel.cancelled:
            raise Cancelled("cancelled")
        image = self.upscaled(first)
        scheduler = build_scheduler(req.hr_sampler_name or req.scheduler, family,
                                    loaded.pristine_scheduler, seeds)  # fmt: skip
        pipe = build(loaded.pipeline, family.name, "img2img", scheduler, [])
        if self.vae is not None:
            pipe.register_modules(vae=self.vae)
        without_text_encoders(pipe, self.placed)  # staged placement: embeddings only
        w, h = self.size.target
        progress = step_callback(family.name, call, req.batch_count, h, w,
                                 self.progress.second_pass, self.ctx.cancel,
                                 self.core.settings.preview_every)  # fmt: skip
        callback, tensor_inputs = self.cond.callback(family.name, progress)
        args = {**pixel_parity_arguments(req, seeds), "image": image, **self.cond.kwargs}
        if "width" in inspect.signature(pipe.__call__).parameters:  # Flux: else 1024 px
            args["width"], args["height"] = w, h
        out = pipe(**args, callback_on_step_end=callback,
                   callback_on_step_end_tensor_inputs=tensor_inputs)  # fmt: skip
        return list(out.images)
