"""The A1111-compatible API: `/sdapi/v1/*` (and sd-webui-controlnet's `/controlnet/*` lists)
on the studio's own server, enabled by `--api`.

Differences from A1111, on purpose (README "A1111-compatible API"):
- Every job goes through the engine's admission (queue_size, max_jobs_per_user,
  max_work), like the studio's: a refusal is HTTP 429 (a full queue, too many jobs of
  this caller) or 422 (max_work), naming the limit.
- `interrupt` stops only the caller's own jobs (queued and running), `skip` only the
  caller's running one (Atelier cannot skip one image of a batch: the job stops);
  `progress` reports the caller's own job; `options` are the caller's own.
- The caller is the HTTP Basic user (`--api-auth`, else the studio's `--auth`), else
  the client's address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request  # at run time: FastAPI reads the annotations

from ui.a1111 import responses
from ui.a1111.options import OptionStore
from ui.a1111.payload import EXTRAS_FIELDS, a1111_field, decode_image, extras_job, parse
from ui.rest import ApiError, RestConfig, basic_user, caller_of, read_json, run_job

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import Response

    from ui.context import StudioContext

log = logging.getLogger(__name__)
PREFIX = "/sdapi/v1"


def error_response(status: int, message: str, kind: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    """A1111's error body: {"error", "detail", "body", "errors"}; plus the field at fault."""
    from starlette.responses import JSONResponse

    content = {"error": kind, "detail": message, "body": "", "errors": message}
    if field is not None:
        content["field"] = field
    return JSONResponse(content, status_code=status, headers=headers)


def as_response(error: BaseException) -> Response:
    """An engine or API error as an A1111 error response."""
    from pipelines.errors import AtelierError, LimitError, RequestError

    if isinstance(error, LimitError):
        status = 422 if error.field == "max_work" else 429
        return error_response(status, f"{error.field}: {error.rule}", "LimitError", error.field)
    if isinstance(error, RequestError):
        name = a1111_field(error.field)
        return error_response(422, f"{name}: {error.rule}", "RequestError", name)
    if isinstance(error, ApiError):
        headers = {"WWW-Authenticate": "Basic"} if error.status == 401 else None
        return error_response(error.status, error.message, "HTTPException", error.field, headers)
    if isinstance(error, AtelierError):
        return error_response(500, str(error), type(error).__name__)
    log.exception("A1111 API request failed", exc_info=error)
    return error_response(500, "internal error (see the server log)", type(error).__name__)


class ProgressTracker:
    """The latest step and preview of every live job (a JobQueue listener: called in the
    job's thread, never blocks), for `/sdapi/v1/progress`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[Any, Any]] = {}  # job id -> (last step event, preview)

    def __call__(self, job: Any, event: Any) -> None:
        with self._lock:
            if event.kind in ("result", "error", "cancelled"):
                self._latest.pop(job.id, None)
            elif event.kind in ("progress", "preview"):
                preview = event.preview if event.preview is not None else (
                    self._latest.get(job.id, (None, None))[1])  # fmt: skip
                self._latest[job.id] = (event, preview)

    def of(self, job: Any) -> tuple[Any, Any]:
        with self._lock:
            return self._latest.get(job.id, (None, None))


def current_job(ctx: StudioContext, caller: str) -> Any:
    """The caller's running job, else the first of theirs that waits (None = idle)."""
    jobs = ctx.manager.jobs.caller_jobs(caller)
    running = [j for j in jobs if j.state == "running"]
    waiting = sorted((j for j in jobs if j.state == "queued"), key=lambda j: j.created)
    return (running or waiting or [None])[0]


