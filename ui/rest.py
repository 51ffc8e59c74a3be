"""REST routes on the studio's own server: the A1111 `/sdapi/v1` and OpenAI Images APIs.

    launch(demo, launch_kwargs, server_values)   # app.py's cmd_serve

Why the routes are added after `launch()`: Gradio 6 builds a new FastAPI app in
`launch()` (routes added to `demo.app` before it are lost), and `gr.mount_gradio_app`
onto an app of ours would lose `--share`. So, as A1111 itself does, the studio is
launched without blocking, the routes are added to the running app (Starlette reads
its route list per request), and then the main thread blocks. Middleware cannot be
added to a started app: the body limit and the error shapes are done per route.

What both APIs share lives here: who the caller is (HTTP Basic users, Bearer keys,
else the client's address, as the studio names callers, so one person's jobs count
once against `max_jobs_per_user` whichever front end they use), reading a body with a
size limit, and running one engine job (the engine's admission, one path for every
front end) while noticing that the client went away (the job is then cancelled).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import math
import secrets
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from pipelines.jobs import Job
    from ui.context import StudioContext

log = logging.getLogger(__name__)
MB = 2**20


class ApiError(Exception):
    """A refusal with an HTTP status; each API renders it in its own JSON shape.
    `field` names the request field at fault (or the limit), when there is one."""

    def __init__(self, status: int, message: str, field: str | None = None,
                 kind: str = "invalid_request_error") -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.kind = kind


@dataclass
class RestConfig:
    """What the routes need from the server settings (see ui/settings.py)."""

    users: dict[str, str] | None = None  # HTTP Basic user -> password (None = no login)
    api_keys: frozenset[str] = frozenset()  # Bearer keys of the OpenAI routes (empty = none)
    max_body: int = 67 * MB  # bytes of one request body
    url_ttl_s: int = 3600  # lifetime of the image URLs the studio serves
    trusted_proxies: frozenset[str] = frozenset()


def parse_api_keys(value: str) -> frozenset[str]:
    """`key1,key2`, or a file with one key a line (# comments); empty = no keys."""
    if not value or not value.strip():
        return frozenset()
    path = Path(value).expanduser()
    items = path.read_text().splitlines() if path.is_file() else value.split(",")
    keys = frozenset(i.strip() for i in items if i.strip() and not i.strip().startswith("#"))
    if not keys:
        raise ValueError(f"api keys file {path} has no keys")
    return keys


def rest_config(server: Mapping[str, Any]) -> RestConfig:
    """RestConfig from resolved SERVER_SETTINGS. A1111 routes: `api_auth` users, else the
    studio's `auth` users, else open. Body limit: base64 makes a file a third bigger, so
    4/3 of `max_upload_mb` plus 1 MB for the rest of the JSON."""
    from ui.settings import parse_auth, trusted_proxies

    pairs = parse_auth(server.get("api_auth") or "") or parse_auth(server.get("auth") or "")
    upload = int(server.get("max_upload_mb") or 50)
    return RestConfig(
        users=dict(pairs) if pairs else None,
        api_keys=parse_api_keys(str(server.get("api_keys") or "")),
        max_body=math.ceil(upload * MB * 4 / 3) + MB,
        url_ttl_s=int(server.get("api_url_ttl_s") or 3600),
        trusted_proxies=trusted_proxies(server) if "trusted_proxies" in server else frozenset(),
    )


# -- the caller -------------------------------------------------------------------
def _equal(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


def basic_user(request: Request, users: dict[str, str] | None) -> str | None:
    """The HTTP Basic user of `request` (None when no login is required); 401 if wrong."""
    import base64

    if users is None:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user, sep, password = base64.b64decode(token).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if sep and user in users and _equal(password, users[user]):
            return user
    raise ApiError(401, "Incorrect username or password", kind="authentication_error")


def bearer_key(request: Request, keys: frozenset[str]) -> str | None:
    """The Bearer key of `request` (None when no keys are set); 401 if missing or wrong."""
    if not keys:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and any(_equal(token, k) for k in keys):
        return token
    message = ("Incorrect API key provided." if scheme.lower() == "bearer"
               else "You didn't provide an API key (Authorization: Bearer KEY).")  # fmt: skip
    raise ApiError(401, message, kind="invalid_request_error", field=None)


def caller_of(request: Request, user: str | None = None, key: str | None = None,
              proxies: frozenset[str] = frozenset()) -> str:  # fmt: skip
    """The engine's caller: `user:<name>` (the studio's login names callers the same way),
    `key:<hash of the key>`, else `addr:<client address>`."""
    from ui.context import client_address

    if user:
        return f"user:{user}"
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]
    peer = request.client.host if request.client else "unknown"
    return "addr:" + client_address(peer, request.headers.get("x-forwarded-for", ""), proxies)


# -- bodies -----------------------------------------------------------------------
async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) once it passes `limit` bytes, before it is all read."""
    too_big = ApiError(413, f"the request body is over this server's limit of {limit:,} bytes "
                       "(the max_upload_mb setting, plus a third for base64)",
                       field="body")  # fmt: skip
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    import json

    body = await read_body(request, limit)
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(422, f"the body is not valid JSON ({e})", field="body") from None


async def read_form(request: Request, limit: int) -> Any:
    """A multipart form, read only after the body passed the size limit."""
    from starlette.requests import Request as StarletteRequest

    body = await read_body(request, limit)
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await StarletteRequest(request.scope, replay).form(max_part_size=limit)
    except Exception as e:  # python-multipart's parse errors have no common base
        raise ApiError(400, f"the body is not a valid multipart form ({e})", "body") from None


# -- running a job ----------------------------------------------------------------
def submit(ctx: StudioContext, spec: Any, caller: str, task_id: str | None) -> Job:
    """manager.submit, passing `task_id` when the engine takes one (the Redis/S3 wiring
    names tasks by it, namespaced per caller)."""
    manager = ctx.manager
    if task_id is not None and "task_id" in inspect.signature(manager.submit).parameters:
        return manager.submit(spec, caller, task_id=task_id)
    return manager.submit(spec, caller)


async def run_job(ctx: StudioContext, spec: Any, caller: str, request: Request,
                  task_id: str | None = None) -> Any:  # fmt: skip
    """Submit `spec` for `caller` and wait for its result without holding the event loop
    or a worker thread. RequestError/LimitError come from `submit` (nothing queued); a
    job error is raised as it is; a client that disconnects cancels its job."""
    from starlette.concurrency import run_in_threadpool

    waiter = _waiter(ctx.manager)
    job = await run_in_threadpool(submit, ctx, spec, caller, task_id)
    try:
        await waiter.wait(job, request)
        return await run_in_threadpool(job.result, 30)  # ended: returns at once
    except asyncio.CancelledError:  # the server is shutting down or the task was dropped
        job.cancel()
        raise


class JobWaiter:
    """Wakes a waiting request's event loop when its job ends (a JobQueue listener, called
    in the job's thread), so a request that waits for a device holds no worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}

    def __call__(self, job: Job, event: Any) -> None:
        if event.kind not in ("result", "error", "cancelled"):
            return
        with self._lock:
            found = self._waiting.pop(job.id, None)
        if found is not None:
            loop, future = found
            loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, job: Job, request: Request, every: float = 1.0) -> None:
        """Until `job` ends; every `every` s, cancel it if the client went away."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiting[job.id] = (loop, future)
        try:
            while not job.done and not future.done():
                try:
                    await asyncio.wait_for(asyncio.shield(future), every)
                except asyncio.TimeoutError:
                    if not job.done and await request.is_disconnected():
                        log.info("REST client gone: cancelling job %s of %s", job.id, job.caller)
                        job.cancel()
        finally:
            with self._lock:
                self._waiting.pop(job.id, None)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_waiters: weakref.WeakKeyDictionary[Any, JobWaiter] = weakref.WeakKeyDictionary()
_waiters_lock = threading.Lock()


def _waiter(manager: Any) -> JobWaiter:
    """The one JobWaiter listening to `manager`'s jobs (added on first use)."""
    with _waiters_lock:
        if manager not in _waiters:
            _waiters[manager] = JobWaiter()
            manager.jobs.add_listener(_waiters[manager])
        return _waiters[manager]


