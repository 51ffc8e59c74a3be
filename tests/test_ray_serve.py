"""The Ray Serve backend against a real in-process cluster (one per module:
`ray.init(num_cpus=2)`, the Serve app of pipelines/serve.py with 2 CPU replicas).

A front end's manager with `use_ray` must behave as the local engine: the same
pixels (torch pinned to 1 thread on both sides), the same events, cancel within a
step on the replica, and faults that fail only the job they hit.
Slow (a cluster start is ~15-40 s here): marked `slow`; skipped without `ray`.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from pipelines import EngineSettings, PipelineManager  # noqa: E402
from pipelines.errors import Cancelled  # noqa: E402
from pipelines.image_job import ImageJob  # noqa: E402
from pipelines.jobs import Job  # noqa: E402
from pipelines.outputs import read_png_parameters  # noqa: E402
from pipelines.remote import RayBackend, RayOptions, ReplicaError, use_ray  # noqa: E402
from pipelines.request import GenerationRequest  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
MODELS = ("tiny-sd", "tiny-sdxl")
VIDEO = {"prompt": "a boat on a lake", "model": "tiny-wan", "num_frames": 5, "width": 32,
         "height": 32, "num_inference_steps": 2, "seed": 21}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(cache_root: Path) -> Iterator[None]:
    from pipelines.builtin import ensure_model
    from pipelines.serve import APP_NAME, build_app

    for name in (*MODELS, "tiny-wan"):  # built once here, not by two replicas at a time
        ensure_model(name, cache_root)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).parents[1])}})  # fmt: skip
    serve.start(proxy_location="Disabled")
    no_folders = {k: "" for k in ("models_dir", "loras_dir", "controlnets_dir", "embeddings_dir",
                                  "vae_dir", "annotators_dir")}  # fmt: skip
    settings = {**no_folders, "cache_dir": str(cache_root), "devices": ["cpu"], "preview_every": 2}
    app = build_app({"settings": settings, "num_replicas": 2, "num_cpus": 1, "max_models": 2,
                     "torch_threads": 1})  # fmt: skip
    serve.run(app, name=APP_NAME, route_prefix=None)
    yield
    serve.shutdown()
    ray.shutdown()


def _settings(cache_root: Path, **more: object) -> EngineSettings:
    """A front end's settings: its default model is tiny-sd; no folders."""
    values: dict = {"default_model": "tiny-sd", "devices": ("cpu",), "cache_root": cache_root,
                    "loras_dir": None, "models_dir": None, **more}  # fmt: skip
    return EngineSettings(**values)


def _front_end(cache_root: Path, **options: object) -> tuple[PipelineManager, RayBackend]:
    m = PipelineManager(_settings(cache_root))
    return m, use_ray(m, RayOptions(**options))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def remote(cluster: None, cache_root: Path) -> tuple[PipelineManager, RayBackend]:
    return _front_end(cache_root, wait_s=120.0)


def _req(model: str = "tiny-sd", steps: int = 2, seed: int = 1, **kw: object) -> GenerationRequest:
    return GenerationRequest(prompt="a red fox", model=model, width=64, height=64,
                             num_inference_steps=steps, seed=seed, **kw)  # fmt: skip


def _until_step(job: Job, step: int) -> None:
    """Follow `job`'s events until a progress event of at least `step`."""
    for event in job.events(timeout=120):
        assert event.kind not in ("result", "error", "cancelled"), event
        if event.kind == "progress" and event.step >= step:
            return


def test_pixels_and_infotext_equal_the_local_engine(manager, remote):
    import torch

    torch.set_num_threads(1)  # the replicas run with torch_threads=1 too
    req = _req(steps=3, seed=11, negative_prompt="blurry")
    local = manager.generate(req)
    m, _ = remote
    got = m.submit(ImageJob(req)).result(timeout=180)
    assert got.slot.startswith("ray:") and got.seeds == local.seeds
    assert got.infotexts == local.infotexts
    assert np.array_equal(np.asarray(got.images[0]), np.asarray(local.images[0]))


def test_events_stream_from_the_replica(remote):
    m, _ = remote
    job = m.submit(ImageJob(_req(steps=4)), caller="ann")
    events = list(job.events(timeout=180))
    kinds = [e.kind for e in events]
    assert kinds[-1] == "result" and "started" in kinds, kinds
    steps = [(e.step, e.total) for e in events if e.kind in ("progress", "preview")]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    previews = [e for e in events if e.kind == "preview"]  # the replica's preview_every: 2
    assert [e.step for e in previews] == [2] and previews[0].preview.width > 0
    assert next(e for e in events if e.kind == "started").slot in ("ray#0", "ray#1")
    assert events[kinds.index("progress") + 2].eta is not None  # from measured steps


def test_models_stay_on_the_replicas_that_hold_them(remote):
    m, backend = remote
    served: dict[str, set[str]] = {name: set() for name in MODELS}
    for i in range(6):
        name = MODELS[i % 2]
        result = m.submit(ImageJob(_req(name, seed=i))).result(timeout=180)
        served[name].add(result.slot.split("/")[0])
    assert all(len(replicas) == 1 for replicas in served.values()), served
    for stats in backend.replicas.values():  # no model was loaded twice on a replica
        assert stats["loads"] == len(stats["models"]), backend.replicas


