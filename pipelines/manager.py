"""PipelineManager: the engine's front door. It builds the core once (registry,
LoRA and ControlNet libraries, device slots) and the job queue with a runner per
kind of job, and offers the job API plus blocking shortcuts.

    manager = PipelineManager(EngineSettings())
    job = manager.submit(ImageJob(GenerationRequest(prompt="a red fox")), caller="ann")
    for event in job.events(): ...        # queued, started, progress, preview, result
    result = manager.generate(GenerationRequest(prompt="a red fox"))  # the same, blocking

Where things live: slots.py (device slots, model cache, FIFO line, LoRA scope),
jobs.py (job handles, events, admission), image_job.py and video.py (the two kinds
of job, peers over the core), core.py (settings and the shared parts).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from .controlnets import ControlNetLibrary
from .core import EngineCore, EngineSettings
from .embeddings import EmbeddingLibrary
from .errors import AtelierError
from .families import Family
from .hub import HubPolicy
from .image_job import GenerationResult, ImageJob, ImageRunner
from .jobs import Job, JobEvent, JobQueue, Limits
from .loras import LoraLibrary
from .placement import PlacingPool
from .progress import CancelToken, ProgressEvent
from .registry import ModelEntry, ModelRegistry
from .request import GenerationRequest
from .slots import AdapterOptions, DeviceSlot
from .styles import StyleLibrary
from .tasks import Inputs
from .upscale import UpscalerLibrary
from .upscale_job import UpscaleJob, UpscaleRunner
from .vaes import VaeLibrary
from .video import VideoJob, VideoRequest, VideoResult, VideoRunner
from .xyz_job import XyzJob, XyzRunner

if TYPE_CHECKING:
    from .status import RedisReporter
    from .storage import S3Store

__all__ = ["EngineSettings", "GenerationResult", "PipelineManager"]
log = logging.getLogger(__name__)


class PipelineManager:
    def __init__(
        self,
        settings: EngineSettings | None = None,
        registry: ModelRegistry | None = None,
        loras: LoraLibrary | None = None,
    ) -> None:
        self.settings = s = settings or EngineSettings()
        policy = HubPolicy.parse(s.hub_models if s.allow_hub else "off", s.hub_max_gb)
        self.registry = registry or ModelRegistry(s.models_dir, s.cache_root, s.allow_hub,
                                                  s.flux_base, policy)  # fmt: skip
        self.loras = loras or LoraLibrary(s.loras_dir, s.cache_root)
        self.controlnets = ControlNetLibrary(s.controlnets_dir, s.cache_root, s.allow_hub, policy)
        adapters = AdapterOptions(s.lora_mode, s.lora_cache_count, s.lora_cache_mb * 2**20,
                                  s.lora_hotswap_rank)  # fmt: skip
        self.pool = PlacingPool(s.devices, s.cache_budget_mb, s.load, adapters,
                             self.registry.model_hash)  # fmt: skip
        self.embeddings = EmbeddingLibrary(s.embeddings_dir)
        self.vaes = VaeLibrary(s.vae_dir)
        self.styles = StyleLibrary(s.styles_file)
        self.upscalers = UpscalerLibrary(s.upscalers_dir)
        self.core = EngineCore(s, self.registry, self.loras, self.controlnets, self.pool,
                               self.embeddings, self.vaes, self.styles,
                               self.upscalers)  # fmt: skip
        self.jobs = JobQueue(self.pool, Limits(s.queue_size, s.max_jobs_per_user, s.max_work))
        self.images = ImageRunner(self.core)
        self.jobs.register(ImageJob, self.images)
        self.jobs.register(VideoJob, VideoRunner(self.core))
        self.jobs.register(UpscaleJob, UpscaleRunner(self.core))  # Extras (upscale_job.py)
        self.jobs.register(XyzJob, XyzRunner(self.images))  # X/Y/Z plots (xyz_job.py)
        self.reporter: RedisReporter | None = None  # task status in Redis (attach)
        self.store: S3Store | None = None  # outputs to S3 (attach)

    # -- production integrations (issue 15) -------------------------------------
    def attach(self, reporter: RedisReporter | None = None, store: S3Store | None = None) -> None:
        """Report every job of every front end to Redis (`reporter`, a JobQueue
        listener) and upload every output a job saved to S3 (`store`: every registered
        runner, local or Ray's remote one, is wrapped, so a result with saved `paths` is
        uploaded in the job's thread before its `result` event, and an upload failure
        fails the job, its files kept). Call once, after every kind of job is registered.
        Results without saved paths (a VideoResult: its front end saves the file) are
        passed on untouched: upload those with `store_files`."""
        from .storage import UploadingRunner

        if reporter is not None:
            self.reporter = reporter
            self.jobs.add_listener(reporter)
        if store is not None:
            self.store = store
            for spec_type in self.jobs.spec_types():
                inner = self.jobs.registered(spec_type)
                if isinstance(inner, UploadingRunner):
                    inner = inner.inner  # attached again: the new store replaces the old one
                self.jobs.register(spec_type, UploadingRunner(inner, store, self.task_name))

    def task_name(self, job: Job) -> str:
        """The name a job's task has in Redis and in S3 keys, to give back to its caller:
        its task id (namespaced `<caller>:<id>` for remote callers), or a name made
        unique across processes when it has none."""
        from .status import task_key

        if self.reporter is not None:
            return self.reporter.task_name(job)
        if job.task_id:
            return task_key(job.task_id, job.caller)
        return f"{_INSTANCE}-{job.id}"

    def store_files(self, job: Job, paths: list[Path], metadata: dict[str, Any]) -> list[str]:
        """Files a front end saved after a job's result (a video and its JSON): uploaded
        when S3 is set (their URLs returned, else their paths) and listed as the task's
        outputs in Redis. An upload failure marks the task failed and raises
        StorageError; the files stay where they are."""
        from .storage import StorageError

        name = self.task_name(job)
        outputs = [str(p) for p in paths]
        if self.store is not None:
            try:
                outputs = [self.store.upload(p, name, metadata) for p in paths]
            except StorageError as e:
                if self.reporter is not None:
                    self.reporter.fail(name, e)
                raise
        if self.reporter is not None:
            self.reporter.set_outputs(name, outputs)
        return outputs

    def close(self, timeout: float = 10.0) -> bool:
        """Write the last task states to Redis before the process exits (the writer is
        a daemon thread); False, with a warning saying so, if Redis did not answer."""
        if self.reporter is None:
            return True
        written = self.reporter.close(timeout)
        if not written:
            log.warning("task status not written: Redis at %s did not answer within %g s",
                        self.reporter.url, timeout)  # fmt: skip
        return written

    @property
    def slots(self) -> list[DeviceSlot]:
        return self.pool.slots

    @property
    def _cond(self) -> Any:  # the condition signalled whenever a slot is released (tests)
        return self.pool.cond

    # -- the job API -----------------------------------------------------------
    def submit(
        self,
        spec: Any,
        caller: str = "local",
        cancel: CancelToken | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        task_id: str | None = None,
    ) -> Job:
        """Queue a job (ImageJob, VideoJob); see jobs.py. Raises RequestError for bad
        input and LimitError when admission refuses it, before anything is queued; with
        Redis attached, such a refusal is recorded as a failed task naming the field.
        `task_id` names the task (and an ImageJob's files, unless the spec names them);
        `task_name(job)` is the name to give back to the caller."""
        task_id = task_id or getattr(spec, "task_id", None)
        if task_id and dataclasses.is_dataclass(spec) and getattr(spec, "task_id", 0) is None:
            spec = dataclasses.replace(spec, task_id=task_id)  # its files get the name too
        try:
            return self.jobs.submit(spec, caller, cancel, on_event, task_id)
        except AtelierError as e:
            if self.reporter is not None:
                self.refused(task_id, e, caller, spec)
            raise

    def refused(self, task_id: str | None, error: BaseException, caller: str = "local",
                spec: Any = None, kind: str = "image") -> str | None:  # fmt: skip
        """Record a request refused before it was queued (a bad field, a full queue) as
        a failed task; its name (None without Redis). Front ends call it for input they
        reject themselves before `submit` (e.g. an unreadable image file)."""
        if self.reporter is None:
            return None
        from .errors import RequestError
        from .outputs import check_task_id

        try:
            check_task_id(task_id)
        except RequestError:
            task_id = None  # the id itself is bad: the failure gets a made-up name
        request = getattr(spec, "request", None)
        kind = "video" if isinstance(spec, VideoJob) else kind
        return self.reporter.refused(task_id, error, caller, kind, getattr(request, "model", None))

    def status(self) -> dict[str, Any]:
        """Jobs waiting, and what runs on each slot."""
        return self.jobs.status()

    # -- blocking shortcuts (the CLI, notebooks, tests) ------------------------
    def generate(
        self,
        request: GenerationRequest,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        cancel: CancelToken | None = None,
        inputs: Inputs | None = None,
        caller: str = "local",
    ) -> GenerationResult:
        """Text-to-image, or image-to-image / inpainting / ControlNet with `inputs`."""
        spec = ImageJob(request, inputs or Inputs())
        return _follow(self.submit(spec, caller, cancel, _progress_events(on_progress)))

    def generate_video(
        self,
        request: VideoRequest,
        image: Image.Image | None = None,
        end_image: Image.Image | None = None,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        cancel: CancelToken | None = None,
        caller: str = "local",
    ) -> VideoResult:
        """Text/image-to-video with the Wan models; see video.py."""
        spec = VideoJob(request, image, end_image)
        return _follow(self.submit(spec, caller, cancel, _progress_events(on_progress)))

    def prepare(
        self, request: GenerationRequest, inputs: Inputs | None = None
    ) -> tuple[GenerationRequest, ModelEntry]:
        """Resolve and validate an image request without running it. Raises RequestError."""
        return self.images.resolve(request, inputs)

    # -- what the front ends offer (asked of the engine, never re-derived) ---
    def models(self, kind: str) -> dict[str, Family]:
        """Models of `kind` ("image" or "video") by name, with their families, in the
        registry's order, without building or loading any. A broken folder is left out."""
        from .errors import AtelierError

        out: dict[str, Family] = {}
        for name in self.registry.names():
            try:
                family = self.registry.family_of(name)
            except AtelierError:
                continue
            if family.kind == kind:
                out[name] = family
        return out

    def preload(self, name: str) -> None:
        """Load model `name` into every slot's cache now, not on its first job (on
        ZeroGPU Spaces, models must load outside the GPU function)."""
        entry = self.registry.resolve(name)
        for slot in self.slots:
            with slot.lock:
                self.pool.load(slot, entry)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no slot runs a job; False if `timeout` seconds passed first."""
        return self.pool.wait_idle(timeout)


_INSTANCE = uuid.uuid4().hex[:12]  # names tasks without an id (no Redis)


def _follow(job: Job) -> Any:
    """Wait for `job`; its result or its error. The caller gave up (Ctrl+C): cancel it."""
    try:
        return job.result()
    finally:
        if not job.done:
            job.cancel()


def _progress_events(
    on_progress: Callable[[ProgressEvent], None] | None,
) -> Callable[[JobEvent], None] | None:
    """A job event listener that passes steps to an old-style `on_progress`, in the job's
    thread, during the step (as the engine always has: a callback may cancel there)."""
    if on_progress is None:
        return None

    def listener(event: JobEvent) -> None:
        if event.kind in ("progress", "preview"):
            on_progress(ProgressEvent(event.step, event.total, event.preview))

    return listener
