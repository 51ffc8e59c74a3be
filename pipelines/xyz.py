"""X/Y/Z plot: axes, A1111's value syntax, and the cell requests of a plot.

    axes = [parse_axis("x", "steps: 10-20 [3]"), parse_axis("y", "sampler: Euler a, DPM++ 2M")]
    cells = plot_cells(base_request, axes)   # z outer, then y, then x (x changes fastest)

An axis is a kind (A1111's names: Seed, Steps, CFG Scale, Sampler, Checkpoint name,
VAE, Clip skip, Size, Denoising, Prompt S/R, Hires ..., plus LoRA weight and
ControlNet weight) and its values. Values are written as A1111 writes them:
comma-separated (CSV quoting for values holding commas), with ranges for numbers:
`1-5` (1,2,3,4,5), `1-10 (+2)` (1,3,5,7,9), `10-20 [3]` (10,15,20), and
`0.5-1.5 (+0.25)` for decimals. Prompt S/R: the first value is searched for in the
prompt and the negative prompt, and each value (the first included) replaces it.

Every value becomes a field of a GenerationRequest; a value that is no value of
its kind is a RequestError naming the axis before anything runs (the cells are then
validated by the image runner, also before anything runs: xyz_job.py).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import RequestError

MAX_VALUES = 64  # per axis
MAX_CELLS = 256  # per plot
AXIS_NAMES = ("x", "y", "z")

RE_INT_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
RE_INT_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*\])?\s*")
_F = r"[+-]?\s*\d+(?:\.\d*)?"
RE_FLOAT_RANGE = re.compile(rf"\s*({_F})\s*-\s*({_F})(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*")
RE_FLOAT_COUNT = re.compile(rf"\s*({_F})\s*-\s*({_F})(?:\s*\[(\d+(?:\.\d*)?)\s*\])?\s*")


@dataclass(frozen=True)
class AxisKind:
    label: str  # A1111's name, shown in the grid's labels
    value_type: str  # int | float | str | size
    apply: Callable[[Any, Any], Any]  # (request, value) -> request
    aliases: tuple[str, ...] = ()
    show_label: bool = True  # "Steps: 20"; Prompt S/R shows the value alone


def _set(name: str) -> Callable[[Any, Any], Any]:
    return lambda req, v: replace(req, **{name: v})


def _prompt_sr(req: Any, pair: tuple[str, str]) -> Any:
    search, value = pair
    return replace(req, prompt=req.prompt.replace(search, value),
                   negative_prompt=req.negative_prompt.replace(search, value))  # fmt: skip


def _size(req: Any, size: tuple[int, int]) -> Any:
    return replace(req, width=size[0], height=size[1])


def _lora_weight(req: Any, weight: float) -> Any:
    from .request import prompt_loras

    prompt, loras = prompt_loras(req.prompt, req.loras)
    if not loras:
        raise RequestError("loras", "the LoRA weight axis needs a LoRA in the request")
    return replace(req, prompt=prompt, loras=tuple((n, weight) for n, _ in loras))


def _cn_weight(req: Any, weight: float) -> Any:
    if not req.controlnets:
        raise RequestError("controlnets", "the ControlNet weight axis needs a ControlNet unit")
    return replace(req, controlnets=tuple(replace(u, weight=weight) for u in req.controlnets))


def _checkpoint(req: Any, name: str) -> Any:
    return replace(req, model=name)


def _vae(req: Any, name: str) -> Any:
    return replace(req, vae=None if name in ("", "Automatic", "None") else name)


def _hires_upscaler(req: Any, name: str) -> Any:
    return replace(req, hr_upscaler=name, enable_hr=True)


def _hires_steps(req: Any, steps: int) -> Any:
    return replace(req, hr_second_pass_steps=steps, enable_hr=True)


def _hires_scale(req: Any, scale: float) -> Any:
    return replace(req, hr_scale=scale, enable_hr=True)


def _hires_sampler(req: Any, name: str) -> Any:
    return replace(req, hr_sampler_name=name, enable_hr=True)


KINDS: tuple[AxisKind, ...] = (
    AxisKind("Seed", "int", _set("seed")),
    AxisKind("Steps", "int", _set("num_inference_steps")),
    AxisKind("CFG Scale", "float", _set("guidance_scale"), ("cfg", "cfg scale", "guidance")),
    AxisKind("Prompt S/R", "str", _prompt_sr, ("prompt sr", "prompt s/r", "sr"), False),
    AxisKind("Sampler", "str", _set("scheduler"), ("scheduler",)),
    AxisKind("Checkpoint name", "str", _checkpoint, ("model", "checkpoint")),
    AxisKind("VAE", "str", _vae),
    AxisKind("Clip skip", "int", _set("clip_skip")),
    AxisKind("Size", "size", _size),
    AxisKind("Denoising", "float", _set("strength"), ("denoising strength", "strength")),
    AxisKind("LoRA weight", "float", _lora_weight, ("lora",)),
    AxisKind("ControlNet weight", "float", _cn_weight, ("controlnet",)),
    AxisKind("Hires upscaler", "str", _hires_upscaler),
    AxisKind("Hires steps", "int", _hires_steps),
    AxisKind("Hires upscale", "float", _hires_scale, ("hires scale",)),
    AxisKind("Hires sampler", "str", _hires_sampler),
)  # fmt: skip
_BY_NAME = {n.lower(): k for k in KINDS for n in (k.label, *k.aliases)}
NOTHING = "Nothing"


def kind_of(name: str, field: str = "x") -> AxisKind:
    kind = _BY_NAME.get(name.strip().lower())
    if kind is None:
        names = ", ".join(k.label for k in KINDS)
        raise RequestError(field, f"unknown axis type {name!r}; types: {names}")
    return kind


@dataclass(frozen=True)
class Axis:
    kind: AxisKind
    values: tuple[Any, ...]
    text: str  # the values as typed (the grid's parameters)

    def label(self, value: Any) -> str:
        """A1111's cell label: "Steps: 20"; Prompt S/R: the replacement alone."""
        if self.kind.value_type == "size":
            shown = f"{value[0]}x{value[1]}"
        elif isinstance(value, tuple):
            shown = value[1]
        elif isinstance(value, float):
            shown = f"{value:g}"
        else:
            shown = str(value)
        return f"{self.kind.label}: {shown}" if self.kind.show_label else shown


