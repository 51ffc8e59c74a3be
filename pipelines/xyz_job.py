"""X/Y/Z plot jobs: every cell of a plot as one job of the job API.

    axes = [make_axis("x", "Steps", "10,20"), make_axis("y", "Sampler", "Euler a, DPM++ 2M")]
    job = manager.submit(XyzJob(GenerationRequest(prompt="a fox"), axes))
    result = job.result()     # XyzResult: grids (one per Z value, then all Z side by side)

1. prepare: the cells' requests (xyz.plot_cells), each validated and resolved by the
   image runner before anything runs (a bad value is a RequestError naming its axis);
   the work budget counts every cell. A random seed (-1) is chosen once for the plot,
   so cells differ only by their axes (A1111's behaviour).
2. run: the cells in A1111's order (z, y, x). Each is the image runner's own run, so
   it has everything a generation has (LoRAs, hires fix, ControlNet, saving as it
   goes); a model already in the slot's cache is not loaded again. One progress bar
   over every step of every cell; cancel stops the cell running and the plot.
3. the grid per Z value (labels as A1111 writes them), and with several Z values one
   picture of all; its infotext is the first cell's plus A1111's "Script: X/Y/Z plot"
   keys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import Cancelled, RequestError
from .hires import planned_total
from .image_job import GenerationResult, ImageJob, ImageRunner
from .infotext import format_value, quote
from .jobs import JobContext, Prepared
from .outputs import check_task_id, save_png
from .progress import ProgressEvent
from .request import GenerationRequest, chosen_seed
from .tasks import Inputs
from .xyz import AXIS_NAMES, Axis, plot_cells, plot_parameters
from .xyz_grid import draw_grid, side_by_side


@dataclass(frozen=True)
class XyzJob:
    request: GenerationRequest  # the base request: the form's values
    axes: tuple[Axis | None, ...]  # x, y, z (None = no axis)
    inputs: Inputs = field(default_factory=Inputs)
    save_to: Path | None = None  # cells and grids saved there as they are made
    task_id: str | None = None  # cell n: <task_id>-<n>-<image>.png; grids <task_id>-grid-<k>.png
    keep_cells: bool = True  # False: grids only (cells neither kept nor saved)


@dataclass
class XyzResult:
    request: GenerationRequest  # the base request, seed chosen
    grids: list[Image.Image]
    grid_infotexts: list[str]
    cells: list[GenerationResult]
    labels: dict[str, list[str]]  # "x", "y", "z" -> the labels drawn
    slot: str
    timings: dict[str, float]
    images: list[Image.Image] = field(default_factory=list)  # grids, then cells' images
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # grids first
    warnings: list[str] = field(default_factory=list)
    placement: str = "whole"  # the last cell's (GenerationResult.placement)


class _CellContext:
    """A cell's view of the plot's JobContext: `started` once, progress offset."""

    def __init__(self, parent: JobContext, plot: _Plot, n: int) -> None:
        self.parent, self.plot, self.n = parent, plot, n
        self.job = parent.job
        self.cancel = parent.cancel

    def on_slot(self, slot: Any) -> None:
        if not self.plot.started:
            self.plot.started = True
            self.parent.on_slot(slot)

    def on_progress(self, event: ProgressEvent) -> None:
        self.plot.actual[self.n] = event.total
        done = sum(self.plot.actual[: self.n]) + event.step
        self.parent.on_progress(ProgressEvent(done, self.plot.total(), event.preview))

    def on_download(self, done: int, total: int) -> None:
        self.parent.on_download(done, total)

    def on_hashing(self, done: int, total: int) -> None:
        self.parent.on_hashing(done, total)

    def fetch(self, plans: list[Any]) -> None:
        self.parent.fetch(plans)


@dataclass
class _Plot:
    base: GenerationRequest
    axes: tuple[Axis | None, ...]
    cells: list[Prepared]
    positions: list[tuple[int, int, int]]
    actual: list[int]  # steps per cell: planned, then as the cell reports them
    job: XyzJob
    t0: float
    prepare_s: float
    started: bool = False

    def total(self) -> int:
        return sum(self.actual)


class XyzRunner:
    kind = "xyz"

    def __init__(self, images: ImageRunner) -> None:
        self.images = images

    def prepare(self, job: XyzJob) -> Prepared:
        t0 = time.perf_counter()
        if not isinstance(job, XyzJob):
            raise RequestError("request", "must be an XyzJob")
        check_task_id(job.task_id)
        axes = tuple((list(job.axes) + [None, None, None])[:3])
        if all(a is None for a in axes):
            raise RequestError("x", "choose at least one axis")
        base = replace(job.request, seed=chosen_seed(job.request.seed))
        cells, prepared, positions = plot_cells(base, list(axes)), [], []
        for n, cell in enumerate(cells):
            task = None if job.task_id is None else f"{job.task_id}-{n}"
            spec = ImageJob(cell.request, job.inputs, job.save_to if job.keep_cells else None, task)
            try:
                prepared.append(self.images.prepare(spec))
            except RequestError as e:
                if e.field in AXIS_NAMES:
                    raise
                rule = f"{_cell_label(axes, cell.index)}: {e.field}: {e.rule}"
                raise RequestError(_axis_of(e, axes), rule) from None
            positions.append(cell.index)
        plot = _Plot(base, axes, prepared, positions,
                     [planned_total(p.spec) for p in prepared], job, t0,
                     time.perf_counter() - t0)  # fmt: skip
        work = sum(p.work for p in prepared)
        return Prepared(base, work, prepared[0].model, plot)

    def run(self, prepared: Prepared, ctx: JobContext) -> XyzResult:
        plot: _Plot = prepared.data
        job = plot.job
        results: list[GenerationResult] = []
        timings = {"prepare": plot.prepare_s, "queue": 0.0, "load": 0.0, "run": 0.0}
        for n, cell in enumerate(plot.cells):
            if ctx.cancel.cancelled:
                raise Cancelled("cancelled")
            result = self.images.run(cell, _CellContext(ctx, plot, n))  # type: ignore[arg-type]
            for key in ("queue", "load", "run"):
                timings[key] += result.timings.get(key, 0.0)
            results.append(result)
        grids, infos, labels = self._grids(plot, results)
        out = XyzResult(prepared.spec, grids, infos, results if job.keep_cells else [],
                        labels, results[-1].slot, timings)  # fmt: skip
        for k, (grid, info) in enumerate(zip(grids, infos, strict=True)):
            if job.save_to is not None:
                stem = f"{job.task_id}-grid-{k}" if job.task_id else None
                out.paths.append(save_png(grid, job.save_to, info, stem=stem,
                                          seed=plot.base.seed))  # fmt: skip
            out.images.append(grid)
            out.infotexts.append(info)
            out.seeds.append(plot.base.seed)
        for r in out.cells:
            out.images += r.images
            out.infotexts += r.infotexts
            out.seeds += r.seeds
            out.paths += r.paths
            out.warnings += [w for w in r.warnings if w not in out.warnings]
        out.placement = getattr(results[-1], "placement", out.placement)
        timings["total"] = time.perf_counter() - plot.t0
        return out

    def _grids(
        self, plot: _Plot, results: list[GenerationResult]
    ) -> tuple[list[Image.Image], list[str], dict[str, list[str]]]:
        x, y, z = plot.axes
        xs = list(x.values) if x else [None]
        ys = list(y.values) if y else [None]
        zs = list(z.values) if z else [None]
        labels = {"x": [x.label(v) for v in xs] if x else [],
                  "y": [y.label(v) for v in ys] if y else [],
                  "z": [z.label(v) for v in zs] if z else []}  # fmt: skip
        by_pos = {pos: r for pos, r in zip(plot.positions, results, strict=True)}
        grids = []
        for k in range(len(zs)):
            cells = [[by_pos[(i, j, k)].images[0] for i in range(len(xs))]
                     for j in range(len(ys))]  # fmt: skip
            title = labels["z"][k] if z else ""
            grids.append(draw_grid(cells, labels["x"], labels["y"], title))
        if len(grids) > 1:
            grids.append(side_by_side(grids))
        first = results[0].infotexts[0]
        info = add_params(first, plot_parameters(list(plot.axes)))
        return grids, [info] * len(grids), labels


def add_params(text: str, params: dict[str, str]) -> str:
    """An infotext with `params` added at the end of its params line."""
    pairs = ", ".join(f"{k}: {quote(format_value(v))}" for k, v in params.items())
    return f"{text.rstrip()}, {pairs}"


def _cell_label(axes: tuple[Axis | None, ...], index: tuple[int, int, int]) -> str:
    return ", ".join(a.label(a.values[i]) for a, i in zip(axes, index, strict=True) if a)


def _axis_of(e: RequestError, axes: tuple[Axis | None, ...]) -> str:
    """The axis a cell's error belongs to: the one whose kind sets the failing field,
    else the first axis (the field is named in the rule)."""
    fields = {"num_inference_steps": "Steps", "guidance_scale": "CFG Scale", "seed": "Seed",
              "scheduler": "Sampler", "model": "Checkpoint name", "vae": "VAE",
              "clip_skip": "Clip skip", "width": "Size", "height": "Size",
              "strength": "Denoising", "hr_upscaler": "Hires upscaler",
              "hr_second_pass_steps": "Hires steps", "hr_scale": "Hires upscale"}  # fmt: skip
    for name, axis in zip(AXIS_NAMES, axes, strict=True):
        if axis is not None and axis.kind.label == fields.get(e.field.split("[")[0]):
            return name
    return next(n for n, a in zip(AXIS_NAMES, axes, strict=True) if a is not None)
