"""The `/generate` API endpoint, for gradio_client and other programs.

Keyword arguments as the README shows them; every one but `prompt` is optional
(blank or None = the model family's default, seed -1 = random). Returns the PNG
files (each carries its infotext), the first image's infotext and its seed
(image k of the batch used seed + k). `batch_count` (calls in a row)
is optional too.

Its inputs are hidden components: what the endpoint accepts is then exactly
what the engine validates (no slider clamps or rounds a bad width on the way).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from ui.context import StudioContext
from ui.form import request_from_widgets
from ui.runner import gpu, stream_generation


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
        ) -> Iterator[tuple[Any, Any, Any]]:
            values = {"prompt": prompt, "negative_prompt": negative_prompt, "model": model,
                      "scheduler": scheduler, "steps": steps, "cfg": cfg, "seed": seed,
                      "width": width, "height": height, "batch_size": batch_size,
                      "batch_count": batch_count, "loras": loras}  # fmt: skip
            from pipelines import CancelToken
            from pipelines.errors import AtelierError

            cancel = CancelToken()
            try:
                request = request_from_widgets(values)
                for item in stream_generation(ctx.manager, request, cancel):
                    if hasattr(item, "images"):
                        paths = ctx.store.publish(item)
                        yield [str(p) for p in paths], item.infotexts[0], item.seeds[0]
                        return
                    # Yielding lets Gradio close this generator on Job.cancel().
                    yield gr.skip(), gr.skip(), gr.skip()
            except AtelierError as e:  # RequestError reads "field: rule"
                raise gr.Error(str(e), print_exception=False) from None
            finally:
                cancel.cancel()

        trigger.click(gpu(generate), list(inputs.values()), [images, infotext, seed_used],
                      api_name="generate", show_progress="hidden", **ctx.gpu_event())  # fmt: skip
    return blocks


if __name__ == "__main__":  # python -m ui.api: the API alone, without the studio page
    from ui.studio import standalone

    standalone(build_api)
