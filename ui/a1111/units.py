"""ControlNet units of an A1111 body, as the sd-webui-controlnet extension sends them in
`alwayson_scripts.controlnet.args`, -> the engine's units and control images.

Per unit: `image` (base64, or {"image": ...}; none in img2img = the init image, as the
extension does), `model` (A1111's "name [hash]" title accepted), `module`, `weight`,
`guidance_start`/`guidance_end`, `threshold_a`/`threshold_b` (canny's low/high),
`resize_mode` (Just Resize, Crop and Resize, Resize and Fill). `enabled: false` units
are left out; `control_mode` other than Balanced, a unit `mask`, and other always-on
scripts with arguments are refused (422 naming the field).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from PIL import Image, ImageOps

from pipelines.errors import RequestError
from ui.a1111.payload import decode_image, model_name

CONTROL_NEUTRAL = {"control_mode": (None, 0, "Balanced"), "mask": (None, ""),
                   "hr_option": (None, "Both", "Low res only", "High res only")}  # fmt: skip
RESIZE_MODES = {None: "just", 0: "just", "Just Resize": "just", 1: "crop",
                "Crop and Resize": "crop", "Inner Fit (Scale to Fit)": "crop", 2: "fill",
                "Resize and Fill": "fill", "Outer Fit (Shrink to Fit)": "fill"}  # fmt: skip


def controlnet_units(body: Mapping[str, Any], inputs: Any, img2img: bool, family: Any,
                      pixels: int) -> list[dict[str, Any]]:  # fmt: skip
    """`alwayson_scripts.controlnet.args` (sd-webui-controlnet's unit objects) -> units,
    and their images into `inputs.control_images`. Other always-on scripts: 422."""
    scripts = body.get("alwayson_scripts") or {}
    if not isinstance(scripts, Mapping):
        raise RequestError("alwayson_scripts", "must be an object of script name: {args}")
    units: list[dict[str, Any]] = []
    for name, script in scripts.items():
        args = script.get("args", []) if isinstance(script, Mapping) else None
        if str(name).lower() != "controlnet":
            if args:  # an empty or missing args list asks nothing of the script
                raise RequestError(f"alwayson_scripts.{name}", "always on script not found; "
                                   "only controlnet is available")  # fmt: skip
            continue
        if not isinstance(args, list):
            raise RequestError("alwayson_scripts.controlnet.args", "must be a list of units")
        for raw in args:
            i = len(units)
            at = f"alwayson_scripts.controlnet.args[{i}]"
            if not isinstance(raw, Mapping):
                raise RequestError(at, "must be a ControlNet unit object")
            if not raw.get("enabled", True):
                continue
            units.append(_unit(raw, at, inputs, img2img, pixels))
    return units


def _unit(raw: Mapping[str, Any], at: str, inputs: Any, img2img: bool, pixels: int
          ) -> dict[str, Any]:  # fmt: skip
    for key, neutral in CONTROL_NEUTRAL.items():
        if raw.get(key) not in neutral:
            raise RequestError(f"{at}.{key}", f"not available in Atelier; got {raw.get(key)!r}")
    if raw.get("resize_mode") not in RESIZE_MODES:
        valid = ", ".join(repr(k) for k in RESIZE_MODES if k is not None)
        raise RequestError(f"{at}.resize_mode", f"must be one of {valid}")
    image = raw.get("image") if raw.get("image") not in (None, "") else raw.get("input_image")
    if isinstance(image, Mapping):
        image = image.get("image")
    if image in (None, ""):
        if not img2img:
            raise RequestError(f"{at}.image", "a ControlNet unit needs an image in txt2img")
        control = inputs.init_image
    else:
        control = decode_image(f"{at}.image", image, pixels)
    inputs.control_images.append((control, RESIZE_MODES[raw.get("resize_mode")]))
    model = raw.get("model")
    if model in (None, "", "None"):
        raise RequestError(f"{at}.model", "is required: a ControlNet from /controlnet/model_list")
    module = raw.get("module") or "none"
    unit = {"model": model_name(model, f"{at}.model"), "module": module,
            "weight": raw.get("weight", 1.0),
            "guidance_start": raw.get("guidance_start", 0.0),
            "guidance_end": raw.get("guidance_end", 1.0)}  # fmt: skip
    if module == "canny":  # threshold_a/b are canny's low/high here; other modules' differ
        for key, ours in (("threshold_a", "low_threshold"), ("threshold_b", "high_threshold")):
            value = raw.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
                unit[ours] = round(value)
    return unit


def resize_controls(inputs: Any, width: int, height: int) -> None:
    """Control images as the unit's resize_mode says, at the request's size: "just" is
    left to the engine (it stretches), "crop" fits by cropping, "fill" pads with black."""
    out = []
    for item in inputs.control_images:
        image, mode = item if isinstance(item, tuple) else (item, "just")
        if mode == "crop":
            image = ImageOps.fit(image.convert("RGB"), (width, height), Image.LANCZOS)
        elif mode == "fill":
            image = ImageOps.pad(image.convert("RGB"), (width, height), Image.LANCZOS)
        out.append(image)
    inputs.control_images = out
