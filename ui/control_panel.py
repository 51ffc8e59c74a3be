"""The ControlNet accordion: up to CONTROL_UNITS units, each with its image, a
preprocessor (with a preview of its control map), a ControlNet of the current
model's family, weight, guidance start/end and the canny thresholds.

Like the LoRA rows, a fixed number of units made once, so any event (PNG Info's
"Send to Generate" included) fills them with plain updates. The request is read
from them by `ui.form.units_from_panel`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import gradio as gr

from ui.components import ImageUpload
from ui.context import PREPROCESS_GROUP
from ui.form import UNIT_FIELDS, open_image

if TYPE_CHECKING:
    from pipelines.manager import PipelineManager

log = logging.getLogger(__name__)
CONTROL_UNITS = 3


def unit_defaults() -> dict[str, Any]:
    """ControlUnit's own defaults (the engine's), for the unit widgets."""
    from pipelines.request import ControlUnit

    return {f.name: f.default for f in fields(ControlUnit) if f.name != "model"}


def module_choices(manager: PipelineManager) -> tuple[list[tuple[str, str]], dict[str, str | None]]:
    """(label, name) for the preprocessor dropdown, and name -> why it is unavailable."""
    from pipelines.preprocess import availability

    why = availability(manager.settings.annotators_dir)
    labels = [(name if not reason else f"{name} (unavailable: {reason})", name)
              for name, reason in why.items()]  # fmt: skip
    return labels, why


def run_preprocessor(
    manager: PipelineManager,
    image: Any,
    module: str,
    width: Any,
    height: Any,
    low_threshold: Any = 100,
    high_threshold: Any = 200,
    seed: Any = 0,
    model: str | None = None,
) -> Any:
    """The control map the engine would use (pipelines.preprocess.run), for the preview
    button and the /preprocess endpoint. Errors are RequestErrors naming the field.
    `image`: a file path (or anything pipelines.images.open_image takes); it is opened
    after the other arguments are checked, and its header before its pixels."""
    from pipelines import preprocess
    from pipelines.errors import RequestError
    from pipelines.request import check_size

    if image is None or (isinstance(image, str) and not image.strip()):
        raise RequestError("image", "upload an image to preprocess")
    family = manager.registry.family_of(model or manager.settings.default_model)
    sizes = {}
    for name, value in (("width", width), ("height", height)):
        value = int(value) if isinstance(value, float) and value.is_integer() else value
        check_size(name, value, family)
        sizes[name] = value
    preprocess.check(module, manager.settings.annotators_dir, "module")
    thresholds = []
    for name, value in (("low_threshold", low_threshold), ("high_threshold", high_threshold)):
        if not isinstance(value, (int, float)) or not 0 <= value <= 255 or value != int(value):
            raise RequestError(name, f"must be a whole number from 0 to 255, got {value!r}")
        thresholds.append(int(value))
    picture = open_image("image", image, manager.settings.max_image_pixels)
    return preprocess.run(module, picture, sizes["width"], sizes["height"],
                          manager.settings.annotators_dir, *thresholds,
                          max(int(seed or 0), 0))  # fmt: skip


@dataclass
class ControlUnitWidgets:
    enabled: gr.Checkbox
    image: ImageUpload
    module: gr.Dropdown
    module_note: gr.Markdown
    preview: gr.Button
    control_map: gr.Image
    model: gr.Dropdown
    weight: gr.Slider
    guidance_start: gr.Slider
    guidance_end: gr.Slider
    low_threshold: gr.Slider
    high_threshold: gr.Slider

    def by_field(self) -> dict[str, Any]:
        """UNIT_FIELDS name -> component (what `ui.form.units_from_panel` reads)."""
        return {name: getattr(self, name) for name in UNIT_FIELDS}


@dataclass
class ControlPanel:
    units: list[ControlUnitWidgets]

    def inputs(self) -> list[Any]:
        return [c for u in self.units for c in u.by_field().values()]

    def values(self, data: dict[Any, Any]) -> list[dict[str, Any]]:
        """Per unit, UNIT_FIELDS name -> value, from an event's dict of inputs."""
        return [{n: data[c] for n, c in u.by_field().items()} for u in self.units]

    def model_outputs(self) -> list[gr.Dropdown]:
        return [u.model for u in self.units]

    def restore_outputs(self) -> list[Any]:
        return [c for u in self.units for n, c in u.by_field().items() if n != "image"]

    def restore(self, units: list[dict[str, Any]], choices: list[str]) -> list[Any]:
        """Updates for `restore_outputs`: the given units enabled (images are not in an
        infotext: the user adds them), the remaining units disabled."""
        defaults = unit_defaults()
        out: list[Any] = []
        for i in range(len(self.units)):
            unit = {**defaults, **units[i]} if i < len(units) else None
            if unit is None:
                out += [False, *(gr.skip() for _ in UNIT_FIELDS[2:])]
                continue
            model = unit["model"]
            listed = choices if model in choices else [*choices, model]  # engine says if wrong
            out += [True, unit["module"], gr.Dropdown(choices=listed, value=model),
                    *(unit[n] for n in UNIT_FIELDS[4:])]  # fmt: skip
        return out


