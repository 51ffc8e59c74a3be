"""The generation request: one frozen, JSON-serialisable value, validated up front.

Field names follow diffusers' `__call__` (prompt, negative_prompt,
num_inference_steps, guidance_scale, width, height) plus the studio's own:
model, scheduler (A1111 name), seed (-1 = random), batch_size (images per
call), batch_count (calls) and loras (name -> weight).

`None` in model/scheduler/steps/cfg/size means "the model family's default";
`resolve_defaults` fills them in, and the result a user gets back always carries
the resolved request. Validation never rounds or falls back: it raises
`RequestError(field, rule)`.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from .errors import RequestError
from .families import Family

MAX_STEPS = 150
MAX_CFG = 30.0
MAX_BATCH_SIZE = 8
MAX_BATCH_COUNT = 100
MAX_PROMPT_CHARS = 10_000
MAX_SEED = 2**32 - 1
LORA_WEIGHT_RANGE = (-2.0, 2.0)
MAX_LORAS = 16
MAX_CONTROLNETS = 8
MAX_CLIP_SKIP = 12  # A1111's slider; the model's own layer count is checked when encoding
# Names of models and LoRAs: letters, digits, and . _ - (and one "/" for Hub ids).
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
LORA_TAG_RE = re.compile(r"<lora:([^<>]*)>")

# Short names accepted in JSON and job files, as the CLI and API spell them.
ALIASES = {
    "steps": "num_inference_steps",
    "cfg": "guidance_scale",
    "cfg_scale": "guidance_scale",
    "negative": "negative_prompt",
    "denoising_strength": "strength",  # A1111's name (img2img and the hires pass)
}


def fields_of(
    cls: type, data: Any, where: str, aliases: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """`data` (a JSON object) as keyword arguments of dataclass `cls`; an unknown key
    is a RequestError naming it (and `where` it was) with the known ones."""
    if not isinstance(data, Mapping):
        raise RequestError(where, "must be a JSON object")
    aliases = aliases or {}
    known = {f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        if name not in known:
            valid = ", ".join(sorted(known | set(aliases)))
            at = str(key) if where == "request" else where
            raise RequestError(at, f"unknown field; known fields: {valid}")
        kwargs[name] = value
    return kwargs


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit, as A1111's ControlNet extension names its fields."""

    model: str  # ControlNet name (built-in, controlnets folder, or Hub id)
    module: str = "none"  # preprocessor; "none" = the control image is the map
    weight: float = 1.0  # controlnet_conditioning_scale
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    low_threshold: int = 100  # canny thresholds (A1111 "Threshold A/B")
    high_threshold: int = 200

    @classmethod
    def from_value(cls, value: Any, i: int) -> ControlUnit:
        if isinstance(value, ControlUnit):
            return value
        if not isinstance(value, Mapping):
            raise RequestError(f"controlnets[{i}]", "must be an object with at least 'model'")
        kwargs = fields_of(cls, value, f"controlnets[{i}]")
        if "model" not in kwargs:
            raise RequestError(f"controlnets[{i}].model", "is required")
        return cls(**kwargs)


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    model: str | None = None
    scheduler: str | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    width: int | None = None
    height: int | None = None
    seed: int = -1
    batch_size: int = 1
    batch_count: int = 1
    # (name, weight) pairs; a dict is accepted and normalised.
    loras: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    # Image-to-image / inpainting (used when an init image is given to generate)
    strength: float = 0.75  # denoising strength, (0, 1]
    mask_blur: int = 4  # pixels of Gaussian blur on the inpainting mask
    inpaint_area: str = "whole"  # "whole" picture, or "masked": only a crop around the mask
    inpaint_padding: int = 32  # pixels around the mask's box when inpaint_area is "masked"
    controlnets: tuple[ControlUnit, ...] = field(default_factory=tuple)
    # A1111's clip skip: 1 = the text encoder's last layer, 2 = the penultimate, ...
    # (diffusers' own `clip_skip` is this minus one). SDXL: see the sdxl_clip_l_skip setting.
    clip_skip: int = 1
    # A VAE of the VAE folder by name (vaes.py); None or "Automatic" = the model's own.
    vae: str | None = None
    # A1111 styles by name (styles.py), applied in order; the resolved request carries
    # the expanded prompts and no styles.
    styles: tuple[str, ...] = field(default_factory=tuple)
    # Hires fix (hires.py), A1111's field names; its denoising strength is `strength`.
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0  # 0 = from hr_scale (or from the other side's ratio)
    hr_resize_y: int = 0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0 = the first pass's steps
    hr_prompt: str = ""  # blank = the prompt
    hr_negative_prompt: str = ""
    hr_sampler_name: str | None = None  # None = the first pass's sampler

    def __post_init__(self) -> None:
        from .styles import style_names

        object.__setattr__(self, "loras", lora_pairs(self.loras))
        object.__setattr__(self, "styles", style_names(self.styles))
        units = self.controlnets
        if isinstance(units, (Mapping, str)) or not isinstance(units, Iterable):
            raise RequestError("controlnets", "must be a list of ControlNet units")
        units = tuple(ControlUnit.from_value(u, i) for i, u in enumerate(units))
        object.__setattr__(self, "controlnets", units)

    # -- JSON ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["loras"] = dict(self.loras)
        d["controlnets"] = [asdict(u) for u in self.controlnets]
        return {k: v for k, v in d.items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationRequest:
        kwargs = fields_of(cls, data, "request", ALIASES)
        if "prompt" not in kwargs:
            raise RequestError("prompt", "is required")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RequestError("request", f"is not valid JSON: {e.msg} at char {e.pos}") from e
        return cls.from_dict(data)

    def image_count(self) -> int:
        return self.batch_size * self.batch_count


def lora_pairs(loras: Any) -> tuple[tuple[str, float], ...]:
    """A request's `loras` (a mapping or (name, weight) pairs) as a tuple of pairs."""
    if isinstance(loras, Mapping):
        loras = tuple(loras.items())
    if not isinstance(loras, Iterable) or isinstance(loras, str):
        raise RequestError("loras", "must be a mapping of LoRA name to weight")
    pairs = []
    for item in loras:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise RequestError("loras", "must be a mapping of LoRA name to weight")
        pairs.append((item[0], item[1]))
    return tuple(pairs)


def split_lora_tags(prompt: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """Take A1111 `<lora:name>` / `<lora:name:weight>` tags out of a prompt.

    Returns (prompt without tags, (name, weight) pairs). `<lora:name>` means weight
    1, as in A1111. Any other `<lora:...>` shape (`<lora:>`, `<lora:a:b:c>`, a
    weight that is no number) is an error naming the tag: sending it to the text
    encoder as words would silently do the wrong thing.
    """
    pairs = []
    for inner in LORA_TAG_RE.findall(prompt):
        parts = inner.split(":")
        name = parts[0].strip()
        try:
            if not name or len(parts) > 2:
                raise ValueError
            weight = float(parts[1]) if len(parts) == 2 else 1.0
        except ValueError:
            rule = f"<lora:{inner}> is not <lora:NAME> or <lora:NAME:WEIGHT> with a number"
            raise RequestError("prompt", rule) from None
        pairs.append((name, weight))
    clean = LORA_TAG_RE.sub("", prompt)
    clean = re.sub(r"[ \t]{2,}", " ", clean).strip()
    clean = re.sub(r"\s*,\s*(,\s*)+", ", ", clean).strip(" ,")
    return clean, tuple(pairs)


def prompt_loras(
    prompt: Any, loras: tuple[tuple[str, float], ...]
) -> tuple[Any, tuple[tuple[str, float], ...]]:
    """The prompt without its `<lora:...>` tags, and the LoRAs of tags and `loras`
    together (explicit weights win over tags of the same name). Shared by every
    request kind."""
    if not isinstance(prompt, str):
        return prompt, loras  # check_text reports it
    clean, tagged = split_lora_tags(prompt)
    merged = dict(tagged)
    merged.update(dict(loras))
    return clean, tuple(merged.items())


def chosen_seed(seed: int) -> int:
    """`seed`, or a random one for -1 (the result always carries the seed used)."""
    return secrets.randbelow(MAX_SEED + 1) if seed == -1 else seed


def check_common(prompt: Any, negative_prompt: Any, steps: Any, seed: Any,
                 loras: tuple[tuple[str, float], ...]) -> None:  # fmt: skip
    """The rules every request kind shares: prompts, steps, seed and LoRAs."""
    check_text("prompt", prompt)
    check_text("negative_prompt", negative_prompt)
    check_int("num_inference_steps", steps, 1, MAX_STEPS)
    if seed != -1:
        check_int("seed", seed, 0, MAX_SEED)
    if len(loras) > MAX_LORAS:
        raise RequestError("loras", f"at most {MAX_LORAS} LoRAs per request, got {len(loras)}")
    lo, hi = LORA_WEIGHT_RANGE
    for name, weight in loras:
        check_name("loras", name, "LoRA")
        check_number(f"loras[{name}]", weight, lo, hi)


def resolve_defaults(req: GenerationRequest, model: str, family: Family) -> GenerationRequest:
    """Fill every `None` with the family default and move prompt LoRA tags into `loras`."""
    prompt, loras = prompt_loras(req.prompt, req.loras)
    return replace(
        req,
        prompt=prompt,
        model=model,
        scheduler=req.scheduler or family.default_scheduler,
        num_inference_steps=req.num_inference_steps
        if req.num_inference_steps is not None
        else family.default_steps,
        guidance_scale=req.guidance_scale if req.guidance_scale is not None else family.default_cfg,
        width=req.width if req.width is not None else family.default_size,
        height=req.height if req.height is not None else family.default_size,
        loras=loras,
    )


def check_int(field_name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(field_name, f"must be a whole number from {lo} to {hi}, got {value!r}")
    if not lo <= value <= hi:
        raise RequestError(field_name, f"must be from {lo} to {hi}, got {value}")


def check_number(field_name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(field_name, f"must be a number from {lo:g} to {hi:g}, got {value!r}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise RequestError(field_name, f"must be a number from {lo:g} to {hi:g}, got {value!r}")


def check_text(field_name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise RequestError(field_name, f"must be text, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        rule = f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}"
        raise RequestError(field_name, rule)
    if "\x00" in value:
        raise RequestError(field_name, "must not contain NUL characters")


def check_name(field_name: str, value: Any, what: str) -> None:
    """Model and LoRA names are plain names, never paths."""
    if not isinstance(value, str) or not NAME_RE.match(value) or ".." in value:
        rule = (
            f"{value!r} is not a valid {what} name (letters, digits, '.', '_', '-'; "
            "no paths or '..')"
        )
        raise RequestError(field_name, rule)


def check_size(field_name: str, value: Any, family: Family) -> None:
    """A width or height: in the family's range and a multiple of its factor."""
    check_int(field_name, value, family.min_size, family.max_size)
    if value % family.size_multiple:
        rule = (
            f"must be a multiple of {family.size_multiple} for {family.label} models, got {value}"
        )
        raise RequestError(field_name, rule)


def validate(req: GenerationRequest, family: Family) -> None:
    """Check a resolved request against the rules of its model family.

    Model, scheduler and LoRA *existence* are checked by their owners (registry,
    scheduler table, LoRA library); this checks values and shapes.
    """
    check_common(req.prompt, req.negative_prompt, req.num_inference_steps, req.seed, req.loras)
    if family.name == "flux" and req.negative_prompt:
        raise RequestError("negative_prompt", "Flux models take no negative prompt; leave it empty")
    check_number("guidance_scale", req.guidance_scale, 0.0, MAX_CFG)
    for name in ("width", "height"):
        check_size(name, getattr(req, name), family)
    check_int("batch_size", req.batch_size, 1, MAX_BATCH_SIZE)
    check_int("batch_count", req.batch_count, 1, MAX_BATCH_COUNT)
    check_number("strength", req.strength, 0.0, 1.0)
    if req.strength <= 0:
        raise RequestError("strength", f"must be > 0 and <= 1, got {req.strength}")
    check_int("mask_blur", req.mask_blur, 0, 64)
    if req.inpaint_area not in ("whole", "masked"):
        raise RequestError("inpaint_area", f"must be 'whole' or 'masked', got {req.inpaint_area!r}")
    check_int("inpaint_padding", req.inpaint_padding, 0, 256)
    check_int("clip_skip", req.clip_skip, 1, MAX_CLIP_SKIP)
    if len(req.controlnets) > MAX_CONTROLNETS:
        rule = f"at most {MAX_CONTROLNETS} units, got {len(req.controlnets)}"
        raise RequestError("controlnets", rule)
    for i, unit in enumerate(req.controlnets):
        at = f"controlnets[{i}]"
        check_name(f"{at}.model", unit.model, "ControlNet")
        check_number(f"{at}.weight", unit.weight, 0.0, 2.0)
        check_number(f"{at}.guidance_start", unit.guidance_start, 0.0, 1.0)
        check_number(f"{at}.guidance_end", unit.guidance_end, 0.0, 1.0)
        if unit.guidance_start >= unit.guidance_end:
            rule = f"must be less than guidance_end ({unit.guidance_start} >= {unit.guidance_end})"
            raise RequestError(f"{at}.guidance_start", rule)
        check_int(f"{at}.low_threshold", unit.low_threshold, 0, 255)
        check_int(f"{at}.high_threshold", unit.high_threshold, 0, 255)
