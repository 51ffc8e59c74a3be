"""The LoRA library: which LoRA files exist, by name.

A LoRA's name is its file name without `.safetensors` (as in A1111's
`<lora:name:weight>`). The built-in `tiny-sd-lora` is always present. Only
`.safetensors` files are used: pickle formats can run code when loaded.
The content hash (A1111 "AddNet" hash) identifies a file, so a replaced file is
a new LoRA even under the same name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import builtin
from .errors import RequestError
from .hashes import addnet_hash
from .request import check_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoraEntry:
    name: str
    path: Path
    sha256: str  # AddNet hash: sha256 of the tensor bytes after the header

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]


class LoraLibrary:
    def __init__(self, loras_dir: Path | None, cache_root: Path | None = None) -> None:
        self.loras_dir = Path(loras_dir) if loras_dir else None
        self.cache_root = cache_root

    def _files(self) -> dict[str, Path]:
        found = {builtin.TINY_LORA: builtin.ensure_lora(self.cache_root)}
        if self.loras_dir and self.loras_dir.is_dir():
            for path in sorted(self.loras_dir.rglob("*.safetensors")):
                if path.stem in found:
                    log.warning("LoRA name %s is taken; ignoring %s", path.stem, path)
                    continue
                found[path.stem] = path
        return found

    def names(self) -> list[str]:
        return list(self._files())

    def get(self, name: str) -> LoraEntry:
        check_name("loras", name, "LoRA")
        files = self._files()
        if name not in files:
            raise RequestError("loras", f"unknown LoRA '{name}'; available: {', '.join(files)}")
        path = files[name]
        return LoraEntry(name, path, addnet_hash(path))
