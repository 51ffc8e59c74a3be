"""The engine's one job API: submit a job, follow its events, cancel it.

    job = manager.submit(ImageJob(GenerationRequest(prompt="a red fox")), caller="ann")
    for event in job.events():      # queued -> started -> progress... -> result
        print(event.kind, event.step, event.total, event.eta)
    result = job.result()           # the GenerationResult (or raises the job's error)

Every front end (the studio, the Gradio API, the CLI, `--jobs`, later REST APIs
and remote replicas) goes through `JobQueue.submit`, so one admission step binds
them all:
1. the runner of the job's kind validates and resolves it (`Runner.prepare`,
   raising RequestError before anything is queued) and says what it costs
   (`Prepared.work`: width x height x steps x images, x frames for video);
2. admission refuses it with a LimitError naming the limit when the request's work
   is over `max_work`, when `queue_size` jobs already wait, or when its caller
   already has `max_jobs_per_user` jobs waiting or running (0 = no limit);
3. the job runs in its own thread: it downloads the Hub weights it needs, if any
   (`download` events with bytes done/total; hub.py), then waits in the slot pool's FIFO line
   (`queued` events carry its place), takes a slot (`started`), reports each step
   (`progress`, with an ETA from measured step times; `preview` when it carries a
   latent preview) and ends with exactly one of `result`, `error`, `cancelled`.

Kinds of job are peers: a runner per spec type (ImageJob, VideoJob, ...) is
registered with the queue; the queue knows nothing of images or video.

Threads: `submit` may be called from any thread. `_lock` guards the set of live
jobs; it is never held while a job prepares or runs. A job's events are put on
its own queue.Queue; listeners (`add_listener`) are called in the thread that
produced the event and must not block.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import AtelierError, Cancelled, LimitError
from .progress import CancelToken, ProgressEvent
from .slots import DeviceSlot, SlotPool

log = logging.getLogger(__name__)
TERMINAL = ("result", "error", "cancelled")


@dataclass(frozen=True)
class JobEvent:
    # queued | download | hashing | started | progress | preview | result | error | cancelled
    # (and idle, from Job.events(idle=...) only: nothing happened for a while)
    kind: str
    job_id: str
    position: int | None = None  # queued: place in the line (1 = next)
    step: int = 0  # progress: steps done, over every pass of the job (download: bytes)
    total: int = 0
    eta: float | None = None  # seconds left, from this job's measured step times
    preview: Any = None  # a PIL image (preview events)
    slot: str | None = None  # started: the device slot
    result: Any = None  # result events
    error: BaseException | None = None  # error and cancelled events


@dataclass(frozen=True)
class Prepared:
    """A validated, resolved job, ready to queue."""

    spec: Any  # the resolved spec (defaults filled in, seed chosen)
    work: int  # what the work budget counts
    model: str  # the model it runs (status and step-time statistics)
    data: Any = None  # the runner's own prepared state (entries, LoRAs, inputs)


class Runner(Protocol):
    kind: str

    def prepare(self, spec: Any) -> Prepared: ...

    def run(self, prepared: Prepared, ctx: JobContext) -> Any: ...


@dataclass(frozen=True)
class Limits:
    queue_size: int = 0  # most jobs waiting for a slot (0 = unlimited)
    max_jobs_per_user: int = 0  # waiting + running jobs of one caller (0 = unlimited)
    max_work: int = 0  # work of one request (0 = unlimited)


class JobContext:
    """What a runner gets while its job runs: the cancel token, the progress sink,
    and `on_slot` to pass to SlotPool.model_on_slot (marks the job started)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.cancel = job.token

    def on_slot(self, slot: DeviceSlot) -> None:
        self.job._started(slot)

    def on_progress(self, event: ProgressEvent) -> None:
        self.job._progress(event)

    def on_download(self, done: int, total: int) -> None:
        """Bytes of the job's Hub models downloaded so far (before it waits for a slot)."""
        self.job._emit(JobEvent("download", self.job.id, step=done, total=total))

    def on_hashing(self, done: int, total: int) -> None:
        """Bytes of the model file hashed so far (its first use: big files take a while)."""
        self.job._emit(JobEvent("hashing", self.job.id, step=done, total=total))

    def fetch(self, plans: list[Any]) -> None:
        """Download the Hub weights the job still needs (hub.Plan objects; None skipped),
        reporting `download` events; stops within a chunk when the job is cancelled.
        Runs in the job's own thread, holding no device slot."""
        from .hub import fetch_pending

        todo = [p for p in plans if p is not None]
        if todo:
            fetch_pending(todo, self.on_download, lambda: self.cancel.cancelled)


