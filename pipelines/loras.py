"""The LoRA library: which LoRA files exist, what they are for, by name.

Policy
- A LoRA's name is its file name without `.safetensors` (A1111's
  `<lora:name:weight>`); the first file found wins a name, later ones are logged.
  The built-in `tiny-sd-lora` is always present.
- Only `.safetensors` is loaded. Pickle formats (.pt, .ckpt, .bin, .pth) can run
  code when loaded: they are listed as refused, and naming one in a request is an
  error that says so.
- Metadata comes from the safetensors header alone (8-byte length + JSON), never
  the tensors: base model family, trigger words, rank, title. An A1111-style
  sidecar `<name>.json` (activation text, preferred weight, notes, sd version)
  and a preview image `<name>.png|.preview.png|.jpg|.jpeg|.webp` are read when
  present.
- Scans are incremental: a file is re-read only when its (size, mtime) changes,
  so a rescan of thousands of files costs a directory walk and some stats.
- A file is identified by its content hash (A1111's AddNet hash), computed when
  a request first uses it: a replaced file is a new LoRA even under the old name,
  and adapters loaded from the old content are never reused for it.
Threads: all state is behind one lock; scans are safe from any thread.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import builtin
from .errors import RequestError
from .hashes import addnet_hash, lora_identity
from .request import check_name

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pt", ".ckpt", ".bin", ".pth")
PREVIEW_SUFFIXES = (".png", ".preview.png", ".jpg", ".jpeg", ".webp", ".preview.jpg")
FAMILY_LABELS = {
    "sd15": "SD 1.x/2.x",
    "sdxl": "SDXL",
    "flux": "Flux",
    "wan21": "Wan",
    "wan22": "Wan",
}
MAX_HEADER = 100 * 2**20  # a bigger "header" is a corrupt or hostile file


@dataclass(frozen=True)
class LoraEntry:
    name: str
    path: Path
    family: str | None  # "sd15", "sdxl", "flux", "wan21"; None when it cannot be told
    triggers: tuple[str, ...]
    title: str
    rank: int | None
    activation_text: str = ""
    preferred_weight: float | None = None
    notes: str = ""
    preview: Path | None = None
    text_encoder: bool = False  # has text-encoder layers (cannot be hotswapped)

    @property
    def sha256(self) -> str:
        """AddNet hash of the file (cached by path, size and mtime)."""
        return addnet_hash(self.path)

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @property
    def identity(self) -> str:
        """The loaded adapter's identity: tensors and key names (hashes.lora_identity)."""
        return lora_identity(self.path)


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, without reading its tensors."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file is shorter than a safetensors header")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or n > os.fstat(f.fileno()).st_size - 8:
            raise ValueError(f"header length {n} does not fit the file")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header


def _family_from_metadata(meta: dict[str, str]) -> str | None:
    version = (meta.get("ss_base_model_version") or "").lower()
    arch = (meta.get("modelspec.architecture") or "").lower()
    sd_version = (meta.get("sd version") or "").lower()  # A1111 sidecar key
    for text in (arch, version, sd_version):
        if not text:
            continue
        if "xl" in text:
            return "sdxl"
        if "flux" in text:
            return "flux"
        if "wan" in text:
            return "wan21"
        if re.search(r"(sd_?v?[12]|stable-diffusion-v[12]|^sd1|^sd2)", text):
            return "sd15"
    return None


def _family_from_keys(keys: list[str], shapes: dict[str, list[int]]) -> str | None:
    joined = "\n".join(keys)
    if "single_transformer_blocks" in joined or "lora_unet_double_blocks" in joined:
        return "flux"
    if re.search(r"(^|\n)(transformer|diffusion_model)\.blocks\.\d+\.(attn1|self_attn)", joined):
        return "wan21"
    if "lora_te2_" in joined or "text_encoder_2." in joined or "lora_unet_input_blocks" in joined:
        return "sdxl"
    # diffusers/Kohya UNet keys: the cross-attention width tells SD 1.x/2.x from SDXL.
    for key in keys:
        if re.search(r"attn2[._]to_k.*(lora_A|lora_down)\.weight$", key):
            width = shapes[key][-1]
            return {768: "sd15", 1024: "sd15", 2048: "sdxl"}.get(width)
    return None


def _rank(keys: list[str], shapes: dict[str, list[int]]) -> int | None:
    for key in keys:
        if key.endswith(("lora_A.weight", "lora_down.weight")):
            return int(shapes[key][0])
    return None


