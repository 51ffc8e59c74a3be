"""The Video tab's event handlers: plain functions of (context, values) that return or
yield updates keyed by output name, so tests call them without a server. The tab
(ui/video_tab.py) only lays out components and maps these names to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL.Image import Resampling

from ui.context import StudioContext
from ui.form import family_updates, open_image
from ui.generate_handlers import job_updates, with_warnings
from ui.video_form import (
    DEFAULT_FORMAT,
    for_family,
    image_inputs,
    timing_text,
    video_request_from_widgets,
    video_specs,
)
from ui.video_runner import publish_video, store_video

if TYPE_CHECKING:
    from PIL import Image

    from pipelines.families import Family

PREVIEW_SIZE = 256  # pixels, the longer side
OUTPUTS = ("error", "status", "preview", "player", "download", "download_json", "seed_used",
           "last_seed", "time_taken")  # fmt: skip
FAMILY_SLIDERS = ("frames", "width", "height", "steps", "cfg")


def enlarged(image: Image.Image, target: int = PREVIEW_SIZE) -> Image.Image:
    """A latent-sized preview (1/8 or 1/16 of the frame) scaled up by a whole factor, with
    nearest-neighbour, so its blocks stay honest instead of a blurred stamp."""
    factor = max(1, target // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Resampling.NEAREST)


def generate(
    ctx: StudioContext,
    values: Mapping[str, Any],
    start: Any,
    end: Any,
    fmt: str | None,
    caller: str,
    progress: Callable[[Any], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Run the form's video request as a job; updates as ui.generate_handlers.generate.
    `values`: the Video form's values by name; `start`/`end`: the images (file paths,
    or images; None), opened after the family has dropped the ones it takes none of."""

    jobs: list[Any] = []

    def submit() -> Any:
        jobs.append(ctx.manager.submit(job_of(ctx, values, start, end), caller))
        return jobs[0]

    def finish(result: Any) -> dict[str, Any]:
        return finished(ctx, result, fmt, caller, jobs[0] if jobs else None)

    yield from job_updates(submit, finish, progress, enlarged)


def job_of(ctx: StudioContext, values: Mapping[str, Any], start: Any, end: Any) -> Any:
    """The VideoJob of the form's values and images (opened and checked here)."""
    from pipelines.errors import RequestError
    from pipelines.video import VideoJob

    if not values.get("model"):
        raise RequestError("model", "pick a video model")
    fam = ctx.manager.registry.family_of(values["model"])
    values, start, end = for_family(dict(values), start, end, fam)
    request = video_request_from_widgets(values)
    limit = ctx.manager.settings.max_image_pixels
    start, end = open_image("image", start, limit), open_image("end_image", end, limit)
    return VideoJob(request, start, end)


def finished(
    ctx: StudioContext, result: Any, fmt: str | None, caller: str | None = None, job: Any = None
) -> dict[str, Any]:
    """Every result output for a finished video job: files published for the player
    and the download buttons, and (with S3 or Redis on) stored as the job's task outputs."""
    files = publish_video(ctx.store, result, fmt or DEFAULT_FORMAT, caller)
    warning = store_video(ctx.manager, job, result, files)
    label = f"Download {files.file.suffix[1:].upper()}"
    req = result.request
    return {
        "player": str(files.player),
        "download": gr.DownloadButton(label, value=str(files.file), visible=True),
        "download_json": gr.DownloadButton(value=str(files.parameters), visible=True),
        "seed_used": f"Seed: {result.seed}",
        "last_seed": result.seed,
        "time_taken": timing_text(result.timings),
        "preview": gr.Image(None, visible=False),
        "status": with_warnings(
            f"Done: {req.num_frames} frames, {req.width}x{req.height} at "
            f"{req.fps} fps on {result.slot}",
            [*result.warnings, *([warning] if warning else [])],
        ),
    }


def family_changed(family: Family) -> list[Any]:
    """Scheduler, frames, width, height, steps, cfg, cfg2, start and end image for a family."""
    specs, shown = video_specs(family), image_inputs(family)
    return [*family_updates(family, specs, FAMILY_SLIDERS),
            gr.Slider(**specs["cfg2"], visible=shown["cfg2_visible"]),
            gr.Image(visible=shown["start_visible"], label=shown["start_label"]),
            gr.Image(visible=shown["end_visible"])]  # fmt: skip
