"""The generate command's work apart from its flags: running one request, running a
jobs file (JSON lines, one request each, with image paths relative to the file),
opening the images they name, and the checks of flags and files that must fail
before any work (one `error: FIELD: RULE` line, exit 2, instead of a traceback later).

Used by app.py; plain Python that imports the engine (and ui.form's unit typing)
only inside its functions, so that importing it does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.manager import PipelineManager

log = logging.getLogger(__name__)
EXIT_BAD_INPUT = 2


def run_one(
    manager: PipelineManager,
    request: Any,
    out: Path | None,
    task_id: str | None,
    inputs: Any = None,
) -> dict:
    from pipelines.image_job import ImageJob
    from pipelines.tasks import Inputs

    # Each image is saved by the engine as soon as its call is decoded.
    job = ImageJob(request, inputs or Inputs(), save_to=out, task_id=task_id)
    handle = manager.submit(job)
    result = handle.result()
    paths = result.paths
    integrated = manager.reporter is not None or manager.store is not None
    out_json = {
        # with Redis or S3 on, the task's name there (made up when none was given)
        "task_id": manager.task_name(handle) if integrated else task_id,
        "paths": [str(p) for p in paths],
        "seeds": result.seeds,
        "infotexts": result.infotexts,
        "request": result.request.to_dict(),
        "seconds": round(result.timings["total"], 3),
    }
    for warning in result.warnings:  # e.g. prompt syntax the model ignores
        log.warning("%s", warning)
    if result.warnings:
        out_json["warnings"] = list(result.warnings)
    if manager.store is not None:
        out_json["urls"] = list(result.urls)  # the S3 objects of `paths`, in order
    return out_json


def run_jobs(manager: PipelineManager, jobs_file: Path, out: Path | None) -> int:
    """One JSON result line per job; a bad job (a bad image included) is reported and
    the rest still run. An unreadable jobs file is a RequestError naming `jobs`."""
    from tqdm import tqdm

    lines = read_jobs(jobs_file)
    worst = 0
    for n, line in enumerate(tqdm(lines, desc="jobs", unit="job", file=sys.stderr)):
        report, code = run_line(manager, n, line, jobs_file.parent, out)
        worst = max(worst, code)
        print(json.dumps(report, ensure_ascii=False), flush=True)
    return worst


def run_line(
    manager: PipelineManager, n: int, line: str, base: Path, out: Path | None
) -> tuple[dict, int]:
    """(result line, exit code) of job `n` of a jobs file (image paths relative to `base`):
    0 done, 2 bad input, 1 failed. Shared by run_jobs and the data-parallel run."""
    from pipelines.errors import AtelierError, RequestError
    from pipelines.request import GenerationRequest

    task_id = None
    try:
        try:
            data = json.loads(line)
            inputs = None
            if isinstance(data, dict):
                task_id = data.pop("task_id", None)
                inputs = inputs_from_job(data, manager, base)
            request = GenerationRequest.from_dict(data)
        except (json.JSONDecodeError, AtelierError) as e:  # never reached the engine's submit
            why = e if isinstance(e, AtelierError) else RequestError("job", str(e))
            manager.refused(task_id if isinstance(task_id, str) else None, why)  # Redis: failed
            raise
        return {"job": n, "ok": True, **run_one(manager, request, out, task_id, inputs)}, 0
    except (json.JSONDecodeError, RequestError) as e:
        field = getattr(e, "field", "job")
        return {"job": n, "ok": False, "task_id": task_id, "field": field,
                "error": str(e)}, EXIT_BAD_INPUT  # fmt: skip
    except AtelierError as e:
        return {"job": n, "ok": False, "task_id": task_id, "error": str(e)}, 1
    except Exception as e:  # a library's failure in one job: logged, the run goes on
        log.exception("job %d failed", n)
        return {"job": n, "ok": False, "task_id": task_id,
                "error": f"{type(e).__name__}: {e}"}, 1  # fmt: skip


def read_jobs(jobs_file: Path) -> list[str]:
    """The non-blank lines of a jobs file; a missing, folder or unreadable path is a
    RequestError naming `jobs` (checked before any work)."""
    from pipelines.errors import RequestError

    if not jobs_file.exists():
        raise RequestError("jobs", f"no such file: {jobs_file}")
    if jobs_file.is_dir():
        raise RequestError("jobs", f"{jobs_file} is a folder; give a JSON-lines file")
    try:
        text = jobs_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RequestError("jobs", f"cannot read {jobs_file}: {e}") from None
    return [ln for ln in text.splitlines() if ln.strip()]


def inputs_from_job(data: dict[str, Any], manager: PipelineManager, base: Path) -> Any:
    """Take a job's image paths (init_image, mask_image, controlnets[k].image) out of
    `data` and open them, relative to the jobs file's folder; returns Inputs."""
    from pipelines.errors import RequestError
    from pipelines.tasks import Inputs
    from ui.form import typed_unit

    limit = manager.settings.max_image_pixels
    inputs = Inputs(open_image("init_image", data.pop("init_image", None), base, limit),
                    open_image("mask_image", data.pop("mask_image", None), base,
                               limit))  # fmt: skip
    units = data.get("controlnets") or []
    if not isinstance(units, list):
        raise RequestError("controlnets", "must be a list of units, each with an 'image' path")
    data["controlnets"] = []
    for i, unit in enumerate(units):
        if not isinstance(unit, dict):
            raise RequestError(f"controlnets[{i}]", "must be an object with an 'image' path")
        unit = dict(unit)
        if "image" not in unit:
            raise RequestError(f"controlnets[{i}].image", "is required (a path)")
        inputs.control_images.append(open_image(f"controlnets[{i}].image", unit.pop("image"),
                                                 base, limit))  # fmt: skip
        unit.setdefault("model", default_controlnet(manager, data.get("model")))
        data["controlnets"].append(typed_unit(unit))
    return inputs


