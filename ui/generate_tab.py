"""The Generate tab: prompt, model and sampler settings, LoRAs, results, history.

Layout and thin handlers only: widget values go through `ui.form` into a
GenerationRequest, the engine runs in `ui.runner.stream_generation`, and the
result comes back as PNG files (with their infotext) in the gallery.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui.catalog import family_of, image_models
from ui.context import HISTORY_LIMIT, StudioContext
from ui.control_panel import ControlPanel, build_control_panel, controlnet_choices
from ui.form import error_markdown, loras_from_slots, studio_form, widget_specs
from ui.img2img_panel import Img2ImgPanel, build_img2img_panel
from ui.lora_panel import LoraPanel, build_lora_panel, refresh_search
from ui.runner import gpu, stream_generation

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

    def restore_outputs(self) -> list[Any]:
        """Components "Send to Generate" sets besides `widgets` and the LoRA rows."""
        return [*self.img2img.restore_outputs(), *self.control.restore_outputs()]

    def restore(self, manager: Any, values: dict[str, Any], family: str) -> list[Any]:
        """Updates for `restore_outputs` from ui.form.widgets_from_request's values."""
        choices = controlnet_choices(manager, family)
        return [*self.img2img.restore(values), *self.control.restore(values["controlnets"],
                                                                     choices)]  # fmt: skip


def family_updates(family: Any, schedulers: list[str]) -> list[Any]:
    """Scheduler, steps, cfg, width, height set to a family's choices and defaults."""
    specs = widget_specs(family)
    return [gr.Dropdown(choices=schedulers, value=family.default_scheduler),
            *(gr.Slider(**specs[k]) for k in ("steps", "cfg", "width", "height"))]  # fmt: skip


def _status(done: int, total: int) -> str:
    return f"Step {done}/{total}"


