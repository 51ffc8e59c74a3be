"""A1111 `/sdapi/v1/txt2img` and `img2img` bodies -> the engine's GenerationRequest + Inputs.

Field names and defaults are A1111's (`n_iter`, `cfg_scale`, `denoising_strength`,
`inpaint_full_res`...), with one deliberate difference: an omitted `steps`,
`cfg_scale`, `width`, `height` or sampler takes the model family's default (A1111's
fixed 512x512 x 50 steps at CFG 7 is wrong for SDXL and Flux), as everywhere in Atelier.

No silent fallbacks: a field A1111 clients send at its neutral value (`enable_hr:
false`, `restore_faces: false`, `eta`...) is accepted; the same field asking for
something Atelier does not do (`enable_hr: true`, `tiling: true`, a `script_name`) is
a 422 naming the field. A field A1111 does not know either is ignored, as A1111
does, and named in `info`'s warnings. Engine errors name the engine's field: `a1111_field` turns it
back into the A1111 name the client sent. ControlNet units: units.py.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageFilter, ImageOps

from pipelines.errors import RequestError

log = logging.getLogger(__name__)

# Fields accepted and not applied: sampler fine-tuning A1111 ignores for most samplers,
# saving switches (the server's outputs setting decides), and bookkeeping.
IGNORED = frozenset({
    "do_not_save_samples", "do_not_save_grid", "save_images", "eta", "s_churn", "s_tmax",
    "s_tmin", "s_noise", "s_min_uncond", "override_settings_restore_afterwards", "comments",
    "disable_extra_networks", "firstphase_width", "firstphase_height", "hr_scale",
    "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
    "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
    "hr_additional_modules", "refiner_switch_at", "script_args", "infotext", "subseed",
    "include_init_images", "image_cfg_scale", "mask_round", "mask_blur_x", "mask_blur_y",
    "firstpass_image",
})  # fmt: skip
# field -> the values meaning "off": anything else asks for a feature Atelier lacks here
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "enable_hr": (None, False),
    "restore_faces": (None, False),
    "tiling": (None, False),
    "subseed_strength": (None, 0, 0.0),
    "seed_resize_from_h": (None, -1, 0),
    "seed_resize_from_w": (None, -1, 0),
    "script_name": (None, ""),
    "refiner_checkpoint": (None, "", "None"),
    "hr_checkpoint_name": (None, "", "Use same checkpoint"),
    "initial_noise_multiplier": (None, 1, 1.0),
    "latent_mask": (None, ""),
    "resize_mode": (None, 0),
}
WHY_NOT = {
    "enable_hr": "hires fix is not available through this API",
    "restore_faces": "face restoration is not available in Atelier",
    "tiling": "tiling is not available in Atelier",
    "subseed_strength": "variation seeds are not available in Atelier",
    "script_name": "scripts are not available in Atelier (ControlNet: alwayson_scripts)",
    "resize_mode": "only 0 (just resize) is available",
}
IMG2IMG_ONLY = ("init_images", "mask", "denoising_strength", "mask_blur", "inpainting_fill",
                "inpaint_full_res", "inpaint_full_res_padding",
                "inpainting_mask_invert")  # fmt: skip
COMMON = ("prompt", "negative_prompt", "seed", "sampler_name", "sampler_index", "scheduler",
          "steps", "cfg_scale", "width", "height", "denoising_strength", "batch_size", "n_iter",
          "styles", "override_settings", "alwayson_scripts", "send_images",
          "force_task_id")  # fmt: skip
# engine field -> A1111 field (error messages name what the client sent)
A1111_FIELDS = {
    "num_inference_steps": "steps", "guidance_scale": "cfg_scale", "batch_count": "n_iter",
    "strength": "denoising_strength", "scheduler": "sampler_name", "init_image": "init_images",
    "mask_image": "mask", "inpaint_padding": "inpaint_full_res_padding",
    "inpaint_area": "inpaint_full_res", "model": "sd_model_checkpoint",
    "clip_skip": "CLIP_stop_at_last_layers", "vae": "sd_vae", "request": "body",
    "task_id": "force_task_id", "schedule_type": "scheduler",
}  # fmt: skip
HIRES_FIELDS = (
    "enable_hr",
    "hr_scale",
    "hr_resize_x",
    "hr_resize_y",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_prompt",
    "hr_negative_prompt",
    "hr_sampler_name",
)
SCHEDULE_TYPES = {"automatic": None, "karras": "Karras"}  # A1111 "Schedule type" we have
HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]$")


@dataclass
class Payload:
    """What a txt2img/img2img body asks for, in the engine's terms."""

    request: Any  # GenerationRequest
    inputs: Any  # pipelines.tasks.Inputs
    send_images: bool = True
    task_id: str | None = None
    echo: dict[str, Any] = field(default_factory=dict)  # `parameters` of the response
    ignored: list[str] = field(default_factory=list)  # unknown fields (info's warnings)


