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

from dataclasses import dataclass, fields
from typing import Any

import gradio as gr

from ui.components import ImageFileEditor, ImageUpload
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
