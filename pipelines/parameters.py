"""GenerationRequest <-> A1111 "parameters" text.

Written per image (its own seed, batch of one), so pasting any image's
infotext reproduces exactly that image. LoRAs are written twice, as A1111 does:
as `<lora:name:weight>` tags in the prompt and as `Lora hashes`.
"""

from __future__ import annotations

from .errors import RequestError
from .infotext import format_infotext, lora_hashes_value, parse_infotext
from .request import GenerationRequest, split_lora_tags
from .schedulers import SCHEDULERS

VERSION = "atelier-0.1.0"


def _num(value: float) -> str:
    return f"{value:g}" if float(value) != int(value) else str(int(value))


def infotext_for(
    req: GenerationRequest,
    seed: int,
    model_hash: str | None,
    lora_hashes: dict[str, str],
) -> str:
    """The infotext of one image of a resolved request."""
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
        "Lora hashes": lora_hashes_value(list(lora_hashes.items())) if lora_hashes else None,
        "Version": VERSION,
    }
    return format_infotext(prompt, req.negative_prompt, params)


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
    )
    return req
