"""Which models exist and where their files are.

Identification only (InvokeAI's split: identify, load, run are separate steps).
A model is one of:
- a built-in tiny model (`tiny-sd`, ...), built offline on first use;
- a diffusers folder inside the models folder (its folder name is its name);
- a folder or Hub id the operator added (`add`), e.g. from `--model PATH`;
- a Hub id (`owner/name`) named in a request, when Hub ids are allowed: it must
  be in the local Hugging Face cache when offline.
Requests carry names, never paths: a path in a request is refused.
The family comes from the folder's `model_index.json`, never from the name.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from . import builtin
from .errors import ModelUnavailableError, RequestError
from .families import Family, family_from_model_index
from .request import check_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: Family
    path: Path  # a local diffusers folder (for Hub ids: the snapshot in the HF cache)
    source: str  # "builtin" | "folder" | "added" | "hub"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "family": self.family.name, "path": str(self.path),
                "source": self.source}  # fmt: skip


def read_family(folder: Path) -> Family:
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelUnavailableError(
            f"{folder} is not a diffusers model folder (no model_index.json)"
        )
    index = json.loads(index_file.read_text())
    try:
        return family_from_model_index(index)
    except ValueError as e:
        raise ModelUnavailableError(f"{folder}: {e}") from None


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


class ModelRegistry:
    """Names -> ModelEntry. Thread-safe; folders are rescanned on every listing."""

    def __init__(
        self,
        models_dir: Path | None = None,
        cache_root: Path | None = None,
        allow_hub: bool = True,
    ) -> None:
        self.models_dir = Path(models_dir) if models_dir else None
        self.cache_root = Path(cache_root) if cache_root else builtin.default_root()
        self.allow_hub = allow_hub
        self._added: dict[str, tuple[str, Path | None]] = {}  # name -> (hub id or "", folder)
        self._lock = threading.Lock()

    def add(self, model: str) -> str:
        """Register a local folder or a Hub id given by the operator; returns its name."""
        path = Path(model).expanduser()
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

    def names(self) -> list[str]:
        with self._lock:
            added = list(self._added)
        names = list(builtin.BUILTIN_MODELS) + list(self._folder_models()) + added
        return list(dict.fromkeys(names))

    def resolve(self, name: str) -> ModelEntry:
        """The entry for `name`; builds built-ins on first use. Raises RequestError if unknown."""
        check_name("model", name, "model")
        if name in builtin.BUILTIN_MODELS:
            path = builtin.ensure_model(name, self.cache_root)
            return ModelEntry(name, read_family(path), path, "builtin")
        folders = self._folder_models()
        if name in folders:
            return ModelEntry(name, read_family(folders[name]), folders[name], "folder")
        with self._lock:
            added = self._added.get(name)
        if added and added[1] is not None:
            return ModelEntry(name, read_family(added[1]), added[1], "added")
        if "/" in name and (added or self.allow_hub):
            path = snapshot_of(name)
            return ModelEntry(name, read_family(path), path, "hub")
        valid = ", ".join(self.names())
        raise RequestError("model", f"unknown model '{name}'; available: {valid}")

    def family_of(self, name: str) -> Family:
        """A model's family without building or loading it (built-ins: from the table)."""
        from .families import FAMILIES

        if name in builtin.BUILTIN_MODELS:
            return FAMILIES[builtin.BUILTIN_MODELS[name]]
        return self.resolve(name).family

    def list(self) -> list[ModelEntry]:
        """Every model that can be used now (built-ins are built if missing)."""
        out = []
        for name in self.names():
            try:
                out.append(self.resolve(name))
            except ModelUnavailableError as e:
                log.warning("model %s is listed but unavailable: %s", name, e)
        return out
