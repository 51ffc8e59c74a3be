"""Upscalers: A1111's pixel resizers and upscaler models (ESRGAN, Real-ESRGAN, SwinIR, ...).

    library = UpscalerLibrary(Path("upscalers"))
    big = upscale(image, "4x-UltraSharp", 2048, 2048, model=descriptor)  # see load_upscaler

Models are `.safetensors` files in the `upscalers_dir` folder, named by their file
stem, loaded with spandrel (it detects the architecture and scale from the weights;
we never re-implement ESRGAN). Pickled `.pth` files are not loaded: `python app.py
convert FILE.pth` rewrites them as safetensors first (a pickle can run code).

spandrel runs a model on a whole image; a big image is cut here into tiles with
overlap, each tile upscaled alone and blended back with linear ramps over the
overlap, so memory stays bounded and seams do not show. To reach a target size
the model runs until the image is at least that big (at most 3 passes, as A1111)
and a Lanczos resize makes the exact size.

Nothing here holds a device slot; callers cache loaded models per slot
(`slot.cache`, keyed by `UpscalerEntry.key`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .errors import RequestError

log = logging.getLogger(__name__)

# A1111's pixel upscalers that need no model. "None" resizes with Lanczos as
# A1111's resize_image does when no upscaler runs.
RESAMPLERS: dict[str, Image.Resampling] = {
    "None": Image.Resampling.LANCZOS,
    "Lanczos": Image.Resampling.LANCZOS,
    "Nearest": Image.Resampling.NEAREST,
}
TILE = 192  # input pixels per tile side
OVERLAP = 16  # input pixels shared by neighbouring tiles
MAX_MODEL_PASSES = 3
MAX_SCALE = 8.0


@dataclass(frozen=True)
class UpscalerEntry:
    name: str
    path: Path

    @property
    def key(self) -> str:
        st = self.path.stat()
        return f"upscaler:{self.path.resolve()}:{st.st_mtime_ns}:{st.st_size}"


class UpscalerLibrary:
    """The upscaler models of one folder (None = none). Rescanned when the folder changes."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._entries: dict[str, UpscalerEntry] = {}
        self._pickles: dict[str, Path] = {}

    def _scan(self) -> dict[str, UpscalerEntry]:
        with self._lock:
            if self.folder is None or not self.folder.is_dir():
                self._entries, self._pickles, self._stamp = {}, {}, None
                return self._entries
            stamp = self.folder.stat().st_mtime
            if stamp != self._stamp:
                files = sorted(p for p in self.folder.rglob("*") if p.is_file())
                self._entries = {p.stem: UpscalerEntry(p.stem, p) for p in files
                                 if p.suffix == ".safetensors"}  # fmt: skip
                self._pickles = {p.stem: p for p in files if p.suffix in (".pth", ".pt", ".ckpt")}
                self._stamp = stamp
            return self._entries

    def names(self) -> list[str]:
        return list(self._scan())

    def get(self, name: str, field: str = "upscaler") -> UpscalerEntry:
        entries = self._scan()
        if name in entries:
            return entries[name]
        if name in self._pickles:
            rule = (f"{self._pickles[name].name} is a pickle: convert it first "
                    f"(python app.py convert {self._pickles[name].name})")  # fmt: skip
            raise RequestError(field, rule)
        raise RequestError(field, f"unknown upscaler {name!r}; upscalers: "
                           f"{', '.join(all_upscalers(self))}")  # fmt: skip


def all_upscalers(library: UpscalerLibrary | None) -> list[str]:
    """Pixel upscalers, then the models of the folder (what Extras and hires fix offer)."""
    return [*RESAMPLERS, *(library.names() if library is not None else [])]


def load_upscaler(entry: UpscalerEntry, device: str | torch.device) -> Any:
    """A spandrel ImageModelDescriptor on `device`, in eval mode. Raises RequestError
    for a file spandrel cannot read as an image-to-image model."""
    from spandrel import ImageModelDescriptor, ModelLoader

    try:
        model = ModelLoader(device=torch.device(device)).load_from_file(str(entry.path))
    except Exception as e:  # spandrel raises several kinds for unknown/broken weights
        raise RequestError("upscaler", f"{entry.path.name} is not an upscaler model spandrel "
                           f"can load ({type(e).__name__}: {e})") from None  # fmt: skip
    if not isinstance(model, ImageModelDescriptor) or model.input_channels != 3:
        raise RequestError("upscaler", f"{entry.path.name} is not an RGB image upscaler")
    return model.eval()


