"""The Ray Serve backend of a front end: jobs run on the replicas of pipelines/serve.py.

    manager = PipelineManager(settings)                 # as always (no model is loaded)
    use_ray(manager, RayOptions(address="auto"))        # ImageJob/VideoJob now run on Ray
    manager.submit(ImageJob(request)) ...               # same facade, events and errors

A remote replica is one more place a job runs, so nothing above the job API changes:
the manager's runners for ImageJob and VideoJob are replaced by RemoteRunners that
validate exactly as the local runner does (`prepare`: the same RequestErrors, the same
work, so the same admission: queue size, jobs per user, work limit), then wait in
the manager's own FIFO line for a *lane* (the slots of the pool become `ray#0..N-1`,
one per request the Serve app runs at once) and send the job to Serve, relaying the
replica's events as this job's events (queued, download, hashing, started, progress,
preview) and decoding its result (PNG bytes with infotext; video frames) into the
usual GenerationResult/VideoResult. Files are written here (`save_to`), not on the
replica: no shared filesystem is assumed except, by choice, the model folders.

Faults, chosen and tested:
- a replica that dies mid-job fails THAT job with a ReplicaError naming the replica
  (no retry: a retry would run the job twice if only the connection died, and the
  user sees a clear error and can press Generate again); other jobs go on, and Serve
  starts a replacement that serves later requests;
- no replica takes the job within `wait_s` seconds (app down, replicas dead or all
  busy with other front ends' jobs): the job waits in state `queued` (after a second
  it says so with a `queued` event, position 1, which the studio shows) and then
  fails with a ReplicaError that says what to check;
- Stop cancels the Serve request; the replica turns that into the engine job's
  cancel token (it stops within one step) and the job here ends `cancelled` at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import AtelierError, Cancelled, RequestError
from .jobs import JobContext, Prepared, Runner
from .progress import ProgressEvent
from .remote_wire import decode_error, decode_result, encode_job, model_of, png_image

if TYPE_CHECKING:
    from .manager import PipelineManager
    from .slots import DeviceSlot

log = logging.getLogger(__name__)
ENGINES = ("local", "ray")


class ReplicaError(AtelierError):
    """A Ray Serve replica could not run a job: it died, or none took it in time."""


@dataclass(frozen=True)
class RayOptions:
    address: str = "auto"  # "auto" (a local `ray start --head` cluster) or ray://host:10001
    app: str = "atelier"  # the Serve application's name (serve.yaml)
    wait_s: float = 120.0  # most seconds a job waits for a replica to take it
    lanes: int = 0  # jobs sent at once (0 = running replicas, one request each)


class RayBackend:
    """The connection to one Serve application; `follow` runs one job there."""

    def __init__(self, options: RayOptions) -> None:
        import ray
        from ray import serve

        self.options = options
        if not ray.is_initialized():  # a test's in-process cluster is used as it is
            ray.init(address=options.address, log_to_driver=False)
        try:
            self.handle = serve.get_app_handle(options.app)
        except Exception as e:  # RayServeException: no such app (or Serve not running)
            rule = (f"no Ray Serve application {options.app!r} on the cluster at "
                    f"{options.address!r} ({e}); deploy it first: "
                    "serve deploy deploy/serve.yaml")  # fmt: skip
            raise RequestError("ray_app", rule) from None
        self.lanes = options.lanes or self._capacity()
        self.lock = threading.Lock()
        self.running: dict[str, dict[str, Any]] = {}  # job id -> {"replica", "pid"}
        self.replicas: dict[str, dict[str, Any]] = {}  # replica id -> its last stats

    def _capacity(self) -> int:
        """The replicas running now (each takes one request: max_ongoing_requests 1), at
        least 1. With autoscaling, set `lanes` to max_replicas instead."""
        from ray import serve

        try:
            app = serve.status().applications[self.options.app]
            total = 0
            for dep in app.deployments.values():
                running = sum(n for state, n in dep.replica_states.items()
                              if str(getattr(state, "value", state)) == "RUNNING")  # fmt: skip
                total += running
            return max(1, total)
        except Exception:  # an older/newer status shape: one lane, and say so
            log.warning("could not count the Serve replicas; using 1 lane (set ray_lanes)")
            return 1

    # -- one job -----------------------------------------------------------------
    def follow(self, payload: dict[str, Any], model: str, ctx: JobContext,
               lane: DeviceSlot) -> Any:  # fmt: skip
        """Send `payload` to Serve (multiplexed by `model`), relay its events to `ctx`
        and return the decoded result; raises the job's error, Cancelled or ReplicaError."""
        stream = self.handle.options(stream=True, multiplexed_model_id=model).run.remote(payload)
        inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        threading.Thread(target=_read, args=(stream, inbox), daemon=True,
                         name=f"atelier-ray-{ctx.job.id}").start()  # fmt: skip
        sent = time.monotonic()
        deadline = sent + self.options.wait_s
        announce = sent + min(1.0, self.options.wait_s / 2)  # then say it waits (visible)
        replica: str | None = None
        try:
            while True:
                if ctx.cancel.cancelled:
                    raise Cancelled("cancelled")
                try:
                    tag, item = inbox.get(timeout=0.1)
                except queue.Empty:
                    now = time.monotonic()
                    if replica is None and now > deadline:
                        raise ReplicaError(self._no_replica()) from None
                    if replica is None and now > announce:
                        ctx.job.placed(1)  # waiting for a replica: first in line
                        announce = deadline + 1.0  # once
                    continue
                if tag == "raised":
                    if ctx.cancel.cancelled:
                        raise Cancelled("cancelled")
                    raise ReplicaError(_died(replica, item)) from item
                if tag == "end":
                    raise ReplicaError(f"replica {replica} ended the job's stream without a result")
                kind = item["kind"]
                if kind == "accepted":
                    replica = item["replica"]
                    with self.lock:
                        self.running[ctx.job.id] = {"replica": replica, "pid": item["pid"]}
                elif kind == "result":
                    with self.lock:
                        self.replicas[str(replica)] = item["engine"]
                    return decode_result(item, f"ray:{str(replica)[:8]}")
                elif kind == "cancelled":
                    raise Cancelled("cancelled on the replica")
                elif kind == "error":
                    raise decode_error(item["error"], f"replica {replica}")
                else:
                    _relay(item, ctx, lane)
        finally:
            with self.lock:
                self.running.pop(ctx.job.id, None)
            stream.cancel()  # a no-op once it finished; else Ray cancels the replica's run

    def _no_replica(self) -> str:
        o = self.options
        return (f"no Ray Serve replica of {o.app!r} took the job within {o.wait_s:g} s "
                "(the app is down, restarting, or busy with other front ends' jobs): check "
                "`serve status`; ray_wait_s sets this wait")  # fmt: skip


