"""Prompt styles: A1111's `styles.csv`, read and written as A1111 does.

A style is a named (prompt, negative prompt) pair. Applying styles to a request
expands its prompts before anything else sees them (A1111's
`apply_styles_to_prompt`): a style text holding `{prompt}` has the prompt put
in its place; otherwise the style text is appended after ", ". Several styles
apply in the order given. The resolved request (and so the infotext) carries
the expanded prompts and no style names, as A1111 writes them: pasting the
infotext reproduces the image without the styles file.

The file is A1111's: a CSV with the header `name,prompt,negative_prompt`
(extra columns such as A1111's old `description` are ignored). It is re-read
when it changes on disk, so a style saved by one studio page is offered to
every other. Writes are atomic (a temporary file renamed over the old one).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RequestError

FIELDNAMES = ("name", "prompt", "negative_prompt")
MAX_STYLES = 16  # styles per request
MAX_NAME = 100
PLACEHOLDER = "{prompt}"


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge(style_text: str, prompt: str) -> str:
    """A1111's `merge_prompts`: the style with `{prompt}` replaced, else both joined by ", "."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(p for p in (prompt.strip(), style_text.strip()) if p)


def style_names(value: Any) -> tuple[str, ...]:
    """A request's `styles` (a list of names, or one name) as a tuple of names."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if not isinstance(value, Iterable):
        raise RequestError("styles", f"must be a list of style names, got {value!r}")
    names = tuple(value)
    for name in names:
        if not isinstance(name, str):
            raise RequestError("styles", f"must be a list of style names, got {name!r}")
    return names


def read_styles(text: str) -> dict[str, Style]:
    """Styles of a styles.csv's text, by name (a later row of the same name wins, as in
    A1111's reader). Rows without a name are skipped."""
    out: dict[str, Style] = {}
    for row in csv.DictReader(io.StringIO(text), skipinitialspace=True):
        name = (row.get("name") or "").strip()
        if name:
            out[name] = Style(name, row.get("prompt") or "", row.get("negative_prompt") or "")
    return out


def write_styles(styles: Iterable[Style]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDNAMES, lineterminator="\n")
    writer.writeheader()
    for s in styles:
        writer.writerow({"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt})
    return buf.getvalue()


class StyleLibrary:
    """The styles of one styles.csv (None = no file: no styles, saving refused).

    Threads: reads and writes take `_lock`; the file is re-read when its mtime or size
    changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._styles: dict[str, Style] = {}

    def _current(self) -> dict[str, Style]:
        with self._lock:
            if self.path is None or not self.path.is_file():
                self._stamp, self._styles = None, {}
                return self._styles
            st = self.path.stat()
            stamp = (st.st_mtime, st.st_size)
            if stamp != self._stamp:
                self._styles = read_styles(self.path.read_text(encoding="utf-8-sig"))
                self._stamp = stamp
            return self._styles

    def names(self) -> list[str]:
        return list(self._current())

    def get(self, name: str) -> Style:
        styles = self._current()
        if name not in styles:
            known = ", ".join(styles) or "none (the styles file is empty or missing)"
            raise RequestError("styles", f"no style named {name!r}; styles: {known}")
        return styles[name]

    def apply(self, prompt: str, negative: str, names: Iterable[str]) -> tuple[str, str]:
        """(prompt, negative prompt) with the named styles applied in order."""
        names = tuple(names)
        if len(names) > MAX_STYLES:
            raise RequestError("styles", f"at most {MAX_STYLES} styles, got {len(names)}")
        for name in names:
            style = self.get(name)
            prompt = merge(style.prompt, prompt)
            negative = merge(style.negative_prompt, negative)
        return prompt, negative

    def save(self, name: str, prompt: str, negative_prompt: str) -> Style:
        """Add (or replace) a style and write the file. Raises RequestError."""
        name = (name or "").strip()
        if not name or len(name) > MAX_NAME or any(c in name for c in "\n\r\x00"):
            raise RequestError("style_name", f"must be 1 to {MAX_NAME} characters on one line")
        if self.path is None:
            raise RequestError("style_name", "no styles file is set (the styles_file setting)")
        styles = dict(self._current())
        style = Style(name, prompt or "", negative_prompt or "")
        styles[name] = style
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".styles-", suffix=".csv", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(write_styles(styles.values()))
            os.replace(tmp, self.path)
            self._stamp = None  # re-read on next use
        return style

    def delete(self, name: str) -> None:
        styles = dict(self._current())
        if name not in styles or self.path is None:
            raise RequestError("style_name", f"no style named {name!r}")
        del styles[name]
        with self._lock:
            self.path.write_text(write_styles(styles.values()), encoding="utf-8")
            self._stamp = None


def expand(req: Any, library: StyleLibrary) -> Any:
    """`req` (any request with prompt, negative_prompt, styles) with its styles applied
    and cleared: the prompts as A1111 writes them in the infotext."""
    from dataclasses import replace

    if not req.styles:
        return req
    if not isinstance(req.prompt, str) or not isinstance(req.negative_prompt, str):
        return req  # validation names the field
    prompt, negative = library.apply(req.prompt, req.negative_prompt, req.styles)
    return replace(req, prompt=prompt, negative_prompt=negative, styles=())
