"""The OpenAI-compatible Images API on the studio's server (with `--api`):
`POST /v1/images/generations`, `POST /v1/images/edits` (multipart), `GET /v1/models`.

For scripts and chat front ends written for OpenAI's image API. Authentication:
Bearer keys from `--api-keys` (a comma list, a file, or env ATELIER_API_KEYS); with
no keys, the `--api-auth`/`--auth` logins over HTTP Basic; with neither, open.

- `model`: an Atelier image model; OpenAI's own names (dall-e-2, dall-e-3,
  gpt-image-*) and none mean the server's default model.
- `size`: "WxH" (the model family's rules apply) or "auto" = the family's default.
- `response_format`: `b64_json` (a PNG with its infotext), or `url` (OpenAI's
  default for dall-e-*): the S3 object's URL when outputs go to S3 (presigned when
  `s3_presign_seconds` is set), else a link on this studio that expires after
  `api_url_ttl_s` seconds (unguessable, needs no key, like a presigned URL).
- Extra fields Atelier adds (the openai client's `extra_body`): `seed`,
  `negative_prompt`, `steps`, `cfg_scale`, `scheduler`, and for edits `strength`.
- `quality`, `style`, `user`, `moderation`, `output_compression` are accepted and have
  no effect; asking for what Atelier does not do (a transparent background, jpeg or
  webp output, streaming) is a 400 naming the parameter.
- Edits: OpenAI's mask is a PNG whose fully transparent pixels mark the area to
  edit; Atelier's inpainting mask is white where it repaints: converted here. No mask:
  the image's own transparent pixels, if any, else the whole image is redrawn
  (image to image at `strength`, default 0.75; masked edits default to 1.0).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from PIL import Image
from starlette.requests import Request  # at run time: FastAPI reads the annotations

from pipelines.errors import RequestError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.responses import Response

    from ui.context import StudioContext
    from ui.rest import RestConfig

log = logging.getLogger(__name__)
OPENAI_MODELS = ("dall-e-", "gpt-image-", "chatgpt-image")
NO_EFFECT = ("quality", "style", "user", "moderation", "output_compression",
             "safety_identifier", "complexity")  # fmt: skip
EXTRAS = ("seed", "negative_prompt", "steps", "cfg_scale", "scheduler", "strength")
# value sets that ask for nothing Atelier lacks
NEUTRAL = {"background": (None, "", "auto", "opaque"), "output_format": (None, "", "png"),
           "stream": (None, False, "false"), "partial_images": (None, 0, "0")}  # fmt: skip
PARAM_OF = {"batch_size": "n", "width": "size", "height": "size", "num_inference_steps": "steps",
            "guidance_scale": "cfg_scale", "init_image": "image", "mask_image": "mask",
            "request": "prompt"}  # fmt: skip


def openai_error(
    status: int,
    message: str,
    param: str | None = None,
    kind: str = "invalid_request_error",
    code: str | None = None,
) -> Response:
    from starlette.responses import JSONResponse

    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def as_response(error: BaseException) -> Response:
    from pipelines.errors import AtelierError, Cancelled, LimitError
    from ui.rest import ApiError

    if isinstance(error, LimitError):
        if error.field == "max_work":
            return openai_error(400, str(error), "size")
        return openai_error(429, str(error), None, "rate_limit_error", "rate_limit_exceeded")
    if isinstance(error, RequestError):
        param = PARAM_OF.get(error.field, error.field)
        return openai_error(400, f"{param}: {error.rule}", param)
    if isinstance(error, ApiError):
        code = "invalid_api_key" if error.status == 401 else None
        return openai_error(error.status, error.message, error.field, error.kind, code)
    if isinstance(error, Cancelled):
        return openai_error(500, "the job was cancelled", None, "server_error")
    if isinstance(error, AtelierError):
        return openai_error(500, str(error), None, "server_error")
    log.exception("OpenAI API request failed", exc_info=error)
    return openai_error(500, "internal error (see the server log)", None, "server_error")


def parse_size(value: Any) -> tuple[int | None, int | None]:
    if value in (None, "", "auto"):
        return None, None
    try:
        w, h = (int(v) for v in str(value).lower().split("x"))
    except ValueError:
        raise RequestError("size", f"must be WIDTHxHEIGHT (e.g. 512x512) or auto, got "
                           f"{value!r}") from None  # fmt: skip
    return w, h


def number(name: str, value: Any, kind: type) -> Any:
    """A form field (text) or JSON value as int/float; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise RequestError(name, f"must be a number, got {value!r}")
    try:
        return kind(value) if not isinstance(value, kind) else value
    except (TypeError, ValueError):
        raise RequestError(name, f"must be a number, got {value!r}") from None


