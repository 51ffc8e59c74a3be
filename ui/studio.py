"""The studio: the tabs composed into one app, the wiring between them, and the queue.

demo, launch_kwargs = build_studio(manager, outputs_dir="outputs")
demo.launch(**launch_kwargs, server_name="127.0.0.1", server_port=7860)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from ui.api import build_api
from ui.catalog import lora_choices
from ui.context import StudioContext
from ui.extras_tab import build_extras_tab
from ui.form import widget_specs, widgets_from_request
from ui.generate_tab import GenerateTab, build_generate_tab
from ui.lora_panel import fill
from ui.outputs_tab import OutputsTab, build_outputs_tab
from ui.pnginfo_tab import PngInfoTab, build_pnginfo_tab, describe, wire_details
from ui.runner import status_line
from ui.video_tab import render_video
from ui.xyz_api import build_xyz_api

if TYPE_CHECKING:
    from pipelines.manager import PipelineManager

TITLE = "Atelier"
CACHE_CLEANING = (3600, 86400)  # (every s, files older than s) in Gradio's cache
STATUS_EVERY_S = 4.0  # the status line's refresh (one small request per open page)
# Ctrl+Enter (Cmd+Enter on a Mac) in either prompt clicks Generate, as in A1111.
SHORTCUTS_JS = """
() => {
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey)) return;
    if (!e.target.closest || !e.target.closest("#atelier-prompt, #atelier-negative")) return;
    e.preventDefault();
    document.querySelector("#atelier-generate")?.click();
  });
}
"""
CSS = """
#atelier-error { border-left: 4px solid var(--error-border-color, #d33); padding-left: .6em; }
#atelier-video-error { border-left: 4px solid var(--error-border-color, #d33); padding-left: .6em; }
#atelier-error:not(:has(p)), #atelier-video-error:not(:has(p)) { display: none; }  /* cleared */
#atelier-statusline { text-align: right; opacity: .8; }
#atelier-random, #atelier-reuse { white-space: nowrap; }
#atelier-controlnet input, #atelier-img2img input { text-overflow: clip; }
/* A phone (390 px wide): prompt, then Generate/Stop and the latest result, then the
   settings. The left column and the prompts' group dissolve (display: contents), so
   their children are ordered as items of the main row. */
