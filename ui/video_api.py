"""The `/video` API endpoint, for gradio_client and other programs.

Keyword arguments as the README shows them; every one but `prompt` is optional
(blank or None = the model family's default, flow_shift None = the model's own,
seed -1 = random, format "mp4"). `image` / `end_image` are files
(`gradio_client.handle_file(path)`) for image-to-video models. Returns the video
file in the chosen format, its JSON parameters file and the seed used.

Its inputs are hidden components: what the endpoint accepts is then exactly what
the engine validates (no slider clamps or rounds 10 frames on the way).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from ui.context import StudioContext
from ui.runner import endpoint_stream, gpu, shown_as_gradio_errors
from ui.video_form import DEFAULT_FORMAT, check_format, video_request_from_widgets
from ui.video_runner import publish_video

if TYPE_CHECKING:
    from PIL import Image


def add_video_api(ctx: StudioContext) -> None:
    """The endpoint's hidden components and event, in the Blocks context that is open."""
    with gr.Column(visible=False):
        inputs = [
            gr.Textbox(""),  # prompt
            gr.Textbox(""),  # negative_prompt
            gr.Textbox(""),  # model
            gr.Textbox(""),  # scheduler
            *(gr.Number(None, precision=None) for _ in range(8)),  # frames ... flow_shift
            gr.Number(-1, precision=None),  # seed
            gr.JSON(None),  # loras
            gr.Image(None, type="pil"),  # image
            gr.Image(None, type="pil"),  # end_image
            gr.Textbox(DEFAULT_FORMAT),  # format
            gr.Textbox("both"),  # lora_experts
        ]
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
            image: Image.Image | None = None,
            end_image: Image.Image | None = None,
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
                job = VideoJob(video_request_from_widgets(values), image, end_image)

            def publish(result: Any) -> tuple[Any, Any, Any]:
                files = publish_video(ctx.store, result, fmt)
                return str(files.file), str(files.parameters), result.seed

            yield from endpoint_stream(ctx.manager, job, ctx.caller(request), publish, 3, progress)

        trigger.click(gpu(video_endpoint), inputs, [video, parameters, seed_used],
                      api_name="video", show_progress="hidden", **ctx.gpu_event())  # fmt: skip


if __name__ == "__main__":  # python -m ui.video_api: the endpoint alone
    from ui.studio import standalone

    def _alone(ctx: StudioContext) -> gr.Blocks:
        with gr.Blocks() as demo:
            add_video_api(ctx)
        return demo

    standalone(_alone)
