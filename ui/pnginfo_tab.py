"""The PNG Info tab: drop an image, read its parameters (ours, A1111's, or another
studio's: pipelines.pnginfo reads ComfyUI, InvokeAI, NovelAI, Fooocus, ... and turns
them into A1111 text), see what "Send to Generate" would not apply and why, and send
them to the Generate tab (wired by ui.studio, which owns both).

Two events read a dropped image, both unqueued (they answer at once, even while
generations fill the engine's queue): `/png_info` -> (A1111 text, note), and
`/png_info_parsed` (wired by ui.studio: it needs the engine and the form's model)
-> (parsed fields, unapplied settings, their Markdown list).

The file is opened by pipelines.images.open_image (its pixel count checked from the
header first: reading a PNG's text chunks may decode it): an empty file, a non-image
or an oversized one is refused with a message that says so."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from ui.components import ImageUpload
from ui.form import error_markdown

if TYPE_CHECKING:
    from pipelines.manager import PipelineManager
    from pipelines.pnginfo import ImageParameters

PNG_INFO_DESCRIPTION = (
    "Read an image's generation parameters as A1111 text (A1111, Forge, SD.Next and "
    "Civitai text as written; ComfyUI, InvokeAI, NovelAI and Fooocus converted). Returns "
    "the text ('' when the image has none) and a note: what is wrong with the file, that "
    "it has no parameters, or which studio's format they were read from. "
    "/png_info_parsed gives the fields and what Send to Generate would not apply."
)
PNG_INFO_PARSED_DESCRIPTION = (
    "Read an image's generation parameters (A1111, Forge, SD.Next, Civitai, ComfyUI, "
    "InvokeAI, NovelAI, Fooocus) and say what Send to Generate would not apply. `image`: "
    "the file; `model`: the model to keep when the image's is not installed (blank: the "
    "first one). Returns the parsed parameters (source, infotext in A1111 format, prompt, "
    "negative_prompt, seed, steps, cfg_scale, width, height, sampler, schedule_type, model, "
    "model_hash, parameters), the list of [setting, reason] not applied, and that list "
    "as Markdown. An image without parameters gives {} and an empty list."
)


@dataclass
class PngInfoTab:
    blocks: gr.Blocks
    image: ImageUpload
    parameters: gr.Textbox
    note: gr.Markdown
    send: gr.Button
    parsed: gr.JSON
    unapplied: gr.JSON
    unapplied_note: gr.Markdown


def _open(path: Any, max_pixels: int | None) -> Any:
    from pipelines.images import DEFAULT_MAX_PIXELS, open_image

    return open_image("image", path, max_pixels or DEFAULT_MAX_PIXELS)


def read_parameters(path: Any, max_pixels: int | None = None) -> tuple[str, Any]:
    """(parameters text, note) of the image at `path` (a file path or bytes). A bad file
    clears the text and says what is wrong in the note ("**image**: is empty (0 bytes)"):
    this event is not queued, and the page shows a bare "Error" for a raised gr.Error
    of an unqueued event, without its message. Another studio's parameters come as
    A1111 text, and the note names the studio."""
    from pipelines.errors import RequestError
    from pipelines.pnginfo import read_image_parameters

    if path is None or (isinstance(path, str) and not path):
        return "", gr.Markdown(visible=False)
    try:
        found = read_image_parameters(_open(path, max_pixels))
    except RequestError as e:
        return "", gr.Markdown(error_markdown(e), visible=True)
    if found is None:
        return "", gr.Markdown("This image carries no generation parameters.", visible=True)
    if found.source == "A1111":
        return found.infotext, gr.Markdown(visible=False)
    note = f"Read from a **{found.source}** image, shown in A1111's format."
    return found.infotext, gr.Markdown(note, visible=True)


def unapplied_markdown(items: list[tuple[str, str]] | list[list[str]]) -> str:
    """The unapplied settings as the tab shows them: a Markdown list."""
    if not items:
        return ""
    lines = [f"- **{field}**: {why}" for field, why in items]
    return "**Not applied by Send to Generate:**\n" + "\n".join(lines)


def describe(found: ImageParameters | None, manager: PipelineManager | None,
             model: str | None) -> tuple[dict[str, Any], list[list[str]], Any]:  # fmt: skip
    """(parsed fields, [[setting, reason], ...], Markdown update) for the tab and API."""
    from pipelines.pnginfo import unapplied

    if found is None:
        return {}, [], gr.Markdown("", visible=False)
    items = [list(i) for i in unapplied(found, manager, model or None)] if manager else []
    text = unapplied_markdown(items)
    return (
        {"infotext": found.infotext, **found.to_json()},
        items,
        gr.Markdown(text, visible=bool(text)),
    )


def read_details(
    path: Any, manager: PipelineManager | None, model: str | None, max_pixels: int | None = None
) -> tuple[dict[str, Any], list[list[str]], Any]:
    """`describe` of the image at `path` (the /png_info_parsed event). A bad file gives
    empty answers: /png_info's note already says what is wrong with it."""
    from pipelines.errors import RequestError
    from pipelines.pnginfo import read_image_parameters

    if path is None or (isinstance(path, str) and not path):
        return describe(None, manager, model)
    try:
        found = read_image_parameters(_open(path, max_pixels))
    except RequestError:
        found = None
    return describe(found, manager, model)


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
                unapplied_note = gr.Markdown(visible=False, label="unapplied_markdown",
                                             elem_id="atelier-pnginfo-unapplied")  # fmt: skip
                send = gr.Button("Send to Generate", variant="primary",
                                 elem_id="atelier-send-generate")  # fmt: skip
                with gr.Accordion("Parsed parameters", open=False):
                    parsed = gr.JSON(label="parsed", elem_id="atelier-pnginfo-parsed")
                    unapplied = gr.JSON(label="unapplied", elem_id="atelier-pnginfo-unapplied-list")

        def on_image(path: Any) -> tuple[str, Any]:
            return read_parameters(path, max_pixels)

        # queue=False: answered at once over HTTP (POST /gradio_api/run/png_info), even
        # while generations fill the engine's queue.
        image.change(on_image, image, [parameters, note], api_name="png_info",
                     api_description=PNG_INFO_DESCRIPTION, queue=False)  # fmt: skip
    return PngInfoTab(blocks, image, parameters, note, send, parsed, unapplied, unapplied_note)


def wire_details(tab: PngInfoTab, manager: PipelineManager | None, model_box: Any = None,
                 max_pixels: int | None = None) -> None:  # fmt: skip
    """Wire `/png_info_parsed` (in the Blocks that holds both `tab` and `model_box`, the
    Generate tab's model dropdown, or None: the engine's first model; no manager: no
    unapplied list)."""
    inputs = [tab.image, model_box] if model_box is not None else [tab.image]

    def on_details(path: Any, model: str | None = None) -> tuple[Any, ...]:
        return read_details(path, manager, model, max_pixels)

    tab.image.change(on_details, inputs, [tab.parsed, tab.unapplied, tab.unapplied_note],
                     api_name="png_info_parsed", api_description=PNG_INFO_PARSED_DESCRIPTION,
                     queue=False)  # fmt: skip


if __name__ == "__main__":  # python -m ui.pnginfo_tab: the tab alone (needs no model)
    tab = build_pnginfo_tab()
    with tab.blocks:
        wire_details(tab, None)
    tab.blocks.launch()