@media (max-width: 640px) {
  #atelier-header { flex-wrap: nowrap; align-items: baseline; }
  #atelier-header h2 { font-size: 1.15rem; margin: 0; }
  #atelier-statusline { font-size: .75rem; }
  #atelier-main { flex-direction: column; flex-wrap: nowrap; }
  #atelier-left, #atelier-left > *:has(#atelier-prompt) { display: contents; }
  #atelier-left > *, #atelier-left > * > * { order: 3; }
  #atelier-prompt { order: 1 !important; }
  #atelier-right { order: 2; }
  /* a result's preview strip must scroll inside the gallery, not widen the page */
  #atelier-right, #atelier-right > *, #atelier-gallery { min-width: 0 !important; max-width: 100%; }
  #atelier-buttons, #atelier-seed-row { flex-wrap: nowrap; }
  #atelier-buttons > * { min-width: 0 !important; }
  #atelier-seed-row > *:first-child { min-width: 0 !important; flex: 1 1 0; }
  #atelier-gallery { height: 300px !important; max-height: 300px; }
}
"""


def launch_assets() -> dict[str, Any]:
    """theme/css/js, which Gradio 6 takes in launch(), not in Blocks()."""
    return {"js": SHORTCUTS_JS, "css": CSS, "theme": gr.themes.Soft()}


def send_to_generate(
    ctx: StudioContext, gen: GenerateTab, infotext: str, current_model: str
) -> list[Any]:
    """Updates for every Generate control from an infotext (see `wire`'s outputs order).

    Applies what the text says and keeps the rest of the form: a setting the text lacks
    keeps its current value, and a text with no settings line (no parameters, or a
    comment) changes nothing and says so. What is not applied as written (a missing
    model, LoRA, sampler...) is listed by pipelines.pnginfo.unapplied, shown in the PNG
    Info tab: here a missing model keeps `current_model` (or one with the image's hash
    is used), a missing LoRA is left out of the rows, a missing sampler becomes the
    family's default."""
    from pipelines.errors import RequestError
    from pipelines.hires import request_from_infotext  # parameters' + the hires fields
    from pipelines.pnginfo import from_infotext, model_to_use
    from pipelines.schedulers import available_schedulers

    if not infotext or not infotext.strip():
        raise gr.Error("No parameters to send: drop an image that has some.")
    found = from_infotext(infotext)
    if not found.params:
        raise gr.Error("These are no generation parameters (no 'Steps: ..., Seed: ...' line):"
                       " nothing was sent, the form is unchanged.")  # fmt: skip
    try:
        pasted = request_from_infotext(found.infotext)
        values = {**widgets_from_request(pasted), "request": pasted}
    except RequestError as e:
        raise gr.Error(f"These parameters cannot be read: {e}") from None
    models = ctx.manager.models("image")
    model = model_to_use(found, ctx.manager, current_model)[0] or current_model
    family = ctx.manager.registry.family_of(model)
    schedulers = available_schedulers(family)
    specs = widget_specs(family)
    installed = set(ctx.manager.loras.names())
    loras = {name: weight for name, weight in values["loras"].items() if name in installed}
    w = gen.widgets
    if values["scheduler"] is None:  # keep the form's, offering the family's choices
        scheduler = gr.Dropdown(choices=schedulers)
    else:
        chosen = values["scheduler"]
        scheduler = gr.Dropdown(choices=schedulers, value=chosen if chosen in schedulers
                                else family.default_scheduler)  # fmt: skip
    out: dict[Any, Any] = {
        w["prompt"]: values["prompt"],
        w["negative_prompt"]: values["negative_prompt"],
        w["model"]: gr.Dropdown(choices=list(models), value=model),
        w["scheduler"]: scheduler,
        w["seed"]: values["seed"] if "Seed" in found.params else gr.skip(),
        w["batch_size"]: 1,
        w["batch_count"]: 1,
    }
    for name in ("steps", "cfg", "width", "height"):
        spec = dict(specs[name])
        if values[name] is None:
            spec.pop("value")  # not in the text: the range follows the model, the value stays
        else:
            spec["value"] = values[name]
        out[w[name]] = gr.Slider(**spec)
    return [*(out[c] for c in send_outputs(gen)[:len(out)]),
            *fill(loras, lora_choices(ctx.manager, None)),
            *gen.restore(ctx.manager, values, family.name,
                         img2img_used="Denoising strength" in found.params
                         and "Hires upscale" not in found.params, model=model),
            *gen.restore_prompt(ctx.manager, values),
            gr.Tabs(selected="generate")]  # fmt: skip


def describe_text(ctx: StudioContext, infotext: str, model: str | None) -> tuple[Any, ...]:
    """PNG Info's parsed fields and unapplied list for the text it shows."""
    from pipelines.pnginfo import from_infotext

    found = from_infotext(infotext) if infotext and infotext.strip() else None
    return describe(found, ctx.manager, model)


def send_outputs(gen: GenerateTab) -> list[Any]:
    names = ("prompt", "negative_prompt", "model", "scheduler", "seed", "batch_size",
             "batch_count", "steps", "cfg", "width", "height")  # fmt: skip
    return [gen.widgets[n] for n in names]


def build_studio(
    manager: PipelineManager,
    outputs_dir: str | Path | None = "outputs",
    queue_size: int | None = None,
    trusted_proxies: frozenset[str] = frozenset(),
    public: bool = False,
) -> tuple[gr.Blocks, dict[str, Any]]:
    """The whole studio over `manager`, and extra keyword arguments for `launch()`.

    The queue: the engine's admission limits generation jobs (`queue_size` here
    overrides the manager's); Gradio's own queue has no size limit, so light events
    (PNG Info, form updates, previews) always answer, and REST routes that never
    enter Gradio's queue are limited by the same engine."""
    if queue_size is not None:
        manager.jobs.limits = replace(manager.jobs.limits, queue_size=queue_size)
    ctx = StudioContext.create(manager, outputs_dir, trusted_proxies, public)
    gen = build_generate_tab(ctx)
    info = build_pnginfo_tab(manager.settings.max_image_pixels)
    outputs = build_outputs_tab(ctx)
    api = build_api(ctx)
    # Gradio's cache (uploads, served copies): files older than a day go every hour,
    # and all of this app's at shutdown.
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=CACHE_CLEANING) as demo:
        with gr.Row(elem_id="atelier-header"):
            gr.Markdown(f"## {TITLE}", elem_id="atelier-title")
            status = gr.Markdown(status_line(manager.status(), ctx.cpu_only),
                                 elem_id="atelier-statusline")  # fmt: skip
        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                gen.blocks.render()
            render_video(ctx)  # the Video tab and the /video API
            with gr.Tab("Extras", id="extras"):  # upscale one image, and /upscale
                build_extras_tab(ctx).render()
            with gr.Tab("PNG Info", id="pnginfo"):
                info.blocks.render()
            with gr.Tab("Outputs", id="outputs") as outputs_tab:
                outputs.blocks.render()
        api.render()
        build_xyz_api(ctx).render()  # /xyz (the studio's plot: the Generate tab's Scripts)
        wire(ctx, gen, info, tabs)
        wire_outputs(ctx, gen, info, outputs, tabs)
        outputs_tab.select(outputs.load[0], None, outputs.load[1], api_visibility="private",
                           concurrency_limit=None)  # fmt: skip
        # Not queued: the line answers while every worker waits on a generation.
        gr.Timer(STATUS_EVERY_S).tick(lambda: status_line(manager.status(), ctx.cpu_only), None,
                                      status, queue=False, api_visibility="private")  # fmt: skip
    demo.queue(max_size=None, default_concurrency_limit=ctx.slots)
    demo.atelier_context = ctx  # tests and app.py reach the store through the app
    return demo, {**launch_assets(), "max_threads": ctx.max_threads()}