def check_params(body: dict[str, Any], known: tuple[str, ...]) -> None:
    for key, value in body.items():
        if key in NEUTRAL:
            if value not in NEUTRAL[key]:
                raise RequestError(key, f"{value!r} is not available here")
        elif key not in known and key not in NO_EFFECT and key not in EXTRAS:
            raise RequestError(key, "is not a parameter of this endpoint")


def build_request(body: dict[str, Any], manager: Any, **fields: Any) -> Any:
    """A GenerationRequest from the OpenAI parameters and Atelier's extras."""
    from pipelines.request import GenerationRequest

    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("prompt", "is required")
    model = body.get("model") or None
    if model is None or str(model).startswith(OPENAI_MODELS):
        model = manager.settings.default_model
    width, height = parse_size(body.get("size"))
    return GenerationRequest(
        prompt=prompt, negative_prompt=body.get("negative_prompt") or "", model=model,
        scheduler=body.get("scheduler") or None,
        num_inference_steps=number("steps", body.get("steps"), int),
        guidance_scale=number("cfg_scale", body.get("cfg_scale"), float),
        width=fields.pop("width", width), height=fields.pop("height", height),
        seed=number("seed", body.get("seed"), int) if body.get("seed") not in (None, "") else -1,
        batch_size=number("n", body.get("n"), int) or 1, **fields,
    )  # fmt: skip


def edit_inputs(image: Image.Image, mask: Image.Image | None) -> tuple[Any, bool]:
    """Inputs for an edit, and whether it inpaints: OpenAI's mask (transparent = edit)
    as Atelier's (white = repaint); no mask: the image's own transparent pixels."""
    from pipelines.tasks import Inputs

    alpha = None
    if mask is not None:
        if "A" not in mask.getbands() and mask.mode != "P":
            raise RequestError("mask", "must be a PNG with an alpha channel (fully "
                               "transparent pixels mark the area to edit)")  # fmt: skip
        alpha = mask.convert("RGBA").getchannel("A")
        if alpha.size != image.size:
            w, h = image.size
            raise RequestError("mask", f"must be the image's size ({w}x{h}), got "
                               f"{alpha.size[0]}x{alpha.size[1]}")  # fmt: skip
    elif "A" in image.getbands() or image.mode == "P":
        alpha = image.convert("RGBA").getchannel("A")
        if alpha.getextrema()[0] > 0:
            alpha = None  # nothing transparent: the whole image is redrawn
    if alpha is None:
        return Inputs(init_image=image.convert("RGB")), False
    repaint = alpha.point(lambda a: 255 if a == 0 else 0)
    if repaint.getbbox() is None:
        raise RequestError("mask", "has no fully transparent pixel: nothing to edit")
    return Inputs(init_image=image.convert("RGB"), mask_image=repaint), True


