"""Synthetic scenes for `atelier-shapes`: one or two flat shapes on a flat background.

Why synthetic: the model has to be trained on this machine, offline, in about two
hours, and its output has to be checkable by a pixel classifier (`judge.py`). Flat
colours from a fixed palette and four shapes with very different fill ratios make
both possible.

Everything is a pure function of a seed (`random.Random(seed)`), so a training run
and a test see the same scenes on any machine. Shapes are drawn 4x supersampled and
box-downsampled, so edges are anti-aliased as in a real picture.

Caption grammar (what the text encoder learns; see `caption_variants`):
    full:    "a red circle on a blue background"
             "a red circle and a blue square on a white background"
    partial: "a red circle", "red circle", "a red circle and a blue square",
             "blue background", "a blue background", "red", "circle"
    dropout: ""  (so classifier-free guidance has an unconditional branch)
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "orange": (245, 140, 20),
    "purple": (140, 50, 180),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SIZE = 64
SUPERSAMPLE = 4
STAR_INNER = 0.4  # inner/outer radius: fill ratio ~0.34, far from the triangle's 0.5

# Caption sampling probabilities (training). Dropout gives CFG its unconditional branch;
# partial captions put single words ("red") into the model's language for negative prompts.
P_DROPOUT = 0.10
P_FULL = 0.55


@dataclass(frozen=True)
class Shape:
    """One shape: kind, colour name, centre (cx, cy) and half-size r, in 64-px units."""

    kind: str
    colour: str
    cx: float
    cy: float
    r: float


@dataclass(frozen=True)
class Scene:
    """A background colour and one or two shapes (never overlapping, never bg-coloured)."""

    background: str
    shapes: tuple[Shape, ...]


def sample_scene(seed: int, p_two: float = 0.25, size: int = SIZE) -> Scene:
    """A random scene, a pure function of `seed`. Two shapes with probability `p_two`."""
    rng = random.Random(seed)
    background = rng.choice(COLOURS)
    two = rng.random() < p_two
    fg_choices = [c for c in COLOURS if c != background]
    colours = rng.sample(fg_choices, 2) if two else [rng.choice(fg_choices)]
    s = size / SIZE
    shapes = []
    if two:
        # Left/right or top/bottom halves, so the two shapes never touch.
        vertical = rng.random() < 0.5
        for i, colour in enumerate(colours):
            r = rng.uniform(7, 13)
            a = rng.uniform(r + 2, SIZE / 2 - r - 1) + i * SIZE / 2
            b = rng.uniform(r + 2, SIZE - r - 2)
            cx, cy = (b, a) if vertical else (a, b)
            shapes.append(Shape(rng.choice(SHAPES), colour, cx * s, cy * s, r * s))
    else:
        r = rng.uniform(8, 22)
        cx = rng.uniform(r + 2, SIZE - r - 2)
        cy = rng.uniform(r + 2, SIZE - r - 2)
        shapes.append(Shape(rng.choice(SHAPES), colours[0], cx * s, cy * s, r * s))
    return Scene(background, tuple(shapes))


def polygon(shape: Shape, scale: float = 1.0) -> list[tuple[float, float]]:
    """The outline points of a triangle/square/star (a circle is drawn as an ellipse)."""
    cx, cy, r = shape.cx * scale, shape.cy * scale, shape.r * scale
    if shape.kind == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape.kind == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape.kind == "star":
        # Centre the star's bounding box: its top is at -R, its bottom at R*cos(36deg).
        big = r * 2 / (1 + math.cos(math.pi / 5))
        oy = cy + big - r
        pts = []
        for k in range(10):
            rad = big if k % 2 == 0 else big * STAR_INNER
            ang = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(ang), oy + rad * math.sin(ang)))
        return pts
    raise ValueError(f"unknown shape kind {shape.kind!r}; expected one of {SHAPES}")


def _draw(draw: ImageDraw.ImageDraw, shape: Shape, fill: object, width: int | None) -> None:
    """Draw `shape` (supersampled coordinates); `width` draws an outline instead of a fill."""
    k = SUPERSAMPLE
    if shape.kind == "circle":
        box = [
            (shape.cx - shape.r) * k,
            (shape.cy - shape.r) * k,
            (shape.cx + shape.r) * k,
            (shape.cy + shape.r) * k,
        ]
        if width:
            draw.ellipse(box, outline=fill, width=width)
        else:
            draw.ellipse(box, fill=fill)
    elif width:
        # A closed polyline with round joints: polygon(width=) leaves gaps at sharp vertices.
        pts = polygon(shape, k)
        draw.line([*pts, pts[0], pts[1]], fill=fill, width=width, joint="curve")
    else:
        draw.polygon(polygon(shape, k), fill=fill)


def outline_width(shape: Shape) -> int:
    """Stroke width (in 64-px units) of an outline rendering: ~2-3 px, thicker on big shapes."""
    return max(2, round(shape.r / 7))


def render(scene: Scene, outline: bool = False, size: int = SIZE) -> Image.Image:
    """The scene as an RGB image; `outline=True` draws each shape as a stroke only."""
    k = SUPERSAMPLE
    big = Image.new("RGB", (size * k, size * k), PALETTE[scene.background])
    draw = ImageDraw.Draw(big)
    for shape in scene.shapes:
        width = outline_width(shape) * k if outline else None
        _draw(draw, shape, PALETTE[shape.colour], width)
    return big.resize((size, size), Image.Resampling.BOX)


def shape_mask(scene: Scene, size: int = SIZE) -> np.ndarray:
    """Boolean (size, size) mask of the filled shapes (pixel more than half covered)."""
    k = SUPERSAMPLE
    big = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(big)
    for shape in scene.shapes:
        _draw(draw, shape, 255, None)
    small = np.asarray(big.resize((size, size), Image.Resampling.BOX))
    return small >= 128


def edge_map(scene: Scene, thickness: int = 1, size: int = SIZE) -> Image.Image:
    """A canny-like control map: white edge pixels of the shapes' outlines on black."""
    from scipy import ndimage

    mask = shape_mask(scene, size)
    inner = ndimage.binary_erosion(mask, iterations=thickness)
    outer = (
        ndimage.binary_dilation(mask, iterations=max(0, thickness - 1)) if thickness > 1 else mask
    )
    edges = outer & ~inner
    return Image.fromarray((edges * 255).astype(np.uint8)).convert("RGB")


def canny_map(image: Image.Image, low: int = 100, high: int = 200) -> Image.Image:
    """OpenCV Canny of a rendered image, as the studio's Canny preprocessor gives it."""
    import cv2

    # On the RGB array, as controlnet-aux does: a grey conversion loses red-on-blue edges.
    edges = cv2.Canny(np.ascontiguousarray(np.asarray(image.convert("RGB"))), low, high)
    return Image.fromarray(edges).convert("RGB")


def _phrase(shape: Shape) -> str:
    return f"a {shape.colour} {shape.kind}"


def full_caption(scene: Scene) -> str:
    """`a red circle on a blue background` / `a red circle and a blue square on a ...`."""
    things = " and ".join(_phrase(s) for s in scene.shapes)
    return f"{things} on a {scene.background} background"


def caption_variants(scene: Scene) -> list[str]:
    """Every partial caption the training may use for `scene` (the full one excluded)."""
    first = scene.shapes[0]
    variants = [
        " and ".join(_phrase(s) for s in scene.shapes),
        f"{scene.background} background",
        f"a {scene.background} background",
        first.colour,
        first.kind,
    ]
    if len(scene.shapes) == 1:
        variants.append(f"{first.colour} {first.kind}")
    else:
        variants += [_phrase(s) for s in scene.shapes]
    return variants


def sample_caption(scene: Scene, rng: random.Random) -> str:
    """A training caption: "" (dropout), the full caption, or one partial caption."""
    u = rng.random()
    if u < P_DROPOUT:
        return ""
    if u < P_DROPOUT + P_FULL:
        return full_caption(scene)
    return rng.choice(caption_variants(scene))


def vocabulary() -> list[str]:
    """Every word a caption can contain, in a fixed order (the tokenizer's word list)."""
    return ["a", "and", "on", "background", *COLOURS, *SHAPES]