def split_values(text: str) -> list[str]:
    """A1111's value list: CSV (so "a, b" in quotes stays one value), each stripped."""
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    return [v.strip() for row in rows for v in row if v.strip()]


def _ints(values: list[str], field: str) -> list[int]:
    out: list[int] = []
    for v in values:
        m, mc = RE_INT_RANGE.fullmatch(v), RE_INT_COUNT.fullmatch(v)
        try:
            if m is not None:
                step = int(m.group(3)) if m.group(3) is not None else 1
                if step == 0:
                    raise RequestError(field, f"{v!r}: a range step of 0 never ends")
                out += list(range(int(m.group(1).replace(" ", "")),
                                  int(m.group(2).replace(" ", "")) + 1, step))  # fmt: skip
            elif mc is not None:
                count = int(mc.group(3)) if mc.group(3) is not None else 1
                out += [int(x) for x in np.linspace(int(mc.group(1).replace(" ", "")),
                                                    int(mc.group(2).replace(" ", "")),
                                                    count).tolist()]  # fmt: skip
            else:
                out.append(int(v))
        except ValueError:
            raise RequestError(field, f"{v!r} is not a whole number or a range such as "
                               "1-5, 1-10 (+2) or 10-20 [3]") from None  # fmt: skip
        _check_count(out, field)
    return out


def _floats(values: list[str], field: str) -> list[float]:
    out: list[float] = []
    for v in values:
        m, mc = RE_FLOAT_RANGE.fullmatch(v), RE_FLOAT_COUNT.fullmatch(v)
        try:
            if m is not None:
                start, end = float(m.group(1).replace(" ", "")), float(m.group(2).replace(" ", ""))
                step = float(m.group(3)) if m.group(3) is not None else 1.0
                if step == 0:
                    raise RequestError(field, f"{v!r}: a range step of 0 never ends")
                if (end - start) / step > MAX_VALUES:
                    raise RequestError(field, f"{v!r} makes more than {MAX_VALUES} values")
                out += [round(x, 10) for x in np.arange(start, end + step, step).tolist()]
            elif mc is not None:
                start, end = (
                    float(mc.group(1).replace(" ", "")),
                    float(mc.group(2).replace(" ", "")),
                )
                count = int(float(mc.group(3))) if mc.group(3) is not None else 1
                out += [round(x, 10) for x in np.linspace(start, end, count).tolist()]
            else:
                out.append(float(v))
        except ValueError:
            raise RequestError(field, f"{v!r} is not a number or a range such as 0.5-1.5 "
                               "(+0.25) or 1-2 [5]") from None  # fmt: skip
        _check_count(out, field)
    return out