def add_routes(app: FastAPI, ctx: StudioContext, config: RestConfig) -> None:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import FileResponse, JSONResponse

    from pipelines.image_job import ImageJob
    from pipelines.images import open_image
    from ui.a1111.responses import png_base64
    from ui.rest import ImageLinks, basic_user, bearer_key, caller_of, read_form, read_json, run_job

    manager = ctx.manager
    links = ImageLinks(config.url_ttl_s)
    pixels = manager.settings.max_image_pixels

    def who(request: Request) -> str:
        if config.api_keys:
            return caller_of(request, None, bearer_key(request, config.api_keys),
                             config.trusted_proxies)  # fmt: skip
        return caller_of(request, basic_user(request, config.users), None, config.trusted_proxies)

    def answer(result: Any, request: Request, fmt: str) -> dict[str, Any]:
        if fmt == "b64_json":
            data = [{"b64_json": png_base64(im, text)}
                    for im, text in zip(result.images, result.infotexts, strict=True)]  # fmt: skip
        else:
            urls = list(getattr(result, "urls", None) or [])
            if len(urls) != len(result.images):
                base = str(request.base_url).rstrip("/")
                now = time.time()
                urls = [f"{base}/v1/images/files/{links.add(p, now)}.png"
                        for p in ctx.store.publish(result)]  # fmt: skip
            data = [{"url": u} for u in urls]
        req = result.request
        return {"created": int(time.time()), "data": data, "output_format": "png",
                "size": f"{req.width}x{req.height}", "seeds": list(result.seeds)}  # fmt: skip

    def response_format(body: dict[str, Any]) -> str:
        fmt = body.get("response_format") or (
            "b64_json" if str(body.get("model") or "").startswith("gpt-image") else "url"
        )
        if fmt not in ("url", "b64_json"):
            raise RequestError("response_format", f"must be url or b64_json, got {fmt!r}")
        return fmt

    async def run(request: Request, caller: str, body: dict[str, Any], spec: Any) -> Response:
        fmt = response_format(body)
        result = await run_job(ctx, spec, caller, request)
        return JSONResponse(await run_in_threadpool(answer, result, request, fmt))

    async def generations(request: Request) -> Response:
        try:
            caller = who(request)
            body = await read_json(request, config.max_body)
            if not isinstance(body, dict):
                raise RequestError("request", "must be a JSON object")
            check_params(body, ("prompt", "model", "n", "size", "response_format"))
            req = build_request(body, manager)
            return await run(request, caller, body,
                             ImageJob(req, save_to=ctx.store.outputs_dir))  # fmt: skip
        except Exception as e:  # every failure answers in OpenAI's shape
            return as_response(e)

    async def edits(request: Request) -> Response:
        try:
            caller = who(request)
            form = await read_form(request, config.max_body)
            body = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            files = [(k, v) for k, v in form.multi_items() if not isinstance(v, str)]
            check_params(body, ("prompt", "model", "n", "size", "response_format", "mask",
                                "image", "image[]", "input_fidelity"))  # fmt: skip
            images = [v for k, v in files if k in ("image", "image[]")]
            masks = [v for k, v in files if k == "mask"]
            if len(images) != 1:
                raise RequestError("image", f"one image file is needed here, got {len(images)}")
            image = open_image("image", await images[0].read(), pixels)
            mask = open_image("mask", await masks[0].read(), pixels) if masks else None
            inputs, masked = await run_in_threadpool(edit_inputs, image, mask)
            strength = number("strength", body.get("strength"), float)
            width, height = parse_size(body.get("size"))
            req = build_request(
                body,
                manager,
                strength=strength or (1.0 if masked else 0.75),
                width=width or image.size[0],
                height=height or image.size[1],
            )
            return await run(request, caller, body,
                             ImageJob(req, inputs, save_to=ctx.store.outputs_dir))  # fmt: skip
        except Exception as e:
            return as_response(e)

    async def models(request: Request) -> Response:
        try:
            who(request)
            names = await run_in_threadpool(lambda: list(manager.models("image")))
        except Exception as e:
            return as_response(e)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "atelier"} for n in names
                ],
            }
        )

    async def image_file(token: str) -> Response:
        path = links.get(token.removesuffix(".png"), time.time())
        if path is None:
            return openai_error(404, "no such image, or its link expired", None,
                                "invalid_request_error")  # fmt: skip
        return FileResponse(path, media_type="image/png")

    app.add_api_route("/v1/images/generations", generations, methods=["POST"],
                      include_in_schema=False)  # fmt: skip
    app.add_api_route("/v1/images/edits", edits, methods=["POST"], include_in_schema=False)
    app.add_api_route("/v1/models", models, methods=["GET"], include_in_schema=False)
    app.add_api_route("/v1/images/files/{token}", image_file, methods=["GET"],
                      include_in_schema=False)  # fmt: skip
