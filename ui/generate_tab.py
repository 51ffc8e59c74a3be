"""The Generate tab: prompt, model and sampler settings, LoRAs, results, history.

Layout and wiring only: the handlers are plain functions in ui/generate_handlers.py
(widget values go through `ui.form` into a GenerationRequest, the engine runs it as
a job, and the result comes back as PNG files, with their infotext, in the gallery).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from pipelines.request import MAX_CLIP_SKIP
from ui import generate_handlers as handlers
from ui.context import StudioContext
from ui.control_panel import ControlPanel, build_control_panel
from ui.form import for_device, loras_from_slots, widget_specs
from ui.hires_panel import HiresPanel, build_hires_panel
from ui.img2img_panel import Img2ImgPanel, build_img2img_panel
from ui.lora_panel import LoraPanel, build_lora_panel
from ui.runner import gpu, gpu_seconds, progress_text, unit_of
from ui.styles_panel import build_styles_panel
from ui.xyz_panel import build_xyz_panel, generate_plot, plot_job

if TYPE_CHECKING:
    from pipelines.manager import PipelineManager

log = logging.getLogger(__name__)


@dataclass
class GenerateTab:
    blocks: gr.Blocks
    widgets: dict[str, Any]  # form name (ui.form.FIELDS) -> component; loras excluded
    loras: LoraPanel
    img2img: Img2ImgPanel
    control: ControlPanel
    gallery: gr.Gallery
    selected: gr.State  # path of the selected result image
    send_to_pnginfo: gr.Button
    event: Any  # the generation event (Stop cancels it)
    sections: dict[str, gr.Accordion]  # "img2img", "controlnet": opened when restored
    hires: HiresPanel | None = None  # the Hires fix accordion (ui/hires_panel.py)

    def restore_outputs(self) -> list[Any]:
        """Components "Send to Generate" sets besides `widgets` and the LoRA rows."""
        return [*self.img2img.restore_outputs(), *self.control.restore_outputs(),
                self.sections["img2img"], self.sections["controlnet"]]  # fmt: skip

    def restore(
        self, manager: PipelineManager, values: dict[str, Any], family: str,
        img2img_used: bool = False, model: str | None = None,
    ) -> list[Any]:  # fmt: skip
        """Updates for `restore_outputs` from ui.form.widgets_from_request's values. A
        section the pasted settings use is opened, so the user sees it is on (a
        ControlNet unit enabled inside a closed accordion went unnoticed)."""
        choices = manager.controlnets.names(family, model)
        units = values["controlnets"]
        return [*self.img2img.restore(values), *self.control.restore(units, choices),
                gr.Accordion(open=True) if img2img_used else gr.skip(),
                gr.Accordion(open=True) if units else gr.skip()]  # fmt: skip

    def restore_prompt_outputs(self) -> list[Any]:
        """Clip skip and VAE, for "Send to Generate" (ui/studio.py adds them to its outputs)."""
        hires = self.hires.restore_outputs() if self.hires else []
        return [self.widgets["clip_skip"], self.widgets["vae"], *hires]

    def restore_prompt(self, manager: PipelineManager, values: dict[str, Any]) -> list[Any]:
        """Updates for `restore_prompt_outputs` from ui.form.widgets_from_request's values."""
        # "request" (the pasted request, hires fields included) is set by ui/studio.py
        hires = self.hires.restore(values["request"]) if self.hires and "request" in values else (
            [gr.skip()] * len(self.hires.restore_outputs()) if self.hires else [])  # fmt: skip
        return [values["clip_skip"], restored_vae(manager, values["vae"]), *hires]


def restored_vae(manager: PipelineManager, name: str) -> Any:
    """The VAE dropdown for a pasted infotext: its VAE if installed, else Automatic
    (PNG Info lists what it did not apply)."""
    names = ["Automatic", *manager.vaes.names()]
    return gr.Dropdown(names, value=name if name in names else "Automatic")


