"""Textual-inversion embeddings: A1111's `embeddings/` folder, used as A1111 uses it.

The file stem is the word: `EasyNegative.safetensors` is used by writing
`EasyNegative` in a prompt or negative prompt. Formats: A1111 `.safetensors` with
`emb_params` (SD 1.x: width 768, SD 2.x: 1024), SDXL with `clip_l` and `clip_g`,
and diffusers' one-tensor `{"<token>": vectors}` files. Pickles (`.pt`, `.bin`)
are refused with the reason (`python app.py convert FILE` rewrites one).

Why no `load_textual_inversion`: it adds tokens to the shared, cached tokenizer
and resizes the shared text encoder, so a word would leak into every later
request of that model. Instead the vectors go to prompt_encoding's `embeddings=`
hook, which puts them in place of the word's tokens for one encoder call only.
Files are read when a request uses them (and kept, keyed by size and mtime).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import RequestError
from .hashes import file_sha256
from .loras import read_header

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pt", ".bin", ".ckpt", ".pth")
TI_HASH_LEN = 12  # A1111: shorthash = sha256(file)[:12]


@dataclass(frozen=True)
class EmbeddingEntry:
    name: str  # the word in a prompt (the file stem)
    path: Path
    family: str  # sd15 or sdxl
    vectors: int  # how many token vectors it expands to

    @property
    def short_hash(self) -> str:
        return file_sha256(self.path)[:TI_HASH_LEN]

    def load(self) -> torch.Tensor | dict[str, torch.Tensor]:
        """(n, width) vectors, or {"clip_l": ..., "clip_g": ...} for SDXL (float32, CPU)."""
        from safetensors.torch import load_file

        tensors = load_file(str(self.path))
        if self.family == "sdxl":
            return {k: tensors[k].float() for k in ("clip_l", "clip_g")}
        key = "emb_params" if "emb_params" in tensors else next(iter(tensors))
        return tensors[key].float().reshape(-1, tensors[key].shape[-1])


def describe(name: str, path: Path) -> EmbeddingEntry:
    """The entry of one file, from its header alone; ValueError says what is wrong."""
    header = {k: v for k, v in read_header(path).items() if k != "__metadata__"}
    shapes = {k: v.get("shape", []) for k, v in header.items() if isinstance(v, dict)}
    if "clip_l" in shapes and "clip_g" in shapes:
        return EmbeddingEntry(name, path, "sdxl", int(shapes["clip_g"][0]))
    if "emb_params" in shapes or len(shapes) == 1:  # SD 1.x (768) / 2.x (1024): family sd15
        shape = shapes.get("emb_params") or next(iter(shapes.values()))
        if not 1 <= len(shape) <= 2:
            raise ValueError(f"vectors of shape {shape} are not (n, width)")
        return EmbeddingEntry(name, path, "sd15", 1 if len(shape) == 1 else int(shape[0]))
    keys = ", ".join(sorted(shapes)[:6])
    rule = "not a textual-inversion embedding (emb_params, or clip_l and clip_g)"
    raise ValueError(f"{rule}; keys: {keys}")


class EmbeddingLibrary:
    """The embeddings folder, rescanned on demand; vectors loaded when used."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self._lock = threading.Lock()
        self._entries: dict[str, EmbeddingEntry] = {}
        self.refused: dict[str, str] = {}  # name -> why it is not usable
        self._loaded: dict[Path, tuple[tuple[int, int], object]] = {}
        self._scanned = False
        self._stamp: int | None = None  # the folder's mtime at the last scan

    def rescan(self) -> None:
        entries: dict[str, EmbeddingEntry] = {}
        refused: dict[str, str] = {}
        if self.folder and self.folder.is_dir():
            for root, dirs, names in os.walk(self.folder, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for n in sorted(names):
                    path = Path(root) / n
                    if n.endswith(".safetensors"):
                        try:
                            entries.setdefault(path.stem, describe(path.stem, path))
                        except (OSError, ValueError) as e:
                            refused[path.stem] = f"{path.name}: {e}"
                    elif n.endswith(PICKLE_SUFFIXES):
                        refused.setdefault(path.stem, (
                            f"{path.name} is a pickle, which can run code when loaded; convert "
                            f"it with: python app.py convert {path}"))  # fmt: skip
        with self._lock:
            self._entries = entries
            self.refused = {k: v for k, v in refused.items() if k not in entries}
            self._scanned = True

    def _ensure(self) -> None:
        """Scan on first use, and again when the folder changed (a file added or removed)."""
        stamp = self._folder_stamp()
        if not self._scanned or stamp != self._stamp:
            self.rescan()
            self._stamp = stamp

    def _folder_stamp(self) -> int | None:
        try:
            return self.folder.stat().st_mtime_ns if self.folder else None
        except OSError:
            return None

    def names(self, family: str | None = None) -> list[str]:
        self._ensure()
        return sorted(n for n, e in self._entries.items() if family in (None, e.family))

    def used_in(self, texts: dict[str, str], family: str, model: str) -> list[EmbeddingEntry]:
        """The embeddings whose word occurs in the texts ({field: text}), checked.

        A1111 matches the word's tokens, and CLIP's tokenizer lowercases, so the
        match ignores case. A word of another family or a refused file is an error
        of the field that holds it.
        """
        self._ensure()
        found: dict[str, EmbeddingEntry] = {}
        for field, text in texts.items():
            for name in [*self._entries, *self.refused]:
                if not re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text, re.IGNORECASE):
                    continue
                if name in self.refused:
                    raise RequestError(field, f"embedding {name!r}: {self.refused[name]}")
                entry = self._entries[name]
                if entry.family != family:
                    rule = (f"embedding {name!r} is for {entry.family} models; "
                            f"'{model}' is {family}")  # fmt: skip
                    raise RequestError(field, rule)
                found[name] = entry
        return list(found.values())

    def vectors(self, entries: list[EmbeddingEntry]) -> dict[str, object]:
        """{word: vectors} for prompt_encoding's `embeddings=` hook (cached by size/mtime)."""
        out: dict[str, object] = {}
        for e in entries:
            st = e.path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            with self._lock:
                hit = self._loaded.get(e.path)
            if hit is None or hit[0] != stamp:
                hit = (stamp, e.load())
                with self._lock:
                    self._loaded[e.path] = hit
            out[e.name] = hit[1]
        return out
