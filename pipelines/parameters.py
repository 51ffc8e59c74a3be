"""GenerationRequest <-> A1111 "parameters" text.

Written per image (its own seed, batch of one), so pasting any image's
infotext reproduces exactly that image. LoRAs are written twice, as A1111 does:
as `<lora:name:weight>` tags in the prompt and as `Lora hashes`.
"""

from __future__ import annotations

import re

from .errors import RequestError
from .infotext import format_infotext, lora_hashes_value, parse_infotext
from .request import ControlUnit, GenerationRequest, split_lora_tags
from .schedulers import SCHEDULERS

VERSION = "atelier-0.1.0"


def _num(value: float) -> str:
    return f"{value:g}" if float(value) != int(value) else str(int(value))


def infotext_for(
    req: GenerationRequest,
    seed: int,
    model_hash: str | None,
    lora_hashes: dict[str, str],
    task: str = "txt2img",
    controlnet_hashes: dict[str, str] | None = None,
    ti_hashes: dict[str, str] | None = None,
    vae_hash: str | None = None,
) -> str:
    """The infotext of one image of a resolved request (task from tasks.task_of)."""
    masked = task.startswith("inpaint") and req.inpaint_area == "masked"
    spec = next(s for s in SCHEDULERS if s.name == req.scheduler)
    tags = " ".join(f"<lora:{name}:{_num(w)}>" for name, w in req.loras)
    prompt = f"{req.prompt} {tags}".strip() if tags else req.prompt
    params: dict[str, object] = {
        "Steps": req.num_inference_steps,
        "Sampler": spec.a1111_sampler,
        "Schedule type": spec.schedule_type,
        "CFG scale": _num(req.guidance_scale or 0.0),
        "Seed": seed,
        "Size": f"{req.width}x{req.height}",
        "Model hash": model_hash,
        "Model": req.model,
        "VAE hash": vae_hash if req.vae else None,  # A1111's pair, after the model's
        "VAE": req.vae or None,
        "Clip skip": req.clip_skip if req.clip_skip > 1 else None,  # A1111 writes it from 2
        "Denoising strength": _num(req.strength)
        if task.startswith(("img2img", "inpaint"))
        else None,
        "Mask blur": req.mask_blur if task.startswith("inpaint") else None,
        "Inpaint area": "Only masked" if masked else None,
        "Masked area padding": req.inpaint_padding if masked else None,
    }
    for i, unit in enumerate(req.controlnets):
        params[f"ControlNet {i}"] = controlnet_value(
            unit, (controlnet_hashes or {}).get(unit.model)
        )
    params["Lora hashes"] = lora_hashes_value(list(lora_hashes.items())) if lora_hashes else None
    params["TI hashes"] = lora_hashes_value(list(ti_hashes.items())) if ti_hashes else None
    params["Version"] = VERSION
    return format_infotext(prompt, req.negative_prompt, params)


def controlnet_value(unit: ControlUnit, model_hash: str | None) -> str:
    """One unit in the A1111 ControlNet extension's infotext format."""
    model = f"{unit.model} [{model_hash[:8]}]" if model_hash else unit.model
    return (
        f"Module: {unit.module}, Model: {model}, Weight: {_num(unit.weight)}, "
        "Resize Mode: Just Resize, Processor Res: 512, "
        f"Threshold A: {unit.low_threshold}, Threshold B: {unit.high_threshold}, "
        f"Guidance Start: {_num(unit.guidance_start)}, Guidance End: {_num(unit.guidance_end)}, "
        "Pixel Perfect: False, Control Mode: Balanced"
    )


def parse_controlnet_value(text: str) -> ControlUnit:
    fields = dict(part.split(": ", 1) for part in text.split(", ") if ": " in part)
    model = re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", fields.get("Model", "")).strip()
    try:
        return ControlUnit(
            model=model,
            module=fields.get("Module", "none"),
            weight=float(fields.get("Weight", 1.0)),
            guidance_start=float(fields.get("Guidance Start", 0.0)),
            guidance_end=float(fields.get("Guidance End", 1.0)),
            low_threshold=int(float(fields.get("Threshold A", 100))),
            high_threshold=int(float(fields.get("Threshold B", 200))),
        )
    except ValueError:
        raise RequestError("ControlNet", f"unreadable unit {text!r}") from None


def _scheduler_name(sampler: str, schedule_type: str | None) -> str:
    names = {s.name for s in SCHEDULERS}
    if schedule_type and schedule_type != "Automatic":
        combined = f"{sampler} {schedule_type}"
        if combined in names:
            return combined
    return sampler


def request_from_infotext(text: str) -> GenerationRequest:
    """A request that reproduces the image the infotext describes (batch of one)."""
    prompt, negative, params = parse_infotext(text)
    prompt, loras = split_lora_tags(prompt)

    def get_int(key: str) -> int | None:
        if key not in params:
            return None
        try:
            return int(params[key])
        except ValueError:
            raise RequestError(key, f"must be a whole number, got {params[key]!r}") from None

    size = params.get("Size")
    width = height = None
    if size:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise RequestError("Size", f"must be WIDTHxHEIGHT, got {size!r}") from None
    cfg = params.get("CFG scale")
    try:
        guidance = float(cfg) if cfg is not None else None
    except ValueError:
        raise RequestError("CFG scale", f"must be a number, got {cfg!r}") from None
    req = GenerationRequest(
        prompt=prompt,
        negative_prompt=negative,
        model=params.get("Model") or None,
        scheduler=_scheduler_name(params["Sampler"], params.get("Schedule type"))
        if "Sampler" in params
        else None,
        num_inference_steps=get_int("Steps"),
        guidance_scale=guidance,
        width=width,
        height=height,
        seed=get_int("Seed") if "Seed" in params else -1,
        loras=loras,
        clip_skip=get_int("Clip skip") or 1,
        vae=params.get("VAE") or None,
        **_image_fields(params),
    )
    return req


def _image_fields(params: dict[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    try:
        if "Denoising strength" in params:
            out["strength"] = float(params["Denoising strength"])
        if "Mask blur" in params:
            out["mask_blur"] = int(params["Mask blur"])
        if params.get("Inpaint area") == "Only masked":
            out["inpaint_area"] = "masked"
            out["inpaint_padding"] = int(params.get("Masked area padding", 32))
    except ValueError:
        raise RequestError("Denoising strength", "must be a number") from None
    units = sorted((int(k.split()[1]), v) for k, v in params.items()
                   if re.fullmatch(r"ControlNet \d+", k))  # fmt: skip
    if units:
        out["controlnets"] = tuple(parse_controlnet_value(v) for _, v in units)
    return out