def a1111_field(engine_field: str) -> str:
    """The A1111 name of an engine field: `num_inference_steps` -> `steps`,
    `controlnets[0].weight` -> `alwayson_scripts.controlnet.args[0].weight`."""
    if engine_field.startswith("controlnets"):
        return "alwayson_scripts.controlnet.args" + engine_field[len("controlnets") :]
    return A1111_FIELDS.get(engine_field, engine_field)


def model_name(value: Any, field_name: str = "sd_model_checkpoint") -> str:
    """An A1111 checkpoint title ("name.safetensors [6ce0161689]") as a model name."""
    if not isinstance(value, str) or not value.strip():
        raise RequestError(field_name, f"must be a model name, got {value!r}")
    return HASH_SUFFIX.sub("", value.strip())


def decode_image(field_name: str, value: Any, max_pixels: int) -> Image.Image:
    """A base64 image (raw, or a data: URL), opened by the engine's one image opener."""
    from pipelines.images import open_image

    if not isinstance(value, str) or not value.strip():
        raise RequestError(field_name, "must be a base64-encoded image")
    text = value.strip()
    if text.startswith(("http://", "https://")):
        raise RequestError(field_name, "image URLs are not fetched: send the image as base64")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        raise RequestError(field_name, "is not valid base64") from None
    return open_image(field_name, data, max_pixels)


def scheduler_for(sampler: Any, schedule: Any, family: Any) -> str | None:
    """A1111 `sampler_name` + `scheduler` ("Schedule type") -> our scheduler name."""
    from pipelines.schedulers import available_schedulers, specs_for

    if schedule in (None, ""):
        schedule = "automatic"
    key = str(schedule).strip().lower()
    if key not in SCHEDULE_TYPES:
        rule = f"schedule type {schedule!r} is not available; use one of: automatic, karras"
        raise RequestError("schedule_type", rule)
    if sampler in (None, ""):
        if SCHEDULE_TYPES[key] is not None:
            raise RequestError("schedule_type", "a schedule type needs a sampler_name")
        return None
    if not isinstance(sampler, str):
        raise RequestError("sampler_name", f"must be a sampler name, got {sampler!r}")
    names = available_schedulers(family)
    if sampler in names and key == "automatic":
        return sampler  # our own name ("DPM++ 2M Karras"), as older A1111 spelled it
    wanted = SCHEDULE_TYPES[key]
    for spec in specs_for(family):
        if spec.a1111_sampler == sampler and spec.schedule_type == wanted and spec.name in names:
            return spec.name
    if key == "automatic":  # A1111's "Automatic" = the sampler's own schedule
        for spec in specs_for(family):
            if spec.a1111_sampler == sampler and spec.name in names:
                return spec.name
    rule = f"'{sampler}' with schedule {schedule!r} is not available for {family.label} models; "
    raise RequestError("sampler_name", rule + "see /sdapi/v1/samplers")


def engine_fields() -> frozenset[str]:
    """GenerationRequest's fields: hires fix and styles pass through when the engine has them."""
    from dataclasses import fields

    from pipelines.request import GenerationRequest

    return frozenset(f.name for f in fields(GenerationRequest))


def check_neutral(body: Mapping[str, Any], engine: frozenset[str]) -> None:
    for name, neutral in NEUTRAL.items():
        if name in engine:
            continue  # the engine takes it (e.g. enable_hr): it validates the value
        if name in body and body[name] not in neutral:
            why = WHY_NOT.get(name, "not available in Atelier")
            raise RequestError(name, f"{why}; got {body[name]!r}")
    if body.get("styles") and "styles" not in engine:
        raise RequestError("styles", "prompt styles are not available here; "
                           "put the text in the prompt")  # fmt: skip


def passed_through(body: Mapping[str, Any], img2img: bool, engine: frozenset[str]
                   ) -> dict[str, Any]:  # fmt: skip
    """Fields the engine takes under A1111's own names (styles, the hires fix's hr_*)."""
    out: dict[str, Any] = {}
    if body.get("styles") and "styles" in engine:
        out["styles"] = body["styles"]
    if not img2img and body.get("enable_hr") and "enable_hr" in engine:
        out.update({k: v for k, v in body.items()
                    if k in HIRES_FIELDS and k in engine and v is not None})  # fmt: skip
        if "denoising_strength" in body:  # txt2img: the hires pass's strength, as in A1111
            out["strength"] = body["denoising_strength"]
    return out