def _ramp(n: int, left: int, right: int) -> np.ndarray:
    """Weights along one tile side: rising over `left`, falling over `right` pixels."""
    w = np.ones(n, dtype=np.float32)
    if left:
        w[:left] = (np.arange(left, dtype=np.float32) + 1) / (left + 1)
    if right:
        w[n - right :] = ((np.arange(right, dtype=np.float32) + 1) / (right + 1))[::-1]
    return w


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


@torch.inference_mode()
def run_model(
    model: Any,
    image: Image.Image,
    tile: int = TILE,
    overlap: int = OVERLAP,
    cancelled: Callable[[], bool] = lambda: False,
    on_tile: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """One pass of an upscaler model (its own scale) over `image`, tiled with overlap."""
    from .errors import Cancelled

    scale = int(model.scale)
    param = next(model.model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    src = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    h, w, _ = src.shape
    out = np.zeros((h * scale, w * scale, 3), dtype=np.float32)
    weight = np.zeros((h * scale, w * scale, 1), dtype=np.float32)
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    done = 0
    for y in ys:
        for x in xs:
            if cancelled():
                raise Cancelled("cancelled")
            th, tw = min(tile, h), min(tile, w)
            piece = torch.from_numpy(src[y : y + th, x : x + tw]).permute(2, 0, 1)[None]
            up = model(piece.to(device, dtype)).float().clamp(0, 1)[0].permute(1, 2, 0).cpu()
            # Feather only the sides that overlap a neighbour.
            ov = overlap * scale
            wy = _ramp(th * scale, ov if y > 0 else 0, ov if y + th < h else 0)
            wx = _ramp(tw * scale, ov if x > 0 else 0, ov if x + tw < w else 0)
            mask = (wy[:, None] * wx[None, :])[..., None]
            Y, X = y * scale, x * scale
            out[Y : Y + th * scale, X : X + tw * scale] += up.numpy() * mask
            weight[Y : Y + th * scale, X : X + tw * scale] += mask
            done += 1
            if on_tile is not None:
                on_tile(done, len(ys) * len(xs))
    pixels = np.clip(out / np.maximum(weight, 1e-8), 0, 1)
    return Image.fromarray((pixels * 255).round().astype(np.uint8), "RGB")


def upscale(
    image: Image.Image,
    upscaler: str,
    width: int,
    height: int,
    model: Any = None,
    cancelled: Callable[[], bool] = lambda: False,
    tile: int = TILE,
    on_tile: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """`image` at exactly width x height through `upscaler` (a RESAMPLERS name, or a
    model name with its loaded `model`): the model runs until the image is at least
    that big (at most MAX_MODEL_PASSES times), then Lanczos makes the exact size."""
    image = image.convert("RGB")
    if upscaler in RESAMPLERS:
        return image.resize((width, height), RESAMPLERS[upscaler])
    if model is None:
        raise ValueError(f"upscaler {upscaler!r} needs its loaded model")
    for _ in range(MAX_MODEL_PASSES):
        if image.width >= width and image.height >= height:
            break
        image = run_model(model, image, tile, cancelled=cancelled, on_tile=on_tile)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def target_size(size: tuple[int, int], scale: float | None, width: int, height: int,
                field: str = "scale") -> tuple[int, int]:  # fmt: skip
    """Extras' size: width x height when given (0 = from the other side's ratio), else
    the image's size x scale."""
    w, h = size
    if width or height:
        if width and not height:
            height = round(width * h / w)
        elif height and not width:
            width = round(height * w / h)
        return width, height
    if scale is None or not 0 < scale <= MAX_SCALE:
        raise RequestError(field, f"must be a number above 0 and at most {MAX_SCALE:g}, "
                           f"got {scale!r}")  # fmt: skip
    return round(w * scale), round(h * scale)
