"""Atelier on Ray Serve: the engine as a deployment, one replica per GPU (or CPU replicas).

    serve run deploy/serve.yaml                       # import_path pipelines.serve:build_app
    python app.py --engine ray --ray-address auto     # the studio, sending jobs here

Each replica is a whole PipelineManager with its own device slot(s) and model cache.
A request names its model as Serve's multiplexed model id (the Atelier model name),
so Serve routes it to a replica that already holds that model (else to the one
holding the fewest). Why the pieces are as they are:

- `max_ongoing_requests` defaults to 1: a replica's engine runs one job per slot,
  and a second request parked inside a busy replica would wait there while another
  replica sits idle. Front ends keep their own FIFO line (pipelines/remote.py).
- Multiplexing evicts by model COUNT, the engine's cache by BYTES. The count is
  derived from the byte budget (`models_per_replica`: budget // size of the
  largest model served), so Serve evicts first; its eviction calls the lease's
  `__del__`, which drops the model from the engine's cache, so Serve's routing
  table and the replica's memory agree. If the byte budget still evicts first
  (a bigger model than planned), the replica reloads the model on its next
  request for it: slower, never wrong.
- Cancel: Ray cancels a request by raising asyncio.CancelledError in the replica's
  coroutine; it cannot interrupt the worker thread that runs diffusers. The
  coroutine turns it into the engine job's cancel token, so the run stops within
  one step and the slot frees.
- Admission limits (queue size, per-user jobs, work) are applied by the front end
  before a job is sent; the replica's engine has none.

Nothing here imports ray at module level: the engine stays importable without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .errors import AtelierError
from .jobs import TERMINAL, Job, JobEvent
from .remote_wire import decode_job, encode_error, encode_result, png_bytes

log = logging.getLogger(__name__)

APP_NAME = "atelier"
DEPLOYMENT_NAME = "atelier"
SERVE_DEFAULT_MODELS = 3  # Serve's own default, when neither max_models nor model_mb is set


def models_per_replica(budget_mb: int, model_mb: int) -> int:
    """Serve's `max_num_models_per_replica` from the engine's per-slot cache budget and
    the size of the largest model the replicas serve (weights in memory, in MB)."""
    return max(1, int(budget_mb) // max(1, int(model_mb)))


class ModelLease:
    """What `serve.multiplexed` keeps per model on a replica. Serve calls `__del__` when
    it evicts the model (count-based LRU); the model then leaves the engine's cache
    too. Idempotent: Python may call `__del__` again when the lease is collected."""

    def __init__(self, replica: AtelierReplica, name: str) -> None:
        self.replica = replica
        self.name = name
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.replica.forget_model(self.name)

    def __del__(self) -> None:
        self.release()


class AtelierReplica:
    """The Serve deployment class. `settings`: engine setting values by name (as the CLI
    flags, e.g. {"models_dir": "/models", "devices": ["cpu"]}); `max_models`: Serve's
    per-replica model count (0 = derived from the slot's cache budget and `model_mb`, the
    largest model's size, see models_per_replica; neither given: Serve's default, 3);
    `torch_threads`: torch's intra-op threads (0 = Ray's, which follows num_cpus; pin it
    to compare pixels with another process)."""

    def __init__(self, settings: dict[str, Any] | None = None, max_models: int = 0,
                 model_mb: int = 0, torch_threads: int = 0) -> None:  # fmt: skip
        import argparse

        import torch
        from ray import serve

        from .manager import PipelineManager
        from .settings import ENGINE_SETTINGS, engine_settings, resolve

        if torch_threads:
            torch.set_num_threads(torch_threads)
        values = {**resolve(ENGINE_SETTINGS, argparse.Namespace()), **(settings or {})}
        values["devices"] = tuple(values["devices"] or ())
        self.manager = PipelineManager(engine_settings(values))
        budget_mb = min(s.cache.budget_bytes or 0 for s in self.manager.slots) // 2**20
        if not max_models and model_mb and budget_mb:
            max_models = models_per_replica(budget_mb, model_mb)
        self.max_models = max_models or SERVE_DEFAULT_MODELS
        self.counts = {"done": 0, "failed": 0, "cancelled": 0}
        self.manager.jobs.add_listener(self._count)
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # constructed outside Serve (tests of the class itself)
            self.replica = f"pid{os.getpid()}"

        async def lease(model_id: str) -> ModelLease:
            # validates the name (a RequestError naming `model`, as locally)
            await asyncio.to_thread(self.manager.registry.resolve, model_id)
            return ModelLease(self, model_id)

        # built per instance: the count comes from this replica's own budget
        self.lease = serve.multiplexed(max_num_models_per_replica=self.max_models)(lease)

    def _count(self, job: Job, event: JobEvent) -> None:
        key = {"result": "done", "error": "failed", "cancelled": "cancelled"}.get(event.kind)
        if key is not None:
            self.counts[key] += 1

    def forget_model(self, name: str) -> None:
        """Drop model `name` from every slot's cache (unless a job holds it right now)."""
        from .slots import model_key

        try:
            key = model_key(self.manager.registry.resolve(name))
        except AtelierError:
            return
        for slot in self.manager.slots:
            slot.cache.evict(key)

    def stats(self) -> dict[str, Any]:
        """This replica: id, process, models loaded from disk, jobs by outcome, models held."""
        return {
            "replica": self.replica,
            "pid": os.getpid(),
            "loads": sum(s.loads for s in self.manager.slots),
            **self.counts,
            "models": sorted(
                {k.split("@")[0] for s in self.manager.slots for k in s.cache.names()}
            ),  # fmt: skip
            "max_models": self.max_models,
        }

    async def run(self, job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Run one wire job (remote_wire.py) and stream its events; call with
        `handle.options(stream=True, multiplexed_model_id=<model>)`."""
        from ray import serve

        yield {"kind": "accepted", "replica": self.replica, "pid": os.getpid()}
        engine_job: Job | None = None
        try:
            spec = decode_job(job)
            model = serve.get_multiplexed_model_id()
            if model:
                await self.lease(model)
            engine_job = self.manager.submit(spec, caller=str(job.get("caller", "ray")))
            events = engine_job.events()
            while True:
                wire = await asyncio.to_thread(self._next, events)
                yield wire
                if wire["kind"] in TERMINAL:
                    return
        except AtelierError as e:  # refused before it ran (bad input, unknown model)
            yield {"kind": "error", "error": encode_error(e)}
        except asyncio.CancelledError:
            log.info("request cancelled by its caller: cancelling the engine job")
            raise
        except Exception as e:  # a bug: logged here, reported to the front end
            log.exception("replica %s: job failed", self.replica)
            yield {"kind": "error", "error": encode_error(e)}
        finally:
            # Ray's cancel (asyncio.CancelledError) and a closed stream both land here;
            # the worker thread running diffusers stops at the end of its step.
            if engine_job is not None and not engine_job.done:
                engine_job.cancel()

    def _next(self, events: Iterator[JobEvent]) -> dict[str, Any]:
        """The next engine event in wire form (runs in a worker thread: encoding PNGs)."""
        event = next(events)
        wire: dict[str, Any] = {"kind": event.kind}
        if event.kind == "queued":
            wire["position"] = event.position
        elif event.kind == "started":
            wire["slot"] = event.slot
        elif event.kind in ("progress", "preview", "download", "hashing"):
            wire.update(step=event.step, total=event.total)
            if event.preview is not None:
                wire["preview"] = png_bytes(event.preview)
        elif event.kind == "result":
            wire.update(encode_result(event.result))
            wire["engine"] = self.stats()
        elif event.kind == "error":
            assert event.error is not None
            wire["error"] = encode_error(event.error)
        return wire


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Serve application (Serve config: `import_path: pipelines.serve:build_app`,
    `args:` as below). Per-deployment resources, replicas and autoscaling come from the
    config's `deployments:` section (which overrides the defaults here).

    args: settings (engine settings by name), max_models, model_mb, torch_threads,
    num_replicas, num_cpus, num_gpus, max_ongoing_requests."""
    from ray import serve

    args = dict(args or {})
    actor: dict[str, Any] = {"num_cpus": args.get("num_cpus", 1)}
    if args.get("num_gpus"):
        actor["num_gpus"] = args["num_gpus"]
    options: dict[str, Any] = {"max_ongoing_requests": args.get("max_ongoing_requests", 1),
                               "ray_actor_options": actor}  # fmt: skip
    if "num_replicas" in args:  # else 1, or the config's autoscaling_config
        options["num_replicas"] = args["num_replicas"]
    deployment = serve.deployment(AtelierReplica, name=DEPLOYMENT_NAME, **options)
    numbers = [int(args.get(k, 0)) for k in ("max_models", "model_mb", "torch_threads")]
    return deployment.bind(args.get("settings") or {}, *numbers)
