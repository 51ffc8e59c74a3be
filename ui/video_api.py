"""The `/video` API endpoint, for gradio_client and other programs.

Keyword arguments as the README shows them; every one but `prompt` is optional
(blank or None = the model family's default, flow_shift None = the model's own,
seed -1 = random, format "mp4"). `image` / `end_image` are files
(`gradio_client.handle_file(path)`) for image-to-video models. Returns the video
file in the chosen format, its JSON parameters file and the seed used.

Its inputs are hidden components: what the endpoint accepts is then exactly what
the engine validates (no slider clamps or rounds 10 frames on the way). Labels and
the `api_description` are what `client.view_api()` shows (see ui/api.py); image files
are opened by pipelines.images.open_image, pixel limit first, a bad file naming its field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import gradio as gr

from ui.api import image_label
from ui.components import WholeNumber
from ui.context import StudioContext
from ui.form import open_image
from ui.runner import endpoint_stream, gpu, shown_as_gradio_errors
from ui.video_form import DEFAULT_FORMAT, check_format, video_request_from_widgets
from ui.video_runner import publish_video, store_video

log = logging.getLogger(__name__)

VIDEO_DESCRIPTION = (
    "Generate a video with a Wan model: text to video, or image to video with image (and "
    "end_image where the model takes one). Only prompt is required; a blank or omitted "
    "parameter takes the model family's default. Returns the video file in the chosen "
    "format, its JSON parameters file and the seed used. A bad value or file fails with "
    "'field: rule'. While it runs, job.status().progress_data reports the steps done and "
    "the total."
)


def add_video_api(ctx: StudioContext) -> None:
    """The endpoint's hidden components and event, in the Blocks context that is open."""
    from pipelines.export import FORMATS

    pixels = ctx.manager.settings.max_image_pixels
    family = "blank = the model family's default"
    with gr.Column(visible=False):
        inputs = [
            gr.Textbox(None, label="prompt (required): what happens in the video"),
            gr.Textbox("", label="negative_prompt: what to avoid"),
            gr.Textbox("", label="model: a video model name as the studio lists it; blank = "
                       "the server's default video model"),
            gr.Textbox("", label=f"scheduler: e.g. 'UniPC', 'Flow Euler'; {family}"),
            WholeNumber(None, label=f"frames: number of frames, 4k+1 (e.g. 81); {family}"),
            WholeNumber(None, label="fps: frames per second of the file; blank = 16"),
            WholeNumber(None, label=f"width: pixels; {family}"),
            WholeNumber(None, label=f"height: pixels; {family}"),
            WholeNumber(None, label=f"steps: denoising steps; {family}"),
            gr.Number(None, label=f"cfg: guidance scale; {family}"),
            gr.Number(None, label="cfg2: guidance of the low-noise expert (Wan 2.2 A14B); "
                      f"{family}"),
            gr.Number(None, label="flow_shift: flow shift; blank = the model's own"),
            WholeNumber(-1, label="seed: -1 = random"),
            gr.JSON(None, label='loras: {"LoRA name": weight, ...} (or its JSON text); '
                    "blank = none"),
            # Files, not gr.Image: an image component would decode them on the way in.
            gr.File(None, type="filepath", label=image_label(
                "image", "start image, for image-to-video models", pixels)),
            gr.File(None, type="filepath", label=image_label(
                "end_image", "last frame, where the model takes one", pixels)),
            gr.Textbox(DEFAULT_FORMAT, label=f"format: one of {', '.join(FORMATS)}"),
            gr.Textbox("both", label="lora_experts: both, high or low (Wan 2.2 A14B: which "
                       "expert gets the LoRAs)"),
        ]  # fmt: skip
        # Short labels: view_api prints an output's label as its name.
        video = gr.File(label="video")
        parameters = gr.File(label="parameters")
        seed_used = gr.Number(label="seed", precision=0)
        trigger = gr.Button()

        def video_endpoint(
            prompt: str,
            negative_prompt: str = "",
            model: str = "",
            scheduler: str = "",
            frames: float | None = None,
            fps: float | None = None,
            width: float | None = None,
            height: float | None = None,
            steps: float | None = None,
            cfg: float | None = None,
            cfg2: float | None = None,
            flow_shift: float | None = None,
            seed: float = -1,
            loras: Any = None,
            image: str | None = None,
            end_image: str | None = None,
            format: str = DEFAULT_FORMAT,  # noqa: A002 (the API's keyword, as the CLI's --format)
            lora_experts: str = "both",
            request: gr.Request = None,  # type: ignore[assignment]
            progress: gr.Progress = gr.Progress(),  # noqa: B008
        ) -> Iterator[tuple[Any, Any, Any]]:
            values = {"prompt": prompt, "negative_prompt": negative_prompt, "model": model,
                      "scheduler": scheduler, "frames": frames, "fps": fps, "width": width,
                      "height": height, "steps": steps, "cfg": cfg, "cfg2": cfg2,
                      "flow_shift": flow_shift, "seed": seed, "loras": loras,
                      "lora_experts": lora_experts}  # fmt: skip
            from pipelines.video import VideoJob

            with shown_as_gradio_errors():
                fmt = check_format(format)
                request_ = video_request_from_widgets(values)
                job = VideoJob(request_, open_image("image", image, pixels),
                               open_image("end_image", end_image, pixels))  # fmt: skip

            jobs: list[Any] = []

            def publish(result: Any) -> tuple[Any, Any, Any]:
                files = publish_video(ctx.store, result, fmt, ctx.caller(request))
                warning = store_video(ctx.manager, jobs[0], result, files)
                if warning:  # the files are still returned: nothing made is lost
                    log.warning("/video: %s", warning)
                return str(files.file), str(files.parameters), result.seed

            yield from endpoint_stream(ctx.manager, job, ctx.caller(request), publish, 3, progress,
                                       on_job=jobs.append)  # fmt: skip

        trigger.click(gpu(video_endpoint), inputs, [video, parameters, seed_used],
                      api_name="video", api_description=VIDEO_DESCRIPTION,
                      show_progress="hidden", **ctx.gpu_event())  # fmt: skip


if __name__ == "__main__":  # python -m ui.video_api: the endpoint alone
    from ui.studio import standalone

    def _alone(ctx: StudioContext) -> gr.Blocks:
        with gr.Blocks() as demo:
            add_video_api(ctx)
        return demo

    standalone(_alone)