def _sizes(values: list[str], field: str) -> list[tuple[int, int]]:
    out = []
    for v in values:
        m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", v)
        if m is None:
            raise RequestError(field, f"{v!r} is not a size WIDTHxHEIGHT, e.g. 512x768")
        out.append((int(m.group(1)), int(m.group(2))))
    return out


def _check_count(values: list[Any], field: str) -> None:
    if len(values) > MAX_VALUES:
        raise RequestError(field, f"at most {MAX_VALUES} values per axis")


def parse_values(kind: AxisKind, text: str, field: str) -> tuple[Any, ...]:
    """An axis's values from A1111's syntax, typed for its kind."""
    if not isinstance(text, str):
        raise RequestError(field, f"values must be text, got {type(text).__name__}")
    raw = split_values(text)
    if not raw:
        raise RequestError(field, f"{kind.label}: give at least one value")
    if kind.value_type == "int":
        values: list[Any] = _ints(raw, field)
    elif kind.value_type == "float":
        values = _floats(raw, field)
    elif kind.value_type == "size":
        values = _sizes(raw, field)
    elif kind.label == "Prompt S/R":
        values = [(raw[0], v) for v in raw]
    else:
        values = raw
    _check_count(values, field)
    return tuple(values)


def make_axis(field: str, kind_name: str, values: str) -> Axis | None:
    """An axis from its type name and its values' text (None for "Nothing" or blank)."""
    if not kind_name or kind_name.strip().lower() in ("", "nothing", "none"):
        return None
    kind = kind_of(kind_name, field)
    return Axis(kind, parse_values(kind, values, field), values)


def parse_axis(field: str, spec: str) -> Axis | None:
    """An axis from "type: values" (the CLI's form), e.g. "steps: 10,20"."""
    name, sep, values = spec.partition(":")
    if not sep:
        raise RequestError(field, f"must be 'TYPE: VALUES', e.g. 'steps: 10,20', got {spec!r}")
    return make_axis(field, name, values)


@dataclass(frozen=True)
class Cell:
    request: Any
    index: tuple[int, int, int]  # (x, y, z) positions


def plot_cells(base: Any, axes: list[Axis | None]) -> list[Cell]:
    """Every cell's request: z outer, y, then x (x changes fastest), as A1111 runs them."""
    x, y, z = (list(axes) + [None, None, None])[:3]
    xs = x.values if x else (None,)
    ys = y.values if y else (None,)
    zs = z.values if z else (None,)
    if len(xs) * len(ys) * len(zs) > MAX_CELLS:
        rule = f"{len(xs)} x {len(ys)} x {len(zs)} cells; at most {MAX_CELLS} per plot"
        raise RequestError("x", rule)
    cells = []
    for k, zv in enumerate(zs):
        for j, yv in enumerate(ys):
            for i, xv in enumerate(xs):
                req = base
                for axis, value, field in ((x, xv, "x"), (y, yv, "y"), (z, zv, "z")):
                    if axis is not None:
                        try:
                            req = axis.kind.apply(req, value)
                        except RequestError as e:
                            raise RequestError(field, f"{axis.label(value)}: {e.rule}") from None
                cells.append(Cell(req, (i, j, k)))
    return cells


def plot_parameters(axes: list[Axis | None]) -> dict[str, str]:
    """A1111's grid keys: "Script: X/Y/Z plot, X Type: Steps, X Values: ..."."""
    params = {"Script": "X/Y/Z plot"}
    for name, axis in zip(AXIS_NAMES, axes, strict=False):
        if axis is not None:
            params[f"{name.upper()} Type"] = axis.kind.label
            params[f"{name.upper()} Values"] = axis.text.strip()
    return params