def build_generate_tab(ctx: StudioContext) -> GenerateTab:
    from pipelines.schedulers import available_schedulers

    models = image_models(ctx.manager)
    model_name = ctx.default_model if ctx.default_model in models else next(iter(models))
    family = models[model_name]
    specs = widget_specs(family)
    with gr.Blocks() as blocks:
        with gr.Row():
            with gr.Column(scale=5):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="atelier-prompt",
                                    placeholder="what to draw (Ctrl+Enter generates)")  # fmt: skip
                negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="atelier-negative")
                with gr.Row(equal_height=True):
                    model = gr.Dropdown(list(models), value=model_name, label="Model", scale=4,
                                        elem_id="atelier-model")  # fmt: skip
                    refresh = gr.Button("↻", scale=0, min_width=44, elem_id="atelier-refresh")
                    scheduler = gr.Dropdown(available_schedulers(family), scale=4,
                                            value=family.default_scheduler, label="Sampler",
                                            elem_id="atelier-scheduler")  # fmt: skip
                with gr.Row():
                    steps = gr.Slider(**specs["steps"], label="Steps", elem_id="atelier-steps")
                    cfg = gr.Slider(**specs["cfg"], label="CFG scale", elem_id="atelier-cfg")
                with gr.Row():
                    width = gr.Slider(**specs["width"], label="Width", elem_id="atelier-width")
                    height = gr.Slider(**specs["height"], label="Height", elem_id="atelier-height")
                with gr.Row(equal_height=True):
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
                with gr.Accordion("LoRA", open=True):
                    loras = build_lora_panel(ctx.manager, family.name, prompt)
                selected = gr.State(None)
                with gr.Accordion("Image to image / Inpaint", open=False,
                                  elem_id="atelier-img2img"):  # fmt: skip
                    img2img = build_img2img_panel(selected)
                with gr.Accordion("ControlNet", open=False, elem_id="atelier-controlnet"):
                    control = build_control_panel(ctx.manager, family.name,
                                                  [model, width, height, seed])  # fmt: skip
            with gr.Column(scale=6):
                with gr.Row():
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
                   "batch_count": batch_count}  # fmt: skip
        by_component = {c: name for name, c in widgets.items()}
        by_component.update({c: name for name, c in img2img.by_field().items()})
        lora_inputs = set(loras.names) | set(loras.weights)

        def generate(data: dict[Any, Any], progress: gr.Progress = gr.Progress()) -> Iterator[dict]:  # noqa: B008
            from pipelines import CancelToken
            from pipelines.errors import AtelierError, RequestError

            values = {name: data[c] for c, name in by_component.items()}
            values["loras"] = loras_from_slots([data[c] for c in loras.names],
                                               [data[c] for c in loras.weights])  # fmt: skip
            values["units"] = control.values(data)
            cancel = CancelToken()
            numbers: list[int] = []
            try:
                form = studio_form(values)
                numbers = form.unit_numbers
                yield {error: gr.Markdown(visible=False), status: "Waiting for a device…"}
                for item in stream_generation(ctx.manager, form.request, cancel,
                                              inputs=form.images.inputs()):  # fmt: skip
                    if hasattr(item, "images"):
                        yield _finished(item, data[history_items])
                        return
                    progress((item.step, item.total), unit="steps")
                    update: dict[Any, Any] = {status: _status(item.step, item.total)}
                    if item.preview is not None:
                        update[preview] = gr.Image(item.preview, visible=True)
                    yield update
            except RequestError as e:
                yield {error: gr.Markdown(error_markdown(e, numbers), visible=True), status: ""}
            except AtelierError as e:  # model not available, cancelled before start, ...
                yield {error: gr.Markdown(f"**error**: {e}", visible=True), status: ""}
            finally:
                cancel.cancel()  # a no-op after a finished run; stops a closed (Stopped) one

        def _finished(result: Any, old_history: list) -> dict[Any, Any]:
            paths = ctx.store.publish(result)
            items = [(str(p), f"seed {s}") for p, s in zip(paths, result.seeds, strict=True)]
            new_history = (items[::-1] + list(old_history))[:HISTORY_LIMIT]
            t = result.timings
            seeds = result.seeds
            seed_text = f"Seed: {seeds[0]}" + (f" … {seeds[-1]}" if len(seeds) > 1 else "")
            return {
                gallery: gr.Gallery(items, selected_index=0),
                shown: [(str(p), i) for p, i in zip(paths, result.infotexts, strict=True)],
                selected: str(paths[0]),
                info: result.infotexts[0],
                seed_used: seed_text,
                last_seed: seeds[0],
                time_taken: f"Time: {t['total']:.2f} s (load {t['load']:.2f} s, "
                f"run {t['run']:.2f} s, waited {t['queue']:.2f} s)",
                preview: gr.Image(None, visible=False),
                history: new_history,
                history_items: new_history,
                status: f"Done: {len(paths)} image(s) on {result.slot}",
            }

        outputs = [error, status, preview, gallery, shown, selected, info, seed_used, last_seed,
                   time_taken, history, history_items]  # fmt: skip
        event = run.click(  # Ctrl+Enter in the prompts clicks it (the studio's JS)
            gpu(generate),
            inputs={*by_component, *lora_inputs, *control.inputs(), history_items},
            outputs=outputs,
            api_name="studio_generate",
            api_visibility="undocumented",
            **ctx.gpu_event(),
        )
        stop.click(None, cancels=[event], api_name="stop", api_visibility="undocumented")

        def pick(evt: gr.SelectData, items: list) -> tuple[str, str | None]:
            if not items or evt.index is None or evt.index >= len(items):
                return "", None
            path, infotext = items[evt.index]
            return infotext, path

        gallery.select(pick, [shown], [info, selected], api_name="select_image",
                       api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
        random_seed.click(lambda: -1, None, seed, api_name="random_seed",
                          api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
        reuse_seed.click(lambda s: s, last_seed, seed, api_name="reuse_seed",
                         api_visibility="undocumented", concurrency_limit=None)  # fmt: skip

        def on_model(name: str) -> list[Any]:
            fam = family_of(ctx.manager, name)
            cn = controlnet_choices(ctx.manager, fam.name)
            return [*family_updates(fam, available_schedulers(fam)),
                    refresh_search(ctx.manager, fam.name),
                    *(gr.Dropdown(choices=cn, value=cn[0] if cn else None)
                      for _ in control.model_outputs())]  # fmt: skip

        # .input, not .change: "Send to Generate" sets the model *and* its values in
        # one update, and must not be overwritten by the family defaults.
        model.input(on_model, model, [scheduler, steps, cfg, width, height, loras.search,
                                      *control.model_outputs()],
                    api_name="model_defaults", api_visibility="undocumented",
                    concurrency_limit=None)  # fmt: skip

        def on_refresh(name: str) -> list[Any]:
            names = list(image_models(ctx.manager))
            fam = family_of(ctx.manager, name) if name in names else None
            return [gr.Dropdown(choices=names),
                    refresh_search(ctx.manager, fam.name if fam else None)]  # fmt: skip

        refresh.click(on_refresh, model, [model, loras.search], api_name="refresh_models",
                      api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
        loras.refresh.click(on_refresh, model, [model, loras.search], api_name="refresh_loras",
                            api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
    return GenerateTab(blocks, widgets, loras, img2img, control, gallery, selected, to_pnginfo,
                       event)  # fmt: skip


if __name__ == "__main__":  # python -m ui.generate_tab: this tab alone, built-in model
    from ui.studio import standalone

    standalone(lambda ctx: build_generate_tab(ctx).blocks)
