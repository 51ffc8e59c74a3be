"""What travels between a front end and a Ray Serve replica: jobs, events, results.

Plain dicts of str/int/float/bytes, no pickled engine objects and no paths: the two
sides share no filesystem (only, by choice, the model folders) and may run different
builds of Python. Images travel as PNG bytes (lossless, so pixels are equal to a
local run; generated images carry their A1111 infotext in the `parameters` chunk),
video frames as `.npy` bytes of the float32 array (exact).

Job:    {"kind": "image", "request": {...}, "inputs": {...}, "caller": str}
        {"kind": "video", "request": {...}, "image": png, "end_image": png, "caller": str}
Events: {"kind": "accepted", "replica", "pid"}, then the engine's own kinds (queued,
        download, hashing, started, progress, preview) and one terminal event:
        result (the result's fields), error {"error": {...}} or cancelled.

Used by pipelines/serve.py (the replica) and pipelines/remote.py (the front end).
"""

from __future__ import annotations

import io
from dataclasses import fields
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from .errors import AtelierError, Cancelled, LimitError, ModelUnavailableError, RequestError


# -- images ---------------------------------------------------------------------
def png_bytes(image: Image.Image | None, infotext: str | None = None) -> bytes | None:
    """PNG bytes of `image` (None stays None), with `infotext` as A1111's `parameters`."""
    if image is None:
        return None
    info = None
    if infotext is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", infotext)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def png_image(data: bytes | None) -> Image.Image | None:
    """The image in PNG bytes, fully decoded (None stays None)."""
    if data is None:
        return None
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


# -- jobs -----------------------------------------------------------------------
def encode_job(spec: Any, caller: str) -> dict[str, Any]:
    """The wire form of a resolved ImageJob/VideoJob (the front end's Prepared.spec:
    defaults filled in, seed chosen, so both sides make the same pixels)."""
    from .image_job import ImageJob
    from .video import VideoJob

    if isinstance(spec, ImageJob):
        inputs = spec.inputs
        return {
            "kind": "image",
            "caller": caller,
            "request": spec.request.to_dict(),
            "inputs": {
                "init_image": png_bytes(inputs.init_image),
                "mask_image": png_bytes(inputs.mask_image),
                "control_images": [png_bytes(im) for im in inputs.control_images],
            },
        }
    if isinstance(spec, VideoJob):
        return {
            "kind": "video",
            "caller": caller,
            "request": spec.request.to_dict(),
            "image": png_bytes(spec.image),
            "end_image": png_bytes(spec.end_image),
        }
    raise TypeError(f"no wire form for {type(spec).__name__}")


def decode_job(data: dict[str, Any]) -> Any:
    """The ImageJob/VideoJob of a wire job (never saved on the replica: save_to None)."""
    from .image_job import ImageJob
    from .request import GenerationRequest
    from .tasks import Inputs
    from .video import VideoJob, VideoRequest

    if data.get("kind") == "image":
        raw = data.get("inputs") or {}
        inputs = Inputs(png_image(raw.get("init_image")), png_image(raw.get("mask_image")),
                        [png_image(b) for b in raw.get("control_images") or []])  # fmt: skip
        return ImageJob(GenerationRequest.from_dict(data["request"]), inputs)
    if data.get("kind") == "video":
        return VideoJob(VideoRequest.from_dict(data["request"]), png_image(data.get("image")),
                        png_image(data.get("end_image")))  # fmt: skip
    raise RequestError("kind", f"must be image or video, got {data.get('kind')!r}")


def model_of(spec: Any) -> str:
    """The model a resolved job runs: the multiplexed model id on Ray Serve."""
    return str(spec.request.model)


# -- results --------------------------------------------------------------------
# Result fields that stay on the replica: its file paths and upload URLs mean nothing
# to the front end, which writes (and uploads) the files itself.
_LOCAL_ONLY = ("paths", "urls")


def encode_result(result: Any) -> dict[str, Any]:
    """Every field of a GenerationResult/VideoResult (fields added later travel too, as
    long as they are plain data): images as PNG with infotext, frames as .npy."""
    from .image_job import GenerationResult

    data: dict[str, Any] = {"type": "image" if isinstance(result, GenerationResult) else "video"}
    for f in fields(result):
        value = getattr(result, f.name)
        if f.name in _LOCAL_ONLY:
            continue
        if f.name == "images":
            value = [png_bytes(im, info) for im, info in zip(value, result.infotexts, strict=True)]
        elif f.name == "frames":
            value = npy_bytes(value)
        elif f.name == "request":
            value = value.to_dict()
        data[f.name] = value
    return data


def decode_result(data: dict[str, Any], slot_prefix: str) -> Any:
    """The GenerationResult/VideoResult of a wire result; its slot reads
    `<slot_prefix>/<the replica's slot>` (e.g. `ray:1a2b3c4d/cpu#0`). Fields this side
    does not know are dropped; fields the replica did not send keep their defaults."""
    from .image_job import GenerationResult
    from .request import GenerationRequest
    from .video import VideoRequest, VideoResult

    image = data["type"] == "image"
    cls = GenerationResult if image else VideoResult
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data or f.name in _LOCAL_ONLY:
            continue
        value = data[f.name]
        if f.name == "images":
            value = [png_image(b) for b in value]
        elif f.name == "frames":
            value = npy_array(value)
        elif f.name == "request":
            value = (GenerationRequest if image else VideoRequest).from_dict(value)
        elif f.name == "slot":
            value = f"{slot_prefix}/{value}"
        kwargs[f.name] = value
    return cls(**kwargs)


# -- errors ---------------------------------------------------------------------
_KINDS: dict[str, type[AtelierError]] = {
    "RequestError": RequestError,
    "LimitError": LimitError,
    "ModelUnavailableError": ModelUnavailableError,
    "Cancelled": Cancelled,
    "AtelierError": AtelierError,
}


def encode_error(error: BaseException) -> dict[str, Any]:
    """An engine error as data; a RequestError keeps its field and rule (the front end
    shows `field: rule` exactly as for a local job)."""
    kind = next((k for k, t in _KINDS.items() if type(error) is t), None)
    if kind is None:
        kind = "AtelierError" if isinstance(error, AtelierError) else "Exception"
    data: dict[str, Any] = {"type": kind, "message": str(error), "class": type(error).__name__}
    if isinstance(error, RequestError):
        data.update(field=error.field, rule=error.rule)
    return data


def decode_error(data: dict[str, Any], where: str) -> BaseException:
    """The exception to raise on the front end for a replica's error. A bug or library
    failure on the replica comes back as an AtelierError naming its class and `where`."""
    kind = _KINDS.get(data.get("type", ""))
    if kind in (RequestError, LimitError):
        return kind(data["field"], data["rule"])
    if kind is not None:
        return kind(data["message"])
    return AtelierError(f"{data.get('class', 'Error')} on {where}: {data.get('message', '')}")