# -- URLs of images the studio serves ---------------------------------------------
class ImageLinks:
    """Time-limited links to files in the studio's scratch folder: an unguessable token
    per file, forgotten after `ttl_s` (the file itself goes with the scratch folder)."""

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._files: dict[str, tuple[Path, float]] = {}

    def add(self, path: Path, now: float) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._files = {t: v for t, v in self._files.items() if v[1] > now}
            self._files[token] = (path, now + self.ttl_s)
        return token

    def get(self, token: str, now: float) -> Path | None:
        with self._lock:
            found = self._files.get(token)
        if found is None or found[1] <= now or not found[0].is_file():
            return None
        return found[0]


# -- mounting ----------------------------------------------------------------------
def mount(app: FastAPI, ctx: StudioContext, config: RestConfig) -> None:
    """Add both APIs' routes to the studio's running FastAPI app."""
    from ui.a1111.routes import add_routes as add_a1111
    from ui.openai_api import add_routes as add_openai

    add_a1111(app, ctx, config)
    add_openai(app, ctx, config)


def launch(demo: Any, launch_kwargs: dict[str, Any], server: Mapping[str, Any]) -> None:
    """`demo.launch(**launch_kwargs)`, with the REST APIs when the `api` setting is on."""
    if not server.get("api"):
        demo.launch(**launch_kwargs)
        return
    config = rest_config(server)
    if config.users is None and not config.api_keys and server.get("public_resolved"):
        log.warning("--api on a public studio without --api-auth, --auth or --api-keys: "
                    "anyone who reaches it may generate through the REST APIs")  # fmt: skip
    demo.launch(**{**launch_kwargs, "prevent_thread_lock": True})
    mount(demo.app, demo.atelier_context, config)
    log.info("REST APIs ready: %ssdapi/v1 (A1111) and %sv1/images (OpenAI)", demo.local_url,
             demo.local_url)  # fmt: skip
    demo.block_thread()