def wire(ctx: StudioContext, gen: GenerateTab, info: PngInfoTab, tabs: gr.Tabs) -> None:
    """Events between the tabs (they are defined here, where both tabs exist)."""
    model = gen.widgets["model"]
    max_pixels = ctx.manager.settings.max_image_pixels
    # What PNG Info's image would not apply, against the form's model (/png_info_parsed).
    wire_details(info, ctx.manager, model, max_pixels)
    info.send.click(
        lambda text, model: send_to_generate(ctx, gen, text, model),
        [info.parameters, model],
        [*send_outputs(gen), *gen.loras.outputs(), *gen.restore_outputs(),
         *gen.restore_prompt_outputs(), tabs],
        api_name="send_to_generate", api_visibility="undocumented", concurrency_limit=None,
    ).success(  # the list again, against the model the form now has
        lambda text, model: describe_text(ctx, text, model), [info.parameters, model],
        [info.parsed, info.unapplied, info.unapplied_note], api_visibility="private",
        queue=False,
    )  # fmt: skip
    gen.send_to_pnginfo.click(
        lambda path: (path, gr.Tabs(selected="pnginfo")), gen.selected, [info.image, tabs],
        api_name="send_to_pnginfo", api_visibility="undocumented", concurrency_limit=None,
    )  # fmt: skip


def wire_outputs(
    ctx: StudioContext, gen: GenerateTab, info: PngInfoTab, outputs: OutputsTab, tabs: gr.Tabs
) -> None:
    """The Outputs tab's "Send to Generate" (its infotext, as PNG Info sends it) and
    "Send to PNG Info" (the file itself, so PNG Info reads what the file holds)."""
    model = gen.widgets["model"]
    outputs.send_generate.click(
        lambda text, model: send_to_generate(ctx, gen, text, model),
        [outputs.infotext, model],
        [*send_outputs(gen), *gen.loras.outputs(), *gen.restore_outputs(),
         *gen.restore_prompt_outputs(), tabs],
        api_visibility="private", concurrency_limit=None,
    )  # fmt: skip
    outputs.send_pnginfo.click(
        lambda path: (path, gr.Tabs(selected="pnginfo")), outputs.selected, [info.image, tabs],
        api_visibility="private", concurrency_limit=None,
    )  # fmt: skip


def standalone(build: Callable[[StudioContext], gr.Blocks]) -> None:
    """Run one section on its own (python -m ui.generate_tab), on the default engine."""
    from pipelines import EngineSettings, PipelineManager

    ctx = StudioContext.create(PipelineManager(EngineSettings()), "off")
    demo = build(ctx)
    demo.queue(default_concurrency_limit=ctx.slots).launch(**launch_assets())
