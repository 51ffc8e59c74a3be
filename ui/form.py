"""Widget values <-> GenerationRequest, and widget specs from the engine's data.

Pure functions (no gradio, no torch), so the translation the studio and the
API share is unit-tested without a server. Nothing here rounds or repairs a
value: a slider's 20.0 becomes 20, but 20.5 steps reaches the engine's
validation and comes back as a RequestError naming the field.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from pipelines import images
from pipelines.errors import RequestError
from pipelines.families import Family
from pipelines.request import (
    LORA_WEIGHT_RANGE,
    MAX_BATCH_COUNT,
    MAX_BATCH_SIZE,
    MAX_CFG,
    MAX_STEPS,
    ControlUnit,
    GenerationRequest,
)

# Widget name -> request field. The widget names are also the API's keyword names.
FIELDS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "model": "model",
    "scheduler": "scheduler",
    "steps": "num_inference_steps",
    "cfg": "guidance_scale",
    "width": "width",
    "height": "height",
    "seed": "seed",
    "batch_size": "batch_size",
    "batch_count": "batch_count",
    "loras": "loras",
    "strength": "strength",
    "mask_blur": "mask_blur",
    "inpaint_area": "inpaint_area",
    "inpaint_padding": "inpaint_padding",
    "controlnets": "controlnets",
    "clip_skip": "clip_skip",
    "vae": "vae",
}
# The Image to image / Inpaint area's modes (a radio: an image lying in the editor
# must not silently turn text-to-image into image-to-image).
IMAGE_MODES = ("off", "img2img", "inpaint")
# A ControlNet unit's widgets, by the names of ControlUnit's fields where they have one.
UNIT_FIELDS = ("enabled", "image", "module", "model", "weight", "guidance_start",
               "guidance_end", "low_threshold", "high_threshold")  # fmt: skip
CFG_STEP = 0.5
MAX_PIXELS = images.DEFAULT_MAX_PIXELS  # callers pass the engine's max_image_pixels
LORA_WEIGHT_STEP = 0.05


def whole(value: Any) -> Any:
    """20.0 -> 20 (sliders and JSON numbers arrive as floats); anything else unchanged,
    so the engine's validation reports it with its rule."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def blank(value: Any) -> bool:
    """No value given: None or only spaces."""
    return value is None or (isinstance(value, str) and not value.strip())


def parse_loras(value: Any) -> dict[str, float]:
    """LoRAs as the API accepts them: a dict name -> weight, its JSON text, or empty."""
    if blank(value):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RequestError(
                "loras",
                f'must be a JSON object of LoRA name to weight, e.g. {{"detail": 0.8}}, '
                f"got {value!r}",
            ) from None
    if isinstance(value, Sequence) and not isinstance(value, str):
        with contextlib.suppress(TypeError, ValueError):  # not pairs: reported below
            value = dict(value)  # [[name, weight], ...] as a Dataframe sends it
    if not isinstance(value, Mapping):
        raise RequestError("loras", f"must be a mapping of LoRA name to weight, got {value!r}")
    return {str(k): v for k, v in value.items()}


def loras_from_slots(names: Sequence[str | None], weights: Sequence[Any]) -> dict[str, float]:
    """The picker's rows (name, weight) as the request's mapping; empty rows skipped."""
    return {n: w for n, w in zip(names, weights, strict=True) if not blank(n)}


