"""Hugging Face Hub models under a policy: what a request may make the server download.

Policy (`hub_models`): `off` (no Hub ids at all), `cached` (only what the local Hugging
Face cache already holds; nothing is downloaded), a comma-separated allow-list of
patterns (`stabilityai/*,black-forest-labs/FLUX.1-dev`: those may be downloaded), or
`any`. The same policy covers every place a name comes from a request: image and
video models, ControlNets, preprocessor models, pasted infotexts.

Before anything is downloaded, the repository's file list is read (one API call) and
checked: it must be a diffusers folder of a known family (a `model_index.json` whose
pipeline class we run; for a ControlNet, a `config.json` of a ControlNetModel), and the
files that layout needs must total at most `hub_max_gb`. Only those files are fetched:
each component's configs and tokenizer files and one set of `.safetensors` weights
(the non-variant ones, sharded or not), never the repo's other checkpoints.

Downloading is split in two. `plan` (at submit time: small files only) fetches the
configs so the request can be validated; `fetch_weights` (inside the job, before it
waits for a device) downloads the weights with byte progress and stops within one
chunk when the job is cancelled. Nothing runs under a device slot's lock.

Errors never show server paths (cache folders, home directories): the message names
the repository and the rule; the log has the details.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Cancelled, ModelUnavailableError, RequestError

log = logging.getLogger(__name__)
MODES = ("off", "cached", "any")
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".py")  # configs, tokenizer files; no weights
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class HubPolicy:
    mode: str = "any"  # "off" | "cached" | "list" | "any"
    patterns: tuple[str, ...] = ()  # for "list"
    max_bytes: int = 40 * 10**9

    @classmethod
    def parse(cls, text: str, max_gb: float = 40) -> HubPolicy:
        value = (text or "").strip()
        max_bytes = int(max_gb * 10**9)
        if value.lower() in MODES:
            return cls(value.lower(), (), max_bytes)
        patterns = tuple(p.strip() for p in value.split(",") if p.strip())
        if not patterns or any(p.count("/") != 1 for p in patterns):
            raise ValueError(
                f"hub_models must be off, cached, any or a comma-separated list of "
                f"owner/name patterns (e.g. stabilityai/*), got {text!r}"
            )
        return cls("list", patterns, max_bytes)

    def describe(self) -> str:
        return ", ".join(self.patterns) if self.mode == "list" else self.mode

    def may_download(self, repo_id: str) -> bool:
        if self.mode == "any":
            return True
        return self.mode == "list" and any(fnmatch.fnmatchcase(repo_id, p) for p in self.patterns)


@dataclass(frozen=True)
class Plan:
    """A Hub repository checked for download: its snapshot folder (configs present)
    and the weight files still to fetch."""

    repo_id: str
    revision: str
    folder: Path
    weights: tuple[tuple[str, int], ...]  # (file, bytes) not in the cache yet

    @property
    def pending_bytes(self) -> int:
        return sum(size for _, size in self.weights)


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None  # read per call: tests point it at a fake Hub


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached(repo_id: str, kind: str) -> Path | None:
    """The snapshot folder of `repo_id` in the local HF cache, if it is complete there:
    every folder with a model `config.json` also holds weights (a cancelled download
    leaves only configs)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not in the cache: the caller decides what to say
        return None
    index = folder / ("model_index.json" if kind == "model" else "config.json")
    if not index.is_file():
        return None
    for config in [folder / "config.json", *folder.glob("*/config.json")]:
        if config.is_file() and not any(config.parent.glob("*.safetensors")):
            return None
    return folder


def resolve(repo_id: str, policy: HubPolicy, field: str, kind: str = "model") -> Plan:
    """Check `repo_id` against the policy, then (if it may be downloaded and is not
    cached) its file list; fetch its config files. Raises RequestError naming `field`."""
    if policy.mode == "off":
        rule = f"'{repo_id}': Hub models are off on this server (hub_models=off)"
        raise RequestError(field, rule)
    cached = _cached(repo_id, kind)
    if cached is not None and (policy.mode != "list" or policy.may_download(repo_id)):
        return Plan(repo_id, "", cached, ())
    if policy.mode == "cached":
        rule = (f"'{repo_id}' is not in this server's Hugging Face cache, and this server "
                "downloads nothing (hub_models=cached)")  # fmt: skip
        raise RequestError(field, rule)
    if _offline():
        raise ModelUnavailableError(
            f"model '{repo_id}' is not available offline: it is not in the local Hugging Face "
            "cache and HF_HUB_OFFLINE=1 forbids downloading it"
        )
    if not policy.may_download(repo_id):
        rule = f"'{repo_id}' is not allowed on this server (hub_models: {policy.describe()})"
        raise RequestError(field, rule)
    return _plan(repo_id, policy, field, kind)


