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

Big checkpoints take seconds to minutes to hash, so, as A1111 does with its
cache.json, a caller may also pass `cache_file`: a JSON file that keeps
(size, mtime_ns, digest) per resolved path across runs; a stale entry (other
size or mtime) is ignored and replaced. `progress(done_bytes, total_bytes)` is
called while a file is read (every PROGRESS_EVERY bytes and at the end).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "addnet_hash",
    "cached_model_hash",
    "cached_sha256",
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
PROGRESS_EVERY = 64 * CHUNK
Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)

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


def _remember(key: tuple[str, str], stamp: tuple[int, int], digest: str) -> None:
    with _lock:
        _cache.pop(key, None)
        _cache[key] = (*stamp, digest)
        while len(_cache) > _CACHE_MAX:
            del _cache[next(iter(_cache))]


def _disk_get(cache_file: Path | None, key: tuple[str, str], stamp: tuple[int, int]) -> str | None:
    """The digest cached for this path and stamp; or, for a file renamed since (a
    cached path that no longer exists, with the same size and mtime_ns), its digest."""
    if cache_file is None:
        return None
    entries = _read_disk(cache_file).get(key[0], {})
    entry = entries.get(key[1])
    if isinstance(entry, list) and len(entry) == 3 and tuple(entry[:2]) == stamp:
        return str(entry[2])
    for old_path, old in entries.items():
        same = isinstance(old, list) and len(old) == 3 and tuple(old[:2]) == stamp
        if same and not os.path.exists(old_path):
            return str(old[2])
    return None


_disk_memo: dict[str, tuple[tuple[int, int], dict]] = {}  # cache file -> (its stamp, content)


def _read_disk(cache_file: Path) -> dict:
    """The cache file's content (re-read only when the file changed)."""
    try:
        stamp = _stamp(Path(cache_file))
        memo = _disk_memo.get(str(cache_file))
        if memo is not None and memo[0] == stamp:
            return json.loads(json.dumps(memo[1]))  # a copy: callers modify it
        data = json.loads(Path(cache_file).read_text())
        data = data if isinstance(data, dict) else {}
        _disk_memo[str(cache_file)] = (stamp, data)
        return json.loads(json.dumps(data))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("hash cache %s is unreadable (%s); it will be rewritten", cache_file, e)
        return {}


def _disk_put(
    cache_file: Path | None, key: tuple[str, str], stamp: tuple[int, int], digest: str
) -> None:
    """Merge one digest into the JSON cache file (re-read first; written atomically)."""
    if cache_file is None:
        return
    cache_file = Path(cache_file)
    with _lock:
        data = _read_disk(cache_file)
        data.setdefault(key[0], {})[key[1]] = [*stamp, digest]
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
            os.replace(tmp, cache_file)
        except OSError as e:  # a read-only cache folder costs a rehash next run, nothing more
            log.warning("could not write the hash cache %s: %s", cache_file, e)


def _cached(
    kind: str,
    path: str | os.PathLike[str],
    compute: Callable[[Path], str],
    cache_file: Path | None = None,
) -> str:
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
        on_disk = _disk_get(cache_file, key, stamp)
        if on_disk is not None:
            _remember(key, stamp, on_disk)
            return on_disk
        digest = compute(resolved)
        # Only cache if the file did not change while we read it; otherwise the
        # digest may mix old and new bytes under the old stamp.
        if _stamp(resolved) == stamp:
            _remember(key, stamp, digest)
            _disk_put(cache_file, key, stamp, digest)
        return digest


def _sha256_of_stream(f: BinaryIO, progress: Progress | None = None, total: int = 0) -> str:
    h = hashlib.sha256()
    done = reported = 0
    for chunk in iter(lambda: f.read(CHUNK), b""):
        h.update(chunk)
        done += len(chunk)
        if progress is not None and done - reported >= PROGRESS_EVERY:
            progress(done, total)
            reported = done
    if progress is not None:
        progress(done, total)
    return h.hexdigest()


def _sha256_whole(path: Path, progress: Progress | None = None) -> str:
    with path.open("rb") as f:
        return _sha256_of_stream(f, progress, path.stat().st_size)


def _with_progress(compute: Callable[..., str], progress: Progress | None) -> Callable[[Path], str]:
    return compute if progress is None else functools.partial(compute, progress=progress)


def _sha256_after_header(path: Path, progress: Progress | None = None) -> str:
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
        return _sha256_of_stream(f, progress, size - 8 - n)


def file_sha256(
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    cache_file: Path | None = None,
) -> str:
    """Hex SHA-256 of the whole file (cached; also in `cache_file` when given)."""
    return _cached("sha256", path, _with_progress(_sha256_whole, progress), cache_file)


def cached_sha256(path: str | os.PathLike[str], cache_file: Path | None = None) -> str | None:
    """The file's SHA-256 if it is cached for its current size and mtime, else None
    (never reads the file: for lookups over many big files, as A1111's hash search)."""
    resolved = Path(path).resolve()
    key = ("sha256", str(resolved))
    stamp = _stamp(resolved)
    with _lock:
        hit = _cache.get(key)
    if hit is not None and hit[:2] == stamp:
        return hit[2]
    return _disk_get(cache_file, key, stamp)


def model_hash(
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    cache_file: Path | None = None,
) -> str:
    """A1111 "Model hash" of a checkpoint file: first 10 hex chars of its SHA-256."""
    return file_sha256(path, progress, cache_file)[:MODEL_HASH_LEN]


def addnet_hash(
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    cache_file: Path | None = None,
) -> str:
    """Full hex SHA-256 of a .safetensors file's bytes after the header (cached).

    Raises ValueError if the file is too short to be a .safetensors file.
    """
    return _cached("addnet", path, _with_progress(_sha256_after_header, progress), cache_file)


def _sha256_header(path: Path) -> str:
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return hashlib.sha256(f.read(n)).hexdigest()


def lora_identity(path: str | os.PathLike[str]) -> str:
    """What makes a LoRA file's adapter: its tensors (addnet_hash) AND its header (the
    key names say which module each tensor goes to). Two files with the same tensors
    under other names (a renamed or converted copy) are different adapters."""
    both = addnet_hash(path) + _cached("header", path, _sha256_header)
    return hashlib.sha256(both.encode()).hexdigest()


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


def folder_model_hash(
    folder: str | os.PathLike[str],
    progress: Progress | None = None,
    cache_file: Path | None = None,
) -> str:
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
        return model_hash(root, progress, cache_file)
    files = _denoiser_files(root)
    if not files:
        raise FileNotFoundError(f"no *.safetensors or *.bin weights under {root}")
    digests = "".join(file_sha256(p, progress, cache_file) for p in files)
    return hashlib.sha256(digests.encode("ascii")).hexdigest()[:MODEL_HASH_LEN]


def cached_model_hash(path: str | os.PathLike[str], cache_file: Path | None = None) -> str | None:
    """folder_model_hash (a folder) or model_hash (a file) from cached digests only;
    None when any file would have to be read."""
    root = Path(path)
    if root.is_file():
        digest = cached_sha256(root, cache_file)
        return digest[:MODEL_HASH_LEN] if digest else None
    files = _denoiser_files(root)
    digests = [cached_sha256(p, cache_file) for p in files]
    if not files or None in digests:
        return None
    return hashlib.sha256("".join(digests).encode("ascii")).hexdigest()[:MODEL_HASH_LEN]  # type: ignore[arg-type]
