"""The Generate tab's Hires fix accordion, and the translation of its values (and the
Styles accordion's) into request fields: plain functions, tested without a server.

The studio form (ui.form) knows the fields of earlier issues; the fields of issue 14
travel beside it under the "extras" key of the tab's values, and `apply_extras`
puts them into the form's request (`split_extras` takes them out first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr

EXTRAS = "extras"
# Widget name -> request field (the API's keyword names too).
HIRES_FIELDS = {
    "enable_hr": "enable_hr",
    "hr_upscaler": "hr_upscaler",
    "hr_scale": "hr_scale",
    "hr_second_pass_steps": "hr_second_pass_steps",
    "denoising_strength": "strength",
    "hr_resize_x": "hr_resize_x",
    "hr_resize_y": "hr_resize_y",
    "hr_sampler_name": "hr_sampler_name",
    "hr_prompt": "hr_prompt",
    "hr_negative_prompt": "hr_negative_prompt",
}
SAME_SAMPLER = "Use same sampler"


def split_extras(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the form's own values, the extras) of the tab's values."""
    plain = {k: v for k, v in values.items() if k != EXTRAS}
    return plain, dict(values.get(EXTRAS) or {})


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def extras_fields(extras: Mapping[str, Any]) -> dict[str, Any]:
    """Request fields of the extras: styles always; hires fields only when it is on (so
    a closed, unchecked accordion changes nothing, not even the denoising strength)."""
    out: dict[str, Any] = {}
    styles = extras.get("styles")
    if styles:
        out["styles"] = tuple([styles] if isinstance(styles, str) else styles)
    if not extras.get("enable_hr"):
        return out
    for name, field in HIRES_FIELDS.items():
        value = extras.get(name)
        if value is None or (isinstance(value, str) and not value.strip() and field in (
                "hr_upscaler", "hr_sampler_name")):  # fmt: skip
            continue
        if field == "hr_sampler_name" and value == SAME_SAMPLER:
            value = None
        out[field] = _whole(value) if field in ("hr_second_pass_steps", "hr_resize_x",
                                                "hr_resize_y") else value  # fmt: skip
    return out


def apply_extras(request: Any, extras: Mapping[str, Any]) -> Any:
    """The form's request with the extras' fields."""
    fields = extras_fields(extras)
    return replace(request, **fields) if fields else request


@dataclass
class HiresPanel:
    widgets: dict[str, Any]  # HIRES_FIELDS' names -> component

    def inputs(self) -> set[Any]:
        return set(self.widgets.values())

    def values(self, data: Mapping[Any, Any]) -> dict[str, Any]:
        return {name: data[c] for name, c in self.widgets.items()}

    def restore_outputs(self) -> list[Any]:
        return list(self.widgets.values())

    def restore(self, request: Any) -> list[Any]:
        """Values for restore_outputs from a request (PNG Info's Send to Generate); a
        request without hires fix turns it off and leaves the other values as they are."""
        if not request.enable_hr:
            return [False if name == "enable_hr" else gr.skip() for name in self.widgets]
        values = {name: getattr(request, field) for name, field in HIRES_FIELDS.items()}
        values["hr_sampler_name"] = values["hr_sampler_name"] or SAME_SAMPLER
        return [values[name] for name in self.widgets]


def build_hires_panel(upscalers: list[str], samplers: list[str]) -> HiresPanel:
    """The accordion's contents (the caller opens the accordion, collapsed)."""
    from pipelines.hires import HR_SCALE_RANGE
    from pipelines.request import MAX_STEPS

    w: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        w["enable_hr"] = gr.Checkbox(False, label="Hires fix", elem_id="atelier-enable-hr",
                                     info="second pass: upscale, then image to image")  # fmt: skip
        w["hr_upscaler"] = gr.Dropdown(upscalers, value="Latent", label="Upscaler",
                                       elem_id="atelier-hr-upscaler")  # fmt: skip
    with gr.Row():
        w["hr_scale"] = gr.Slider(*HR_SCALE_RANGE, value=2.0, step=0.05, label="Upscale by",
                                  elem_id="atelier-hr-scale")  # fmt: skip
        w["hr_second_pass_steps"] = gr.Slider(0, MAX_STEPS, value=0, step=1,
                                              label="Hires steps (0 = same)",
                                              elem_id="atelier-hr-steps")  # fmt: skip
        w["denoising_strength"] = gr.Slider(0.0, 1.0, value=0.7, step=0.01,
                                            label="Denoising strength",
                                            elem_id="atelier-hr-denoising")  # fmt: skip
    with gr.Row():
        w["hr_resize_x"] = gr.Slider(0, 4096, value=0, step=8, label="Resize width to "
                                     "(0 = by scale)", elem_id="atelier-hr-resize-x")  # fmt: skip
        w["hr_resize_y"] = gr.Slider(0, 4096, value=0, step=8, label="Resize height to",
                                     elem_id="atelier-hr-resize-y")  # fmt: skip
        w["hr_sampler_name"] = gr.Dropdown([SAME_SAMPLER, *samplers], value=SAME_SAMPLER,
                                           label="Hires sampler",
                                           elem_id="atelier-hr-sampler")  # fmt: skip
    w["hr_prompt"] = gr.Textbox("", label="Hires prompt (blank = the prompt)", lines=1,
                                elem_id="atelier-hr-prompt")  # fmt: skip
    w["hr_negative_prompt"] = gr.Textbox("", label="Hires negative prompt (blank = the "
                                         "negative prompt)", lines=1,
                                         elem_id="atelier-hr-negative")  # fmt: skip
    return HiresPanel(w)


def api_inputs() -> dict[str, Any]:
    """The /generate endpoint's hidden inputs for styles and hires fix (A1111's names),
    created in the caller's Blocks; keyword names = the generate function's parameters."""
    from ui.components import WholeNumber

    return {
        "styles": gr.JSON(None, label='styles: names of the styles file\'s styles, applied in '
                          'order, e.g. ["photo", "moody"]; blank = none'),
        "enable_hr": gr.Checkbox(False, label="enable_hr: hires fix (a second, upscaled pass)"),
        "hr_scale": gr.Number(None, label="hr_scale: upscale by; blank = 2"),
        "hr_resize_x": WholeNumber(None, label="hr_resize_x: width to resize to; blank/0 = "
                                   "by hr_scale"),
        "hr_resize_y": WholeNumber(None, label="hr_resize_y: height to resize to; blank/0 = "
                                   "by hr_scale"),
        "hr_upscaler": gr.Textbox("", label="hr_upscaler: Latent, Latent (bicubic), ..., "
                                  "Lanczos, Nearest or an upscaler model; blank = Latent"),
        "hr_second_pass_steps": WholeNumber(None, label="hr_second_pass_steps: hires steps; "
                                            "blank/0 = steps"),
        "denoising_strength": gr.Number(None, label="denoising_strength: of the hires pass; "
                                        "blank = strength"),
        "hr_prompt": gr.Textbox("", label="hr_prompt: prompt of the hires pass; blank = prompt"),
        "hr_negative_prompt": gr.Textbox("", label="hr_negative_prompt: blank = negative_prompt"),
        "hr_sampler_name": gr.Textbox("", label="hr_sampler_name: sampler of the hires pass; "
                                      "blank = the same"),
    }  # fmt: skip