def build_control_panel(
    manager: PipelineManager, family: str, context: list[Any], model: str | None = None
) -> ControlPanel:
    """Create the units in the current Blocks context and wire their own events.
    `context` = the Generate tab's [model, width, height, seed] (the preview's size)."""
    labels, why = module_choices(manager)
    models = manager.controlnets.names(family, model)
    defaults = unit_defaults()
    units = []
    with gr.Tabs():
        for i in range(CONTROL_UNITS):
            with gr.Tab(f"Unit {i + 1}", id=f"control-unit-{i}"):
                units.append(_build_unit(i, labels, models, defaults))
    panel = ControlPanel(units)

    def on_module(name: str) -> tuple[Any, Any, Any]:
        reason = why.get(name)
        note = gr.Markdown(f"⚠ {reason}", visible=True) if reason else gr.Markdown(visible=False)
        canny = name == "canny"
        return note, gr.Slider(visible=canny), gr.Slider(visible=canny)

    def make_preview(unit: ControlUnitWidgets) -> Any:
        def preview(data: dict[Any, Any]) -> Any:
            from pipelines.errors import RequestError

            model, width, height, seed = (data[c] for c in context)
            try:
                return run_preprocessor(manager, data[unit.image], data[unit.module], width,
                                        height, data[unit.low_threshold],
                                        data[unit.high_threshold], seed, model)  # fmt: skip
            except RequestError as e:
                raise gr.Error(str(e), print_exception=False) from None

        return preview

    for i, u in enumerate(units):
        u.preview.click(make_preview(u), {u.image, u.module, u.low_threshold, u.high_threshold,
                                          *context}, u.control_map,
                        api_name=f"control_preview_{i}", api_visibility="undocumented",
                        **PREPROCESS_GROUP)  # fmt: skip
        u.module.change(on_module, u.module, [u.module_note, u.low_threshold, u.high_threshold],
                        api_name=f"control_module_{i}", api_visibility="undocumented",
                        concurrency_limit=None)  # fmt: skip
        # Uploading a control image is the intent to use the unit: enable it.
        u.image.upload(lambda: True, None, u.enabled, api_name=f"control_enable_{i}",
                       api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
    return panel


def _build_unit(
    i: int, labels: list[tuple[str, str]], models: list[str], defaults: dict[str, Any]
) -> ControlUnitWidgets:
    prefix = f"atelier-control-{i}"
    enabled = gr.Checkbox(False, label="Enable", elem_id=f"{prefix}-enabled")
    with gr.Row():
        image = ImageUpload(label="Control image", type="filepath", image_mode=None,
                            format="png", sources=["upload", "clipboard"], height=220,
                            elem_id=f"{prefix}-image")  # fmt: skip
        control_map = gr.Image(label="Control map (preview)", interactive=False, format="png",
                               height=220, elem_id=f"{prefix}-map")  # fmt: skip
    with gr.Row(equal_height=True):
        module = gr.Dropdown(labels, value=defaults["module"], label="Preprocessor", scale=3,
                             elem_id=f"{prefix}-module")  # fmt: skip
        preview = gr.Button("Preview preprocessor", scale=1, elem_id=f"{prefix}-preview")
    # A row of its own: ControlNet names are long (control_v11p_sd15_canny) and were cut.
    model = gr.Dropdown(models, value=models[0] if models else None, label="ControlNet",
                        elem_id=f"{prefix}-model")  # fmt: skip
    module_note = gr.Markdown(visible=False, elem_id=f"{prefix}-note")
    with gr.Row():
        weight = gr.Slider(0.0, 2.0, value=defaults["weight"], step=0.05, label="Weight",
                           elem_id=f"{prefix}-weight")  # fmt: skip
        start = gr.Slider(0.0, 1.0, value=defaults["guidance_start"], step=0.01,
                          label="Guidance start", elem_id=f"{prefix}-start")  # fmt: skip
        end = gr.Slider(0.0, 1.0, value=defaults["guidance_end"], step=0.01,
                        label="Guidance end", elem_id=f"{prefix}-end")  # fmt: skip
    canny = defaults["module"] == "canny"
    with gr.Row():
        low = gr.Slider(1, 255, value=defaults["low_threshold"], step=1, visible=canny,
                        label="Canny low threshold", elem_id=f"{prefix}-low")  # fmt: skip
        high = gr.Slider(1, 255, value=defaults["high_threshold"], step=1, visible=canny,
                         label="Canny high threshold", elem_id=f"{prefix}-high")  # fmt: skip
    return ControlUnitWidgets(enabled, image, module, module_note, preview, control_map, model,
                              weight, start, end, low, high)  # fmt: skip
