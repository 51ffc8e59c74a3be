"""The job API: events in order for each kind of job, cancel, errors, admission, status."""

from __future__ import annotations

import ast
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipelines import (
    Cancelled,
    EngineSettings,
    GenerationRequest,
    ImageJob,
    LimitError,
    PipelineManager,
    VideoJob,
    VideoRequest,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_inference_steps=3, width=64, height=64)
# Long unless cancelled: about a minute here (the tests cancel it within a step).
LONG = dict(prompt="a long job", num_inference_steps=150, width=64, height=64, batch_count=100)


def new_manager(cache_root, **kw):
    return PipelineManager(
        EngineSettings(
            default_model="tiny-sd", cache_root=cache_root, **{"devices": ("cpu",), **kw}
        )
    )


def running(job):
    """Wait for `job` to take a slot and do a step; the events seen so far."""
    seen = []
    for event in job.events(timeout=60):
        seen.append(event)
        if event.kind == "progress":
            return seen
    raise AssertionError(f"job ended before running: {seen}")


def finish(job):
    """Cancel `job` and wait for its end (the tests' long jobs)."""
    job.cancel()
    with pytest.raises(Cancelled):
        job.result(timeout=60)


def test_image_job_events_arrive_in_order_and_end_with_the_result(manager):
    req = GenerationRequest(prompt="a red fox", seed=4, **SMALL, batch_count=2)
    job = manager.submit(ImageJob(req))
    # a first use of the model also hashes it (bytes, before it takes a slot)
    events = [e for e in job.events(timeout=60) if e.kind != "hashing"]
    kinds = [e.kind for e in events]
    assert kinds[0] == "started" and kinds[-1] == "result", kinds
    steps = [(e.step, e.total) for e in events if e.kind == "progress"]
    assert steps == [(k, 6) for k in range(1, 7)], steps
    assert all(e.eta is not None for e in events if e.kind == "progress" and e.step > 1)
    assert events[-2].eta == 0.0, "the last step leaves nothing to do"
    result = events[-1].result
    assert result is job.result() and job.state == "done"
    direct = manager.generate(req)
    for a, b in zip(result.images, direct.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_video_job_runs_through_the_same_api(manager):
    req = VideoRequest(prompt="a wave", num_frames=5, width=32, height=32,
                       num_inference_steps=2, seed=1)  # fmt: skip
    job = manager.submit(VideoJob(req))
    # a first use of the model also hashes it (bytes, before it takes a slot)
    kinds = [e.kind for e in job.events(timeout=60) if e.kind != "hashing"]
    assert kinds == ["started", "progress", "progress", "result"], kinds
    assert job.kind == "video" and job.result().frames.shape == (5, 32, 32, 3)
    again = manager.generate_video(req)
    assert np.array_equal(job.result().frames, again.frames)


def test_cancel_stops_a_running_job_within_a_step_and_frees_the_slot(cache_root):
    m = new_manager(cache_root)
    job = m.submit(ImageJob(GenerationRequest(**LONG, seed=1)))
    running(job)
    job.cancel()
    rest = list(job.events(timeout=60))
    assert rest[-1].kind == "cancelled" and job.state == "cancelled"
    assert len([e for e in rest if e.kind == "progress"]) <= 2, "ran on after the cancel"
    assert m.wait_idle(timeout=10)
    # The engine goes on serving.
    assert m.generate(GenerationRequest(prompt="after", seed=2, **SMALL)).seeds == [2]


def test_waiting_jobs_hear_their_place_and_a_cancelled_one_leaves_the_line(cache_root):
    m = new_manager(cache_root)
    a = m.submit(ImageJob(GenerationRequest(**LONG, seed=1)))
    running(a)
    b = m.submit(ImageJob(GenerationRequest(prompt="b", seed=2, **SMALL)))
    c = m.submit(ImageJob(GenerationRequest(prompt="c", seed=3, **SMALL)))
    b_events, c_events = b.events(timeout=60), c.events(timeout=60)
    assert next(b_events).position == 1 and next(c_events).position == 2
    status = m.status()
    assert status["waiting"] == 2 and status["slots"][0]["job"] == a.id
    assert status["slots"][0]["model"] == "tiny-sd"
    b.cancel()
    assert next(b_events).kind == "cancelled" and b.state == "cancelled"
    assert next(c_events).position == 1, "c moves up when b leaves"
    finish(a)
    after = [e.kind for e in c_events]
    assert after[0] == "started" and after[-1] == "result", after


def test_a_failure_while_running_is_an_error_event_and_the_engine_goes_on(cache_root, tmp_path):
    from pipelines.builtin import ensure_model

    models = tmp_path / "models"
    broken = models / "broken-sd"
    shutil.copytree(ensure_model("tiny-sd", cache_root), broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.write_bytes(b"not safetensors")
    m = new_manager(cache_root, models_dir=models)
    job = m.submit(ImageJob(GenerationRequest(prompt="x", model="broken-sd", seed=1, **SMALL)))
    events = list(job.events(timeout=60))
    assert events[-1].kind == "error" and job.state == "failed"
    with pytest.raises(Exception) as raised:
        job.result()
    assert raised.value is events[-1].error
    assert m.generate(GenerationRequest(prompt="fine", seed=1, **SMALL)).images


def test_bad_input_is_refused_at_submit_before_anything_is_queued(manager):
    from pipelines.errors import RequestError

    with pytest.raises(RequestError) as e:
        manager.submit(ImageJob(GenerationRequest(prompt="x", width=100)))
    assert e.value.field == "width"
    assert manager.status()["waiting"] == 0


def test_admission_refuses_the_job_past_the_queue_size(cache_root):
    m = new_manager(cache_root, queue_size=2)
    a = m.submit(ImageJob(GenerationRequest(**LONG, seed=1)))
    running(a)
    waiting = [m.submit(ImageJob(GenerationRequest(prompt=p, seed=2, **SMALL))) for p in "bc"]
    with pytest.raises(LimitError) as e:
        m.submit(ImageJob(GenerationRequest(prompt="d", seed=3, **SMALL)))
    assert e.value.field == "queue_size" and "2 jobs waiting" in e.value.rule
    for job in waiting:
        job.cancel()
    finish(a)
    # Room again: the next job is admitted and runs.
    assert m.generate(GenerationRequest(prompt="e", seed=4, **SMALL)).seeds == [4]


def test_admission_limits_one_caller_while_another_is_admitted(cache_root):
    m = new_manager(cache_root, max_jobs_per_user=2)
    a = m.submit(ImageJob(GenerationRequest(**LONG, seed=1)), caller="ann")
    running(a)
    b = m.submit(ImageJob(GenerationRequest(prompt="b", seed=2, **SMALL)), caller="ann")
    with pytest.raises(LimitError) as e:
        m.submit(ImageJob(GenerationRequest(prompt="c", seed=3, **SMALL)), caller="ann")
    assert e.value.field == "max_jobs_per_user" and "limit is 2" in e.value.rule
    other = m.submit(ImageJob(GenerationRequest(prompt="d", seed=4, **SMALL)), caller="bob")
    finish(a)
    assert b.result(timeout=60).seeds == [2] and other.result(timeout=60).seeds == [4]


def test_admission_refuses_work_over_the_budget_naming_budget_and_cost(cache_root):
    budget = 64 * 64 * 3 * 2  # two 64x64 images of 3 steps
    m = new_manager(cache_root, max_work=budget)
    ok = m.generate(GenerationRequest(prompt="fits", seed=1, batch_size=2, **SMALL))
    assert len(ok.images) == 2
    with pytest.raises(LimitError) as e:
        m.submit(ImageJob(GenerationRequest(prompt="too much", seed=1, batch_size=3, **SMALL)))
    assert e.value.field == "max_work"
    assert f"{64 * 64 * 3 * 3:,}" in e.value.rule and f"{budget:,}" in e.value.rule
    video = VideoRequest(prompt="v", num_frames=5, width=32, height=32, num_inference_steps=2)
    assert m.generate_video(video).frames.shape[0] == 5  # 32 x 32 x 2 x 5 = 10,240: fits
    with pytest.raises(LimitError) as e:  # x 29 frames = 59,392: over
        m.submit(VideoJob(replace(video, num_frames=29)))
    assert "59,392" in e.value.rule


def _relative_imports(path: Path, modules: set[str]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            out.update(n.split(".")[0] for n in names if n and n.split(".")[0] in modules)
    return out


def test_no_import_cycle_in_the_engine():
    """Module-level and function-level imports alike (a lazy import is still a cycle)."""
    files = {p.stem: p for p in (ROOT / "pipelines").glob("*.py")}
    edges = {m: _relative_imports(p, set(files)) for m, p in files.items()}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt == path[0]:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > path[0]:  # each cycle once, from its smallest name
                visit(nxt, [*path, nxt])

    for start in sorted(edges):
        visit(start, [start])
    assert not cycles, cycles


def test_no_private_names_imported_across_engine_modules():
    bad = []
    for path in (ROOT / "pipelines").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                bad += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad
