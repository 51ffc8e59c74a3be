"""The X/Y/Z plot's grid picture: cells in rows and columns, axis labels on the top
and the left (A1111's layout), a title per Z value, and all Z grids side by side.

Pure Pillow (no torch). Cells of different sizes (a Size axis) are centred in the
largest cell's box on a white background. Text uses Pillow's built-in scalable font,
so no font file is needed, at a size that stays readable on tiny cells.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
MIN_FONT = 12


@dataclass(frozen=True)
class GridLayout:
    cell: tuple[int, int]  # width, height of a cell's box
    left: int  # width of the y label column
    top: int  # height of the x label band (and the title)
    columns: int
    rows: int

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.cell
        return self.left + w * self.columns, self.top + h * self.rows


def font_for(cell: tuple[int, int]) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    size = max(MIN_FONT, (cell[0] + cell[1]) // 25)  # A1111: (width + height) // 25
    return ImageFont.load_default(size=size)


def wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """`text` in lines no wider than `width` (a word wider than that stays whole)."""
    lines: list[str] = []
    for part in text.split("\n"):
        line = ""
        for word in part.split(" "):
            trial = f"{line} {word}".strip()
            if line and font.getlength(trial) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def _line_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    left, top, right, bottom = font.getbbox("Ayg")
    return int(bottom - top) + 4


def draw_grid(cells: list[list[Image.Image]], x_labels: list[str], y_labels: list[str],
              title: str = "") -> Image.Image:  # fmt: skip
    """One grid: `cells[row][column]`, x labels over the columns, y labels left of the
    rows (empty label lists leave that band out), `title` above everything."""
    rows, columns = len(cells), len(cells[0])
    cw = max(im.width for row in cells for im in row)
    ch = max(im.height for row in cells for im in row)
    font = font_for((cw, ch))
    lh = _line_height(font)
    pad = lh // 2
    x_lines = [wrap(t, font, cw - 2 * pad) for t in x_labels]
    y_width = min(2 * cw, max([int(font.getlength(t)) for t in y_labels] or [0]) + 2 * pad)
    y_lines = [wrap(t, font, max(y_width - 2 * pad, 1)) for t in y_labels]
    title_lines = wrap(title, font, cw * columns + y_width) if title else []
    title_h = len(title_lines) * lh + pad if title_lines else 0
    x_h = max((len(ls) for ls in x_lines), default=0) * lh + 2 * pad if x_labels else 0
    top = title_h + x_h
    layout = GridLayout((cw, ch), y_width if y_labels else 0, top, columns, rows)
    grid = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(grid)
    y0 = pad
    for line in title_lines:
        draw.text((layout.size[0] // 2, y0), line, fill=INK, font=font, anchor="ma")
        y0 += lh
    band = title_h + pad
    for c, lines in enumerate(x_lines):
        cx = layout.left + c * cw + cw // 2
        for n, line in enumerate(lines):
            draw.text((cx, band + n * lh), line, fill=INK, font=font, anchor="ma")
    for r, lines in enumerate(y_lines):
        cy = top + r * ch + ch // 2 - len(lines) * lh // 2
        for n, line in enumerate(lines):
            draw.text((layout.left // 2, cy + n * lh), line, fill=INK, font=font, anchor="ma")
    for r, row in enumerate(cells):
        for c, im in enumerate(row):
            x = layout.left + c * cw + (cw - im.width) // 2
            y = top + r * ch + (ch - im.height) // 2
            grid.paste(im.convert("RGB"), (x, y))
    return grid


def side_by_side(grids: list[Image.Image], gap: int = 16) -> Image.Image:
    """The Z grids in one picture, left to right, tops aligned."""
    width = sum(g.width for g in grids) + gap * (len(grids) - 1)
    height = max(g.height for g in grids)
    out = Image.new("RGB", (width, height), BACKGROUND)
    x = 0
    for g in grids:
        out.paste(g, (x, 0))
        x += g.width + gap
    return out