def request_from_widgets(values: Mapping[str, Any]) -> GenerationRequest:
    """A request from widget values keyed by FIELDS' names. Missing or blank optional
    values mean "the model family's default"; seed blank means random (-1)."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise RequestError(sorted(unknown)[0], f"unknown field; known: {', '.join(FIELDS)}")
    kwargs: dict[str, Any] = {"prompt": values.get("prompt") or ""}
    kwargs["negative_prompt"] = values.get("negative_prompt") or ""
    for name in ("model", "scheduler"):
        value = values.get(name)
        kwargs[FIELDS[name]] = None if blank(value) else value
    for name in ("steps", "width", "height"):
        value = values.get(name)
        kwargs[FIELDS[name]] = None if blank(value) else whole(value)
    cfg = values.get("cfg")
    kwargs["guidance_scale"] = None if blank(cfg) else cfg
    seed = values.get("seed")
    kwargs["seed"] = -1 if blank(seed) else whole(seed)
    for name in ("batch_size", "batch_count"):
        value = values.get(name)
        kwargs[name] = 1 if blank(value) else whole(value)
    kwargs["loras"] = parse_loras(values.get("loras"))
    if not blank(values.get("strength")):
        kwargs["strength"] = values["strength"]
    if not blank(values.get("mask_blur")):
        kwargs["mask_blur"] = whole(values["mask_blur"])
    if not blank(values.get("inpaint_area")):
        kwargs["inpaint_area"] = values["inpaint_area"]
    if not blank(values.get("inpaint_padding")):
        kwargs["inpaint_padding"] = whole(values["inpaint_padding"])
    vae = values.get("vae")
    kwargs["vae"] = None if blank(vae) or vae == "Automatic" else vae
    if not blank(values.get("clip_skip")):
        kwargs["clip_skip"] = whole(values["clip_skip"])
    kwargs["controlnets"] = parse_controlnets(values.get("controlnets"))
    return GenerationRequest(**kwargs)


def parse_controlnets(value: Any) -> tuple[ControlUnit, ...]:
    """ControlNet units as the API accepts them: a list of unit dicts (ControlUnit's
    fields: model, module, weight, guidance_start, guidance_end, low_threshold,
    high_threshold), its JSON text, or empty."""
    if blank(value):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RequestError(
                "controlnets",
                'must be a JSON list of units, e.g. [{"model": "tiny-sd-controlnet", '
                f'"module": "canny"}}], got {value!r}',
            ) from None
    if isinstance(value, Mapping):
        value = [value]  # one unit on its own
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise RequestError("controlnets", f"must be a list of ControlNet units, got {value!r}")
    return tuple(ControlUnit.from_value(typed_unit(u), i) for i, u in enumerate(value))


def typed_unit(unit: Any) -> Any:
    """A unit dict's numbers in the types the engine passes on: thresholds whole
    (a slider's 100.0 -> 100), weight and guidance float (JSON's 1 -> 1.0: diffusers
    refuses an int conditioning scale). Other values reach the engine's validation."""
    if not isinstance(unit, Mapping):
        return unit
    out = dict(unit)
    for key, value in unit.items():
        if key.endswith("threshold"):
            out[key] = whole(value)
        elif key in ("weight", "guidance_start", "guidance_end") and type(value) is int:
            out[key] = float(value)
    return out


@dataclass
class FormImages:
    """The images of a request (files, not JSON), as the engine's `Inputs` takes them."""

    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None
    control_images: list[Image.Image | None] = field(default_factory=list)

    def inputs(self) -> Any:
        from pipelines.tasks import Inputs  # torch: imported when a request runs

        return Inputs(self.init_image, self.mask_image, list(self.control_images))


@dataclass
class StudioForm:
    request: GenerationRequest
    images: FormImages
    unit_numbers: list[int]  # request unit k is the UI's unit unit_numbers[k] (1-based)