def known_fields(img2img: bool) -> frozenset[str]:
    names = set(COMMON) | IGNORED | set(NEUTRAL)
    if img2img:
        names |= set(IMG2IMG_ONLY)
    return frozenset(names)


def parse(body: Any, img2img: bool, manager: Any, options: Mapping[str, Any]) -> Payload:
    """The engine's request and images for an A1111 body. `options`: the caller's own
    /sdapi/v1/options (sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers)."""
    from pipelines.request import GenerationRequest
    from pipelines.tasks import Inputs
    from ui.a1111.units import controlnet_units, resize_controls  # (units imports this module)

    if not isinstance(body, Mapping):
        raise RequestError("body", "must be a JSON object")
    # A1111 ignores fields it does not know (extensions' and newer versions' fields): so
    # do we, naming them in info's warnings and the log, so a typo does not go unseen.
    unknown = sorted(str(k) for k in set(body) - known_fields(img2img))
    engine = engine_fields()
    check_neutral(body, engine)
    overrides: list[str] = []
    settings = {**options, **_overrides(body.get("override_settings"), overrides)}
    unknown += [f"override_settings.{key}" for key in overrides]
    model = model_name(settings["sd_model_checkpoint"]) if settings.get(
        "sd_model_checkpoint") else manager.settings.default_model  # fmt: skip
    family = manager.registry.family_of(model)
    pixels = manager.settings.max_image_pixels
    inputs = Inputs()
    extra = passed_through(body, img2img, engine)
    if img2img:
        extra.update(_image_to_image(body, inputs, pixels))
    vae = settings.get("sd_vae")
    request = GenerationRequest(
        prompt=body.get("prompt", ""),
        negative_prompt=body.get("negative_prompt", "") or "",
        model=model,
        scheduler=scheduler_for(body.get("sampler_name") or body.get("sampler_index"),
                                body.get("scheduler"), family),
        num_inference_steps=body.get("steps"),
        guidance_scale=body.get("cfg_scale"),
        width=body.get("width"),
        height=body.get("height"),
        seed=_seed(body.get("seed", -1)),
        batch_size=body.get("batch_size", 1),
        batch_count=body.get("n_iter", 1),
        clip_skip=settings.get("CLIP_stop_at_last_layers", 1) or 1,
        vae=None if vae in (None, "", "Automatic", "None") else vae,
        controlnets=controlnet_units(body, inputs, img2img, family, pixels),
        **extra,
    )  # fmt: skip
    size = [
        v if isinstance(v, int) else family.default_size for v in (request.width, request.height)
    ]
    resize_controls(inputs, *size)
    task_id = body.get("force_task_id") or None
    echo = {k: v for k, v in body.items() if k not in ("init_images", "mask")}
    if img2img:
        echo.update(init_images=None, mask=None)
    if unknown:
        log.info("A1111 %s: fields ignored: %s", "img2img" if img2img else "txt2img", unknown)
    return Payload(
        request,
        inputs,
        bool(body.get("send_images", True)),
        task_id,
        echo,
        [f"{name}: not a field or option Atelier knows; ignored" for name in unknown],
    )


def _seed(value: Any) -> Any:
    return -1 if value is None else value


def _overrides(value: Any, ignored: list[str]) -> dict[str, Any]:
    from ui.a1111.options import check_options

    if value in (None, {}):
        return {}
    if not isinstance(value, Mapping):
        raise RequestError("override_settings", "must be an object of option: value")
    return check_options(value, ignored=ignored)


