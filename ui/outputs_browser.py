"""The outputs folder as a browsable, searchable list: what the Outputs tab shows.

Pure logic (no gradio): listing, search, paging, ownership and serving copies.

Safety rules (a public studio):
- Only files found by listing the server's outputs folder (one level, no links) are
  ever shown; a user never sends a path or a name, only an index into the page the
  server gave them, checked again against the folder when opened.
- Files are served as copies in the studio's scratch folder (unguessable paths), as
  fresh results are (ui.runner.ImageStore): the outputs folder itself is not exposed.
- Owners: every result the studio saves is recorded with its caller
  (`<outputs>/.atelier-owners.jsonl`, one JSON line per file, append-only). With
  `--auth` (a caller "user:NAME") or on a public studio, a viewer sees only their own
  files; a local private studio shows every file in the folder (CLI results too).
  A file with no recorded owner is shown only where everything is shown.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

OWNERS_FILE = ".atelier-owners.jsonl"
IMAGE_SUFFIXES = (".png",)
VIDEO_SUFFIXES = (".mp4", ".webp", ".gif")
PER_PAGE = 24
THUMB = 256  # px, longest side of a grid thumbnail (what a phone downloads per item)


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "image" | "video"
    mtime: float
    text: str  # the PNG's infotext, or the video's JSON sidecar as text
    prompt: str  # what search looks at
    owner: str | None


def _prompt_of(kind: str, text: str) -> str:
    if not text:
        return ""
    if kind == "image":
        from pipelines.infotext import parse_infotext

        prompt, negative, _ = parse_infotext(text)
        return f"{prompt}\n{negative}"
    try:
        params = json.loads(text)
    except ValueError:
        return ""
    return f"{params.get('prompt', '')}\n{params.get('negative_prompt', '')}"


def _kind_of(name: str) -> str | None:
    """ "image" or "video" for the file types the studio writes, else None."""
    suffix = os.path.splitext(name)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return "video" if suffix in VIDEO_SUFFIXES else None


def paged(every: list[Entry], page: int, per_page: int = PER_PAGE) -> tuple[list[Entry], int, int]:
    """(the entries of page `page` (1-based, clamped), the page number, pages in all)."""
    pages = max(1, -(-len(every) // per_page))
    page = min(max(1, int(page)), pages)
    return every[(page - 1) * per_page : page * per_page], page, pages


def _text_of(path: Path, kind: str) -> str:
    """The infotext of a PNG (A1111's `parameters`) or a video's JSON sidecar; "" if none."""
    if kind == "image":
        from pipelines.outputs import read_png_parameters

        try:
            return read_png_parameters(path) or ""
        except (OSError, ValueError):
            return ""
    sidecar = path.with_suffix(path.suffix + ".json")
    try:
        return sidecar.read_text(encoding="utf-8") if sidecar.is_file() else ""
    except OSError:
        return ""


class OutputsBrowser:
    """The files of one outputs folder, newest first, with who made them."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._owners: dict[str, str] | None = None
        self._texts: dict[tuple[str, float], tuple[str, str]] = {}  # (name, mtime) -> text

    # -- ownership -----------------------------------------------------------
    def _load_owners(self) -> dict[str, str]:
        if self._owners is None:
            self._owners = {}
            path = self.folder / OWNERS_FILE if self.folder else None
            if path is not None and path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:
                        row = json.loads(line)
                        self._owners[str(row["file"])] = str(row["owner"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn last line after a crash: skip it
        return self._owners

    def record(self, paths: list[Path], owner: str) -> None:
        """Note `owner` as the maker of `paths` (files in the outputs folder)."""
        if self.folder is None or not paths:
            return
        rows = [p.name for p in paths if p.parent.resolve() == self.folder.resolve()]
        with self._lock:
            owners = self._load_owners()
            with (self.folder / OWNERS_FILE).open("a", encoding="utf-8") as f:
                for name in rows:
                    f.write(json.dumps({"file": name, "owner": owner}) + "\n")
                    owners[name] = owner

    # -- listing ---------------------------------------------------------------
    def entries(self, viewer: str | None = None, query: str = "") -> list[Entry]:
        """Files newest first; only `viewer`'s own when a viewer is given (None = all);
        `query` is matched, case-insensitively, in the prompt and negative prompt."""
        if self.folder is None or not self.folder.is_dir():
            return []
        found = []
        with os.scandir(self.folder) as it:
            for item in it:
                if item.name.startswith(".") or not item.is_file(follow_symlinks=False):
                    continue
                kind = _kind_of(item.name)
                if kind:
                    found.append((item.stat().st_mtime, item.name, kind))
        found.sort(reverse=True)
        words = query.lower().split()
        out = []
        with self._lock:
            owners = self._load_owners()
            for mtime, name, kind in found:
                owner = owners.get(name)
                if viewer is not None and owner != viewer:
                    continue
                entry = self._entry(name, kind, mtime, owner)
                if all(w in entry.prompt for w in words):
                    out.append(entry)
        return out

    def _entry(self, name: str, kind: str, mtime: float, owner: str | None) -> Entry:
        """One file's entry; its text is read once per (name, mtime). Under `_lock`."""
        key = (name, mtime)
        if key not in self._texts:
            text = _text_of(self.folder / name, kind)  # type: ignore[operator]
            self._texts[key] = (text, _prompt_of(kind, text).lower())
        text, prompt = self._texts[key]
        return Entry(name, kind, mtime, text, prompt, owner)

    def entry(self, name: str, viewer: str | None) -> Entry:
        """The entry of one file `viewer` may see (checked as `open` does), KeyError else."""
        path = self.open(name, viewer)
        kind = _kind_of(name)
        if kind is None:
            raise KeyError(name)
        with self._lock:
            return self._entry(name, kind, path.stat().st_mtime, self._load_owners().get(name))

    def page(
        self, viewer: str | None, query: str, page: int, per_page: int = PER_PAGE
    ) -> tuple[list[Entry], int, int]:
        """(entries of page `page` (1-based, clamped), the page number, pages in all)."""
        return paged(self.entries(viewer, query), page, per_page)

    def open(self, name: str, viewer: str | None) -> Path:
        """The path of `name` in the folder, checked again: a plain file directly in the
        folder that `viewer` may see. KeyError otherwise."""
        if self.folder is None or Path(name).name != name or name.startswith("."):
            raise KeyError(name)
        path = self.folder / name
        if not path.is_file() or path.is_symlink():
            raise KeyError(name)
        if viewer is not None and self._load_owners().get(name) != viewer:
            raise KeyError(name)
        return path

    # -- serving -------------------------------------------------------------
    @staticmethod
    def thumbnail(path: Path, into: Path) -> Path:
        """A small JPEG of a PNG (the grid), or a copy of a video, in `into`."""
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            copy = into / path.name
            shutil.copyfile(path, copy)
            return copy
        out = into / (path.stem + ".jpg")
        with Image.open(path) as im:
            im.thumbnail((THUMB, THUMB))
            im.convert("RGB").save(out, format="JPEG", quality=85)
        return out

    @staticmethod
    def full_copy(path: Path, into: Path) -> Path:
        """The file itself, byte for byte (its metadata included), in `into`."""
        copy = into / path.name
        shutil.copyfile(path, copy)
        return copy