def _plan(repo_id: str, policy: HubPolicy, field: str, kind: str) -> Plan:
    from huggingface_hub import HfApi, hf_hub_download

    try:
        info = HfApi(endpoint=_endpoint()).model_info(repo_id, files_metadata=True)
    except Exception as e:
        log.warning("Hub: listing %s failed: %r", repo_id, e)
        raise ModelUnavailableError(f"'{repo_id}' could not be read from the Hub") from None
    sizes = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    index_name = "model_index.json" if kind == "model" else "config.json"
    if index_name not in sizes:
        found = ", ".join(sorted(sizes)[:8]) or "no files"
        rule = (f"'{repo_id}' is not a diffusers {'model' if kind == 'model' else 'ControlNet'} "
                f"folder (no {index_name}; found {found})")  # fmt: skip
        raise RequestError(field, rule)
    revision = "main"  # the cache records the ref, so "cached" finds the snapshot later

    def get(name: str) -> Path:
        return Path(hf_hub_download(repo_id, name, revision=revision, endpoint=_endpoint()))

    try:
        index = json.loads(get(index_name).read_text())
    except Exception as e:
        log.warning("Hub: %s of %s could not be read: %r", index_name, repo_id, e)
        raise RequestError(field, f"'{repo_id}': its {index_name} could not be read") from None
    folders = _component_folders(index, kind, repo_id, field)
    configs, weights = needed_files(sizes, folders)
    total = sum(sizes[f] for f in configs + weights)
    if total > policy.max_bytes:
        rule = (f"'{repo_id}' needs {total / 1e9:.1f} GB of files; this server downloads at "
                f"most {policy.max_bytes / 1e9:g} GB per model (hub_max_gb)")  # fmt: skip
        raise RequestError(field, rule)
    for name in configs:
        get(name)
    folder = get(index_name).parent
    missing = tuple((w, sizes[w]) for w in weights if not (folder / w).is_file())
    return Plan(repo_id, revision, folder, missing)


def _component_folders(index: dict, kind: str, repo_id: str, field: str) -> list[str]:
    """The folders a diffusers pipeline (or "" for a single-model repo) loads from."""
    if kind != "model":
        if index.get("_class_name") not in ("ControlNetModel", "ControlNetXSAdapter"):
            rule = f"'{repo_id}' is a {index.get('_class_name')!r}, not a ControlNetModel"
            raise RequestError(field, rule)
        return [""]
    from .families import family_from_model_index

    try:
        family_from_model_index(index)
    except ValueError as e:
        raise RequestError(field, f"'{repo_id}': {e}") from None
    return [k for k, v in index.items()
            if not k.startswith("_") and isinstance(v, list) and v[0] is not None]  # fmt: skip


def needed_files(sizes: dict[str, int], folders: list[str]) -> tuple[list[str], list[str]]:
    """(config files, weight files) a diffusers layout loads from `folders`: every config
    and tokenizer file, and per folder one set of `.safetensors` weights, the plain ones
    (not fp16/ema variants) when there are plain ones, sharded with their index."""
    configs, weights = [], []
    for folder in folders:
        prefix = f"{folder}/" if folder else ""
        inside = [f for f in sizes if f.startswith(prefix) and "/" not in f[len(prefix) :]]
        configs += [f for f in inside if f.endswith(CONFIG_SUFFIXES)]
        tensors = [f for f in inside if f.endswith(".safetensors")]
        plain = [f for f in tensors if len(Path(f).name.split(".")) == 2]  # name.safetensors
        chosen = plain or tensors
        if not folder and plain:  # a single-model repo: only the diffusers weight names
            chosen = [f for f in plain if Path(f).name.startswith("diffusion_pytorch_model")]
        weights += chosen
    return sorted(set(configs)), sorted(set(weights))


def fetch_weights(plan: Plan, progress: Progress | None, cancelled: Callable[[], bool]) -> None:
    """Download the plan's weight files (resumable; the HF cache keeps partial files),
    reporting bytes; raises Cancelled within one chunk once `cancelled()` is true."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import tqdm as hf_tqdm

    total = plan.pending_bytes
    done = [0]

    class Bar(hf_tqdm):  # type: ignore[misc,valid-type]
        """huggingface_hub's progress bar, reporting to the job and checking cancel."""

        def update(self, n: float | None = 1) -> bool | None:
            if cancelled():
                raise Cancelled("cancelled while downloading")
            done[0] += int(n or 0)
            if progress is not None:
                progress(min(done[0], total), total)
            return super().update(n)

    for name, size in plan.weights:
        start = done[0]
        try:
            hf_hub_download(plan.repo_id, name, revision=plan.revision or None,
                            endpoint=_endpoint(), tqdm_class=Bar)  # fmt: skip
        except Cancelled:
            raise
        except Exception as e:
            log.warning("Hub: downloading %s of %s failed: %r", name, plan.repo_id, e)
            raise ModelUnavailableError(f"'{plan.repo_id}' could not be downloaded") from None
        done[0] = start + size  # exact, whatever the bar saw (resumed files start late)
        if progress is not None:
            progress(done[0], total)


def describe_plan(plan: Plan) -> dict[str, Any]:
    return {"repo": plan.repo_id, "files": [w for w, _ in plan.weights],
            "bytes": plan.pending_bytes}  # fmt: skip


def fetch_pending(
    plans: list[Plan], progress: Progress | None, cancelled: Callable[[], bool]
) -> None:
    """Download every plan's weights, one byte count over them all (a job's models and
    ControlNets), before the job waits for a device."""
    total = sum(p.pending_bytes for p in plans)
    offset = 0
    for plan in plans:

        def report(done: int, _: int, base: int = offset) -> None:
            if progress is not None:
                progress(base + done, total)

        fetch_weights(plan, report, cancelled)
        offset += plan.pending_bytes