def _image_to_image(body: Mapping[str, Any], inputs: Any, pixels: int) -> dict[str, Any]:
    """init_images, mask and the inpainting fields -> Inputs and request fields."""
    images = body.get("init_images")
    if not isinstance(images, list) or not images:
        raise RequestError("init_images", "img2img needs one base64 image in init_images")
    if len(images) > 1:
        raise RequestError("init_images", f"one image per request here, got {len(images)}")
    inputs.init_image = decode_image("init_images[0]", images[0], pixels)
    out: dict[str, Any] = {"strength": body.get("denoising_strength", 0.75)}
    if body.get("mask") in (None, ""):
        return out
    mask = decode_image("mask", body["mask"], pixels).convert("L")
    if body.get("inpainting_mask_invert", 0) not in (0, 1, False, True):
        raise RequestError("inpainting_mask_invert", "must be 0 or 1")
    if body.get("inpainting_mask_invert"):
        mask = ImageOps.invert(mask)
    fill = body.get("inpainting_fill", 0)
    if fill not in (0, 1):
        raise RequestError("inpainting_fill", f"0 (fill) or 1 (original) here, got {fill!r}")
    if fill == 0 and mask.size == inputs.init_image.size:
        inputs.init_image = fill_masked(inputs.init_image, mask)
    inputs.mask_image = mask
    blur = body.get("mask_blur")
    if blur is None:
        blur = body.get("mask_blur_x", 4)
    masked = body.get("inpaint_full_res", True)
    if masked not in (0, 1, True, False):
        raise RequestError("inpaint_full_res", f"must be true or false, got {masked!r}")
    out.update(mask_blur=blur, inpaint_area="masked" if masked else "whole",
               inpaint_padding=body.get("inpaint_full_res_padding", 0))  # fmt: skip
    return out


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill" start for inpainting: the masked area painted with the colours
    around it, blurred ever less (wide blurs first, so far areas get an average)."""
    rgb = image.convert("RGB")
    keep = ImageOps.invert(mask)
    known = Image.new("RGBa", rgb.size)  # premultiplied: blurring spreads colour, not black
    known.paste(rgb.convert("RGBA").convert("RGBa"), mask=keep)
    painted = Image.new("RGBA", rgb.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = known.filter(ImageFilter.GaussianBlur(radius)) if radius else known
        layer = layer.convert("RGBA")
        for _ in range(repeats):
            painted.alpha_composite(layer)
    out = painted.convert("RGB")
    out.paste(rgb, mask=keep)
    return out


# -- /sdapi/v1/extra-single-image (A1111's Extras tab, one image) --------------------
# The engine's names of an UpscaleJob's fields, as A1111's extras request names them.
EXTRAS_FIELDS = {"upscaler": "upscaler_1", "scale": "upscaling_resize",
                 "width": "upscaling_resize_w", "height": "upscaling_resize_h"}  # fmt: skip
# Extras steps Atelier does not run: refused unless off, never silently skipped.
EXTRAS_OFF = ("gfpgan_visibility", "codeformer_visibility", "extras_upscaler_2_visibility")


def extras_job(body: Any, max_pixels: int) -> tuple[Any, tuple[int, int] | None]:
    """The UpscaleJob of an A1111 ExtrasSingleImageRequest, and the (w, h) to crop its
    result to (resize_mode 1 with upscaling_crop: upscale to cover, then centre-crop,
    as A1111 does), or None. Nothing is saved: A1111's API does not save Extras
    results either. Raises RequestError naming A1111's field."""
    import math

    from pipelines.request import check_int, check_number
    from pipelines.upscale import MAX_SCALE
    from pipelines.upscale_job import MAX_SIDE, UpscaleJob, UpscaleRequest

    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    for name in EXTRAS_OFF:
        if body.get(name, 0) not in (0, None):
            raise RequestError(name, "face restoration and a second upscaler are not "
                               "available here: send 0")  # fmt: skip
    image = decode_image("image", body.get("image"), max_pixels)
    upscaler = body.get("upscaler_1") or "None"
    if not isinstance(upscaler, str):
        raise RequestError("upscaler_1", f"must be an upscaler name, got {upscaler!r}")
    mode = body.get("resize_mode", 0)
    if mode == 0:
        scale = body.get("upscaling_resize", 2.0)
        check_number("upscaling_resize", scale, 0, MAX_SCALE)  # the engine: above 0 too
        request = UpscaleRequest(upscaler, scale=float(scale))
        return UpscaleJob(request, image), None
    if mode != 1:
        raise RequestError("resize_mode", "must be 0 (scale by upscaling_resize) or 1 (to "
                           f"upscaling_resize_w x upscaling_resize_h), got {mode!r}")  # fmt: skip
    w, h = body.get("upscaling_resize_w", 512), body.get("upscaling_resize_h", 512)
    check_int("upscaling_resize_w", w, 1, MAX_SIDE)
    check_int("upscaling_resize_h", h, 1, MAX_SIDE)
    if not body.get("upscaling_crop", True):
        return UpscaleJob(UpscaleRequest(upscaler, width=w, height=h), image), None
    cover = max(w / image.width, h / image.height)
    size = (max(w, math.ceil(image.width * cover)), max(h, math.ceil(image.height * cover)))
    request = UpscaleRequest(upscaler, width=size[0], height=size[1])
    return UpscaleJob(request, image), (w, h)
