"""A pixel classifier that reads an `atelier-shapes` picture back into words.

Why: features (prompt, negative prompt, CFG, ControlNet, LoRA) are tested by what
the picture shows, not by pixel parity. This judge needs no model: the scenes use a
fixed palette and shapes whose fill ratios (area / bounding-box area) are far apart:
square 1.0, circle 0.79, triangle 0.5, star ~0.34.

Steps (`judge`):
1. background = the most common nearest-palette colour of the 2-px border;
2. foreground = pixels far (RGB distance) from the measured border colour;
3. objects = connected foreground components (>= `MIN_AREA` px), each coloured by
   the nearest-palette colour of its "core" pixels (near a palette colour), votes
   weighted by squared distance from the background, so blended edges (yellow on
   red reads as orange) are outvoted by pure interior pixels;
4. kind = fill ratio of the component with its holes filled (so an outline circle
   is still a circle); `hollowness` = share of that filled area that is not
   foreground (an outline drawing is hollow, a filled shape is not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .scenes import COLOURS, PALETTE

MIN_AREA = 12  # px: smaller components are noise
FG_DISTANCE = 38.0  # RGB distance from the background that counts as foreground
CORE_DISTANCE = 45.0  # RGB distance to a palette colour that lets a pixel vote
# Fill-ratio thresholds, midway between star 0.34, triangle 0.5, circle 0.79, square 1.0.
KIND_THRESHOLDS: tuple[tuple[float, str], ...] = (
    (0.42, "star"),
    (0.64, "triangle"),
    (0.89, "circle"),
)

STAR_SOLIDITY = 0.8  # a star's concave arms; every other kind is convex (~0.9-1.0)

_PALETTE_ARRAY = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)


@dataclass(frozen=True)
class Thing:
    """One foreground object as the judge reads it."""

    colour: str
    kind: str
    fill: float  # area / bounding-box area of the hole-filled mask
    hollowness: float  # share of the hole-filled area that is not foreground
    mask: np.ndarray  # bool (H, W), hole-filled

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class Verdict:
    """What a picture shows: its background colour and its objects, largest first."""

    background: str
    things: tuple[Thing, ...]
    foreground: np.ndarray  # bool (H, W): every pixel far from the background

    @property
    def main(self) -> Thing | None:
        return self.things[0] if self.things else None


def nearest_colours(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into `COLOURS` of the nearest palette colour, and the distance, per pixel."""
    flat = pixels.reshape(-1, 3).astype(np.float32)
    d = np.linalg.norm(flat[:, None, :] - _PALETTE_ARRAY[None, :, :], axis=-1)
    idx = d.argmin(axis=1)
    return idx.reshape(pixels.shape[:-1]), d.min(axis=1).reshape(pixels.shape[:-1])


def solidity(mask: np.ndarray) -> float:
    """Area / convex-hull area (pixel centres, grown by half a pixel): ~1 convex, ~0.5 a star."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask)
    corners = np.array([(-0.5, -0.5), (-0.5, 0.5), (0.5, -0.5), (0.5, 0.5)])
    pts = (np.stack([xs, ys], axis=1)[:, None, :] + corners[None]).reshape(-1, 2)
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return 1.0
    return float(mask.sum() / hull.volume)


def kind_of(fill: float) -> str:
    """Shape kind from a fill ratio (see `KIND_THRESHOLDS`)."""
    for limit, kind in KIND_THRESHOLDS:
        if fill < limit:
            return kind
    return "square"


def colour_share(image: Image.Image, colour: str, max_distance: float = CORE_DISTANCE) -> float:
    """Share of the picture's pixels whose nearest palette colour is `colour`."""
    arr = np.asarray(image.convert("RGB"))
    idx, dist = nearest_colours(arr)
    return float(((idx == COLOURS.index(colour)) & (dist < max_distance)).mean())


def judge(image: Image.Image) -> Verdict:
    """Read background colour and objects (colour, kind, fill, mask) from `image`."""
    from scipy import ndimage

    arr = np.asarray(image.convert("RGB")).astype(np.float32)
    # 1. background from the border
    border = np.concatenate(
        [arr[:2].reshape(-1, 3), arr[-2:].reshape(-1, 3), arr[:, :2].reshape(-1, 3)]
        + [arr[:, -2:].reshape(-1, 3)]
    )
    idx, _ = nearest_colours(border)
    background = COLOURS[int(np.bincount(idx, minlength=len(COLOURS)).argmax())]
    bg_rgb = np.median(border, axis=0)
    # 2. foreground
    foreground = np.linalg.norm(arr - bg_rgb, axis=-1) > FG_DISTANCE
    # 3. objects
    labels, n = ndimage.label(foreground)
    pix_idx, pix_dist = nearest_colours(arr)
    bg_index = COLOURS.index(background)
    things = []
    for label in range(1, n + 1):
        comp = labels == label
        if comp.sum() < MIN_AREA:
            continue
        core = comp & (pix_dist < CORE_DISTANCE) & (pix_idx != bg_index)
        pick = core if core.any() else comp
        # Weighted by distance from the background: pure pixels outvote blended edges.
        weights = np.linalg.norm(arr[pick] - bg_rgb, axis=-1) ** 2
        tally = np.bincount(pix_idx[pick], weights=weights, minlength=len(COLOURS))
        colour = COLOURS[int(tally.argmax())]
        # 4. kind from the hole-filled mask
        filled = ndimage.binary_fill_holes(comp)
        ys, xs = np.nonzero(filled)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fill = float(filled.sum() / box)
        hollow = float(1.0 - comp.sum() / filled.sum())
        kind = "star" if solidity(filled) < STAR_SOLIDITY else kind_of(fill)
        things.append(Thing(colour, kind, fill, hollow, filled))
    things.sort(key=lambda t: t.area, reverse=True)
    return Verdict(background, tuple(things), foreground)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
