"""Widget values <-> GenerationRequest, and widget specs from the engine's data.

Pure functions (no gradio, no torch), so the translation the studio and the
API share is unit-tested without a server. Nothing here rounds or repairs a
value: a slider's 20.0 becomes 20, but 20.5 steps reaches the engine's
validation and comes back as a RequestError naming the field.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.errors import RequestError
from pipelines.families import Family
from pipelines.request import (
    LORA_WEIGHT_RANGE,
    MAX_BATCH_COUNT,
    MAX_BATCH_SIZE,
    MAX_CFG,
    MAX_STEPS,
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
}
CFG_STEP = 0.5
LORA_WEIGHT_STEP = 0.05


def _whole(field: str, value: Any) -> Any:
    """20.0 -> 20 (sliders and JSON numbers arrive as floats); anything else unchanged,
    so the engine's validation reports it with its rule."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def parse_loras(value: Any) -> dict[str, float]:
    """LoRAs as the API accepts them: a dict name -> weight, its JSON text, or empty."""
    if _blank(value):
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
    return {n: w for n, w in zip(names, weights, strict=True) if not _blank(n)}


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
        kwargs[FIELDS[name]] = None if _blank(value) else value
    for name in ("steps", "width", "height"):
        value = values.get(name)
        kwargs[FIELDS[name]] = None if _blank(value) else _whole(name, value)
    cfg = values.get("cfg")
    kwargs["guidance_scale"] = None if _blank(cfg) else cfg
    seed = values.get("seed")
    kwargs["seed"] = -1 if _blank(seed) else _whole("seed", seed)
    for name in ("batch_size", "batch_count"):
        value = values.get(name)
        kwargs[name] = 1 if _blank(value) else _whole(name, value)
    kwargs["loras"] = parse_loras(values.get("loras"))
    return GenerationRequest(**kwargs)


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
    }


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


def error_markdown(error: RequestError) -> str:
    """A RequestError as the box next to the controls shows it: field first, then the rule."""
    return f"**{error.field}**: {error.rule}"
