"""The PNG Info tab: drop an image, read its A1111 parameters (ours or another
studio's), and send them to the Generate tab (wired by ui.studio, which owns both)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr


@dataclass
class PngInfoTab:
    blocks: gr.Blocks
    image: gr.Image
    parameters: gr.Textbox
    note: gr.Markdown
    send: gr.Button


def read_parameters(path: str | None) -> tuple[str, Any]:
    from pipelines.outputs import read_png_parameters

    if not path:
        return "", gr.Markdown(visible=False)
    text = read_png_parameters(path)
    if not text:
        return "", gr.Markdown("This image carries no generation parameters.", visible=True)
    return text, gr.Markdown(visible=False)


def build_pnginfo_tab() -> PngInfoTab:
    with gr.Blocks() as blocks:
        with gr.Row():
            with gr.Column():
                # type="filepath" with image_mode=None hands us the uploaded file
                # untouched: a re-encode would drop the text chunks we want to read.
                image = gr.Image(label="Image", type="filepath", image_mode=None, format="png",
                                 sources=["upload", "clipboard"],
                                 elem_id="atelier-pnginfo-image")  # fmt: skip
            with gr.Column():
                parameters = gr.Textbox(
                    label="Parameters", lines=8, interactive=False, buttons=["copy"],
                    elem_id="atelier-pnginfo-text",
                )  # fmt: skip
                note = gr.Markdown(visible=False, elem_id="atelier-pnginfo-note")
                send = gr.Button("Send to Generate", variant="primary",
                                 elem_id="atelier-send-generate")  # fmt: skip
        # queue=False: answered at once over HTTP (POST /gradio_api/run/png_info), even
        # while generations fill the engine's queue.
        image.change(read_parameters, image, [parameters, note], api_name="png_info",
                     queue=False)  # fmt: skip
    return PngInfoTab(blocks, image, parameters, note, send)


if __name__ == "__main__":  # python -m ui.pnginfo_tab: the tab alone (needs no model)
    build_pnginfo_tab().blocks.launch()