def open_image(
    field_name: str, path: Path | str | None, base: Path | None = None,
    max_pixels: int | None = None,
) -> Any:  # fmt: skip
    """The image at `path` (relative to `base` when given), or None. Opened by
    pipelines.images.open_image (pixel limit from the header before decoding): a missing,
    empty, non-image, truncated or oversized file is a RequestError naming the field.
    Messages name the file by the path the user gave (their own machine's)."""
    from pipelines.images import DEFAULT_MAX_PIXELS
    from pipelines.images import open_image as open_checked

    if path is None:
        return None
    if not isinstance(path, (str, os.PathLike)):
        from pipelines.errors import RequestError

        raise RequestError(field_name, f"must be a file path, got {path!r}")
    full = Path(path).expanduser()
    if base is not None and not full.is_absolute():
        full = base / full
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    return open_checked(field_name, full, limit, name=str(full))


def check_out_dir(field_name: str, out: Path | None) -> None:
    """`out` must be a folder that exists or can be made, and be writable: checked before
    generating, so that no work is lost at the end. Nothing is created here."""
    from pipelines.errors import RequestError

    if out is None:
        return
    folder = out.expanduser()
    if folder.exists() and not folder.is_dir():
        raise RequestError(field_name, f"{out} is a file, not a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RequestError(field_name, f"cannot make {out}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RequestError(field_name, f"cannot write into {existing} (permission denied)")


def default_controlnet(manager: PipelineManager, model: str | None) -> str:
    """The first ControlNet of the model's family (the one --controlnet overrides)."""
    from pipelines.errors import RequestError

    entry = manager.registry.resolve(model or manager.settings.default_model)
    family = entry.family.name
    lib = manager.controlnets
    names = lib.names(family, entry.name)  # the one made for the model first
    if not names:
        where = lib.controlnets_dir or "the controlnets folder (--controlnets-dir)"
        raise RequestError("controlnet", f"no ControlNet for {family} models: put one into {where}")
    return names[0]
