"""Which models exist and where their files are.

Identification only (InvokeAI's split: identify, load, run are separate steps).
A model is one of:
- a built-in tiny model (`tiny-sd`, ...), built offline on first use;
- a diffusers folder inside the models folder (its folder name is its name);
- a folder or Hub id the operator added (`add`), e.g. from `--model PATH`;
- a Hub id (`owner/name`) named in a request, when Hub ids are allowed: it must
  be in the local Hugging Face cache when offline;
- a single-file checkpoint: a `.safetensors` file anywhere under the models
  folder (not inside a diffusers folder), named by its file stem (see `file_name`
  for how a clash with another name is resolved; the entry says so in `note`).
Requests carry names, never paths: a path in a request is refused.
The family comes from the folder's `model_index.json`, or from a single file's
tensors (pipelines/singlefile.py), never from the name. Pickled checkpoints
(`.ckpt`, `.pt`, `.bin`, `.pth`) are not listed; asking for one by its stem
explains why and how to convert it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import builtin, hashes, hub, singlefile
from .errors import AtelierError, ModelUnavailableError, RequestError
from .families import FAMILIES, Family, family_from_model_index
from .request import check_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: Family
    # a local diffusers folder (for Hub ids: the snapshot in the HF cache), or the
    # .safetensors file of a single-file checkpoint
    path: Path
    source: str  # "builtin" | "folder" | "added" | "hub" | "file"
    checkpoint: singlefile.Checkpoint | None = None  # single files: arch, inpaint, config
    note: str = ""  # e.g. why a file is listed under another name than its stem
    pending: hub.Plan | None = None  # Hub models: weights a job downloads before it runs

    @property
    def inpaint(self) -> bool:
        """A 9-channel inpainting checkpoint: only the inpaint task can run it."""
        return self.checkpoint is not None and self.checkpoint.inpaint

    def to_dict(self) -> dict[str, str]:
        out = {"name": self.name, "family": self.family.name, "path": str(self.path),
               "source": self.source}  # fmt: skip
        if self.checkpoint is not None:
            out.update(kind=self.checkpoint.label, config=self.checkpoint.config_source)
        if self.note:
            out["note"] = self.note
        return out


def read_family(folder: Path) -> Family:
    # Messages name the folder, not its path: they reach remote users (the log has it).
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        log.warning("%s has no model_index.json", folder)
        raise ModelUnavailableError(
            f"'{folder.name}' is not a diffusers model folder (no model_index.json)"
        )
    index = json.loads(index_file.read_text())
    try:
        family = family_from_model_index(index)
    except ValueError as e:
        log.warning("%s: %s", folder, e)
        raise ModelUnavailableError(f"'{folder.name}': {e}") from None
    return with_model_defaults(family, folder)


MODEL_DEFAULTS = {"default_size": int, "default_steps": int, "default_cfg": float,
                  "default_scheduler": str}  # fmt: skip


def with_model_defaults(family: Family, folder: Path) -> Family:
    """The family's rules with the model's own defaults, when its folder says so in an
    `atelier.json` ({"default_size": 64, "default_steps": 20, "default_cfg": 5.0}): a
    64-pixel model opens at 64x64 with its own step count. Sizes stay within the
    family's rules (a multiple of its size factor, inside its range)."""
    path = folder / "atelier.json"
    if not path.is_file():
        return family
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelUnavailableError(f"{folder.name}: atelier.json is not valid JSON: {e}") from None
    changes = {}
    for key, kind in MODEL_DEFAULTS.items():
        if key in data:
            try:
                if isinstance(data[key], bool) or not isinstance(data[key], (int, float, str)):
                    raise ValueError
                changes[key] = kind(data[key])
            except ValueError:
                rule = f"atelier.json {key} must be a {kind.__name__}, got {data[key]!r}"
                raise ModelUnavailableError(f"{folder.name}: {rule}") from None
    size = changes.get("default_size", family.default_size)
    if size % family.size_multiple or not family.min_size <= size <= family.max_size:
        raise ModelUnavailableError(f"{folder.name}: atelier.json default_size {size} breaks "
                                    f"the {family.label} size rules")  # fmt: skip
    return replace(family, **changes)


def hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def snapshot_of(repo_id: str) -> Path:
    """The local snapshot folder of a Hub model; downloads only when online."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.json", "*.txt", "*.model", "*.safetensors"]
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as e:
        if hf_offline():
            raise ModelUnavailableError(
                f"model '{repo_id}' is not available offline: it is not in the local Hugging Face "
                "cache and HF_HUB_OFFLINE=1 forbids downloading it"
            ) from e
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # network, auth, missing repo: all mean "not available"
        raise ModelUnavailableError(f"model '{repo_id}' could not be downloaded: {e}") from e


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(rel: Path, taken: set[str]) -> tuple[str, str]:
    """(name, note) of the checkpoint at `rel` (relative to the models folder).

    The name is the file stem, with characters a model name cannot hold replaced by
    "_". If that is taken (a built-in, a diffusers folder, an earlier file in path
    order), the file is listed as `<subfolders>-<stem>` when it lies in a
    subfolder, else as `<stem>.safetensors`, else with a "-2", "-3"... suffix;
    `note` then says why, so the renaming is shown, never silent.
    """
    stem = _UNSAFE_NAME_CHARS.sub("_", rel.stem).strip("._-")[:80] or "model"
    folders = "-".join(_UNSAFE_NAME_CHARS.sub("_", p) for p in rel.parent.parts)
    candidates = [stem, f"{folders}-{stem}" if folders else f"{stem}.safetensors"]
    candidates += [f"{stem}-{i}" for i in range(2, 1000)]
    name = next(c for c in candidates if c not in taken)
    note = ""
    if name != rel.stem:
        why = f"'{stem}' is taken" if stem in taken else "a model name holds only A-Z a-z 0-9 . _ -"
        note = f"{rel.as_posix()} is listed as '{name}' ({why})"
    return name, note


class ModelRegistry:
    """Names -> ModelEntry. Thread-safe; folders are rescanned on every listing."""

    def __init__(
        self,
        models_dir: Path | None = None,
        cache_root: Path | None = None,
        allow_hub: bool = True,
        flux_base: str | Path | None = None,
        hub_policy: hub.HubPolicy | None = None,
    ) -> None:
        self.models_dir = Path(models_dir) if models_dir else None
        self.cache_root = Path(cache_root) if cache_root else builtin.default_root()
        # What a request may make the server download (hub.py); allow_hub=False is "off".
        self.hub_policy = hub_policy or hub.HubPolicy("any" if allow_hub else "off")
        # Flux transformer-only files take text encoders and VAE from here:
        # a diffusers Flux folder or a Hub id (resolved when such a file is used).
        self.flux_base = str(flux_base) if flux_base else None
        # A1111's cache.json: model hashes survive restarts (hashes.py)
        self.hash_cache_file = self.cache_root / "hashes.json"
        self._added: dict[str, tuple[str, Path | None]] = {}  # name -> (hub id or "", folder)
        self._added_files: dict[str, Path] = {}  # name -> a .safetensors file given by path
        self._lock = threading.Lock()

    def add(self, model: str) -> str:
        """Register a local folder, a .safetensors checkpoint file or a Hub id given by the
        operator; returns its name."""
        path = Path(model).expanduser()
        if path.is_file():
            return self._add_file(path.resolve())
        if path.is_dir():
            read_family(path)  # fail now, with the folder named, if it is no model
            name = path.resolve().name
            with self._lock:
                self._added[name] = ("", path.resolve())
            return name
        check_name("model", model, "model")
        if "/" not in model and model not in self.names():
            raise RequestError("model", f"'{model}' is neither a folder nor a Hub id (owner/name)")
        if "/" in model:
            with self._lock:
                self._added[model] = (model, None)
        return model

    def _folder_models(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if self.models_dir and self.models_dir.is_dir():
            for child in sorted(self.models_dir.iterdir()):
                if (child / "model_index.json").is_file():
                    found[child.name] = child
        return found

    def _scan_files(self) -> tuple[list[Path], list[Path]]:
        """(.safetensors, pickled) checkpoint files under the models folder, in path order;
        diffusers/transformers folders (model_index.json or config.json) and hidden
        folders are not entered: their weights are not checkpoints."""
        found: tuple[list[Path], list[Path]] = ([], [])
        if not (self.models_dir and self.models_dir.is_dir()):
            return found
        for top, dirs, files in os.walk(self.models_dir, followlinks=True):
            if top != str(self.models_dir) and {"model_index.json", "config.json"} & set(files):
                dirs[:] = []
                continue
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                suffix = Path(f).suffix.lower()
                if suffix == ".safetensors" or suffix in singlefile.PICKLE_SUFFIXES:
                    (found[0] if suffix == ".safetensors" else found[1]).append(Path(top) / f)
        return found

    def _add_file(self, path: Path) -> str:
        if path.suffix.lower() in singlefile.PICKLE_SUFFIXES:
            raise RequestError("model", singlefile.pickle_refusal(path))
        if path.suffix.lower() != ".safetensors":
            raise RequestError("model", f"{path.name}: a checkpoint file must be .safetensors")
        singlefile.detect(singlefile.read_header(path), path.name)  # fail now, naming the file
        files = self._file_models()
        for name, (known, _) in files.items():
            if known.resolve() == path:
                return name
        with self._lock:
            taken = set(builtin.BUILTIN_MODELS) | set(self._added) | set(files)
            name, note = file_name(Path(path.name), taken | set(self._folder_models()))
            self._added_files[name] = path
        if note:
            log.warning("%s", note)
        return name

    def _file_models(self) -> dict[str, tuple[Path, str]]:
        """Single-file checkpoints by name -> (file, note): files added by path, then the
        models folder's; see `file_name`."""
        with self._lock:
            taken = set(builtin.BUILTIN_MODELS) | set(self._added)
            out = {name: (path, "") for name, path in self._added_files.items()}
        taken |= set(self._folder_models()) | set(out)
        for path in self._scan_files()[0]:
            name, note = file_name(path.relative_to(self.models_dir), taken)  # type: ignore[arg-type]
            taken.add(name)
            out[name] = (path, note)
            if note:
                log.info("%s", note)
        return out

    def refused_files(self) -> dict[str, str]:
        """Checkpoint files under the models folder that cannot be used: path -> reason
        (pickles; .safetensors files that are no checkpoint Atelier recognises)."""
        safe, pickles = self._scan_files()
        out = {str(p): singlefile.pickle_refusal(p) for p in pickles}
        for path in safe:
            try:
                singlefile.detect(singlefile.read_header(path), path.name)
            except RequestError as e:
                out[str(path)] = e.rule
        return out

    def names(self) -> list[str]:
        with self._lock:
            added = list(self._added)
        shipped = [builtin.SHIPPED_MODEL] if builtin.shipped_model() is not None else []
        names = list(builtin.BUILTIN_MODELS) + shipped + list(self._folder_models())
        names += list(self._file_models()) + added
        return list(dict.fromkeys(names))

    def _file_entry(self, name: str, path: Path, note: str, strict: bool) -> ModelEntry:
        base = self.flux_base
        if base and not Path(base).expanduser().is_dir():
            base = str(snapshot_of(base)) if strict else None
        ckpt = singlefile.inspect(path, Path(base).expanduser() if base else None, self.cache_root)
        if strict:
            singlefile.require_config(ckpt, name)
        return ModelEntry(name, FAMILIES[ckpt.family], path, "file", ckpt, note)

    def resolve(self, name: str, field: str = "model") -> ModelEntry:
        """The entry for `name`; builds built-ins on first use. Raises RequestError (naming
        `field`) if unknown or refused by the Hub policy. A Hub model not in the cache
        comes back with its configs and `pending` weights, which `fetch` downloads."""
        check_name(field, name, "model")
        if name in builtin.BUILTIN_MODELS:
            path = builtin.ensure_model(name, self.cache_root)
            return ModelEntry(name, read_family(path), path, "builtin")
        if name == builtin.SHIPPED_MODEL and (shipped := builtin.shipped_model()) is not None:
            return ModelEntry(name, read_family(shipped), shipped, "builtin")
        folders = self._folder_models()
        if name in folders:
            return ModelEntry(name, read_family(folders[name]), folders[name], "folder")
        files = self._file_models()
        if name in files:
            return self._file_entry(name, *files[name], strict=True)
        with self._lock:
            added = self._added.get(name)
        if added and added[1] is not None:
            return ModelEntry(name, read_family(added[1]), added[1], "added")
        for pickled in self._scan_files()[1]:
            if pickled.stem == name:
                raise RequestError("model", singlefile.pickle_refusal(pickled))
        if "/" in name and (added or self.hub_policy.mode != "off"):
            # Hub ids the operator added (--model owner/name) are trusted; a request's
            # are what the policy allows.
            policy = hub.HubPolicy("any", (), self.hub_policy.max_bytes) if added else None
            plan = hub.resolve(name, policy or self.hub_policy, field)
            return ModelEntry(name, read_family(plan.folder), plan.folder, "hub",
                              pending=plan if plan.weights else None)  # fmt: skip
        valid = ", ".join(self.names())
        off = "; Hub models are off on this server (hub_models=off)" if "/" in name else ""
        raise RequestError(field, f"unknown model '{name}'; available: {valid}{off}")

    def family_of(self, name: str) -> Family:
        """A model's family without building or loading it (built-ins: from the table;
        single files: from their tensors, even a Flux file while flux_base is unset)."""
        if name in builtin.BUILTIN_MODELS:
            return FAMILIES[builtin.BUILTIN_MODELS[name]]
        check_name("model", name, "model")
        files = self._file_models()
        if name in files and name not in self._folder_models():
            return self._file_entry(name, *files[name], strict=False).family
        return self.resolve(name).family

    def list(self) -> list[ModelEntry]:
        """Every model that can be used now (built-ins are built if missing). A file that
        cannot be used is left out with a warning (see `refused_files` for the reasons)."""
        out = []
        files = self._file_models()
        for name in self.names():
            try:
                if name in files:
                    out.append(self._file_entry(name, *files[name], strict=False))
                else:
                    out.append(self.resolve(name))
            except (ModelUnavailableError, RequestError) as e:
                log.warning("model %s is listed but unavailable: %s", name, e)
        return out

    # -- hashes (A1111's "Model hash") ------------------------------------------
    def model_hash(self, entry: ModelEntry, progress: hashes.Progress | None = None) -> str:
        """The entry's "Model hash" (A1111's for a file; our convention for a folder),
        computed once and kept in `hash_cache_file` across runs."""
        return hashes.folder_model_hash(entry.path, progress, self.hash_cache_file)

    def find_by_hash(
        self,
        model_hash: str,
        compute: bool = False,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> str | None:
        """The name of the local model whose hash starts with `model_hash` (A1111's 10-hex
        "Model hash", or longer), so a renamed file still resolves. Looks at cached hashes
        only, as A1111 does, unless `compute`: then models not hashed yet are hashed
        (`progress(name, done_bytes, total_bytes)` while each is read)."""
        wanted = model_hash.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{10,64}", wanted):
            return None
        with self._lock:
            added = [(n, p) for n, (_, p) in self._added.items() if p is not None]
        candidates = [(n, p) for n, (p, _) in self._file_models().items()]
        candidates += list(self._folder_models().items()) + added
        cache = self.hash_cache_file
        for name, path in candidates:  # files: their whole SHA-256; folders: 10 hex
            lookup = hashes.cached_sha256 if path.is_file() else hashes.cached_model_hash
            known = lookup(path, cache)
            if known and known.startswith(wanted):
                return name
        for name, path in candidates if compute else []:
            report = (lambda d, t, n=name: progress(n, d, t)) if progress else None
            try:
                if path.is_file():
                    digest = hashes.file_sha256(path, report, cache)
                else:
                    digest = hashes.folder_model_hash(path, report, cache)
            except (OSError, AtelierError) as e:
                log.warning("could not hash %s: %s", path, e)
                continue
            if digest.startswith(wanted):
                return name
        return None
