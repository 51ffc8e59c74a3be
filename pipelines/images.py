"""Opening a user's image: one function for every entry point (the studio, `/generate`,
`/video`, `/preprocess`, PNG Info, the CLI and `--jobs` lines).

    picture = open_image("init_image", path_or_bytes, settings.max_image_pixels)

Why one function: an image is the one input whose cost is not in its size on disk.
A 20 KB PNG of 13000x13000 one-bit pixels decodes to 169 MB (and to gigabytes once
converted and preprocessed). `Image.open` is lazy (it reads the header only), so the
pixel count is checked from the header *before* anything is decoded. Every failure
(no file, empty file, not an image, too many pixels, Pillow's decompression-bomb
ceiling, truncated data, a mode the engine cannot use) becomes a RequestError that
names the request's field and the rule, never a library traceback, and never a
server path: a file is named by its base name at most (the CLI, whose user owns
the paths, passes the full path as `name`).
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import os
import re
import struct
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import RequestError

log = logging.getLogger(__name__)
DEFAULT_MAX_PIXELS = 40_000_000  # the `max_image_pixels` setting's default
# Modes the engine can turn into RGB (and masks into L) without losing the picture.
# 16/32-bit greyscale (I;16, I, F) would be clipped to white by convert("RGB"),
# and "La" does not convert at all: those are refused with a hint instead.
SUPPORTED_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr",
                   "LAB", "HSV")  # fmt: skip
# What Pillow's decoders raise on bad data (a truncated file, a broken zlib stream).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def megapixels(pixels: int) -> str:
    """40_000_000 -> "40-megapixel" (the limit as the messages state it)."""
    return f"{pixels / 1e6:g}-megapixel"


def check_pixels(field: str, size: tuple[int, int], max_pixels: int) -> None:
    """Refuse a width x height over `max_pixels` (0 = no limit of ours) or over Pillow's
    own decompression-bomb ceiling (`Image.MAX_IMAGE_PIXELS`, ~89 MP), whichever is lower:
    a bomb is an error, never a warning."""
    w, h = size
    if max_pixels and w * h > max_pixels:
        raise RequestError(field, f"{w}x{h} is over the {megapixels(max_pixels)} limit")
    ceiling = Image.MAX_IMAGE_PIXELS
    if ceiling and w * h > ceiling:
        raise RequestError(field, f"{w}x{h} is over Pillow's decompression-bomb limit of "
                           f"{ceiling:,} pixels")  # fmt: skip


def open_image(field: str, source: Any, max_pixels: int, name: str | None = None) -> Image.Image:
    """The image in `source`, decoded, after its header passed the pixel limit.

    `source`: a path (str or Path), bytes, a binary file-like object, a PIL image, a
    numpy array, or a Gradio file dict / FileData ({"path": ..., "orig_name": ...}).
    `max_pixels`: the most width x height (the `max_image_pixels` setting; 0 = only
    Pillow's ceiling). `name`: how messages name the file (default: its base name).
    EXIF orientation is applied, as a browser shows the picture. Raises RequestError."""
    if isinstance(source, Image.Image):
        return _checked_loaded(field, source, max_pixels)
    if type(source).__module__ == "numpy":
        return _checked_loaded(field, Image.fromarray(source), max_pixels)
    readable, shown = _readable(field, source, name)
    # 1. header only: Pillow's bomb warning is ours to raise as an error (check_pixels)
    _quiet_bomb_warning()
    try:
        image = Image.open(readable)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RequestError(field, _bomb_rule(str(e), max_pixels)) from None
    except UnidentifiedImageError:
        raise RequestError(field, "not an image file (cannot identify image file)") from None
    except OSError as e:
        raise RequestError(field, f"cannot be read ({_clean(e, readable, shown)})") from None
    with image:
        check_pixels(field, image.size, max_pixels)
        # 2. decode (now that the size is known to be acceptable)
        try:
            image.load()
        except DECODE_ERRORS as e:
            rule = f"truncated or corrupt image data ({_clean(e, readable, shown)})"
            raise RequestError(field, rule) from None
        _check_mode(field, image)
        # 3. as a browser shows it (phones store the rotation in EXIF); broken EXIF is
        # not a broken picture: the image is kept as stored
        try:
            ImageOps.exif_transpose(image, in_place=True)
        except Exception as e:  # any EXIF parsing failure (struct, value, OS errors)
            log.info("%s: EXIF orientation not applied (%s)", field, e)
    return image


@functools.cache
def _quiet_bomb_warning() -> None:
    """Silence Pillow's DecompressionBombWarning for the process, once: every image of a
    request is refused over Pillow's ceiling by check_pixels, as an error naming the
    field, so the warning is only noise in the log. (A filter set once, not swapped in
    and out with warnings.catch_warnings, which is not thread-safe: a concurrent
    catch_warnings elsewhere could leave its own filters in force for good.)"""
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _readable(field: str, source: Any, name: str | None) -> tuple[Any, str]:
    """What Image.open reads from `source`, and how messages name it."""
    if isinstance(source, Mapping) and ("path" in source or "url" in source):
        name = name or source.get("orig_name") or None
        source = source.get("path") or source.get("url")
    elif not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) and isinstance(
        getattr(source, "path", None), str
    ):  # gradio.FileData
        name = name or getattr(source, "orig_name", None) or None
        source = source.path
    if isinstance(source, str) and source.startswith("data:"):  # a data: URL (base64)
        try:
            source = base64.b64decode(source.partition(",")[2], validate=True)
        except ValueError:
            rule = "not an image file (a data: URL that is not base64)"
            raise RequestError(field, rule) from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise RequestError(field, "is empty (0 bytes)")
        return io.BytesIO(bytes(source)), name or "the uploaded image"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        shown = name or path.name or str(path)
        if not path.exists():
            raise RequestError(field, f"no such file: {shown}")
        if path.is_dir():
            raise RequestError(field, f"is a folder, not an image file: {shown}")
        if path.stat().st_size == 0:
            raise RequestError(field, "is empty (0 bytes)")
        return str(path), shown
    if hasattr(source, "read"):
        return source, name or "the uploaded image"
    raise RequestError(field, f"must be an image file, got {type(source).__name__}")


def _checked_loaded(field: str, image: Image.Image, max_pixels: int) -> Image.Image:
    """An image object that is already open: its size checked before it is decoded (a
    lazily opened file) or at least before it goes further (a decoded one)."""
    check_pixels(field, image.size, max_pixels)
    try:
        image.load()
    except DECODE_ERRORS as e:
        raise RequestError(field, f"truncated or corrupt image data ({e})") from None
    _check_mode(field, image)
    return image


def _check_mode(field: str, image: Image.Image) -> None:
    if image.mode not in SUPPORTED_MODES:
        raise RequestError(field, f"unsupported image mode {image.mode} (16/32-bit or unusual "
                           "channels): save it as 8-bit RGB, RGBA or greyscale")  # fmt: skip


def _bomb_rule(message: str, max_pixels: int) -> str:
    """Pillow's DecompressionBombError (over twice its ceiling, raised before the size
    can be read) as our rule; its message carries the pixel count, never a path."""
    found = re.search(r"\((\d+) pixels\)", message)
    pixels = int(found.group(1)) if found else 0
    what = f"{pixels:,} pixels" if pixels else "the image"
    if max_pixels and pixels > max_pixels:
        return f"{what} is over the {megapixels(max_pixels)} limit (a decompression bomb)"
    return f"{what} is over Pillow's decompression-bomb limit of {2 * Image.MAX_IMAGE_PIXELS:,}"


def _clean(error: BaseException, readable: Any, shown: str) -> str:
    """A library message without the server's path in it."""
    text = str(error) or type(error).__name__
    return text.replace(readable, shown) if isinstance(readable, str) else text
