"""Data-parallel batch runs (ui/cli_parallel.py): a jobs file split over 2 CPU processes by
torchrun leaves what a single-process run leaves: the same files (names and bytes: both
sides run one torch thread, as conftest pins it and torchrun sets it) and one result
line per job, in job order, each job run once by one of the two ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JOBS = [
    {"prompt": "a red fox", "steps": 2, "width": 64, "height": 64, "seed": 1},
    {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 2, "task_id": "cat"},
    {"prompt": "bad", "steps": -1},  # a bad job: its line says why, the rest still run
    {"prompt": "a dog", "steps": 2, "width": 64, "height": 64, "seed": 3, "batch_size": 2},
    {"prompt": "a tree", "steps": 2, "width": 64, "height": 64, "seed": 4},
]


@pytest.fixture(scope="module")
def runs(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same jobs file run in this process (run_jobs) and by torchrun over 2 processes."""
    from pipelines import EngineSettings, PipelineManager
    from ui.cli_jobs import run_jobs

    base = tmp_path_factory.mktemp("dp")
    jobs = base / "jobs.jsonl"
    jobs.write_text("".join(json.dumps(j) + "\n" for j in JOBS))
    single, parallel = base / "single", base / "parallel"
    manager = PipelineManager(EngineSettings(default_model="tiny-sd", devices=("cpu",),
                                             cache_root=cache_root, loras_dir=None,
                                             models_dir=None))  # fmt: skip
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        single_code = run_jobs(manager, jobs, single)  # also builds tiny-sd for the ranks
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", str(ROOT / "app.py"), "--cache-dir", str(cache_root), "--models-dir", "",
           "--default-model", "tiny-sd",
           "generate", "--jobs", str(jobs), "--out", str(parallel)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=base)
    return {"single": single, "parallel": parallel, "single_code": single_code,
            "single_lines": buf.getvalue().splitlines(), "done": done}  # fmt: skip


def _lines(runs: dict) -> list[dict]:
    return [json.loads(line) for line in runs["done"].stdout.splitlines()]


def test_one_line_per_job_in_job_order_each_job_once(runs: dict) -> None:
    lines = _lines(runs)
    assert [r["job"] for r in lines] == list(range(len(JOBS))), runs["done"].stderr[-2000:]
    assert {r["rank"] for r in lines} == {0, 1}, "both processes ran jobs"
    assert [r["ok"] for r in lines] == [True, True, False, True, True]
    assert lines[2]["field"] == "num_inference_steps"


def test_the_exit_code_is_the_worst_job_s_as_in_one_process(runs: dict) -> None:
    assert runs["single_code"] == 2
    # torchrun turns a process's exit code 2 into its own failure (1): the bad job shows
    assert runs["done"].returncode != 0
    assert "exitcode  : 2" in runs["done"].stderr


def test_the_same_files_as_a_single_process_run(runs: dict) -> None:
    single = sorted(p.name for p in runs["single"].iterdir())
    parallel = sorted(p.name for p in runs["parallel"].iterdir())  # no staging folder left
    assert parallel == single == sorted(["00000-1.png", "cat-0.png", "00001-3.png",
                                         "00002-4.png", "00003-4.png"])  # fmt: skip
    for name in single:
        a, b = runs["single"] / name, runs["parallel"] / name
        assert a.read_bytes() == b.read_bytes(), f"{name}: pixels or infotext differ"


def test_lines_match_the_single_run_apart_from_time_rank_and_folder(runs: dict) -> None:
    def comparable(report: dict, folder: Path) -> dict:
        out = {k: v for k, v in report.items() if k not in ("seconds", "rank")}
        out["paths"] = [str(Path(p).relative_to(folder)) for p in report.get("paths", [])]
        return out

    single = [comparable(json.loads(x), runs["single"]) for x in runs["single_lines"]]
    parallel = [comparable(r, runs["parallel"]) for r in _lines(runs)]
    for a, b in zip(parallel, single, strict=True):
        assert a == b, {
            k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)
        }


def test_the_launcher_is_detected_from_world_size() -> None:
    from ui.cli_parallel import launched

    assert launched({"WORLD_SIZE": "2", "RANK": "1"})
    assert not launched({"WORLD_SIZE": "1"})
    assert not launched({})


def test_without_a_launcher_the_run_is_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from ui.cli_parallel import parallel_state

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert parallel_state(argparse.Namespace()) is None
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: no group needed
    assert parallel_state(argparse.Namespace()) is None
