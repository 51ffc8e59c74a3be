"""The studio's own small Gradio components: inputs that hand handlers what was sent,
unopened and unrounded, so the engine's checks (pixel limits from the header, whole
numbers) name the field instead of Gradio failing first with a generic error."""

from __future__ import annotations

import base64
from abc import ABCMeta
from typing import Any

import gradio as gr
from gradio.data_classes import FileData


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


class WholeNumber(gr.Number, metaclass=NoStubFile):
    """A number the API documents as `int` (view_api's type) but passes on as sent.

    gr.Number(precision=0) would say `int` too, but it rounds: 20.5 steps would
    silently become 20. Here a non-whole value reaches the engine's validation and
    comes back as an error naming the field. The browser shows it as a gr.Number."""

    is_template = True

    def api_info(self) -> dict[str, str]:  # type: ignore[override]
        return {"type": "integer"}
