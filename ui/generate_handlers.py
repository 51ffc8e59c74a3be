"""The Generate tab's event handlers: plain functions of (context, values) that return
or yield updates keyed by output name, so tests call them without a server. The tab
(ui/generate_tab.py) only lays out components and maps these names to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gradio as gr

from ui.context import HISTORY_LIMIT, StudioContext
from ui.form import error_markdown, family_updates, for_device, studio_form, widget_specs
from ui.hires_panel import apply_extras, split_extras
from ui.lora_panel import refresh_search
from ui.runner import progress_text, queue_text, stream_job

# What `generate` updates, by name (the tab's outputs, in this order).
OUTPUTS = ("error", "status", "preview", "gallery", "shown", "selected", "info", "seed_used",
           "last_seed", "time_taken", "history", "history_items")  # fmt: skip
FAMILY_SLIDERS = ("steps", "cfg", "width", "height")


def generate(
    ctx: StudioContext,
    values: Mapping[str, Any],
    old_history: list,
    caller: str,
    progress: Callable[[Any], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Run the form's request as a job: a first update, one per job event, then the
    result (or the error, naming the field). `values`: the form's values by name
    (ui.form.studio_form's input); `progress` hears each progress event."""
    numbers: list[int] = []

    def submit() -> Any:
        form = studio_form(split_extras(values)[0], ctx.manager.settings.max_image_pixels)
        numbers.extend(form.unit_numbers)
        return ctx.manager.submit(job_of(ctx, values, form), caller)

    def finish(result: Any) -> dict[str, Any]:
        return finished(ctx, result, old_history, caller)

    yield from job_updates(submit, finish, progress,
                           error_text=lambda e: error_markdown(e, numbers))  # fmt: skip


def job_updates(
    submit: Callable[[], Any],
    finish: Callable[[Any], dict[str, Any]],
    progress: Callable[[Any], None] | None = None,
    shown: Callable[[Any], Any] = lambda image: image,
    error_text: Callable[[Any], str] = error_markdown,
) -> Iterator[dict[str, Any]]:
    """A tab's updates for one job, of any kind: `submit()` it, then the waiting line,
    one update per job event (`shown` turns previews into what the tab displays), and
    `finish(result)`; a refused or failed job shows its error (naming the field)."""
    from pipelines.errors import AtelierError, RequestError

    try:
        job = submit()
        yield {"error": gr.Markdown(visible=False), "status": "Waiting for a device…"}
        for event in stream_job(job):
            if event.kind == "result":
                yield finish(event.result)
                return
            if progress is not None and event.total:
                progress(event)
            yield running(event, shown)
    except RequestError as e:
        yield {"error": gr.Markdown(error_text(e), visible=True), "status": ""}
    except AtelierError as e:  # model not available, cancelled before start, ...
        yield {"error": gr.Markdown(f"**error**: {e}", visible=True), "status": ""}


def job_of(ctx: StudioContext, values: Mapping[str, Any], form: Any = None) -> Any:
    """The ImageJob of the form's values (saved into the outputs folder as decoded)."""
    from pipelines.image_job import ImageJob

    plain, extras = split_extras(values)  # styles and hires fix (ui/hires_panel.py)
    form = form or studio_form(plain, ctx.manager.settings.max_image_pixels)
    return ImageJob(apply_extras(form.request, extras), form.images.inputs(),
                    save_to=ctx.store.outputs_dir)  # fmt: skip


def running(event: Any, shown: Callable[[Any], Any] = lambda image: image) -> dict[str, Any]:
    """The status line (and the preview, through `shown`) for a job event that is not
    the result. Shared by the Generate and Video tabs."""
    if event.kind == "idle":
        # Nothing new; yielding lets Gradio stop the handler if asked. Not {}: Gradio
        # reads an empty dict as ONE output value and fails the event ("didn't return
        # enough output values"), which ended every job with a second-long idle gap.
        return {"status": gr.skip()}
    if event.kind == "queued":
        return {"status": queue_text(event)}
    if event.kind == "started":
        return {"status": f"Loading on {event.slot}…"}
    update: dict[str, Any] = {"status": progress_text(event)}
    if event.preview is not None:
        update["preview"] = gr.Image(shown(event.preview), visible=True)
    return update