def _triggers(meta: dict[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    phrase = meta.get("modelspec.trigger_phrase")
    if phrase:
        out += [p.strip() for p in phrase.split(",") if p.strip()]
    freq = meta.get("ss_tag_frequency")
    if freq:
        try:
            counts: dict[str, int] = {}
            for tags in json.loads(freq).values():
                for tag, n in tags.items():
                    counts[tag.strip()] = counts.get(tag.strip(), 0) + int(n)
            out += [t for t, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:10] if t]
        except (ValueError, AttributeError, TypeError):
            log.debug("unreadable ss_tag_frequency")
    return tuple(dict.fromkeys(out))


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_suffix(".json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        log.warning("unreadable LoRA sidecar %s", side)
        return {}


def describe(name: str, path: Path) -> LoraEntry:
    """Read one LoRA file's header (and sidecar) into an entry. Raises ValueError."""
    header = read_header(path)
    meta = {k: str(v) for k, v in (header.pop("__metadata__", None) or {}).items()}
    keys = sorted(header)
    shapes = {k: v.get("shape", []) for k, v in header.items() if isinstance(v, dict)}
    side = _sidecar(path)
    family = (
        _family_from_metadata(meta)
        or _family_from_metadata(side)
        or _family_from_keys(keys, shapes)
    )
    weight = side.get("preferred weight")
    stem = path.with_suffix("")
    preview = next((p for s in PREVIEW_SUFFIXES if (p := Path(f"{stem}{s}")).is_file()), None)
    return LoraEntry(
        name=name,
        path=path,
        family=family,
        triggers=_triggers(meta),
        title=meta.get("modelspec.title") or meta.get("ss_output_name") or name,
        rank=_rank(keys, shapes),
        activation_text=str(side.get("activation text") or ""),
        preferred_weight=float(weight) if isinstance(weight, (int, float)) and weight else None,
        notes=str(side.get("notes") or ""),
        preview=preview,
        text_encoder=any(k.startswith(("text_encoder", "lora_te")) for k in keys),
    )


class LoraLibrary:
    def __init__(self, loras_dir: Path | None, cache_root: Path | None = None) -> None:
        self.loras_dir = Path(loras_dir) if loras_dir else None
        self.cache_root = cache_root
        self._lock = threading.Lock()
        self._known: dict[Path, tuple[tuple[int, int], LoraEntry | str]] = {}
        self._entries: dict[str, LoraEntry] = {}
        self.refused: dict[str, str] = {}  # name -> why it is not usable
        self._scanned = False

    def rescan(self) -> None:
        """Pick up added, removed and replaced files. Only changed files are re-read."""
        files: list[tuple[str, Path]] = [(builtin.TINY_LORA, builtin.ensure_lora(self.cache_root))]
        if (shipped := builtin.shipped_lora()) is not None:
            files.append((builtin.SHIPPED_LORA, shipped))
        pickles: list[Path] = []
        if self.loras_dir and self.loras_dir.is_dir():
            for root, dirs, names in os.walk(self.loras_dir, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for n in sorted(names):
                    if n.endswith(".safetensors"):
                        files.append((n[: -len(".safetensors")], Path(root) / n))
                    elif n.endswith(PICKLE_SUFFIXES):
                        pickles.append(Path(root) / n)
        with self._lock:
            known, entries, refused = {}, {}, {}
            for name, path in files:
                if name in entries or name in refused:
                    log.warning("LoRA name %s is taken; ignoring %s", name, path)
                    continue
                try:
                    st = path.stat()
                except OSError:
                    continue
                stamp = (st.st_size, st.st_mtime_ns)
                old = self._known.get(path)
                if old is not None and old[0] == stamp:
                    entry = old[1]
                else:
                    try:
                        entry = describe(name, path)
                    except (OSError, ValueError) as e:
                        entry = f"unreadable safetensors file: {e}"
                known[path] = (stamp, entry)
                if isinstance(entry, LoraEntry):
                    entries[name] = entry
                else:
                    refused[name] = entry
            for path in pickles:
                name = path.stem
                if name not in entries:
                    refused[name] = (
                        f"{path.suffix} is a pickle format, which can run code when loaded; "
                        "convert it to .safetensors"
                    )
            self._known, self._entries, self.refused = known, entries, refused
            self._scanned = True

    def _ensure_scanned(self) -> None:
        if not self._scanned:
            self.rescan()

    def names(self) -> list[str]:
        self._ensure_scanned()
        with self._lock:
            return sorted(self._entries)

    def entries(self, family: str | None = None) -> list[LoraEntry]:
        """Usable LoRAs, sorted by name; with a family, those for it or of unknown family."""
        self._ensure_scanned()
        with self._lock:
            found = sorted(self._entries.values(), key=lambda e: e.name.lower())
        if family is None:
            return found
        want = "wan21" if family.startswith("wan") else family
        return [e for e in found if e.family in (None, want)]

    def get(self, name: str) -> LoraEntry:
        check_name("loras", name, "LoRA")
        self._ensure_scanned()
        with self._lock:
            entry = self._entries.get(name)
            refused = self.refused.get(name)
        if entry is not None and entry.path.is_file():
            stamp = self._known.get(entry.path, ((0, 0), entry))[0]
            st = entry.path.stat()
            if (st.st_size, st.st_mtime_ns) == stamp:
                return entry
        self.rescan()  # unknown, removed or replaced since the last scan
        with self._lock:
            entry = self._entries.get(name)
            refused = self.refused.get(name, refused)
            available = ", ".join(sorted(self._entries))
        if entry is not None:
            return entry
        if refused:
            raise RequestError("loras", f"'{name}' cannot be used: {refused}")
        raise RequestError("loras", f"unknown LoRA '{name}'; available: {available}")


def check_family(entry: LoraEntry, family: str, model: str) -> None:
    """Refuse a LoRA made for another model family, naming both."""
    want = "wan21" if family.startswith("wan") else family
    if entry.family is not None and entry.family != want:
        rule = (
            f"'{entry.name}' is a {FAMILY_LABELS.get(entry.family, entry.family)} LoRA; "
            f"model '{model}' is {FAMILY_LABELS.get(family, family)}"
        )
        raise RequestError("loras", rule)