def build_generate_tab(ctx: StudioContext) -> GenerateTab:
    from pipelines.hires import upscaler_names
    from pipelines.schedulers import available_schedulers

    models = ctx.manager.models("image")
    model_name = ctx.default_model if ctx.default_model in models else next(iter(models))
    family = for_device(models[model_name], ctx.cpu_only)  # CPU: fewer steps
    specs = widget_specs(family)
    # Ids for the phone layout (ui/studio.py CSS): on a narrow screen the left column
    # dissolves so that prompt, then Generate and the result, then the settings stack.
    with gr.Blocks() as blocks:
        with gr.Row(elem_id="atelier-main"):
            with gr.Column(scale=5, elem_id="atelier-left"):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="atelier-prompt",
                                    placeholder="what to draw (Ctrl+Enter generates)")  # fmt: skip
                negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="atelier-negative")
                with gr.Row(equal_height=True):
                    model = gr.Dropdown(list(models), value=model_name, label="Model", scale=4,
                                        elem_id="atelier-model")  # fmt: skip
                    refresh = gr.Button("↻", scale=0, min_width=44, elem_id="atelier-refresh")
                    vae = gr.Dropdown(["Automatic", *ctx.manager.vaes.names()], value="Automatic",
                                      label="VAE", scale=2, elem_id="atelier-vae")  # fmt: skip
                    scheduler = gr.Dropdown(available_schedulers(family), scale=4,
                                            value=family.default_scheduler, label="Sampler",
                                            elem_id="atelier-scheduler")  # fmt: skip
                with gr.Row():
                    steps = gr.Slider(**specs["steps"], label="Steps", elem_id="atelier-steps")
                    cfg = gr.Slider(**specs["cfg"], label="CFG scale", elem_id="atelier-cfg")
                with gr.Row():
                    width = gr.Slider(**specs["width"], label="Width", elem_id="atelier-width")
                    height = gr.Slider(**specs["height"], label="Height", elem_id="atelier-height")
                with gr.Row(equal_height=True, elem_id="atelier-seed-row"):
                    seed = gr.Number(-1, precision=0, label="Seed (-1 = random)", scale=4,
                                     elem_id="atelier-seed")  # fmt: skip
                    random_seed = gr.Button(
                        "Random", scale=0, min_width=70, elem_id="atelier-random"
                    )
                    reuse_seed = gr.Button(
                        "Reuse last", scale=0, min_width=90, elem_id="atelier-reuse"
                    )
                with gr.Row():
                    batch_size = gr.Slider(**specs["batch_size"], label="Batch size",
                                           elem_id="atelier-batch-size")  # fmt: skip
                    batch_count = gr.Slider(**specs["batch_count"], label="Batch count",
                                            elem_id="atelier-batch-count")  # fmt: skip
                    clip_skip = gr.Slider(1, MAX_CLIP_SKIP, value=1, step=1, label="Clip skip",
                                          info="1 = last layer (SDXL: see sdxl_clip_l_skip)",
                                          elem_id="atelier-clip-skip")  # fmt: skip
                with gr.Accordion("LoRA", open=True):
                    loras = build_lora_panel(ctx.manager, family.name, prompt)
                with (
                    gr.Accordion("Textual inversion", open=False, elem_id="atelier-ti"),
                    gr.Row(equal_height=True),
                ):
                    ti_name = gr.Dropdown(ctx.manager.embeddings.names(), value=None,
                                          label="Embedding (its name is the prompt word)",
                                          scale=4, elem_id="atelier-ti-name")  # fmt: skip
                    ti_pos = gr.Button("Add to prompt", scale=0, min_width=120)
                    ti_neg = gr.Button("Add to negative", scale=0, min_width=120)
                # Issue 14: styles, hires fix, X/Y/Z plot (collapsed; ui/styles_panel.py,
                # ui/hires_panel.py, ui/xyz_panel.py)
                with gr.Accordion("Styles", open=False, elem_id="atelier-styles-box"):
                    styles = build_styles_panel(ctx.manager, prompt, negative)
                with gr.Accordion("Hires fix", open=False, elem_id="atelier-hires"):
                    hires = build_hires_panel(upscaler_names(ctx.manager.upscalers),
                                              available_schedulers(family))  # fmt: skip
                with gr.Accordion("Scripts: X/Y/Z plot", open=False, elem_id="atelier-scripts"):
                    xyz = build_xyz_panel()
                selected = gr.State(None)
                with gr.Accordion("Image to image / Inpaint", open=False,
                                  elem_id="atelier-img2img") as img2img_box:  # fmt: skip
                    img2img = build_img2img_panel(selected)
                with gr.Accordion("ControlNet", open=False,
                                  elem_id="atelier-controlnet") as control_box:  # fmt: skip
                    control = build_control_panel(ctx.manager, family.name,
                                                  [model, width, height, seed],
                                                  model_name)  # fmt: skip
            with gr.Column(scale=6, elem_id="atelier-right"):
                with gr.Row(elem_id="atelier-buttons"):
                    run = gr.Button("Generate", variant="primary", elem_id="atelier-generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="atelier-stop")
                error = gr.Markdown(visible=False, elem_id="atelier-error")
                status = gr.Markdown("", elem_id="atelier-status")
                preview = gr.Image(label="Preview", visible=False, interactive=False,
                                   format="jpeg", height=256)  # fmt: skip
                gallery = gr.Gallery(label="Images", format="png", columns=2, interactive=False,
                                     elem_id="atelier-gallery", height=420)  # fmt: skip
                info = gr.Textbox(label="Parameters of the selected image", lines=4,
                                  interactive=False, buttons=["copy"],
                                  elem_id="atelier-infotext")  # fmt: skip
                with gr.Row():
                    seed_used = gr.Markdown(elem_id="atelier-seed-used")
                    time_taken = gr.Markdown(elem_id="atelier-time")
                to_pnginfo = gr.Button("Send to PNG Info", size="sm", elem_id="atelier-to-pnginfo")
                history = gr.Gallery(label="History (this session, newest first)", format="png",
                                     columns=6, height=240, interactive=False,
                                     object_fit="contain", preview=False, fit_columns=False,
                                     elem_id="atelier-history")  # fmt: skip
        last_seed = gr.State(-1)
        shown = gr.State([])  # [(path, infotext), ...] of the gallery
        history_items = gr.State([])  # [(path, caption), ...] newest first

        widgets = {"prompt": prompt, "negative_prompt": negative, "model": model,
                   "scheduler": scheduler, "steps": steps, "cfg": cfg, "width": width,
                   "height": height, "seed": seed, "batch_size": batch_size,
                   "batch_count": batch_count, "clip_skip": clip_skip, "vae": vae}  # fmt: skip
        by_component = {c: name for name, c in widgets.items()}
        by_component.update({c: name for name, c in img2img.by_field().items()})
        lora_inputs = set(loras.names) | set(loras.weights)

        def values_of(data: dict[Any, Any]) -> dict[str, Any]:
            values = {name: data[c] for c, name in by_component.items()}
            values["loras"] = loras_from_slots([data[c] for c in loras.names],
                                               [data[c] for c in loras.weights])  # fmt: skip
            values["units"] = control.values(data)
            values["extras"] = {"styles": data[styles.styles], **hires.values(data)}
            return values

        def job_spec(data: dict[Any, Any]) -> Any:
            return handlers.job_of(ctx, values_of(data))

        def run_job(
            data: dict[Any, Any],
            request: gr.Request,
            progress: gr.Progress = gr.Progress(),  # noqa: B008
        ) -> Iterator[dict]:
            values = values_of(data)

            def report(event: Any) -> None:
                progress((event.step, event.total), desc=progress_text(event), unit=unit_of(event))

            for update in handlers.generate(ctx, values, data[history_items],
                                            ctx.caller(request), report):  # fmt: skip
                yield {by_name[n]: v for n, v in update.items()}

        outputs = [error, status, preview, gallery, shown, selected, info, seed_used, last_seed,
                   time_taken, history, history_items]  # fmt: skip
        by_name = dict(zip(handlers.OUTPUTS, outputs, strict=True))
        event = run.click(  # Ctrl+Enter in the prompts clicks it (the studio's JS)
            gpu(run_job, lambda data, *_: gpu_seconds(ctx, lambda: job_spec(data))),
            inputs={
                *by_component,
                *lora_inputs,
                *control.inputs(),
                history_items,
                styles.styles,
                *hires.inputs(),
            },
            outputs=outputs,
            api_name="studio_generate",
            api_visibility="undocumented",
            **ctx.gpu_event(),
        )

        def run_plot(
            data: dict[Any, Any],
            request: gr.Request,
            progress: gr.Progress = gr.Progress(),  # noqa: B008
        ) -> Iterator[dict]:
            def report(event: Any) -> None:
                progress((event.step, event.total), desc=progress_text(event), unit=unit_of(event))

            caller = ctx.caller(request)
            for update in generate_plot(ctx, values_of(data), xyz.values(data),
                                        data[history_items], caller, report):  # fmt: skip
                yield {by_name[n]: v for n, v in update.items()}

        plot_event = xyz.run.click(
            gpu(run_plot, lambda data, *_: gpu_seconds(
                ctx, lambda: plot_job(ctx, values_of(data), xyz.values(data)))),  # fmt: skip
            inputs={*by_component, *lora_inputs, *control.inputs(), history_items,
                    styles.styles, *hires.inputs(), *xyz.inputs()},
            outputs=outputs, api_name="studio_xyz", api_visibility="undocumented",
            **ctx.gpu_event(),
        )  # fmt: skip
        stop.click(None, cancels=[event, plot_event], api_name="stop",
                   api_visibility="undocumented")  # fmt: skip
        # A field error goes as soon as the form changes (also when "Send to Generate"
        # sets it) and when the next run starts: in the browser only, no request per
        # keystroke. An empty error box is hidden by the studio's CSS.
        for component in {*by_component, *lora_inputs, *control.inputs()}:
            component.change(None, None, error, js="() => ''", queue=False,
                             api_visibility="private")  # fmt: skip

        def pick(evt: gr.SelectData, items: list) -> tuple[str, str | None]:
            return handlers.pick(items, evt.index)

        gallery.select(pick, [shown], [info, selected], api_name="select_image",
                       api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
        random_seed.click(lambda: -1, None, seed, api_name="random_seed",
                          api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
        reuse_seed.click(lambda s: s, last_seed, seed, api_name="reuse_seed",
                         api_visibility="undocumented", concurrency_limit=None)  # fmt: skip

        for button, box in ((ti_pos, prompt), (ti_neg, negative)):
            button.click(handlers.add_word, [box, ti_name], box, api_visibility="undocumented",
                         concurrency_limit=None)  # fmt: skip

        def on_model(name: str) -> list[Any]:
            return handlers.model_changed(ctx, name, len(control.model_outputs()))

        # .input, not .change: "Send to Generate" sets the model *and* its values in
        # one update, and must not be overwritten by the family defaults.
        model.input(on_model, model, [scheduler, steps, cfg, width, height, loras.search,
                                      *control.model_outputs()],
                    api_name="model_defaults", api_visibility="undocumented",
                    concurrency_limit=None)  # fmt: skip

        def on_refresh(name: str) -> list[Any]:
            return handlers.models_refreshed(ctx, name)

        refresh.click(on_refresh, model, [model, loras.search], api_name="refresh_models",
                      api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
        refresh.click(lambda v: handlers.libraries_refreshed(ctx, v), vae, [vae, ti_name],
                      api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
        loras.refresh.click(on_refresh, model, [model, loras.search], api_name="refresh_loras",
                            api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
    return GenerateTab(blocks, widgets, loras, img2img, control, gallery, selected, to_pnginfo,
                       event, {"img2img": img2img_box, "controlnet": control_box},
                       hires)  # fmt: skip


if __name__ == "__main__":  # python -m ui.generate_tab: this tab alone, built-in model
    from ui.studio import standalone

    standalone(lambda ctx: build_generate_tab(ctx).blocks)