def finished(
    ctx: StudioContext, result: Any, old_history: list, caller: str | None = None
) -> dict[str, Any]:
    """Every result output for a finished job: files published (and their owner
    recorded), history extended."""
    paths = ctx.store.publish(result, caller)
    items = [(str(p), f"seed {s}") for p, s in zip(paths, result.seeds, strict=True)]
    new_history = (items[::-1] + list(old_history))[:HISTORY_LIMIT]
    t = result.timings
    seeds = result.seeds
    seed_text = f"Seed: {seeds[0]}" + (f" … {seeds[-1]}" if len(seeds) > 1 else "")
    return {
        "gallery": gr.Gallery(items, selected_index=0),
        "shown": [(str(p), i) for p, i in zip(paths, result.infotexts, strict=True)],
        "selected": str(paths[0]),
        "info": result.infotexts[0],
        "seed_used": seed_text,
        "last_seed": seeds[0],
        "time_taken": f"Time: {t['total']:.2f} s (load {t['load']:.2f} s, "
        f"run {t['run']:.2f} s, waited {t['queue']:.2f} s)",
        "preview": gr.Image(None, visible=False),
        "history": new_history,
        "history_items": new_history,
        "status": done_text(len(paths), f"{result.slot} ({result.placement})", result.warnings),
    }


def add_word(text: str | None, word: str | None) -> str:
    """The prompt with an embedding's word added at its end (A1111's card click)."""
    text = text or ""
    if not word:
        return text
    return f"{text.rstrip()}, {word}" if text.strip() else word


def done_text(count: int, slot: str, warnings: list[str]) -> str:
    """The status line of a finished job, with the engine's warnings (ignored prompt syntax)."""
    return with_warnings(f"Done: {count} image(s) on {slot}", warnings)


def with_warnings(text: str, warnings: list[str]) -> str:
    """A status line followed by each warning (a job's result, or a failed upload)."""
    return text + "".join(f" · ⚠ {w}" for w in warnings)


def pick(items: list, index: int | None) -> tuple[str, str | None]:
    """(infotext, path) of gallery item `index` ("", None when there is none)."""
    if not items or index is None or index >= len(items):
        return "", None
    path, infotext = items[index]
    return infotext, path


def model_changed(ctx: StudioContext, name: str, units: int) -> list[Any]:
    """Sampler and sliders at the family's defaults, the LoRA search for the family, and
    each of `units` ControlNet dropdowns offering the family's ControlNets."""
    fam = for_device(ctx.manager.registry.family_of(name), ctx.cpu_only)
    cn = ctx.manager.controlnets.names(fam.name, name)
    dropdowns = [gr.Dropdown(choices=cn, value=cn[0] if cn else None) for _ in range(units)]
    return [*family_updates(fam, widget_specs(fam), FAMILY_SLIDERS),
            refresh_search(ctx.manager, fam.name), *dropdowns]  # fmt: skip


def libraries_refreshed(ctx: StudioContext, vae: str | None) -> list[Any]:
    """The VAE and embedding folders read again (the ↻ button): their dropdowns."""
    ctx.manager.vaes.rescan()
    ctx.manager.embeddings.rescan()
    vaes = ["Automatic", *ctx.manager.vaes.names()]
    return [gr.Dropdown(choices=vaes, value=vae if vae in vaes else "Automatic"),
            gr.Dropdown(choices=ctx.manager.embeddings.names())]  # fmt: skip


def models_refreshed(ctx: StudioContext, name: str) -> list[Any]:
    """The model list read again, and the LoRA search for the current model's family."""
    names = list(ctx.manager.models("image"))
    fam = ctx.manager.registry.family_of(name) if name in names else None
    return [gr.Dropdown(choices=names), refresh_search(ctx.manager, fam.name if fam else None)]
