"""The PNG Info tab: drop an image, read its A1111 parameters (ours or another
studio's), and send them to the Generate tab (wired by ui.studio, which owns both).

The file is opened by pipelines.images.open_image (its pixel count checked from the
header first: reading a PNG's text chunks may decode it): an empty file, a non-image
or an oversized one is refused with a message that says so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui.components import ImageUpload
from ui.form import error_markdown


@dataclass
class PngInfoTab:
    blocks: gr.Blocks
    image: ImageUpload
    parameters: gr.Textbox
    note: gr.Markdown
    send: gr.Button


def read_parameters(path: Any, max_pixels: int | None = None) -> tuple[str, Any]:
    """(parameters text, note) of the image at `path` (a file path or bytes). A bad file
    clears the text and says what is wrong in the note ("**image**: is empty (0 bytes)"):
    this event is not queued, and the page shows a bare "Error" for a raised gr.Error
    of an unqueued event, without its message."""
    from pipelines.errors import RequestError
    from pipelines.images import DEFAULT_MAX_PIXELS, open_image
    from pipelines.outputs import read_png_parameters

    if path is None or (isinstance(path, str) and not path):
        return "", gr.Markdown(visible=False)
    try:
        image = open_image("image", path, max_pixels or DEFAULT_MAX_PIXELS)
    except RequestError as e:
        return "", gr.Markdown(error_markdown(e), visible=True)
    text = read_png_parameters(image)
    if not text:
        return "", gr.Markdown("This image carries no generation parameters.", visible=True)
    return text, gr.Markdown(visible=False)


def build_pnginfo_tab(max_pixels: int | None = None) -> PngInfoTab:
    """`max_pixels`: the engine's max_image_pixels (None = its default)."""
    with gr.Blocks() as blocks:
        with gr.Row():
            with gr.Column():
                # The uploaded file untouched (a re-encode would drop the text chunks we
                # want to read) and unopened: read_parameters opens it, limit first.
                image = ImageUpload(label="Image", type="filepath", image_mode=None,
                                    format="png", sources=["upload", "clipboard"],
                                    elem_id="atelier-pnginfo-image")  # fmt: skip
            with gr.Column():
                parameters = gr.Textbox(
                    label="Parameters", lines=8, interactive=False, buttons=["copy"],
                    elem_id="atelier-pnginfo-text",
                )  # fmt: skip
                note = gr.Markdown(visible=False, label="note",
                                   elem_id="atelier-pnginfo-note")  # fmt: skip
                send = gr.Button("Send to Generate", variant="primary",
                                 elem_id="atelier-send-generate")  # fmt: skip

        def on_image(path: Any) -> tuple[str, Any]:
            return read_parameters(path, max_pixels)

        # queue=False: answered at once over HTTP (POST /gradio_api/run/png_info), even
        # while generations fill the engine's queue.
        image.change(on_image, image, [parameters, note], api_name="png_info",
                     queue=False)  # fmt: skip
    return PngInfoTab(blocks, image, parameters, note, send)


if __name__ == "__main__":  # python -m ui.pnginfo_tab: the tab alone (needs no model)
    build_pnginfo_tab().blocks.launch()