def _read(stream: Any, inbox: queue.Queue[tuple[str, Any]]) -> None:
    """Iterate the Serve stream (blocking) into `inbox`, in the reader's own thread, so
    the job's thread can watch its cancel token and the wait bound meanwhile."""
    try:
        for item in stream:
            inbox.put(("event", item))
    except BaseException as e:  # ActorDiedError, RequestCancelledError, ...
        inbox.put(("raised", e))
    else:
        inbox.put(("end", None))


def _died(replica: str | None, error: BaseException) -> str:
    where = f"Ray Serve replica {replica}" if replica else "the Ray Serve replica"
    return (f"the {where} running this job failed or died ({type(error).__name__}); the job "
            "was not retried (other jobs go on; press Generate again)")  # fmt: skip


def _relay(item: dict[str, Any], ctx: JobContext, lane: DeviceSlot) -> None:
    """A replica's engine event as this job's event."""
    kind = item["kind"]
    if kind == "queued":
        ctx.job.placed(item["position"])
    elif kind == "started":
        ctx.on_slot(lane)
    elif kind in ("progress", "preview"):
        ctx.on_progress(ProgressEvent(item["step"], item["total"], png_image(item.get("preview"))))
    elif kind == "download":
        ctx.on_download(item["step"], item["total"])
    elif kind == "hashing":
        ctx.on_hashing(item["step"], item["total"])


class RemoteRunner:
    """A job kind's runner that validates like the local one and runs on Ray Serve."""

    def __init__(self, local: Runner, backend: RayBackend, manager: PipelineManager) -> None:
        self.kind = local.kind
        self.local = local
        self.backend = backend
        self.pool = manager.pool

    def prepare(self, spec: Any) -> Prepared:
        return self.local.prepare(spec)  # same checks, same work: same admission

    def run(self, prepared: Prepared, ctx: JobContext) -> Any:
        from .image_job import ImageJob
        from .outputs import save_image

        spec = prepared.spec  # resolved: seed chosen, defaults filled in
        original = None
        if self.kind == "image":  # spec is the resolved request; data holds the rest
            original = prepared.data.job  # the submitted ImageJob (inputs, save_to, task_id)
            spec = ImageJob(spec, prepared.data.inputs)
        payload = encode_job(spec, ctx.job.caller)
        with self.pool.slot_for("ray", ctx.job, prepared.model) as lane:
            result = self.backend.follow(payload, model_of(spec), ctx, lane)
        if original is not None and original.save_to is not None:
            made = zip(result.images, result.infotexts, result.seeds, strict=True)
            result.paths = [save_image(im, original.save_to, info, seed, n, original.task_id)
                            for n, (im, info, seed) in enumerate(made)]  # fmt: skip
        return result


def use_ray(manager: PipelineManager, options: RayOptions) -> RayBackend:
    """Make `manager` run image and video jobs on the Serve app of `options`: its slots
    become lanes `ray#0..N-1` and its runners RemoteRunners. Returns the backend."""
    import torch

    from .image_job import ImageJob
    from .slots import DeviceSlot
    from .video import VideoJob, VideoRunner

    backend = RayBackend(options)
    lanes = [DeviceSlot(f"ray#{i}", torch.device("cpu"), 0, ["ray"]) for i in range(backend.lanes)]
    manager.pool.slots[:] = lanes  # status and the FIFO line now count lanes
    manager.jobs.register(ImageJob, RemoteRunner(manager.images, backend, manager))
    manager.jobs.register(VideoJob, RemoteRunner(VideoRunner(manager.core), backend, manager))
    manager.remote = backend  # type: ignore[attr-defined]  # for status and tests
    return backend


def apply_engine(manager: PipelineManager, values: dict[str, Any]) -> RayBackend | None:
    """The `engine` setting: local (nothing to do) or ray (use_ray with the ray_* settings)."""
    engine = str(values.get("engine", "local")).strip().lower()
    if engine == "local":
        return None
    if engine != "ray":
        raise RequestError("engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RequestError("engine", "ray needs the Ray extra: pip install -r "
                                     "requirements-ray.txt") from None  # fmt: skip
    options = RayOptions(
        address=values.get("ray_address") or "auto",
        app=values.get("ray_app") or "atelier",
        wait_s=float(values.get("ray_wait_s", 120.0)),
        lanes=int(values.get("ray_lanes", 0)),
    )
    return use_ray(manager, options)
