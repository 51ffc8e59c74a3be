"""Data-parallel batch runs: one jobs file split across the processes of a launcher.

    accelerate launch --num_processes 2 app.py generate --jobs jobs.jsonl --out out   # GPUs
    torchrun --nproc_per_node 2 app.py generate --jobs jobs.jsonl --out out           # CPU

The launcher is detected from the environment it sets (WORLD_SIZE > 1), so the same
command line runs single-process without it. accelerate's `PartialState` joins the
process group (`cpu=True` when there is no CUDA: plain `PartialState()` sees rank 0
of 1 under torchrun on CPU) and `split_between_processes` gives each process a
contiguous share of the lines; each process has its own engine on its own device
(`cuda:<local rank>` on GPUs unless --devices says otherwise; one CPU slot on CPU).

Why results are gathered to rank 0 before anything is printed or named: a run must
leave what a single-process run leaves. Numbered file names (`00007-<seed>.png`)
come from the folder's highest number when an image is saved, so processes saving
at once would interleave them. Each process therefore saves into its own staging
folder (`<out>/.atelier-parallel/rank-<r>-<pid>`, still right after each decode, so a
crash loses only unfinished images); rank 0 then moves the images into `<out>` in
job order with the same naming rule and prints one result line per job, in job
order, with the final paths. Only rank 0 writes to stdout.

Imports accelerate only inside functions; torch only through the engine (pipelines.slots).
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
STAGING = ".atelier-parallel"


def launched(env: dict[str, str] | None = None) -> bool:
    """True under torchrun / accelerate launch with more than one process."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    try:
        return int(env.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def parallel_state(args: Any) -> Any:
    """This process's accelerate PartialState when launched with several processes, else
    None. On GPUs, a process without --devices / ATELIER_DEVICES gets its own GPU."""
    if not launched():
        return None
    from accelerate import PartialState

    from pipelines.settings import ENGINE_SETTINGS, resolve
    from pipelines.slots import gpu_count

    state = PartialState(cpu=gpu_count() == 0)
    devices = resolve(ENGINE_SETTINGS, args)["devices"]
    if not devices and state.device.type == "cuda":
        args.devices = (str(state.device),)  # else every process would share cuda:0 first
    log.info("process %d of %d on %s", state.process_index, state.num_processes, state.device)
    return state


def run_parallel(state: Any, manager: PipelineManager, jobs_file: Path, out: Path | None) -> int:
    """This process's share of `jobs_file`; rank 0 names the files and prints every line.
    Returns the worst exit code of all jobs (the same on every rank)."""
    from accelerate.utils import gather_object
    from tqdm import tqdm

    from ui.cli_jobs import read_jobs, run_line

    lines = list(enumerate(read_jobs(jobs_file)))
    rank = state.process_index
    stage = None if out is None else out / STAGING / f"rank-{rank}-{os.getpid()}"
    mine: list[tuple[int, dict, int, str | None]] = []
    with state.split_between_processes(lines) as share:
        for n, line in tqdm(share, desc=f"jobs (rank {rank})", unit="job", file=sys.stderr):
            report, code = run_line(manager, n, line, jobs_file.parent, stage)
            mine.append((n, {**report, "rank": rank}, code, task_id_of(line)))
    done = sorted(gather_object(mine), key=lambda item: item[0])  # every rank, job order
    if sorted(item[0] for item in done) != list(range(len(lines))):  # each job exactly once
        raise RuntimeError(f"gathered {len(done)} results for {len(lines)} jobs")
    if state.is_main_process:
        for _, report, _, task_id in done:
            if out is not None and report.get("paths"):
                report["paths"] = [str(p) for p in publish(report, out, task_id)]
            print(json.dumps(report, ensure_ascii=False), flush=True)
        if out is not None:
            remove_empty(out / STAGING)
    state.wait_for_everyone()  # no rank exits (tearing down the group) before rank 0 is done
    return max((item[2] for item in done), default=0)


def task_id_of(line: str) -> str | None:
    """The task id a job line gives (its files are `<task_id>-<n>.png`), else None."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None
    task_id = data.get("task_id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) else None


def publish(report: dict, out: Path, task_id: str | None) -> list[Path]:
    """Move a job's staged images into `out` under the names a single-process run gives
    them (pipelines.outputs.save_image: `<task_id>-<n>.png`, else the next number and the
    seed). The PNG is re-encoded from its decoded pixels, with the same infotext."""
    from PIL import Image

    from pipelines.outputs import save_image

    final = []
    for n, staged in enumerate(report["paths"]):
        with Image.open(staged) as im:
            im.load()
            path = save_image(im, out, report["infotexts"][n], report["seeds"][n], n,
                              task_id)  # fmt: skip
        Path(staged).unlink()
        final.append(path)
    return final


def remove_empty(folder: Path) -> None:
    """Remove the staging folders left empty (a failed job's partial images stay)."""
    if not folder.is_dir():
        return
    for sub in folder.iterdir():
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()
