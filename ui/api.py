"""The `/generate` API endpoint, for gradio_client and other programs.

Keyword arguments as the README shows them; every one but `prompt` is optional
(blank or None = the model family's default, seed -1 = random). Returns the PNG
files (each carries its infotext), the first image's infotext and its seed
(image k of the batch used seed + k). `batch_count` (calls in a row)
is optional too. Image-to-image / inpainting: `init_image`, `mask_image` (files),
`strength`, `mask_blur`; ControlNet: `controlnets` (a list of unit dicts, or its
JSON text) with `control_images` (one file per unit, in order).

`/preprocess` returns the control map of an image (a PNG file) for a
preprocessor and a size, exactly as the engine would compute it.

Its inputs are hidden components: what the endpoint accepts is then exactly
what the engine validates (no slider clamps or rounds a bad width on the way).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from ui.context import StudioContext
from ui.control_panel import run_preprocessor
from ui.form import api_images, request_from_widgets
from ui.runner import endpoint_stream, gpu, shown_as_gradio_errors


def build_api(ctx: StudioContext) -> gr.Blocks:
    with gr.Blocks() as blocks, gr.Column(visible=False):
        inputs = {
            "prompt": gr.Textbox(""),
            "negative_prompt": gr.Textbox(""),
            "model": gr.Textbox(""),
            "scheduler": gr.Textbox(""),
            "steps": gr.Number(None, precision=None),
            "cfg": gr.Number(None),
            "seed": gr.Number(-1, precision=None),
            "width": gr.Number(None, precision=None),
            "height": gr.Number(None, precision=None),
            "batch_size": gr.Number(1, precision=None),
            "loras": gr.JSON(None),
            "batch_count": gr.Number(1, precision=None),
            # Files, not gr.Image: an image component would re-encode them on the way in.
            "init_image": gr.File(None, type="filepath"),
            "mask_image": gr.File(None, type="filepath"),
            "strength": gr.Number(None),
            "mask_blur": gr.Number(None, precision=None),
            "controlnets": gr.JSON(None),
            "control_images": gr.File(None, file_count="multiple", type="filepath"),
            "inpaint_area": gr.Textbox(None),
            "inpaint_padding": gr.Number(None, precision=None),
        }
        images = gr.File(file_count="multiple", label="images")
        infotext = gr.Textbox(label="infotext")
        seed_used = gr.Number(label="seed", precision=0)
        trigger = gr.Button()

        def generate(
            prompt: str,
            negative_prompt: str = "",
            model: str = "",
            scheduler: str = "",
            steps: float | None = None,
            cfg: float | None = None,
            seed: float = -1,
            width: float | None = None,
            height: float | None = None,
            batch_size: float = 1,
            loras: Any = None,
            batch_count: float = 1,
            init_image: str | None = None,
            mask_image: str | None = None,
            strength: float | None = None,
            mask_blur: float | None = None,
            controlnets: Any = None,
            control_images: list[str] | None = None,
            inpaint_area: str | None = None,
            inpaint_padding: float | None = None,
            request: gr.Request = None,  # type: ignore[assignment]
            progress: gr.Progress = gr.Progress(),  # noqa: B008
        ) -> Iterator[tuple[Any, Any, Any]]:
            values = {"prompt": prompt, "negative_prompt": negative_prompt, "model": model,
                      "scheduler": scheduler, "steps": steps, "cfg": cfg, "seed": seed,
                      "width": width, "height": height, "batch_size": batch_size,
                      "batch_count": batch_count, "loras": loras, "strength": strength,
                      "mask_blur": mask_blur, "controlnets": controlnets,
                      "inpaint_area": inpaint_area,
                      "inpaint_padding": inpaint_padding}  # fmt: skip
            from pipelines.image_job import ImageJob

            def publish(result: Any) -> tuple[Any, Any, Any]:
                paths = ctx.store.publish(result)
                return [str(p) for p in paths], result.infotexts[0], result.seeds[0]

            with shown_as_gradio_errors():
                job = ImageJob(
                    request_from_widgets(values),
                    api_images(init_image, mask_image, control_images).inputs(),
                )
            yield from endpoint_stream(ctx.manager, job, ctx.caller(request), publish, 3, progress)

        trigger.click(gpu(generate), list(inputs.values()), [images, infotext, seed_used],
                      api_name="generate", show_progress="hidden", **ctx.gpu_event())  # fmt: skip

        pre_inputs = [gr.File(None, type="filepath"), gr.Textbox("canny"), gr.Number(None),
                      gr.Number(None), gr.Number(100), gr.Number(200), gr.Number(0),
                      gr.Textbox("")]  # fmt: skip
        control_map = gr.File(label="control map")
        pre_trigger = gr.Button()

        def preprocess(
            image: str | None,
            module: str = "canny",
            width: float | None = None,
            height: float | None = None,
            low_threshold: float = 100,
            high_threshold: float = 200,
            seed: float = 0,
            model: str = "",
        ) -> str:
            """The control map (PNG) of `image` for `module` at width x height (default:
            the model family's default size)."""
            with shown_as_gradio_errors():
                family = ctx.manager.registry.family_of(model or ctx.default_model)
                size = (family.default_size if width in (None, "") else width,
                        family.default_size if height in (None, "") else height)  # fmt: skip
                out = run_preprocessor(ctx.manager, image, module, *size, low_threshold,
                                       high_threshold, seed, model or None)  # fmt: skip
            path = ctx.store.scratch_file(".png")
            out.save(path)
            return str(path)

        # CPU work outside the device group: previews do not wait behind generations.
        pre_trigger.click(preprocess, pre_inputs, control_map, api_name="preprocess",
                          show_progress="hidden", concurrency_limit=2)  # fmt: skip
    return blocks


if __name__ == "__main__":  # python -m ui.api: the API alone, without the studio page
    from ui.studio import standalone

    standalone(build_api)
