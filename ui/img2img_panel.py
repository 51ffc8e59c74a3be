"""The Image to image / Inpaint area: a mode, the init image in gr.ImageEditor (its
brush paints the inpainting mask), an optional uploaded mask, strength and mask blur.

The mode is explicit ("off" by default): an image left in the editor must not
silently turn the next text-to-image run into image-to-image. Uploading an image
or sending a result from the gallery switches "off" to "img2img".
`ui.form.images_from_area` turns these values into the engine's images.

The image inputs here (and in the ControlNet units, the Video tab and PNG Info) hand
the handler the uploaded file, not decoded pixels (`ImageUpload`, `ImageFileEditor`):
the handler opens it with pipelines.images.open_image, which checks the pixel count
in the header before decoding and names the field in every error.
"""

from __future__ import annotations

import base64
from abc import ABCMeta
from dataclasses import dataclass, fields
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from ui.form import IMAGE_MODES

MODE_LABELS = [("Off (text to image)", "off"), ("Image to image", "img2img"),
               ("Inpaint (paint the area to repaint)", "inpaint")]  # fmt: skip
assert [v for _, v in MODE_LABELS] == list(IMAGE_MODES), "one label per mode"


@dataclass
class Img2ImgPanel:
    mode: gr.Radio
    editor: ImageFileEditor
    mask_upload: ImageUpload
    strength: gr.Slider
    mask_blur: gr.Slider
    inpaint_area: gr.Radio
    inpaint_padding: gr.Slider
    from_gallery: gr.Button

    def by_field(self) -> dict[str, Any]:
        """ui.form.studio_form's names -> component."""
        return {"image_mode": self.mode, "init_editor": self.editor,
                "mask_upload": self.mask_upload, "strength": self.strength,
                "mask_blur": self.mask_blur, "inpaint_area": self.inpaint_area,
                "inpaint_padding": self.inpaint_padding}  # fmt: skip

    def restore_outputs(self) -> list[Any]:
        return [self.strength, self.mask_blur, self.inpaint_area, self.inpaint_padding]

    def restore(self, values: dict[str, Any]) -> list[Any]:
        return [values["strength"], values["mask_blur"], values["inpaint_area"],
                values["inpaint_padding"]]  # fmt: skip


class NoStubFile(type(gr.Image)):  # type: ignore[misc]
    """The metaclass of our small component subclasses: Gradio's own (ComponentMeta)
    also writes a `.pyi` stub of typed event methods beside the module of every
    Component subclass, for custom-component packages. Ours add no events, and a file
    generated into the source tree at import would be linted and committed by
    accident, so the class is made as ABCMeta makes it (ComponentMeta's other work,
    wrapping an `__init__` and declaring EVENTS, does not apply: these define neither)."""

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> Any:
        assert "__init__" not in attrs and "EVENTS" not in attrs, "ComponentMeta needed"
        return ABCMeta.__new__(mcs, name, bases, attrs)


class ImageUpload(gr.Image, metaclass=NoStubFile):
    """gr.Image whose handler gets the uploaded file's path, unopened.

    Why not gr.Image(type="filepath"): its preprocess still calls PIL.Image.open, so a
    0-byte file, a text file or a >179 MP image fails inside Gradio, before any handler,
    as the generic "upstream Gradio app has raised an exception". Here every file
    reaches the handler, which opens it with pipelines.images.open_image and says
    what is wrong, naming the field. A base64 data: URL arrives as its bytes.
    `is_template`: the browser shows it as a plain gr.Image."""

    is_template = True

    def preprocess(self, payload: Any) -> str | bytes | None:
        if payload is None:
            return None
        url = getattr(payload, "url", None) or ""
        if url.startswith("data:"):
            return base64.b64decode(url.partition(",")[2])
        return payload.path


