"""Tasks: text-to-image, image-to-image, inpainting, each with or without ControlNet.

Every task pipeline is built from the cached base model's modules (the
constructor form: no weights loaded, no copies, no dtype cast; ENGINE_NOTES on
`from_pipe`), plus the request's ControlNet(s) from the slot's cache. Which
diffusers class runs a task is a table per family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, ImageFilter

from .errors import RequestError
from .loading import compose
from .request import GenerationRequest

# family -> task -> diffusers class
TASKS: dict[str, dict[str, str]] = {
    "sd15": {
        "txt2img": "StableDiffusionPipeline",
        "img2img": "StableDiffusionImg2ImgPipeline",
        "inpaint": "StableDiffusionInpaintPipeline",
        "txt2img+cn": "StableDiffusionControlNetPipeline",
        "img2img+cn": "StableDiffusionControlNetImg2ImgPipeline",
        "inpaint+cn": "StableDiffusionControlNetInpaintPipeline",
    },
    "sdxl": {
        "txt2img": "StableDiffusionXLPipeline",
        "img2img": "StableDiffusionXLImg2ImgPipeline",
        "inpaint": "StableDiffusionXLInpaintPipeline",
        "txt2img+cn": "StableDiffusionXLControlNetPipeline",
        "img2img+cn": "StableDiffusionXLControlNetImg2ImgPipeline",
        "inpaint+cn": "StableDiffusionXLControlNetInpaintPipeline",
    },
    "flux": {
        "txt2img": "FluxPipeline",
        "img2img": "FluxImg2ImgPipeline",
        "inpaint": "FluxInpaintPipeline",
    },
}


@dataclass
class Inputs:
    """The images of a request (not part of the JSON request: they are files)."""

    init_image: Image.Image | None = None
    mask_image: Image.Image | None = None  # white = repaint
    control_images: list[Image.Image | None] = field(default_factory=list)


def task_of(req: GenerationRequest, inputs: Inputs) -> str:
    base = "inpaint" if inputs.mask_image is not None else (
        "img2img" if inputs.init_image is not None else "txt2img")  # fmt: skip
    return f"{base}+cn" if req.controlnets else base


def check_inputs(req: GenerationRequest, inputs: Inputs, family: str, model: str) -> str:
    """Validate the images against the request; return the task name."""
    if inputs.mask_image is not None and inputs.init_image is None:
        raise RequestError("init_image", "inpainting needs an init image to paint into")
    if inputs.mask_image is not None and inputs.mask_image.size != inputs.init_image.size:
        w, h = inputs.init_image.size
        mw, mh = inputs.mask_image.size
        rule = f"must be the same size as init_image ({w}x{h}), got {mw}x{mh}"
        raise RequestError("mask_image", rule)
    for i, _unit in enumerate(req.controlnets):
        images = inputs.control_images
        if i >= len(images) or images[i] is None:
            raise RequestError(f"controlnets[{i}]", "needs a control image")
    task = task_of(req, inputs)
    if inputs.init_image is not None and int(req.num_inference_steps * req.strength) < 1:
        rule = (f"{req.strength} x {req.num_inference_steps} steps leaves no step to run; "
                "raise strength or steps")  # fmt: skip
        raise RequestError("strength", rule)
    if task not in TASKS.get(family, {}):
        what = "ControlNet" if req.controlnets else task
        raise RequestError("controlnets" if req.controlnets else "init_image",
                           f"{what} is not supported for model '{model}' ({family})")  # fmt: skip
    return task


def build(base: Any, family: str, task: str, scheduler: Any, controlnets: list[Any]) -> Any:
    """A pipeline object of the task's class over the base model's modules."""
    import diffusers

    cls = getattr(diffusers, TASKS[family][task])
    if not controlnets:
        return compose(cls, base, scheduler)
    return compose(cls, base, scheduler,
                   controlnet=controlnets[0] if len(controlnets) == 1 else controlnets)  # fmt: skip


def blurred_mask(mask: Image.Image, radius: int) -> Image.Image:
    mask = mask.convert("L")
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius else mask


def task_arguments(
    req: GenerationRequest, task: str, inputs: Inputs, control_maps: list[Image.Image]
) -> dict[str, Any]:
    """The arguments a task adds to the text-to-image call (shared with parity tests)."""
    size = (req.width, req.height)
    args: dict[str, Any] = {}
    if task.startswith(("img2img", "inpaint")):
        args["image"] = inputs.init_image.convert("RGB").resize(size, Image.LANCZOS)
        args["strength"] = req.strength
    if task.startswith("inpaint"):
        args["mask_image"] = blurred_mask(inputs.mask_image, req.mask_blur).resize(size)
    if req.controlnets:
        key = "image" if task == "txt2img+cn" else "control_image"
        units = req.controlnets
        one = len(units) == 1
        args[key] = control_maps[0] if one else control_maps
        scales = [float(u.weight) for u in units]  # diffusers rejects an int scale
        args["controlnet_conditioning_scale"] = scales[0] if one else scales
        args["control_guidance_start"] = [float(u.guidance_start) for u in units]
        args["control_guidance_end"] = [float(u.guidance_end) for u in units]
    return args


def dtype_of(pipe: Any) -> torch.dtype:
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    return denoiser.dtype


def masked_crop(
    mask: Image.Image, padding: int, width: int, height: int
) -> tuple[int, int, int, int]:
    """The box A1111's "only masked" inpaints: the mask's bounding box plus `padding`,
    grown to the request's aspect ratio and clipped to the image."""
    box = mask.convert("L").point(lambda v: 255 if v else 0).getbbox()
    if box is None:
        raise RequestError("mask_image", "is empty: paint the area to repaint in white")
    W, H = mask.size
    x0, y0, x1, y1 = box[0] - padding, box[1] - padding, box[2] + padding, box[3] + padding
    w, h = x1 - x0, y1 - y0
    ratio = width / height
    if w / h < ratio:  # too tall: widen around the centre
        grow = round(h * ratio) - w
        x0, x1 = x0 - grow // 2, x1 + grow - grow // 2
    else:  # too wide: heighten
        grow = round(w / ratio) - h
        y0, y1 = y0 - grow // 2, y1 + grow - grow // 2
    # shift into the image where possible, then clip
    dx = max(0, -x0) - max(0, x1 - W)
    dy = max(0, -y0) - max(0, y1 - H)
    x0, x1, y0, y1 = x0 + dx, x1 + dx, y0 + dy, y1 + dy
    return max(0, x0), max(0, y0), min(W, x1), min(H, y1)


def crop_inputs(req: GenerationRequest, inputs: Inputs) -> tuple[Inputs, tuple[int, int, int, int]]:
    """Inputs cut to the "only masked" box (control images too, as the same region)."""
    box = masked_crop(blurred_mask(inputs.mask_image, req.mask_blur), req.inpaint_padding,
                      req.width, req.height)  # fmt: skip
    size = inputs.init_image.size

    def cut(im: Image.Image | None) -> Image.Image | None:
        return None if im is None else im.resize(size).crop(box)

    return Inputs(inputs.init_image.crop(box), inputs.mask_image.crop(box),
                  [cut(c) for c in inputs.control_images]), box  # fmt: skip


def paste_back(
    generated: Image.Image, inputs: Inputs, box: tuple[int, int, int, int], blur: int
) -> Image.Image:
    """The generated crop scaled back into its box, blended through the blurred mask."""
    out = inputs.init_image.convert("RGB").copy()
    w, h = box[2] - box[0], box[3] - box[1]
    patch = generated.convert("RGB").resize((w, h), Image.LANCZOS)
    alpha = blurred_mask(inputs.mask_image, blur).crop(box)
    out.paste(patch, box[:2], alpha)
    return out
