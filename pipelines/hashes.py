"""File hashes as A1111 writes them into infotexts ("Model hash", "Lora hashes").

- model_hash(file): first 10 hex chars of the SHA-256 of the whole checkpoint
  file (A1111's "Model hash" since v1.0; not the old 8-char legacy hash).
- addnet_hash(file): SHA-256 of a .safetensors file's bytes after its header
  (8-byte little-endian header length n, then n bytes of JSON, then the tensor
  data, which is what is hashed). lora_short_hash() is its first 12 hex chars,
  A1111's "Lora hashes" entry. Renaming tensors' metadata does not change it.
- folder_model_hash(folder): our own convention for diffusers folders, which
  have no single checkpoint file; see its docstring.

Files are read in 1 MiB chunks. Digests are cached in-process per (kind,
resolved path) together with the file's size and mtime_ns, so each file is
hashed once and a changed file is hashed again. Concurrent callers asking for
the same file wait for one hashing instead of reading it twice.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "addnet_hash",
    "clear_hash_cache",
    "file_sha256",
    "folder_model_hash",
    "lora_short_hash",
    "model_hash",
]

CHUNK = 1024 * 1024
MODEL_HASH_LEN = 10
LORA_HASH_LEN = 12
# Weights of the denoiser in a diffusers folder, the part that makes a model.
DENOISER_GLOBS = ("unet/*.safetensors", "transformer/*.safetensors", "transformer_2/*.safetensors")
_CACHE_MAX = 4096  # entries; oldest dropped first (a digest is ~100 bytes)

_lock = threading.Lock()
# (kind, resolved path) -> (size, mtime_ns, hex digest)
_cache: dict[tuple[str, str], tuple[int, int, str]] = {}
# (kind, resolved path) -> lock held while that file is being hashed
_inflight: dict[tuple[str, str], threading.Lock] = {}


def clear_hash_cache() -> None:
    """Forget every cached digest (tests; or after replacing files in place)."""
    with _lock:
        _cache.clear()


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _cached(kind: str, path: str | os.PathLike[str], compute: Callable[[Path], str]) -> str:
    resolved = Path(path).resolve()
    key = (kind, str(resolved))
    with _lock:
        file_lock = _inflight.setdefault(key, threading.Lock())
    with file_lock:
        stamp = _stamp(resolved)
        with _lock:
            hit = _cache.get(key)
        if hit is not None and hit[:2] == stamp:
            return hit[2]
        digest = compute(resolved)
        # Only cache if the file did not change while we read it; otherwise the
        # digest may mix old and new bytes under the old stamp.
        if _stamp(resolved) == stamp:
            with _lock:
                _cache.pop(key, None)
                _cache[key] = (*stamp, digest)
                while len(_cache) > _CACHE_MAX:
                    del _cache[next(iter(_cache))]
        return digest


def _sha256_of_stream(f: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(CHUNK), b""):
        h.update(chunk)
    return h.hexdigest()


def _sha256_whole(path: Path) -> str:
    with path.open("rb") as f:
        return _sha256_of_stream(f)


def _sha256_after_header(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(8)
        size = path.stat().st_size
        if len(head) < 8:
            raise ValueError(f"{path} is not a .safetensors file: shorter than 8 bytes")
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            raise ValueError(
                f"{path} is not a .safetensors file: header length {n} exceeds file size {size}"
            )
        f.seek(8 + n)
        return _sha256_of_stream(f)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the whole file (cached)."""
    return _cached("sha256", path, _sha256_whole)


def model_hash(path: str | os.PathLike[str]) -> str:
    """A1111 "Model hash" of a checkpoint file: first 10 hex chars of its SHA-256."""
    return file_sha256(path)[:MODEL_HASH_LEN]


def addnet_hash(path: str | os.PathLike[str]) -> str:
    """Full hex SHA-256 of a .safetensors file's bytes after the header (cached).

    Raises ValueError if the file is too short to be a .safetensors file.
    """
    return _cached("addnet", path, _sha256_after_header)


def lora_short_hash(path: str | os.PathLike[str]) -> str:
    """A1111 "Lora hashes" entry of a LoRA file: first 12 hex chars of addnet_hash."""
    return addnet_hash(path)[:LORA_HASH_LEN]


def _visible(paths: Iterable[Path], root: Path) -> list[Path]:
    # Skip hidden folders such as .cache/ (huggingface_hub local_dir metadata).
    return [
        p
        for p in paths
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def _denoiser_files(folder: Path) -> list[Path]:
    for patterns in (DENOISER_GLOBS, ("**/*.safetensors",), ("**/*.bin",)):
        found = _visible((p for pattern in patterns for p in folder.glob(pattern)), folder)
        if found:
            return sorted(set(found), key=lambda p: p.relative_to(folder).as_posix())
    return []


def folder_model_hash(folder: str | os.PathLike[str]) -> str:
    """A "Model hash" for a diffusers model folder (10 hex chars).

    A diffusers folder has no single checkpoint file, so A1111's hash cannot be
    computed. Our convention: take the denoiser weights, the files matching
    unet/*.safetensors, transformer/*.safetensors and transformer_2/*.safetensors
    (or, if there are none, every *.safetensors under the folder, then every
    *.bin), sorted by their relative POSIX path; hash each file (SHA-256, hex,
    lowercase); the result is the first 10 hex chars of the SHA-256 of those hex
    digests concatenated, as ASCII, without separators. Text encoders and VAE
    are left out on purpose: they are shared by many fine-tunes, the denoiser
    is what identifies one. The value will not match any A1111/civitai hash.

    Given a single file instead of a folder, returns model_hash(file).
    Raises FileNotFoundError if the folder holds no weights.
    """
    root = Path(folder)
    if root.is_file():
        return model_hash(root)
    files = _denoiser_files(root)
    if not files:
        raise FileNotFoundError(f"no *.safetensors or *.bin weights under {root}")
    combined = hashlib.sha256("".join(file_sha256(p) for p in files).encode("ascii"))
    return combined.hexdigest()[:MODEL_HASH_LEN]
