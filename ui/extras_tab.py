"""The Extras tab (A1111's single-image upscale) and the `/upscale` API endpoint.

The image is opened by pipelines.images.open_image (pixel limit checked from the
header), upscaled by an UpscaleJob of the job API (same queue, admission, cancel and
device slots as a generation), and returned as a PNG keeping the source's A1111
parameters plus the Extras keys. Handlers are plain functions, tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from ui.context import StudioContext

UPSCALE_DESCRIPTION = (
    "Upscale one image (A1111's Extras): upscaler = Lanczos, Nearest, None, or a model of "
    "the server's upscalers folder; scale, or an exact width/height (0 = from the other "
    "side's ratio). Returns the PNG file (the source's parameters kept, Postprocess keys "
    "added) and its infotext. A bad value or file fails with 'field: rule'."
)


def upscale_job(ctx: StudioContext, image: Any, upscaler: str, scale: Any, width: Any,
                height: Any) -> Any:  # fmt: skip
    """The UpscaleJob of the tab's (or the API's) values. Raises RequestError."""
    from pipelines.images import open_image
    from pipelines.upscale_job import UpscaleJob, UpscaleRequest
    from ui.form import whole

    if image is None or (isinstance(image, str) and not image.strip()):
        from pipelines.errors import RequestError

        raise RequestError("image", "choose an image to upscale")
    picture = open_image("image", image, ctx.manager.settings.max_image_pixels)
    req = UpscaleRequest(upscaler or "Lanczos", 2.0 if scale in (None, "") else scale,
                         whole(width or 0), whole(height or 0))  # fmt: skip
    return UpscaleJob(req, picture, save_to=ctx.store.outputs_dir)


def upscale_updates(
    ctx: StudioContext, values: tuple, caller: str, progress: Callable[[Any], None] | None = None
) -> Iterator[dict[str, Any]]:
    """The tab's updates: error / status / image / infotext (by name)."""
    from ui.generate_handlers import job_updates

    def finish(result: Any) -> dict[str, Any]:
        path = ctx.store.publish(result)[0]
        w, h = result.images[0].size
        return {"image": str(path), "info": result.infotexts[0],
                "status": f"Done: {w}x{h} on {result.slot} in "
                f"{result.timings['total']:.2f} s"}  # fmt: skip

    yield from job_updates(lambda: ctx.manager.submit(upscale_job(ctx, *values), caller),
                           finish, progress)  # fmt: skip


def build_extras_tab(ctx: StudioContext) -> gr.Blocks:
    from pipelines.upscale import all_upscalers
    from ui.components import ImageUpload, WholeNumber
    from ui.runner import endpoint_stream, gpu, progress_text, shown_as_gradio_errors, unit_of

    manager = ctx.manager
    with gr.Blocks() as blocks:
        with gr.Row():
            with gr.Column():
                source = ImageUpload(label="Image", elem_id="atelier-extras-image")
                with gr.Row(equal_height=True):
                    upscaler = gr.Dropdown(all_upscalers(manager.upscalers), value="Lanczos",
                                           label="Upscaler", scale=4,
                                           elem_id="atelier-extras-upscaler")  # fmt: skip
                    refresh = gr.Button("↻", scale=0, min_width=44)
                scale = gr.Slider(1.0, 8.0, value=2.0, step=0.05, label="Scale by",
                                  elem_id="atelier-extras-scale")  # fmt: skip
                with gr.Row():
                    width = gr.Number(0, precision=0, label="Width (0 = by scale)")
                    height = gr.Number(0, precision=0, label="Height (0 = by scale)")
                run = gr.Button("Upscale", variant="primary", elem_id="atelier-extras-run")
            with gr.Column():
                error = gr.Markdown(visible=False, elem_id="atelier-extras-error")
                status = gr.Markdown("", elem_id="atelier-extras-status")
                result = gr.Image(label="Result", format="png", interactive=False,
                                  elem_id="atelier-extras-result")  # fmt: skip
                info = gr.Textbox(label="Parameters", lines=3, interactive=False)
        by_name = {"error": error, "status": status, "image": result, "info": info}

        def run_tab(image: Any, name: str, by: float, w: float, h: float, request: gr.Request,
                    progress: gr.Progress = gr.Progress()) -> Iterator[dict]:  # noqa: B008  # fmt: skip
            def report(event: Any) -> None:
                progress((event.step, event.total), desc=progress_text(event), unit=unit_of(event))

            for update in upscale_updates(ctx, (image, name, by, w, h), ctx.caller(request),
                                          report):  # fmt: skip
                yield {by_name[k]: v for k, v in update.items() if k in by_name}

        run.click(gpu(run_tab), [source, upscaler, scale, width, height], list(by_name.values()),
                  api_name="extras_upscale", api_visibility="undocumented",
                  **ctx.gpu_event())  # fmt: skip
        refresh.click(lambda v: gr.Dropdown(choices=all_upscalers(manager.upscalers)), upscaler,
                      upscaler, api_visibility="undocumented", concurrency_limit=None)  # fmt: skip

        # -- /upscale: hidden inputs, files in and out ---------------------------------
        with gr.Column(visible=False):
            api_in = [
                gr.File(None, type="filepath", label="image: the picture to upscale"),
                gr.Textbox("Lanczos", label="upscaler: Lanczos, Nearest, None or a model name"),
                gr.Number(2.0, label="scale: upscale by (when width and height are 0)"),
                WholeNumber(0, label="width: exact width; 0 = by scale or height's ratio"),
                WholeNumber(0, label="height: exact height; 0 = by scale or width's ratio"),
            ]
            api_out = [gr.File(label="image"), gr.Textbox(label="infotext")]
            trigger = gr.Button()

        def upscale(image: str | None, upscaler: str = "Lanczos", scale: float = 2.0,
                    width: float = 0, height: float = 0, request: gr.Request = None,  # type: ignore[assignment]
                    progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:  # noqa: B008  # fmt: skip
            with shown_as_gradio_errors():
                job = upscale_job(ctx, image, upscaler, scale, width, height)

            def publish(result: Any) -> tuple[Any, Any]:
                return str(ctx.store.publish(result)[0]), result.infotexts[0]

            yield from endpoint_stream(manager, job, ctx.caller(request), publish, 2, progress)

        trigger.click(gpu(upscale), api_in, api_out, api_name="upscale",
                      api_description=UPSCALE_DESCRIPTION, show_progress="hidden",
                      **ctx.gpu_event())  # fmt: skip
    return blocks


if __name__ == "__main__":  # python -m ui.extras_tab: this tab and /upscale alone
    from ui.studio import standalone

    standalone(build_extras_tab)