class Job:
    """The handle of one submitted job."""

    def __init__(self, job_id: str, kind: str, caller: str, prepared: Prepared,
                 token: CancelToken, owner: JobQueue,
                 on_event: Callable[[JobEvent], None] | None = None,
                 task_id: str | None = None) -> None:  # fmt: skip
        self.id = job_id
        self.kind = kind
        self.caller = caller
        # The caller's name for the job (Redis status, S3 keys, file names); set before
        # the job's thread starts, so every listener sees it from the first event.
        self.task_id = task_id
        self.prepared = prepared
        self.token = token
        self.state = "queued"  # queued | running | done | failed | cancelled
        self.slot: str | None = None
        self.created = time.time()
        self.started_at: float | None = None
        self._owner = owner
        self._on_event = on_event  # called in the job's thread, as each event happens
        self._events: queue.Queue[JobEvent] = queue.Queue()
        self._done = threading.Event()
        self._outcome: JobEvent | None = None
        self._first_step: tuple[float, int] | None = None  # (time, step) of the first step
        self._last_step: tuple[float, int] | None = None

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.kind}, {self.state}, caller={self.caller})"

    # -- for callers -----------------------------------------------------------
    def events(self, timeout: float | None = None, idle: float | None = None) -> Iterator[JobEvent]:
        """Every event in order, ending with the terminal one (result/error/cancelled).
        One consumer per job. `timeout`: most seconds to wait for each event. `idle`:
        after that many seconds without one, an `idle` event (not a state change), so a
        consumer that can only act between events (a Gradio generator, closed on Stop
        only while it yields) gets the chance while its job waits in a long line."""
        waited = 0.0
        while True:
            wait = idle if idle is not None else timeout
            if idle is not None and timeout is not None:
                wait = min(idle, timeout - waited)
            try:
                event = self._events.get(timeout=wait)
            except queue.Empty:
                waited += wait or 0.0
                if timeout is not None and waited >= timeout:
                    raise TimeoutError(f"job {self.id}: no event in {timeout} s") from None
                yield JobEvent("idle", self.id)
                continue
            waited = 0.0
            yield event
            if event.kind in TERMINAL:
                return

    def result(self, timeout: float | None = None) -> Any:
        """Block until the job ends; its result, or its error raised here."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} still {self.state} after {timeout} s")
        assert self._outcome is not None
        if self._outcome.error is not None:
            raise self._outcome.error
        return self._outcome.result

    def cancel(self) -> None:
        """Stop the job: removed from the line if waiting, else within one step."""
        self.token.cancel()
        self._owner.pool.wake()

    @property
    def cancelled(self) -> bool:
        return self.token.cancelled

    @property
    def done(self) -> bool:
        return self._done.is_set()

    # -- from the engine -------------------------------------------------------
    def placed(self, position: int) -> None:
        self._emit(JobEvent("queued", self.id, position=position))

    def _started(self, slot: DeviceSlot) -> None:
        self.state, self.slot, self.started_at = "running", slot.name, time.time()
        self._emit(JobEvent("started", self.id, slot=slot.name))

    def _progress(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        if self._first_step is None:
            self._first_step = (now, event.step)
        self._last_step = (now, event.step)
        eta = self._owner.eta(self, event.step, event.total, now)
        kind = "preview" if event.preview is not None else "progress"
        self._emit(JobEvent(kind, self.id, step=event.step, total=event.total, eta=eta,
                            preview=event.preview))  # fmt: skip

    def _finish(self, kind: str, result: Any = None, error: BaseException | None = None) -> None:
        self.state = {"result": "done", "error": "failed", "cancelled": "cancelled"}[kind]
        event = JobEvent(kind, self.id, result=result, error=error)
        self._outcome = event
        self._owner._forget(self)
        self._emit(event)
        self._done.set()

    def _emit(self, event: JobEvent) -> None:
        if self._on_event is not None and event.kind not in TERMINAL:
            self._on_event(event)  # may raise (e.g. Cancelled): the job ends with it
        self._events.put(event)
        self._owner._tell(self, event)


class JobQueue:
    def __init__(self, pool: SlotPool, limits: Limits) -> None:
        self.pool = pool
        self.limits = limits
        self._runners: dict[type, Runner] = {}
        self._live: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._listeners: list[Callable[[Job, JobEvent], None]] = []
        self._step_seconds: dict[tuple[str, str | None], float] = {}  # (model, slot) -> s/step

    def register(self, spec_type: type, runner: Runner) -> None:
        self._runners[spec_type] = runner

    def registered(self, spec_type: type) -> Runner | None:
        """The runner registered for a spec type (to wrap it), or None."""
        return self._runners.get(spec_type)

    def spec_types(self) -> list[type]:
        """Every spec type that has a runner (ImageJob, VideoJob, ...), to wrap them all."""
        return list(self._runners)

    def runner_for(self, spec: Any) -> Runner:
        runner = self._runners.get(type(spec))
        if runner is None:
            kinds = ", ".join(t.__name__ for t in self._runners)
            raise TypeError(f"no runner for {type(spec).__name__}; known job kinds: {kinds}")
        return runner

    def add_listener(self, listener: Callable[[Job, JobEvent], None]) -> None:
        """`listener(job, event)` for every event of every job (must not block)."""
        self._listeners.append(listener)

    def submit(
        self,
        spec: Any,
        caller: str = "local",
        cancel: CancelToken | None = None,
        on_event: Callable[[JobEvent], None] | None = None,
        task_id: str | None = None,
    ) -> Job:
        """Validate, admit and queue a job. Raises RequestError (bad input) or LimitError
        (refused by admission) before anything is queued; later failures end the job
        with an `error` event. `on_event(event)` is called in the job's own thread as
        each event (but the terminal one) happens: a progress callback there runs while
        the step's state is live (the model locked, the run not yet further).
        `task_id`: the caller's name for the job (default: the spec's own `task_id`,
        if it has one); it must match outputs.STEM_RULE (RequestError "task_id")."""
        from .outputs import check_task_id

        runner = self.runner_for(spec)
        task_id = task_id or getattr(spec, "task_id", None)
        check_task_id(task_id)
        # 1. validate and resolve (may read folders and hash files: outside the lock)
        prepared = runner.prepare(spec)
        # 2. admission
        with self._lock:
            self._admit(prepared, caller)
            job = Job(f"{next(self._ids)}", runner.kind, caller, prepared, cancel or CancelToken(),
                      self, on_event, task_id)  # fmt: skip
            self._live[job.id] = job
        # 3. run in the job's own thread (it waits for a slot there)
        threading.Thread(target=self._run, args=(runner, job), name=f"atelier-job-{job.id}",
                         daemon=True).start()  # fmt: skip
        return job

    def _admit(self, prepared: Prepared, caller: str) -> None:
        lim = self.limits
        if lim.max_work and prepared.work > lim.max_work:
            rule = (f"this request's work is {prepared.work:,} (width x height x steps x "
                    f"images, x frames for video); this server allows {lim.max_work:,} per "
                    "request: lower the size, steps, batch or frames")  # fmt: skip
            raise LimitError("max_work", rule)
        waiting = sum(1 for j in self._live.values() if j.state == "queued")
        if lim.queue_size and waiting >= lim.queue_size:
            rule = (f"the generation queue is full ({waiting} jobs waiting, the limit is "
                    f"{lim.queue_size}); try again in a moment")  # fmt: skip
            raise LimitError("queue_size", rule)
        mine = sum(1 for j in self._live.values() if j.caller == caller)
        if lim.max_jobs_per_user and mine >= lim.max_jobs_per_user:
            rule = (f"you already have {mine} jobs waiting or running; the limit is "
                    f"{lim.max_jobs_per_user} per user")  # fmt: skip
            raise LimitError("max_jobs_per_user", rule)

    def _run(self, runner: Runner, job: Job) -> None:
        try:
            if job.cancelled:
                raise Cancelled("cancelled before it started")
            result = runner.run(job.prepared, JobContext(job))
        except Cancelled as e:
            job._finish("cancelled", error=e)
        except AtelierError as e:
            job._finish("error", error=e)
        except BaseException as e:  # a bug or a library failure: logged, the server goes on
            log.exception("job %s (%s) failed", job.id, job.kind)
            job._finish("error", error=e)
        else:
            self._learn(job)
            job._finish("result", result=result)

    def _forget(self, job: Job) -> None:
        with self._lock:
            self._live.pop(job.id, None)
        self.pool.wake()  # a slot may be free, and the line moved

    def _tell(self, job: Job, event: JobEvent) -> None:
        for listener in self._listeners:
            try:
                listener(job, event)
            except Exception:  # a listener must never break a job
                log.exception("job listener failed on %s", event.kind)

    # -- ETA -------------------------------------------------------------------
    def eta(self, job: Job, step: int, total: int, now: float) -> float | None:
        """Seconds left: this job's own step rate once it has done two steps; before
        that, the last rate measured for its model on its slot (None if none yet)."""
        first = job._first_step
        if first is not None and step > first[1]:
            per_step = (now - first[0]) / (step - first[1])
        else:
            per_step = self._step_seconds.get((job.prepared.model, job.slot))
        return None if per_step is None else max(0.0, per_step * (total - step))

    def _learn(self, job: Job) -> None:
        """Remember the job's step rate (after its first step, which includes loading)."""
        first, last = job._first_step, job._last_step
        if first is not None and last is not None and last[1] > first[1]:
            rate = (last[0] - first[0]) / (last[1] - first[1])
            self._step_seconds[(job.prepared.model, job.slot)] = rate

    # -- observing -------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Waiting jobs and what runs on each slot, for a status line or an API."""
        with self._lock:
            live = list(self._live.values())
        running = {j.slot: j for j in live if j.state == "running"}
        return {
            "waiting": sum(1 for j in live if j.state == "queued"),
            "slots": [
                {
                    "slot": s.name,
                    "busy": s.busy,
                    "job": running[s.name].id if s.name in running else None,
                    "kind": running[s.name].kind if s.name in running else None,
                    "model": running[s.name].prepared.model if s.name in running else None,
                }
                for s in self.pool.slots
            ],  # fmt: skip
        }

    def caller_jobs(self, caller: str) -> list[Job]:
        with self._lock:
            return [j for j in self._live.values() if j.caller == caller]
