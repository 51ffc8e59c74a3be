"""The Video tab: Wan text/image-to-video with a player, downloads, progress and Stop.

Layout and wiring only: the handlers are plain functions in ui/video_handlers.py
(widget values go through `ui.video_form` into a VideoRequest, the engine runs it as
a job, and the result comes back as files: the chosen format, its JSON parameters,
an MP4 for the player). The `/video` API (ui/video_api.py) is added with the tab, so the
studio adds the feature with one call: `render_video(ctx)` inside its gr.Tabs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui import video_handlers as handlers
from ui.components import ImageUpload
from ui.context import StudioContext
from ui.form import for_device
from ui.runner import gpu, gpu_seconds, progress_text, unit_of
from ui.video_api import add_video_api
from ui.video_form import DEFAULT_FORMAT, image_inputs, video_models, video_specs
from ui.video_handlers import enlarged  # noqa: F401 (the tab's preview scaling, re-exported)

SOURCES: list[Any] = ["upload", "clipboard"]
LORA_HINT = '{"my-wan-lora": 0.8}  (optional: LoRA name to weight, as JSON)'


@dataclass
class VideoTab:
    column: gr.Column  # the whole tab's layout
    widgets: dict[str, Any]  # form name (ui.video_form.VIDEO_FIELDS) -> component
    player: gr.Video
    event: Any  # the generation event (Stop cancels it)


def build_video_tab(ctx: StudioContext) -> VideoTab:
    """The tab's layout and events, built into the Blocks context that is open (the
    studio's gr.Tab): a separate gr.Blocks made inside the studio's gr.Tabs would be
    attached to the Tabs itself."""
    from pipelines.export import FORMATS
    from pipelines.schedulers import available_schedulers

    models = video_models(ctx.manager)
    if not models:
        raise RuntimeError("no video models: the built-in tiny-wan should always be listed")
    model_name = next(iter(models))
    family = for_device(models[model_name], ctx.cpu_only)  # CPU: a short, small clip
    specs, shown = video_specs(family), image_inputs(family)
    with gr.Column() as column:
        with gr.Row():
            with gr.Column(scale=5):
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="atelier-video-prompt",
                                    placeholder="what happens in the video")  # fmt: skip
                negative = gr.Textbox(label="Negative prompt", lines=2,
                                      elem_id="atelier-video-negative")  # fmt: skip
                with gr.Row():
                    model = gr.Dropdown(list(models), value=model_name, label="Model",
                                        elem_id="atelier-video-model")  # fmt: skip
                    scheduler = gr.Dropdown(available_schedulers(family), label="Sampler",
                                            value=family.default_scheduler,
                                            elem_id="atelier-video-scheduler")  # fmt: skip
                with gr.Row():
                    # Files, opened by the handler (pixel limit before decoding).
                    image = ImageUpload(type="filepath", image_mode=None, height=200,
                                        label=shown["start_label"], sources=SOURCES,
                                        visible=shown["start_visible"],
                                        elem_id="atelier-video-image")  # fmt: skip
                    end_image = ImageUpload(type="filepath", image_mode=None, height=200,
                                            label="End image (optional)", sources=SOURCES,
                                            visible=shown["end_visible"],
                                            elem_id="atelier-video-end-image")  # fmt: skip
                with gr.Row():
                    frames = gr.Slider(**specs["frames"], label="Frames (4k+1)",
                                       elem_id="atelier-video-frames")  # fmt: skip
                    fps = gr.Slider(**specs["fps"], label="FPS", elem_id="atelier-video-fps")
                with gr.Row():
                    width = gr.Slider(
                        **specs["width"], label="Width", elem_id="atelier-video-width"
                    )
                    height = gr.Slider(**specs["height"], label="Height",
                                       elem_id="atelier-video-height")  # fmt: skip
                with gr.Row():
                    steps = gr.Slider(
                        **specs["steps"], label="Steps", elem_id="atelier-video-steps"
                    )
                    cfg = gr.Slider(**specs["cfg"], label="CFG scale", elem_id="atelier-video-cfg")
                    cfg2 = gr.Slider(**specs["cfg2"], label="CFG scale 2 (low-noise expert)",
                                     visible=shown["cfg2_visible"],
                                     elem_id="atelier-video-cfg2")  # fmt: skip
                with gr.Row(equal_height=True):
                    # The browser sends 0 for an empty number box: 0 (never a valid
                    # shift) means the model's own, see video_form.for_family.
                    flow_shift = gr.Number(0, label="Flow shift (0 = the model's)",
                                           elem_id="atelier-video-flow-shift")  # fmt: skip
                    seed = gr.Number(-1, precision=0, label="Seed (-1 = random)",
                                     elem_id="atelier-video-seed")  # fmt: skip
                    random_seed = gr.Button("Random", scale=0, min_width=70,
                                            elem_id="atelier-video-random")  # fmt: skip
                    reuse_seed = gr.Button("Reuse last", scale=0, min_width=90,
                                           elem_id="atelier-video-reuse")  # fmt: skip
                with gr.Row():
                    loras = gr.Textbox(label="LoRAs", placeholder=LORA_HINT, scale=3,
                                       elem_id="atelier-video-loras")  # fmt: skip
                    lora_experts = gr.Radio(["both", "high", "low"], value="both", scale=2,
                                            label="LoRAs into experts (Wan 2.2 A14B)",
                                            elem_id="atelier-video-lora-experts")  # fmt: skip
                fmt = gr.Radio(list(FORMATS), value=DEFAULT_FORMAT, label="File format",
                               elem_id="atelier-video-format")  # fmt: skip
            with gr.Column(scale=6):
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="atelier-video-generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="atelier-video-stop")
                error = gr.Markdown(visible=False, elem_id="atelier-video-error")
                status = gr.Markdown("", elem_id="atelier-video-status")
                preview = gr.Image(label="Preview (middle frame)", visible=False,
                                   interactive=False, format="jpeg", height=256)  # fmt: skip
                player = gr.Video(label="Video", format="mp4", interactive=False, loop=True,
                                  autoplay=True, elem_id="atelier-video-player")  # fmt: skip
                with gr.Row():
                    download = gr.DownloadButton("Download video", visible=False,
                                                 elem_id="atelier-video-download")  # fmt: skip
                    download_json = gr.DownloadButton(
                        "Download parameters (JSON)", visible=False,
                        elem_id="atelier-video-download-json",
                    )  # fmt: skip
                with gr.Row():
                    seed_used = gr.Markdown(elem_id="atelier-video-seed-used")
                    time_taken = gr.Markdown(elem_id="atelier-video-time")
        last_seed = gr.State(-1)

        widgets = {"prompt": prompt, "negative_prompt": negative, "model": model,
                   "scheduler": scheduler, "frames": frames, "fps": fps, "width": width,
                   "height": height, "steps": steps, "cfg": cfg, "cfg2": cfg2,
                   "flow_shift": flow_shift, "seed": seed, "loras": loras,
                   "lora_experts": lora_experts}  # fmt: skip
        by_component = {c: name for name, c in widgets.items()}

        def run_job(
            data: dict[Any, Any],
            request: gr.Request,
            progress: gr.Progress = gr.Progress(),  # noqa: B008
        ) -> Iterator[dict]:
            values = {name: data[c] for c, name in by_component.items()}

            def report(event: Any) -> None:
                progress((event.step, event.total), desc=progress_text(event), unit=unit_of(event))

            for update in handlers.generate(ctx, values, data[image], data[end_image], data[fmt],
                                            ctx.caller(request), report):  # fmt: skip
                yield {by_name[n]: v for n, v in update.items()}

        outputs = [error, status, preview, player, download, download_json, seed_used,
                   last_seed, time_taken]  # fmt: skip
        by_name = dict(zip(handlers.OUTPUTS, outputs, strict=True))
        event = run.click(
            gpu(
                run_job,
                lambda data, *_: gpu_seconds(
                    ctx,
                    lambda: handlers.job_of(
                        ctx,
                        {name: data[c] for c, name in by_component.items()},
                        data[image],
                        data[end_image],
                    ),
                ),
            ),  # fmt: skip
            inputs={*widgets.values(), image, end_image, fmt},
            outputs=outputs,
            api_name="studio_video",
            api_visibility="undocumented",
            show_progress_on=[player],  # keep the preview frame uncovered while it runs
            **ctx.gpu_event(),
        )
        stop.click(None, cancels=[event], api_name="stop_video", api_visibility="undocumented")
        for component in {*widgets.values(), image, end_image}:  # errors go on the next change
            component.change(None, None, error, js="() => ''", queue=False,
                             api_visibility="private")  # fmt: skip
        random_seed.click(lambda: -1, None, seed, api_name="video_random_seed",
                          api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
        reuse_seed.click(lambda s: s, last_seed, seed, api_name="video_reuse_seed",
                         api_visibility="undocumented", concurrency_limit=None)  # fmt: skip

        def on_model(name: str) -> list[Any]:
            family = ctx.manager.registry.family_of(name)
            return handlers.family_changed(for_device(family, ctx.cpu_only))

        model.input(on_model, model,
                    [scheduler, frames, width, height, steps, cfg, cfg2, image, end_image],
                    api_name="video_model_defaults", api_visibility="undocumented",
                    concurrency_limit=None)  # fmt: skip
    return VideoTab(column, widgets, player, event)


def render_video(ctx: StudioContext) -> VideoTab:
    """The Video tab and the `/video` API, rendered into the studio's open gr.Tabs."""
    with gr.Tab("Video", id="video"):
        tab = build_video_tab(ctx)
        add_video_api(ctx)  # hidden components only
    return tab


if __name__ == "__main__":  # python -m ui.video_tab: this tab and /video alone
    from ui.studio import standalone

    def _alone(ctx: StudioContext) -> gr.Blocks:
        with gr.Blocks() as demo, gr.Tabs():
            render_video(ctx)
        return demo

    standalone(_alone)