def add_routes(app: FastAPI, ctx: StudioContext, config: RestConfig) -> None:
    """Add every /sdapi/v1 route (and the ControlNet lists) to the running app."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    from pipelines.errors import Cancelled
    from pipelines.image_job import ImageJob
    from pipelines.outputs import check_task_id

    manager = ctx.manager
    options = OptionStore(manager)
    tracker = ProgressTracker()
    manager.jobs.add_listener(tracker)

    def who(request: Request) -> str:
        user = basic_user(request, config.users)
        return caller_of(request, user, None, config.trusted_proxies)

    def route(path: str, method: str = "GET") -> Callable[[Callable[..., Awaitable[Any]]], Any]:
        """Register `fn(request, caller)`; its value is the JSON body, errors A1111's."""

        def register(fn: Callable[..., Awaitable[Any]]) -> Any:
            async def endpoint(request: Request) -> Response:
                try:
                    caller = who(request)
                    body = await fn(request, caller)
                except Exception as e:  # every failure answers in A1111's shape
                    return as_response(e)
                return body if hasattr(body, "status_code") else JSONResponse(body)

            endpoint.__name__ = f"a1111_{fn.__name__}"
            app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
            return fn

        return register

    async def generate(request: Request, caller: str, img2img: bool) -> Any:
        body = await read_json(request, config.max_body)
        payload = await run_in_threadpool(parse, body, img2img, manager, options.get(caller))
        check_task_id(payload.task_id)  # RequestError "task_id" -> force_task_id
        spec = ImageJob(payload.request, payload.inputs, save_to=ctx.store.outputs_dir)
        started = time.time()
        try:
            result = await run_job(ctx, spec, caller, request, payload.task_id)
        except Cancelled:
            return responses.interrupted(payload.echo)
        return await run_in_threadpool(responses.generated, result, payload, started)

    @route(f"{PREFIX}/txt2img", "POST")
    async def txt2img(request: Request, caller: str) -> Any:
        return await generate(request, caller, img2img=False)

    @route(f"{PREFIX}/img2img", "POST")
    async def img2img(request: Request, caller: str) -> Any:
        return await generate(request, caller, img2img=True)

    @route(f"{PREFIX}/extra-single-image", "POST")
    async def extra_single_image(request: Request, caller: str) -> Any:
        from pipelines.errors import RequestError

        body = await read_json(request, config.max_body)
        spec, crop = await run_in_threadpool(extras_job, body, manager.settings.max_image_pixels)
        try:  # an UpscaleJob's own field names, as the extras request names them
            result = await run_job(ctx, spec, caller, request)
        except RequestError as e:
            raise RequestError(EXTRAS_FIELDS.get(e.field, e.field), e.rule) from None
        return await run_in_threadpool(responses.extras, result, crop)

    @route(f"{PREFIX}/progress")
    async def progress(request: Request, caller: str) -> Any:
        skip = request.query_params.get("skip_current_image", "false").lower() == "true"
        job = current_job(ctx, caller)
        event, preview = tracker.of(job) if job is not None else (None, None)
        return await run_in_threadpool(responses.progress, job, event, preview, skip)

    @route(f"{PREFIX}/interrupt", "POST")
    async def interrupt(request: Request, caller: str) -> Any:
        for job in manager.jobs.caller_jobs(caller):
            job.cancel()
        return {}

    @route(f"{PREFIX}/skip", "POST")
    async def skip(request: Request, caller: str) -> Any:
        for job in manager.jobs.caller_jobs(caller):
            if job.state == "running":
                job.cancel()
        return {}

    @route(f"{PREFIX}/options")
    async def get_options(request: Request, caller: str) -> Any:
        return options.all(caller)

    @route(f"{PREFIX}/options", "POST")
    async def set_options(request: Request, caller: str) -> Any:
        values = await read_json(request, config.max_body)
        await run_in_threadpool(options.set, caller, values)
        return None

    # Listings read from the engine's libraries (in a worker thread: they scan folders).
    for name, read in (("sd-models", responses.sd_models), ("samplers", responses.samplers),
                       ("loras", responses.loras), ("sd-vae", responses.vaes),
                       ("embeddings", responses.embeddings), ("upscalers", responses.upscalers),
                       ("prompt-styles", responses.prompt_styles)):  # fmt: skip

        async def listing(request: Request, caller: str, read: Any = read) -> Any:
            return await run_in_threadpool(read, manager)

        listing.__name__ = name.replace("-", "_")
        route(f"{PREFIX}/{name}")(listing)

    @route(f"{PREFIX}/schedulers")
    async def schedulers(request: Request, caller: str) -> Any:
        return responses.schedulers()

    @route(f"{PREFIX}/latent-upscale-modes")
    async def latent_modes(request: Request, caller: str) -> Any:
        return responses.latent_upscale_modes()

    @route(f"{PREFIX}/scripts")
    async def scripts(request: Request, caller: str) -> Any:
        return {"txt2img": [], "img2img": []}

    for name, rescan in (("refresh-checkpoints", None), ("refresh-loras", manager.loras.rescan),
                         ("refresh-vae", manager.vaes.rescan),
                         ("refresh-embeddings", manager.embeddings.rescan)):  # fmt: skip

        async def refresh(request: Request, caller: str, rescan: Any = rescan) -> Any:
            if rescan is not None:  # the model folders are rescanned at every listing
                await run_in_threadpool(rescan)
            return {}

        refresh.__name__ = name.replace("-", "_")
        route(f"{PREFIX}/{name}", "POST")(refresh)

    @route(f"{PREFIX}/png-info", "POST")
    async def png_info(request: Request, caller: str) -> Any:
        body = await read_json(request, config.max_body)
        image = body.get("image") if isinstance(body, dict) else None
        return await run_in_threadpool(read_png_info, image, manager.settings.max_image_pixels)

    @route("/controlnet/model_list")
    async def cn_models(request: Request, caller: str) -> Any:
        return {"model_list": await run_in_threadpool(responses.controlnet_models, manager)}

    @route("/controlnet/module_list")
    async def cn_modules(request: Request, caller: str) -> Any:
        return {"module_list": responses.controlnet_modules()}

    @route("/controlnet/version")
    async def cn_version(request: Request, caller: str) -> Any:
        return {"version": 2}


def read_png_info(value: Any, max_pixels: int) -> dict[str, Any]:
    """A1111's png-info: the infotext, the image's other texts, and the parsed fields."""
    from pipelines.outputs import read_image_texts
    from pipelines.pnginfo import parameters_from_texts

    image = decode_image("image", value, max_pixels)
    texts = read_image_texts(image)
    found = parameters_from_texts(texts)
    if found is None:
        return {"info": "", "items": texts, "parameters": {}}
    params: dict[str, Any] = {"Prompt": found.prompt, "Negative prompt": found.negative_prompt,
                              **found.params}  # fmt: skip
    size = found.fields()
    if size["width"] is not None:
        params.update({"Size-1": str(size["width"]), "Size-2": str(size["height"])})
    items = {k: v for k, v in texts.items() if k != "parameters"}
    return {"info": found.infotext, "items": items, "parameters": params}
