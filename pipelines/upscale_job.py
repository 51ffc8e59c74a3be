"""Upscale jobs: A1111's Extras tab (one image, one upscaler) as a job of the job API.

    job = manager.submit(UpscaleJob(UpscaleRequest("4x-UltraSharp", scale=2), image))
    result = job.result()        # UpscaleResult: images[0] is the big picture

Pixel upscalers (Lanczos, Nearest, None) run in the job's thread without a device
slot (they are PIL resizes). An upscaler model waits for a slot like any job, is
loaded into that slot's cache (kept for the next job, evicted by the slot's LRU
like a model), and reports one progress step per tile; cancel stops it between
tiles. The output keeps the source's A1111 parameters, if any, and adds A1111's
Extras keys (`Postprocess upscale by` / `Postprocess upscale to`,
`Postprocess upscaler`), as A1111 writes them.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import RequestError
from .images import check_pixels
from .infotext import format_value, quote
from .jobs import JobContext, Prepared
from .outputs import check_task_id, read_png_parameters, save_png
from .progress import ProgressEvent
from .request import check_int
from .upscale import MAX_SCALE, RESAMPLERS, all_upscalers, target_size

MAX_SIDE = 16384


@dataclass(frozen=True)
class UpscaleRequest:
    upscaler: str = "Lanczos"
    scale: float = 2.0  # used when width and height are 0
    width: int = 0  # exact size (0 = from the other side's ratio, or from scale)
    height: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UpscaleJob:
    request: UpscaleRequest
    image: Image.Image
    save_to: Path | None = None
    task_id: str | None = None


@dataclass
class UpscaleResult:
    request: UpscaleRequest
    images: list[Image.Image]
    infotexts: list[str]
    slot: str
    timings: dict[str, float]
    paths: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])  # files are named like images
    warnings: list[str] = field(default_factory=list)
    placement: str = "whole"  # as GenerationResult's: the upscaler is one module


def extras_infotext(source: str | None, req: UpscaleRequest, size: tuple[int, int]) -> str:
    """The source's parameters (if any) with A1111's Extras keys added to the last line."""
    params: dict[str, object] = {}
    if req.width or req.height:
        params["Postprocess upscale to"] = f"{size[0]}x{size[1]}"
    else:
        params["Postprocess upscale by"] = req.scale
    params["Postprocess upscaler"] = req.upscaler
    pairs = ", ".join(f"{k}: {quote(format_value(v))}" for k, v in params.items())
    return f"{source.rstrip()}, {pairs}" if source and source.strip() else pairs


class UpscaleRunner:
    kind = "upscale"

    def __init__(self, core: Any) -> None:
        self.core = core

    def prepare(self, job: UpscaleJob) -> Prepared:
        t0 = time.perf_counter()
        if not isinstance(job, UpscaleJob):
            raise RequestError("request", "must be an UpscaleJob")
        check_task_id(job.task_id)
        req = job.request
        if not isinstance(job.image, Image.Image):
            raise RequestError("image", "an image to upscale is required")
        names = all_upscalers(self.core.upscalers)
        if req.upscaler not in names:
            raise RequestError("upscaler", f"unknown upscaler {req.upscaler!r}; upscalers: "
                               f"{', '.join(names)}")  # fmt: skip
        entry = None if req.upscaler in RESAMPLERS else self.core.upscalers.get(req.upscaler)
        check_int("width", req.width, 0, MAX_SIDE)
        check_int("height", req.height, 0, MAX_SIDE)
        w, h = target_size(job.image.size, req.scale, req.width, req.height)
        if w < 1 or h < 1:
            raise RequestError("scale", f"makes an empty image ({w}x{h})")
        check_pixels("scale" if not (req.width or req.height) else "width", (w, h),
                     self.core.settings.max_image_pixels)  # fmt: skip
        data = {"entry": entry, "size": (w, h), "image": job.image.convert("RGB"),
                "source_text": read_png_parameters(job.image), "save_to": job.save_to,
                "task_id": job.task_id, "t0": t0, "prepare": time.perf_counter() - t0}  # fmt: skip
        return Prepared(req, w * h, f"upscaler:{req.upscaler}", data)

    def run(self, prepared: Prepared, ctx: JobContext) -> UpscaleResult:
        from .cache import module_bytes
        from .upscale import load_upscaler, upscale

        req: UpscaleRequest = prepared.spec
        data = prepared.data
        w, h = data["size"]
        timings = {"prepare": data["prepare"], "queue": 0.0, "load": 0.0}
        image = data["image"]

        def cancelled() -> bool:
            return ctx.cancel.cancelled

        def on_tile(done: int, total: int) -> None:
            ctx.on_progress(ProgressEvent(done, total))

        entry = data["entry"]
        t1 = time.perf_counter()
        if entry is None:
            out = upscale(image, req.upscaler, w, h, cancelled=cancelled)
            slot = "cpu (no model)"
            on_tile(1, 1)
        else:
            pool = self.core.pool
            with pool.slot_for(entry.key, ctx.job, f"upscaler:{entry.name}") as s:
                ctx.on_slot(s)
                t2 = time.perf_counter()
                if entry.key not in s.cache:
                    model = load_upscaler(entry, s.device)
                    s.cache.put(entry.key, model, module_bytes(model.model))
                t3 = time.perf_counter()
                timings.update(queue=t2 - t1, load=t3 - t2)
                with s.cache.locked(entry.key) as model:
                    out = upscale(image, req.upscaler, w, h, model, cancelled, on_tile=on_tile)
                slot = s.name
        timings["run"] = time.perf_counter() - t1 - timings["queue"] - timings["load"]
        info = extras_infotext(data["source_text"], req, (w, h))
        paths = []
        if data["save_to"] is not None:
            stem = f"{data['task_id']}-0" if data["task_id"] else None
            paths.append(save_png(out, data["save_to"], info, stem=stem))
        timings["total"] = time.perf_counter() - data["t0"]
        return UpscaleResult(req, [out], [info], slot, timings, paths)


__all__ = ["MAX_SCALE", "UpscaleJob", "UpscaleRequest", "UpscaleResult", "UpscaleRunner"]