class ImageFileEditor(gr.ImageEditor, metaclass=NoStubFile):
    """gr.ImageEditor whose handler gets {"background", "layers", "composite"} as the
    uploaded files' paths (or their bytes, for canvas blobs), unopened.

    Why: gr.ImageEditor decodes and converts every part whatever its `type` ("filepath"
    even re-encodes them), so a 13000x13000 PNG would be decoded three times (background,
    composite, a layer) before any handler could refuse it. `ui.form.images_from_area`
    opens the parts with the pixel limit checked first."""

    is_template = True

    def preprocess(self, payload: Any) -> dict[str, Any] | None:
        if payload is None:
            return None
        parts: Any = payload
        if payload.id is not None:  # sent as blobs beforehand (the browser's canvas)
            parts = self.blob_storage.pop(payload.id, None)
        if parts is None:
            return {"background": None, "layers": [], "composite": None}

        def raw(part: Any) -> str | bytes | None:
            return part.path if isinstance(part, FileData) else part

        layers = [raw(x) for x in (parts.layers or []) if x is not None]
        return {"background": raw(parts.background), "layers": layers,
                "composite": raw(parts.composite)}  # fmt: skip


def request_default(name: str) -> Any:
    from pipelines.request import GenerationRequest

    return next(f.default for f in fields(GenerationRequest) if f.name == name)


def use_image(image: Any, mode: str) -> tuple[Any, str]:
    """Put `image` (a path) into the editor as the init image; "off" becomes "img2img"."""
    if not image:
        raise gr.Error("No result selected: generate or pick an image first.")
    editor = {"background": image, "layers": [], "composite": image}
    return editor, "img2img" if mode == "off" else mode


def build_img2img_panel(selected: gr.State) -> Img2ImgPanel:
    """Create the area in the current Blocks context; `selected` = the gallery's pick."""
    mode = gr.Radio(MODE_LABELS, value="off", label="Use the image for",
                    elem_id="atelier-image-mode")  # fmt: skip
    # format="png": the default webp is lossy, and the init image must reach the engine
    # as uploaded. The brush paints the mask (any colour: painted = repaint).
    editor = ImageFileEditor(label="Init image (paint the area to repaint when inpainting)",
                             type="filepath", format="png", image_mode="RGBA", height=360,
                             sources=["upload", "clipboard"], transforms=(), layers=False,
                             brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                             elem_id="atelier-init-image")  # fmt: skip
    with gr.Row(equal_height=True):
        from_gallery = gr.Button("Use the selected result", size="sm",
                                 elem_id="atelier-from-gallery")  # fmt: skip
    with gr.Accordion("Or upload a mask (white = repaint; same size as the image)", open=False):
        # The file as uploaded (the engine reads it as greyscale: white = repaint).
        mask_upload = ImageUpload(label="Mask", type="filepath", image_mode=None, format="png",
                                  sources=["upload", "clipboard"], height=200,
                                  elem_id="atelier-mask-upload")  # fmt: skip
    with gr.Row():
        strength = gr.Slider(0.01, 1.0, value=request_default("strength"), step=0.01,
                             label="Denoising strength", elem_id="atelier-strength")  # fmt: skip
        mask_blur = gr.Slider(0, 64, value=request_default("mask_blur"), step=1,
                              label="Mask blur", elem_id="atelier-mask-blur")  # fmt: skip
    with gr.Row():
        # A1111's "Only masked": repaint a crop around the mask at full resolution.
        area = gr.Radio([("Whole picture", "whole"), ("Only masked", "masked")],
                        value=request_default("inpaint_area"), label="Inpaint area",
                        elem_id="atelier-inpaint-area")  # fmt: skip
        padding = gr.Slider(0, 256, value=request_default("inpaint_padding"), step=4,
                            label="Only masked padding (px)",
                            elem_id="atelier-inpaint-padding")  # fmt: skip
    panel = Img2ImgPanel(mode, editor, mask_upload, strength, mask_blur, area, padding,
                         from_gallery)  # fmt: skip
    from_gallery.click(use_image, [selected, mode], [editor, mode], api_name="use_selected",
                       api_visibility="undocumented", concurrency_limit=None)  # fmt: skip
    editor.upload(lambda m: "img2img" if m == "off" else m, mode, mode,
                  api_name="init_uploaded", api_visibility="undocumented",
                  concurrency_limit=None)  # fmt: skip
    return panel
