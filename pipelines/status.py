"""Task status in Redis: every job's state as a hash, every change on a channel.

    reporter = RedisReporter("redis://127.0.0.1:6379/0", ttl_s=86400)
    manager.jobs.add_listener(reporter)        # every job of every front end
    ...
    reporter.close()

Per task, a hash `<prefix>:task:<name>` with `status` (queued | running | done |
failed | cancelled), `progress` (0..1), `step`/`total`, `eta`, `model`, `kind`,
`caller`, `job_id`, `created`/`started`/`finished` (Unix seconds), `outputs` (a
JSON list of paths or URLs), and on failure `error` (the message) plus
`error_field`/`error_rule` for a RequestError. Each change is published as JSON
(the same fields, `outputs` as a list, plus `task` and `event`) on
`<prefix>:events:<name>` and on `<prefix>:events`. Every write renews the key's TTL.

Task names (`task_name`): the task id a caller gave, namespaced `<caller>:<id>`
for every caller but "local" (the CLI, `--jobs`), so a remote caller can neither
collide with nor overwrite another caller's task (ids match outputs.STEM_RULE, which
has no ':', so local and remote names never meet). Without a task id: a name made
of this reporter's random instance id and the job id, unique across processes
(job ids restart at 1 in every process); `reporter.task_name(job)` returns it to
the caller.

Why a writer thread: JobQueue listeners run in the job's thread and must not
block, and Redis may be slow or gone. The listener only updates the task's latest
state in memory; one writer thread sends it. Progress is coalesced: the writer
sends each task's latest state, so the backlog holds at most one entry per task
(and at most `max_pending` tasks). When Redis is unreachable the jobs run on and
their outputs are kept; a warning is logged once per outage; the latest state of
every task is kept and written when Redis answers again (intermediate progress of
the outage is not published, the final state is). Threads: `_cond` guards
`_tasks` and `_pending`; no Redis call is made while holding it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

from .errors import RequestError

log = logging.getLogger(__name__)
__all__ = ["RedisReporter", "task_key", "outputs_of"]

STATUS_OF_EVENT = {"queued": "queued", "download": "queued", "started": "running",
                   "progress": "running", "preview": "running", "result": "done",
                   "error": "failed", "cancelled": "cancelled"}  # fmt: skip
TERMINAL = ("done", "failed", "cancelled")


def task_key(task_id: str, caller: str = "local") -> str:
    """The name of a caller-given task: the id itself for local callers (CLI, --jobs),
    `<caller>:<id>` for everyone else, so remote callers cannot collide."""
    return task_id if caller == "local" else f"{caller}:{task_id}"


def outputs_of(result: Any) -> list[str]:
    """What a result left behind: its object URLs when uploaded, else its saved paths."""
    urls = getattr(result, "urls", None)
    if urls:
        return [str(u) for u in urls]
    return [str(p) for p in getattr(result, "paths", None) or []]


def error_fields(error: BaseException | None) -> dict[str, str]:
    """`error` (the message), plus `error_field`/`error_rule` when the request was at fault."""
    if error is None:
        return {"error": "failed"}
    fields = {"error": str(error) or type(error).__name__}
    if isinstance(error, RequestError):
        fields.update(error_field=error.field, error_rule=error.rule)
    return fields


class RedisReporter:
    """A JobQueue listener that mirrors every job's state into Redis (see module doc)."""

    def __init__(
        self,
        url: str,
        ttl_s: int = 86400,
        prefix: str = "atelier",
        max_pending: int = 10_000,
        retry_s: tuple[float, float] = (0.25, 5.0),
        client: Any = None,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.ttl_s = int(ttl_s)
        self.prefix = prefix
        self.instance = uuid.uuid4().hex[:12]
        self.max_pending = max_pending
        self._retry = retry_s  # first and longest wait between attempts while Redis is away
        self._errors = (redis.RedisError, OSError)
        self._redis = client or redis.Redis.from_url(
            url,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 0),  # one attempt per write: the writer backs off itself
        )
        self._cond = threading.Condition()
        self._tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()  # name -> latest fields
        self._pending: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._busy = False  # a batch is being written
        self._closed = False
        self._kick = False  # flush() asks for an attempt now, not after the backoff
        self.down = False  # the last write failed (a warning was logged for this outage)
        self.dropped = 0  # task states dropped because the backlog was full
        self._thread = threading.Thread(target=self._write_loop, name="atelier-redis", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> RedisReporter | None:
        """The reporter the settings ask for (`redis_url`, `redis_ttl_s`), or None when
        redis_url is empty. A URL redis-py cannot read is a RequestError naming
        `redis_url`; an unreachable server is not an error (jobs go on; one warning)."""
        url = str(values.get("redis_url") or "").strip()
        if not url:
            return None
        try:
            return cls(url, int(values.get("redis_ttl_s", 86400)))
        except ValueError as e:
            raise RequestError("redis_url", f"{e} (e.g. redis://127.0.0.1:6379/0)") from None

    # -- names -----------------------------------------------------------------
    def task_name(self, job: Any) -> str:
        """The task name of `job`: its caller's task id (see task_key) if the job
        carries one (`job.task_id`), else `<instance>-<job id>`."""
        task_id = getattr(job, "task_id", None)
        if task_id:
            return task_key(task_id, job.caller)
        return f"{self.instance}-{job.id}"

    def key(self, name: str) -> str:
        return f"{self.prefix}:task:{name}"

    def channel(self, name: str | None = None) -> str:
        """The channel of one task, or the global one (name None)."""
        return f"{self.prefix}:events" if name is None else f"{self.prefix}:events:{name}"

    # -- the listener (runs in the job's thread: only memory work) --------------
    def __call__(self, job: Any, event: Any) -> None:
        name = self.task_name(job)
        now = time.time()
        with self._cond:
            fields = self._tasks.get(name)
            if fields is None or fields.get("job_id") != job.id:
                fields = {"task_id": name, "job_id": job.id, "kind": job.kind,
                          "caller": job.caller, "model": job.prepared.model,
                          "created": job.created, "progress": 0.0}  # fmt: skip
            fields = dict(fields)  # a snapshot per change: the writer may hold the last one
            fields["status"] = STATUS_OF_EVENT.get(event.kind, fields.get("status", "queued"))
            kind = event.kind
            if kind == "queued":
                fields["position"] = event.position
            elif kind == "download":
                fields.update(download_done=event.step, download_total=event.total)
            elif kind == "started":
                fields.update(started=job.started_at or now, slot=event.slot, position=None)
            elif kind in ("progress", "preview"):
                kind = "progress"  # the image itself is not stored
                fields.update(step=event.step, total=event.total, eta=event.eta)
                if event.total:
                    fields["progress"] = round(min(1.0, event.step / event.total), 4)
            elif kind == "result":
                fields.update(progress=1.0, finished=now, eta=0.0,
                              outputs=outputs_of(event.result))  # fmt: skip
                if fields.get("total"):
                    fields["step"] = fields["total"]
            elif kind in ("error", "cancelled"):
                fields["finished"] = now
                if kind == "error":
                    fields.update(error_fields(event.error))
                elif event.error is not None:
                    fields["error"] = str(event.error)
            self._put(name, kind, fields)

    # -- for front ends ----------------------------------------------------------
    def refused(
        self, task_id: str | None, error: BaseException, caller: str = "local",
        kind: str = "image", model: str | None = None,
    ) -> str:  # fmt: skip
        """Record a request that `submit` refused before queueing (RequestError,
        LimitError) as a failed task naming the field; returns the task name."""
        name = task_key(task_id, caller) if task_id else f"{self.instance}-r{uuid.uuid4().hex[:8]}"
        now = time.time()
        fields = {"task_id": name, "job_id": None, "kind": kind, "caller": caller,
                  "model": model, "created": now, "finished": now, "status": "failed",
                  "progress": 0.0, **error_fields(error)}  # fmt: skip
        with self._cond:
            self._put(name, "error", fields)
        return name

    def set_outputs(self, name: str, outputs: list[str]) -> None:
        """Replace a task's outputs (files a front end saved or uploaded after the job's
        result, e.g. a video and its JSON)."""
        with self._cond:
            fields = dict(self._tasks.get(name) or {"task_id": name, "status": "done"})
            fields["outputs"] = [str(o) for o in outputs]
            self._put(name, "outputs", fields)

    def fail(self, name: str, error: BaseException) -> None:
        """Mark a finished task failed (e.g. its upload failed after the job's result)."""
        with self._cond:
            fields = dict(self._tasks.get(name) or {"task_id": name})
            fields.update(status="failed", finished=time.time(), **error_fields(error))
            self._put(name, "error", fields)

    def state(self, name: str) -> dict[str, Any] | None:
        """The latest state of a task as this process knows it (written or not)."""
        with self._cond:
            fields = self._tasks.get(name)
            return None if fields is None else dict(fields)

    def latest(self, caller: str) -> str | None:
        """The name of `caller`'s newest task this process knows (by creation time), so
        a caller who gave no task id can still find the one the server named."""
        with self._cond:
            mine = [(f.get("created") or 0.0, n) for n, f in self._tasks.items()
                    if f.get("caller") == caller]  # fmt: skip
        return max(mine)[1] if mine else None

    def flush(self, timeout: float = 10.0) -> bool:
        """Try to write everything now; True once nothing waits, False on timeout
        (Redis away). Does not wait out the retry backoff: it asks for an attempt."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._kick = bool(self._pending or self._busy)
            self._cond.notify_all()
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True

    def close(self, timeout: float = 5.0) -> bool:
        """Flush (up to `timeout`) and stop the writer; True if everything was written."""
        written = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return written

    # -- the writer --------------------------------------------------------------
    def _put(self, name: str, event: str, fields: dict[str, Any]) -> None:
        """Keep `fields` as the task's latest state and queue it (caller holds _cond)."""
        self._tasks[name] = fields
        self._tasks.move_to_end(name)
        while len(self._tasks) > self.max_pending:
            self._tasks.popitem(last=False)
        if name not in self._pending and len(self._pending) >= self.max_pending:
            self._pending.popitem(last=False)  # a long outage: the oldest task is lost
            self.dropped += 1
        self._pending[name] = (event, fields)
        self._cond.notify_all()

    def _write_loop(self) -> None:
        wait = self._retry[0]
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = list(self._pending.items())
                self._pending.clear()
                self._busy = True
            try:
                self._write(batch)
            except self._errors as e:
                with self._cond:
                    for name, item in batch:  # newer states that came meanwhile win
                        if name not in self._pending:
                            self._pending[name] = item
                    self._busy = False
                    if not self.down:
                        log.warning("Redis at %s is unreachable (%s): jobs go on; task status "
                                    "is kept and written when it answers again",
                                    self.url, e)  # fmt: skip
                    self.down = True
                    self._cond.notify_all()
                    until = time.monotonic() + wait  # listeners' notifies do not cut it short
                    while not (self._closed or self._kick) and time.monotonic() < until:
                        self._cond.wait(until - time.monotonic())
                    self._kick = False
                    if self._closed:
                        return
                wait = min(wait * 2, self._retry[1])
            else:
                with self._cond:
                    self._busy = False
                    if self.down:
                        log.info("Redis at %s answers again: task status written", self.url)
                    self.down = False
                    self._cond.notify_all()
                wait = self._retry[0]

    def _write(self, batch: list[tuple[str, tuple[str, dict[str, Any]]]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for name, (event, fields) in batch:
            key = self.key(name)
            stored = {k: json.dumps(v) if isinstance(v, list) else str(v)
                      for k, v in fields.items() if v is not None}  # fmt: skip
            gone = [k for k, v in fields.items() if v is None]
            if gone:
                pipe.hdel(key, *gone)
            pipe.hset(key, mapping=stored)
            if self.ttl_s > 0:
                pipe.expire(key, self.ttl_s)
            message = json.dumps({"task": name, "event": event, **fields})
            pipe.publish(self.channel(name), message)
            pipe.publish(self.channel(), message)
        pipe.execute()