def open_image(field: str, value: Any, max_pixels: int = MAX_PIXELS) -> Image.Image | None:
    """The image a widget or client sends (a path, a file dict, bytes, PIL, numpy) opened
    by pipelines.images.open_image (pixel limit checked before decoding; every bad file
    a RequestError naming `field`), or None when there is none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return images.open_image(field, value, max_pixels)


def painted_mask(
    layers: Sequence[Any], size: tuple[int, int], max_pixels: int = MAX_PIXELS
) -> Image.Image | None:
    """White where any editor layer has paint (alpha > 0), black elsewhere, at `size`
    (the init image's): None when nothing is painted."""
    painted = None
    for layer in layers:
        image = open_image("mask_image", layer, max_pixels)
        if image is None:
            continue
        alpha = np.asarray(image.convert("RGBA").getchannel("A")) > 0
        if image.size != size:  # the canvas is shown scaled; the mask is for the image
            alpha = np.asarray(Image.fromarray(alpha).resize(size, Image.NEAREST))
        painted = alpha if painted is None else painted | alpha
    if painted is None or not painted.any():
        return None
    return Image.fromarray(painted.astype(np.uint8) * 255, "L")


def images_from_area(
    mode: str, editor: Any, mask_upload: Any, max_pixels: int = MAX_PIXELS
) -> tuple[Image.Image | None, Image.Image | None]:
    """(init image, mask) from the Image to image / Inpaint area.

    `editor` is gr.ImageEditor's value ({"background", "layers", "composite"}, each a
    file path, bytes or an image) or a plain image. An uploaded mask wins over paint; it
    is passed on as it is, so a mask of the wrong size is the engine's error, naming
    mask_image. Images are opened here (not by Gradio): see pipelines.images."""
    if blank(mode) or mode == "off":
        return None, None
    if mode not in IMAGE_MODES:
        raise RequestError("image_mode", f"must be one of {', '.join(IMAGE_MODES)}, got {mode!r}")
    layers: Sequence[Any] = []
    if isinstance(editor, Mapping):
        layers = editor.get("layers") or []
        editor = editor.get("background")
    init = open_image("init_image", editor, max_pixels)
    if init is None:
        raise RequestError("init_image", f"{mode} needs an image: upload one or send a result")
    init = init.convert("RGB")
    if mode == "img2img":
        return init, None
    mask = open_image("mask_image", mask_upload, max_pixels) or painted_mask(
        layers, init.size, max_pixels
    )
    if mask is None:
        raise RequestError("mask_image", "paint the area to repaint on the image, "
                           "or upload a mask (white = repaint)")  # fmt: skip
    return init, mask


def units_from_panel(
    units: Sequence[Mapping[str, Any]], max_pixels: int = MAX_PIXELS
) -> tuple[list[dict[str, Any]], list[Image.Image | None], list[int]]:
    """The enabled ControlNet units as request dicts, their images (a bad file names
    `controlnets[k].image`, k = the request's unit), and their UI numbers."""
    out, pictures, numbers = [], [], []
    for n, unit in enumerate(units, start=1):
        if not unit.get("enabled"):
            continue
        model = unit.get("model")
        if blank(model):
            raise RequestError(f"controlnets[{len(out)}].model",
                               f"ControlNet unit {n} is enabled: choose its model")  # fmt: skip
        fields_ = {k: unit[k] for k in UNIT_FIELDS[4:] if not blank(unit.get(k))}
        try:
            pictures.append(open_image(f"controlnets[{len(out)}].image", unit.get("image"),
                                       max_pixels))  # fmt: skip
        except RequestError as e:  # say which of the UI's units (some may be off)
            raise RequestError(e.field, f"ControlNet unit {n}: {e.rule}") from None
        out.append({"model": model, "module": unit.get("module") or "none", **fields_})
        numbers.append(n)
    return out, pictures, numbers


def studio_form(values: Mapping[str, Any], max_pixels: int = MAX_PIXELS) -> StudioForm:
    """Everything the Generate tab sends: FIELDS' names (without "controlnets"), plus
    "image_mode", "init_editor", "mask_upload" and "units" (dicts keyed by UNIT_FIELDS).
    `max_pixels`: the engine's `max_image_pixels` (every image is checked against it)."""
    area = ("image_mode", "init_editor", "mask_upload", "units")
    plain = {k: v for k, v in values.items() if k not in area}
    if "controlnets" in plain:
        raise RequestError("controlnets", "the studio form sends units, not controlnets")
    init, mask = images_from_area(values.get("image_mode", "off"), values.get("init_editor"),
                                  values.get("mask_upload"), max_pixels)  # fmt: skip
    units, control_images, numbers = units_from_panel(values.get("units") or [], max_pixels)
    request = request_from_widgets({**plain, "controlnets": units})
    return StudioForm(request, FormImages(init, mask, control_images), numbers)


def api_images(
    init_image: Any, mask_image: Any, control_images: Any, max_pixels: int = MAX_PIXELS
) -> FormImages:
    """The API's image arguments (paths, file dicts or images; control_images a list),
    each checked and opened; a bad file names its argument (`control_images[1]`)."""
    if isinstance(control_images, (str, Mapping)) or control_images is None:
        control_images = [] if blank(control_images) else [control_images]
    return FormImages(open_image("init_image", init_image, max_pixels),
                      open_image("mask_image", mask_image, max_pixels),
                      [open_image(f"control_images[{k}]", c, max_pixels)
                       for k, c in enumerate(control_images)])  # fmt: skip


def widgets_from_request(req: GenerationRequest) -> dict[str, Any]:
    """The widget values that reproduce `req` (PNG Info's "Send to Generate")."""
    return {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "model": req.model,
        "scheduler": req.scheduler,
        "steps": req.num_inference_steps,
        "cfg": req.guidance_scale,
        "width": req.width,
        "height": req.height,
        "seed": req.seed,
        "batch_size": req.batch_size,
        "batch_count": req.batch_count,
        "loras": dict(req.loras),
        "strength": req.strength,
        "mask_blur": req.mask_blur,
        "inpaint_area": req.inpaint_area,
        "inpaint_padding": req.inpaint_padding,
        "controlnets": [asdict(u) for u in req.controlnets],  # each one an enabled UI unit
        "clip_skip": req.clip_skip,
        "vae": req.vae or "Automatic",
    }


# Defaults on a CPU-only server (the studio says "CPU server: defaults reduced"): the
# family's own on a GPU. Measured here: tiny-wan at 832x480, 81 frames, 30 steps is
# hours on 2 cores; 320x176, 17 frames, 10 steps is seconds.
CPU_IMAGE_STEPS = 20
CPU_VIDEO = {"steps": 10, "frames": 17, "long_side": 320}


def for_device(family: Family, cpu_only: bool) -> Family:
    """`family` with defaults that fit the server: unchanged on a GPU; on a CPU-only
    server at most CPU_IMAGE_STEPS steps for images, and for video CPU_VIDEO's steps,
    frames and a picture whose long side is 320 px (aspect kept, on the size grid).
    Only the studio's starting values change; ranges and the API's defaults do not."""
    import dataclasses

    if not cpu_only:
        return family
    if family.kind != "video":
        return dataclasses.replace(family, default_steps=min(family.default_steps,
                                                             CPU_IMAGE_STEPS))  # fmt: skip
    w, h = family.default_size, family.default_height or family.default_size
    scale = min(1.0, CPU_VIDEO["long_side"] / max(w, h))
    m = family.size_multiple

    def fit(v: int) -> int:
        return max(family.min_size, int(v * scale) // m * m)

    return dataclasses.replace(
        family,
        default_steps=min(family.default_steps, CPU_VIDEO["steps"]),
        default_frames=min(family.default_frames, CPU_VIDEO["frames"]),
        default_size=fit(w),
        default_height=fit(h) if family.default_height else 0,
    )


def widget_specs(family: Family) -> dict[str, dict[str, Any]]:
    """Ranges, steps and defaults of the numeric widgets for a model family, from the
    engine's tables (families.py, request.py): the UI never hand-copies them."""
    size = {"minimum": family.min_size, "maximum": family.max_size,
            "step": family.size_multiple, "value": family.default_size}  # fmt: skip
    return {
        "steps": {"minimum": 1, "maximum": MAX_STEPS, "step": 1, "value": family.default_steps},
        "cfg": {"minimum": 0.0, "maximum": MAX_CFG, "step": CFG_STEP, "value": family.default_cfg},
        "width": dict(size),
        "height": dict(size),
        "batch_size": {"minimum": 1, "maximum": MAX_BATCH_SIZE, "step": 1, "value": 1},
        "batch_count": {"minimum": 1, "maximum": MAX_BATCH_COUNT, "step": 1, "value": 1},
    }


def lora_weight_spec(preferred: float | None = None) -> dict[str, Any]:
    lo, hi = LORA_WEIGHT_RANGE
    value = 1.0 if preferred is None else preferred
    return {"minimum": lo, "maximum": hi, "step": LORA_WEIGHT_STEP, "value": value}


def error_markdown(error: RequestError, unit_numbers: Sequence[int] = ()) -> str:
    """A RequestError as the box next to the controls shows it: field first, then the rule.
    `controlnets[k]` is named by the UI unit it came from (units may be skipped)."""
    name = error.field
    found = re.match(r"controlnets\[(\d+)\](.*)", name)
    if found and int(found.group(1)) < len(unit_numbers):
        name = f"ControlNet unit {unit_numbers[int(found.group(1))]}{found.group(2)}"
    return f"**{name}**: {error.rule}"


def family_updates(family: Family, specs: Mapping[str, dict[str, Any]],
                   sliders: Sequence[str]) -> list[Any]:  # fmt: skip
    """The sampler dropdown and the named sliders set to a family's choices and defaults
    (the Generate and Video tabs, on a model change). `specs`: widget_specs or video_specs."""
    import gradio as gr

    from pipelines.schedulers import available_schedulers

    return [gr.Dropdown(choices=available_schedulers(family), value=family.default_scheduler),
            *(gr.Slider(**specs[k]) for k in sliders)]  # fmt: skip