def test_stop_cancels_the_job_on_the_replica(remote):
    m, backend = remote
    job = m.submit(ImageJob(_req(steps=150, seed=3, batch_count=10)))
    _until_step(job, 2)
    replica = backend.running[job.id]["replica"]
    before = backend.replicas.get(replica, {}).get("cancelled", 0)
    job.cancel()
    with pytest.raises(Cancelled):
        job.result(timeout=30)
    # The next job on that model runs there; the replica's engine counted the long job
    # cancelled (unwired, it would still be running its 1,500 steps, or count it done).
    # (Serve may still count the cancelled request for a moment and send the next job
    # to the other replica: a few short jobs until one lands there.)
    for seed in range(4, 10):
        after = m.submit(ImageJob(_req(seed=seed))).result(timeout=120)
        if after.slot.startswith(f"ray:{replica[:8]}"):
            break
    assert after.slot.startswith(f"ray:{replica[:8]}")
    assert backend.replicas[replica]["cancelled"] == before + 1


def test_a_killed_replica_fails_only_its_job_and_no_replica_is_a_bounded_wait(remote, cache_root):
    m, backend = remote
    doomed = m.submit(ImageJob(_req("tiny-sd", steps=150, seed=5, batch_count=100)))
    _until_step(doomed, 1)
    steps: list[tuple[float, int]] = []  # (when, step) of the other job's progress
    other = m.submit(ImageJob(_req("tiny-sdxl", steps=150, seed=6, batch_count=100)),
                     on_event=lambda e: steps.append((time.monotonic(), e.step)))  # fmt: skip
    _until_step(other, 1)
    a, b = backend.running[doomed.id], backend.running[other.id]
    assert a["replica"] != b["replica"]  # one request at a time per replica

    # Both replicas busy: a front end whose jobs find no replica waits, then errors.
    m2, _ = _front_end(cache_root, wait_s=1.0, lanes=1)
    waiting = m2.submit(ImageJob(_req(seed=7)))
    kinds = [e.kind for e in waiting.events(timeout=30)]
    assert "queued" in kinds and "started" not in kinds and kinds[-1] == "error", kinds
    with pytest.raises(ReplicaError, match="took the job within 1 s"):
        waiting.result()

    os.kill(a["pid"], signal.SIGKILL)
    with pytest.raises(ReplicaError, match="failed or died"):
        doomed.result(timeout=60)
    failed_at = time.monotonic()
    for _ in other.events(timeout=60):  # the other job still makes progress
        if any(when > failed_at for when, _ in steps):
            break
    assert not other.done
    # The survivor is busy with `other`: the next job can only run on the replacement
    # that Serve starts for the dead replica (it waits for it, within wait_s).
    fresh = m.submit(ImageJob(_req(seed=8))).result(timeout=180)
    assert fresh.images and fresh.slot.split("/")[0] not in (
        f"ray:{a['replica'][:8]}", f"ray:{b['replica'][:8]}")  # fmt: skip
    assert not other.done
    other.cancel()
    with pytest.raises(Cancelled):
        other.result(timeout=30)


def test_cli_generate_with_the_ray_engine_writes_pngs_with_infotext(
    remote, cache_root, tmp_path, capsys
):
    import json

    from app import main

    out = tmp_path / "out"
    code = main(["--engine", "ray", "--ray-address", "auto", "--cache-dir", str(cache_root),
                 "--default-model", "tiny-sd",
                 "--models-dir", "", "--loras-dir", "", "generate", "--prompt", "a red fox",
                 "--steps", "2", "--width", "64", "--height", "64", "--seed", "9",
                 "--out", str(out), "--json"])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    path = Path(report["paths"][0])
    assert path.parent == out and "Seed: 9" in read_png_parameters(path)


def test_a_model_the_replicas_do_not_have_is_a_field_error(cluster, cache_root, tmp_path):
    import shutil

    from pipelines.builtin import ensure_model
    from pipelines.errors import RequestError

    models = tmp_path / "models"  # this front end has a model folder the replicas lack
    shutil.copytree(ensure_model("tiny-sd", cache_root), models / "only-here")
    m = PipelineManager(_settings(cache_root, models_dir=models))
    use_ray(m, RayOptions(wait_s=120.0))
    with pytest.raises(RequestError) as e:
        m.submit(ImageJob(_req("only-here"))).result(timeout=120)
    assert e.value.field == "model" and "only-here" in e.value.rule


def test_the_studio_runs_on_the_ray_engine(remote, tmp_path):
    from gradio_client import Client

    from tests.ui_support import free_port
    from ui.studio import build_studio

    m, _ = remote
    demo, assets = build_studio(m, tmp_path / "outputs")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1",
                            server_port=free_port(), quiet=True, **assets)  # fmt: skip
    try:
        paths, infotext, seed = Client(url, verbose=False).predict(
            prompt="a red fox", seed=12, steps=2, width=64, height=64, api_name="/generate"
        )
    finally:
        demo.close()
    assert seed == 12 and infotext.startswith("a red fox\n") and len(paths) == 1
    assert [p.name for p in (tmp_path / "outputs").iterdir()]  # saved by the front end
    assert all(s.cache.names() == [] for s in m.slots)  # no model in the studio's process


def test_a_video_job_runs_on_a_replica_with_the_same_frames(manager, remote):
    from pipelines.video import VideoJob, VideoRequest

    req = VideoRequest(**VIDEO)  # type: ignore[arg-type]
    local = manager.generate_video(req)
    m, _ = remote
    got = m.submit(VideoJob(req)).result(timeout=180)
    assert got.slot.startswith("ray:") and got.seed == local.seed
    assert got.frames.shape == local.frames.shape and np.array_equal(got.frames, local.frames)


def test_admission_limits_apply_before_a_job_is_sent(cluster, cache_root):
    from pipelines.errors import LimitError

    m = PipelineManager(_settings(cache_root, max_work=64 * 64 * 2))
    backend = use_ray(m, RayOptions(wait_s=120.0))
    with pytest.raises(LimitError) as e:
        m.submit(ImageJob(_req(steps=3)))
    assert e.value.field == "max_work" and not backend.running
