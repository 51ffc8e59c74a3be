"""The generate command's work apart from its flags: running one request, running a
jobs file (JSON lines, one request each, with image paths relative to the file) and
opening the images they name.

Used by app.py; plain Python that imports the engine (and ui.form's unit typing)
only inside its functions, so that importing it does nothing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.manager import PipelineManager

EXIT_BAD_INPUT = 2


def run_one(
    manager: PipelineManager,
    request: Any,
    out: Path | None,
    task_id: str | None,
    inputs: Any = None,
) -> dict:
    from pipelines.outputs import check_task_id, save_result

    check_task_id(task_id)  # before the work, not after it
    result = manager.generate(request, inputs=inputs)
    paths = save_result(result, out, task_id) if out else []
    return {
        "task_id": task_id,
        "paths": [str(p) for p in paths],
        "seeds": result.seeds,
        "infotexts": result.infotexts,
        "request": result.request.to_dict(),
        "seconds": round(result.timings["total"], 3),
    }


def run_jobs(manager: PipelineManager, jobs_file: Path, out: Path | None) -> int:
    """One JSON result line per job; a bad job is reported and the rest still run."""
    from tqdm import tqdm

    from pipelines.errors import AtelierError, RequestError
    from pipelines.request import GenerationRequest

    lines = [ln for ln in jobs_file.read_text().splitlines() if ln.strip()]
    worst = 0
    for n, line in enumerate(tqdm(lines, desc="jobs", unit="job", file=sys.stderr)):
        task_id = None
        try:
            data = json.loads(line)
            inputs = None
            if isinstance(data, dict):
                task_id = data.pop("task_id", None)
                inputs = inputs_from_job(data, manager, jobs_file.parent)
            report = {"job": n, "ok": True, **run_one(
                manager, GenerationRequest.from_dict(data), out, task_id, inputs)}  # fmt: skip
        except (json.JSONDecodeError, RequestError) as e:
            field = getattr(e, "field", "job")
            report = {"job": n, "ok": False, "task_id": task_id, "field": field, "error": str(e)}
            worst = max(worst, EXIT_BAD_INPUT)
        except AtelierError as e:
            report = {"job": n, "ok": False, "task_id": task_id, "error": str(e)}
            worst = max(worst, 1)
        print(json.dumps(report, ensure_ascii=False), flush=True)
    return worst


def inputs_from_job(data: dict[str, Any], manager: PipelineManager, base: Path) -> Any:
    """Take a job's image paths (init_image, mask_image, controlnets[k].image) out of
    `data` and open them, relative to the jobs file's folder; returns Inputs."""
    from pipelines.errors import RequestError
    from pipelines.tasks import Inputs
    from ui.form import typed_unit

    inputs = Inputs(open_image("init_image", data.pop("init_image", None), base),
                    open_image("mask_image", data.pop("mask_image", None), base))  # fmt: skip
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
                                                 base))  # fmt: skip
        unit.setdefault("model", default_controlnet(manager, data.get("model")))
        data["controlnets"].append(typed_unit(unit))
    return inputs


def open_image(field_name: str, path: Path | str | None, base: Path | None = None) -> Any:
    """The image at `path` (relative to `base` when given), or None; a missing or
    unreadable file is a RequestError naming the field."""
    from PIL import Image, UnidentifiedImageError

    from pipelines.errors import RequestError

    if path is None:
        return None
    full = Path(path).expanduser()
    if base is not None and not full.is_absolute():
        full = base / full
    if not full.is_file():
        raise RequestError(field_name, f"no such file: {full}")
    try:
        image = Image.open(full)
        image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise RequestError(field_name, f"cannot read {full} as an image: {e}") from None
    return image


def default_controlnet(manager: PipelineManager, model: str | None) -> str:
    """The first ControlNet of the model's family (the one --controlnet overrides)."""
    from pipelines.errors import RequestError

    family = manager.registry.resolve(model or manager.settings.default_model).family.name
    lib = manager.controlnets
    names = [n for n in lib.names() if lib.get(n).family == family]
    if not names:
        where = lib.controlnets_dir or "the controlnets folder (--controlnets-dir)"
        raise RequestError("controlnet", f"no ControlNet for {family} models: put one into {where}")
    return names[0]
