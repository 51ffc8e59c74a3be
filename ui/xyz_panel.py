"""The Generate tab's Scripts accordion (X/Y/Z plot) and its handler: the form's request
is the plot's base, each axis a type and its values in A1111's syntax. The plot runs
as one job; its result (grids first, then every cell) fills the tab's gallery."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

AXES = ("x", "y", "z")
NOTHING = "Nothing"
VALUES_HINT = "e.g. 10-30 (+10) · 3, 5, 7 · Euler a, DPM++ 2M · 0.5-1.5 [5]"


def axis_types() -> list[str]:
    from pipelines.xyz import KINDS

    return [NOTHING, *(k.label for k in KINDS)]


def plot_axes(values: Mapping[str, Any]) -> tuple[Any, ...]:
    """Axes from `{x_type, x_values, y_type, ...}` (blank or Nothing = no axis)."""
    from pipelines.xyz import make_axis

    return tuple(make_axis(a, values.get(f"{a}_type") or NOTHING, values.get(f"{a}_values") or "")
                 for a in AXES)  # fmt: skip


def plot_job(ctx: Any, values: Mapping[str, Any], axes: Mapping[str, Any]) -> Any:
    """The XyzJob of the Generate form's values and the accordion's axes."""
    from pipelines.xyz_job import XyzJob
    from ui.generate_handlers import job_of

    image_job = job_of(ctx, values)
    return XyzJob(image_job.request, plot_axes(axes), image_job.inputs,
                  save_to=image_job.save_to)  # fmt: skip


def generate_plot(
    ctx: Any, values: Mapping[str, Any], axes: Mapping[str, Any], old_history: list,
    caller: str, progress: Callable[[Any], None] | None = None,
) -> Iterator[dict[str, Any]]:  # fmt: skip
    """The Generate tab's updates for a plot (ui.generate_handlers' names)."""
    from ui.generate_handlers import finished, job_updates

    yield from job_updates(lambda: ctx.manager.submit(plot_job(ctx, values, axes), caller),
                           lambda result: finished(ctx, result, old_history), progress)  # fmt: skip


@dataclass
class XyzPanel:
    widgets: dict[str, Any]  # x_type, x_values, ... -> component
    run: gr.Button

    def inputs(self) -> set[Any]:
        return set(self.widgets.values())

    def values(self, data: Mapping[Any, Any]) -> dict[str, Any]:
        return {name: data[c] for name, c in self.widgets.items()}


def build_xyz_panel() -> XyzPanel:
    """The accordion's contents (the caller opens it, collapsed)."""
    types = axis_types()
    widgets: dict[str, Any] = {}
    for axis, default in zip(AXES, ("Steps", NOTHING, NOTHING), strict=True):
        with gr.Row(equal_height=True):
            widgets[f"{axis}_type"] = gr.Dropdown(types, value=default, scale=2,
                                                  label=f"{axis.upper()} type",
                                                  elem_id=f"atelier-xyz-{axis}-type")  # fmt: skip
            name = f"{axis}_values"
            widgets[name] = gr.Textbox("", scale=5, label=f"{axis.upper()} values",
                                       placeholder=VALUES_HINT,
                                       elem_id=f"atelier-xyz-{axis}-values")  # fmt: skip
    run = gr.Button("Run X/Y/Z plot", variant="primary", elem_id="atelier-xyz-run")
    return XyzPanel(widgets, run)
