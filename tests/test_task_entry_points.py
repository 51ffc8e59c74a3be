"""Redis task status and S3 outputs wired into every entry point, against real servers.

A real `redis-server` and moto's S3 server (both on loopback, started here) serve
three front ends: the engine's job API (`PipelineManager.attach`), the command line
(`python app.py generate ... --task-id T --redis-url ... --s3-bucket ...`, and
`--jobs`, in subprocesses: the last states must be in Redis when the process has
exited), and a launched studio driven by gradio_client (`/generate` with a task id,
`/task`, a cancel). Redis hashes are read with the `redis` client, objects with boto3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest
import redis

from pipelines import Cancelled, GenerationRequest, ImageJob
from pipelines.errors import LimitError, RequestError
from pipelines.jobs import Limits
from pipelines.status import RedisReporter
from pipelines.storage import S3Store, StorageError
from tests.servers import IN_CI, REDIS_SERVER, free_port, moto_s3_server, redis_server

if not Path(REDIS_SERVER).exists():
    if IN_CI:  # .ci/run installs it; missing there is a failure
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    pytest.skip("redis-server is not installed (apt-get install -y redis-server)",
                allow_module_level=True)  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_inference_steps=2, width=64, height=64)
AWS = {"AWS_ACCESS_KEY_ID": "testing-key", "AWS_SECRET_ACCESS_KEY": "testing-secret",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def aws_env(tmp_path_factory) -> Iterator[None]:
    """Test credentials from the environment only (the AWS chain's first link)."""
    empty = tmp_path_factory.mktemp("aws")
    env = {**AWS, "AWS_CONFIG_FILE": str(empty / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(empty / "credentials")}  # fmt: skip
    old = {k: os.environ.get(k) for k in [*env, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(env)
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(k, None)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as s:
        yield s


@pytest.fixture(scope="module")
def endpoint():
    with moto_s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def bucket(endpoint) -> str:
    name = f"atelier-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def db(server):
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def wired(cache_root, server, endpoint, bucket):
    """An engine with Redis and S3 attached, as app.py attaches them from the settings."""
    from pipelines import EngineSettings, PipelineManager

    m = PipelineManager(EngineSettings(default_model="tiny-sd", devices=("cpu",),
                                       cache_root=cache_root, loras_dir=None,
                                       models_dir=None))  # fmt: skip
    values = {"redis_url": server.url, "redis_ttl_s": 600, "s3_bucket": bucket,
              "s3_prefix": "runs", "s3_endpoint_url": endpoint, "s3_region": "us-east-1",
              "s3_presign_seconds": 0}  # fmt: skip
    m.attach(RedisReporter.from_settings(values), S3Store.from_settings(values))
    yield m
    m.close(2)


def stored(endpoint: str, bucket: str, key: str) -> dict[str, Any]:
    return boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=bucket, Key=key)


# -- the engine's job API: what every front end goes through -----------------------
def test_a_job_is_done_in_redis_with_its_s3_urls_and_the_objects_hold_its_files(
    wired, db, endpoint, bucket, tmp_path
):
    req = GenerationRequest(prompt="a red fox", seed=7, batch_size=2, **SMALL)
    job = wired.submit(ImageJob(req, save_to=tmp_path), caller="ann", task_id="fox-1")
    result = job.result(timeout=120)
    name = wired.task_name(job)
    assert name == "ann:fox-1", "a remote caller's task id is namespaced"
    assert [p.name for p in result.paths] == ["fox-1-0.png", "fox-1-1.png"], "named by the id"
    assert result.urls == [f"{endpoint}/{bucket}/runs/ann%3Afox-1/{p.name}" for p in result.paths]
    assert wired.reporter.flush(10)
    h = db.hgetall(wired.reporter.key(name))
    assert h["status"] == "done" and float(h["progress"]) == 1.0 and h["step"] == "2", h
    assert json.loads(h["outputs"]) == result.urls and h["model"] == "tiny-sd"
    for path, seed in zip(result.paths, [7, 8], strict=True):
        obj = stored(endpoint, bucket, f"runs/ann:fox-1/{path.name}")
        assert obj["Body"].read() == path.read_bytes() and obj["ContentType"] == "image/png"
        assert obj["Metadata"] == {"task-id": "ann:fox-1", "seed": str(seed), "model": "tiny-sd"}


def test_refused_requests_are_failed_tasks_naming_the_field(wired, db):
    with pytest.raises(RequestError):
        wired.submit(ImageJob(GenerationRequest(prompt="x", width=65, height=64)),
                     caller="bob", task_id="bad-1")  # fmt: skip
    old = wired.jobs.limits
    wired.jobs.limits = Limits(max_work=100)
    try:
        with pytest.raises(LimitError):
            wired.submit(ImageJob(GenerationRequest(prompt="x", **SMALL)), task_id="big-1")
    finally:
        wired.jobs.limits = old
    with pytest.raises(RequestError, match="task_id"):
        wired.submit(ImageJob(GenerationRequest(prompt="x", **SMALL)), task_id="../etc")
    assert wired.reporter.flush(10)
    bad = db.hgetall(wired.reporter.key("bob:bad-1"))
    assert bad["status"] == "failed" and bad["error_field"] == "width", bad
    assert bad["caller"] == "bob" and "width" in bad["error"]
    big = db.hgetall(wired.reporter.key("big-1"))
    assert big["status"] == "failed" and big["error_field"] == "max_work", big
    assert db.hgetall(wired.reporter.key("../etc")) == {}, "a bad id names no key"


def test_an_upload_that_fails_fails_the_task_and_keeps_the_file(wired, db, endpoint, tmp_path):
    """Injected failure: a bucket that is gone (a real NoSuchBucket from the server)."""
    good = wired.store
    wired.attach(store=S3Store("gone-bucket", endpoint_url=endpoint, region="us-east-1"))
    try:
        job = wired.submit(ImageJob(GenerationRequest(prompt="kept", seed=3, **SMALL),
                                    save_to=tmp_path), task_id="lost-1")  # fmt: skip
        with pytest.raises(StorageError, match="NoSuchBucket"):
            job.result(timeout=120)
    finally:
        wired.attach(store=good)
    assert wired.reporter.flush(10)
    h = db.hgetall(wired.reporter.key("lost-1"))
    assert h["status"] == "failed" and "kept locally" in h["error"], h
    kept = tmp_path / "lost-1-0.png"
    assert kept.is_file() and kept.stat().st_size > 0


def test_a_wrong_bucket_stops_the_start_with_one_line_naming_s3_bucket(endpoint, capsys):
    import app

    code = app.main(["--s3-bucket", "no-such-bucket", "--s3-endpoint-url", endpoint,
                     "--s3-region", "us-east-1", "--outputs-dir", "off", "generate",
                     "--prompt", "x"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: s3_bucket: ") and "outputs_dir is off" in err
    code = app.main(["--s3-bucket", "no-such-bucket", "--s3-endpoint-url", endpoint,
                     "--s3-region", "us-east-1", "models"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "error: s3_bucket: S3 bucket 'no-such-bucket' does not exist" in err, err
    assert "testing-secret" not in err
    code = app.main(["--redis-url", "http://nope", "models"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: redis_url: "), err


# -- the command line (subprocesses: state written before exit) --------------------
def cli(cache_root: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **AWS, "ATELIER_CACHE_DIR": str(cache_root), "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--models-dir", "",
                             "--loras-dir", "", "--default-model", "tiny-sd", *args],
                            cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_the_cli_reports_its_task_and_uploads_and_jobs_files_too(
    cache_root, server, endpoint, bucket, db, tmp_path
):
    prefix = ["--redis-url", server.url]
    s3 = ["--s3-bucket", bucket, "--s3-endpoint-url", endpoint, "--s3-region", "us-east-1",
          "--s3-prefix", "cli"]  # fmt: skip
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(x) for x in [
        {"prompt": "one", "steps": 2, "width": 64, "height": 64, "seed": 1, "task_id": "j-ok"},
        {"prompt": "two", "steps": 2, "width": 65, "height": 64, "task_id": "j-bad"},
        {"prompt": "three", "steps": 2, "width": 64, "height": 64, "init_image": "missing.png",
         "task_id": "j-file"}]))  # fmt: skip
    one = cli(cache_root, tmp_path, *prefix, *s3, "generate", "--prompt", "a red fox",
              "--steps", "2", "--width", "64", "--height", "64", "--seed", "5",
              "--task-id", "cli-1", "--out", str(tmp_path / "one"), "--json")  # fmt: skip
    many = cli(cache_root, tmp_path, *prefix, "generate", "--jobs", str(jobs),
               "--out", str(tmp_path / "many"))  # fmt: skip
    out, err = one.communicate(timeout=300)
    assert one.returncode == 0, err
    report = json.loads(out)
    assert report["task_id"] == "cli-1", "the CLI's own id is not namespaced"
    path = Path(report["paths"][0])
    assert report["urls"] == [f"{endpoint}/{bucket}/cli/cli-1/{path.name}"]
    obj = stored(endpoint, bucket, f"cli/cli-1/{path.name}")
    assert obj["Body"].read() == path.read_bytes() and obj["Metadata"]["seed"] == "5"
    h = db.hgetall("atelier:task:cli-1")  # the process has exited: written before exit
    assert h["status"] == "done" and json.loads(h["outputs"]) == report["urls"], h
    assert h["caller"] == "local" and float(h["progress"]) == 1.0
    out, err = many.communicate(timeout=300)
    assert many.returncode == 2, err
    assert [json.loads(x)["ok"] for x in out.splitlines()] == [True, False, False]
    assert db.hget("atelier:task:j-ok", "status") == "done"
    bad = db.hgetall("atelier:task:j-bad")
    assert bad["status"] == "failed" and bad["error_field"] == "width", bad
    missing = db.hgetall("atelier:task:j-file")
    assert missing["status"] == "failed" and missing["error_field"] == "init_image", missing


def test_a_video_is_uploaded_and_a_missing_redis_loses_no_output(
    cache_root, server, endpoint, bucket, db, tmp_path
):
    s3 = ["--s3-bucket", bucket, "--s3-endpoint-url", endpoint, "--s3-region", "us-east-1"]
    video = cli(cache_root, tmp_path, "--redis-url", server.url, *s3, "video", "--prompt",
                "a wave", "--frames", "5", "--width", "32", "--height", "32", "--steps", "2",
                "--seed", "4", "--task-id", "clip-1", "--out", str(tmp_path / "v"),
                "--json")  # fmt: skip
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    lonely = cli(cache_root, tmp_path, "--redis-url", nowhere, "generate", "--prompt", "alone",
                 "--steps", "2", "--width", "64", "--height", "64", "--task-id", "alone-1",
                 "--out", str(tmp_path / "alone"), "--json")  # fmt: skip
    out, err = video.communicate(timeout=300)
    assert video.returncode == 0, err
    report = json.loads(out)
    mp4, sidecar = (Path(p) for p in report["paths"])
    assert report["task_id"] == "clip-1"
    assert report["urls"] == [f"{endpoint}/{bucket}/clip-1/{p.name}" for p in (mp4, sidecar)]
    obj = stored(endpoint, bucket, f"clip-1/{mp4.name}")
    assert obj["ContentType"] == "video/mp4" and obj["Body"].read() == mp4.read_bytes()
    assert obj["Metadata"] == {"task-id": "clip-1", "seed": "4", "model": "tiny-wan"}
    assert stored(endpoint, bucket, f"clip-1/{sidecar.name}")["ContentType"] == "application/json"
    h = db.hgetall("atelier:task:clip-1")
    assert h["status"] == "done" and h["kind"] == "video", h
    assert json.loads(h["outputs"]) == report["urls"]
    out, err = lonely.communicate(timeout=300)
    assert lonely.returncode == 0, err
    assert Path(json.loads(out)["paths"][0]).is_file(), "the job ran and its file is kept"
    assert "unreachable" in err and "task status not written" in err, err


# -- the studio, driven by gradio_client -------------------------------------------
@pytest.fixture(scope="module")
def studio(cache_root, server, endpoint, bucket, tmp_path_factory):
    from tests.ui_support import launched_studio

    with launched_studio(cache_root, tmp_path_factory.mktemp("studio-out")) as demo:
        m = demo.atelier_context.manager
        values = {"redis_url": server.url, "redis_ttl_s": 600, "s3_bucket": bucket,
                  "s3_prefix": "web", "s3_endpoint_url": endpoint,
                  "s3_region": "us-east-1"}  # fmt: skip
        m.attach(RedisReporter.from_settings(values), S3Store.from_settings(values))
        yield demo
        m.close(2)


def test_the_studio_api_reports_uploads_refuses_and_cancels(studio, db, endpoint, bucket,
                                                            tmp_path):  # fmt: skip
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    m = studio.atelier_context.manager
    client = Client(studio.test_url, verbose=False)
    files, _, seed = client.predict(prompt="a fox", seed=9, task_id="web-1", steps=2, width=64,
                                    height=64, api_name="/generate")  # fmt: skip
    name = "addr:127.0.0.1:web-1"
    state = client.predict(task_id="web-1", api_name="/task")
    assert state["task"] == name and state["status"] == "done", state
    assert m.reporter.flush(10)
    h = db.hgetall(f"atelier:task:{name}")
    assert h["status"] == "done" and h["caller"] == "addr:127.0.0.1", h
    urls = json.loads(h["outputs"])
    assert urls == [f"{endpoint}/{bucket}/web/{quote(name)}/web-1-0.png"], urls
    assert state["outputs"] == urls
    obj = stored(endpoint, bucket, f"web/{name}/web-1-0.png")
    assert obj["Body"].read() == Path(files[0]).read_bytes() and seed == 9
    with pytest.raises(AppError, match="width"):
        client.predict(prompt="x", width=65, task_id="web-2", api_name="/generate")
    not_an_image = tmp_path / "not-an-image.png"
    not_an_image.write_text("hello")
    with pytest.raises(AppError, match="init_image"):  # refused by the API, before the engine
        client.predict(prompt="x", init_image=handle_file(str(not_an_image)), task_id="web-4",
                       api_name="/generate")  # fmt: skip
    with pytest.raises(AppError, match="no task 'web-9' of yours"):
        client.predict(task_id="web-9", api_name="/task")
    # no task_id: the server names the task; a blank /task returns it, by that name too
    files, _, _ = client.predict(prompt="a fox", seed=10, steps=2, width=64, height=64,
                                 api_name="/generate")  # fmt: skip
    latest = client.predict(task_id="", api_name="/task")
    assert latest["status"] == "done" and latest["task"] not in (name, "addr:127.0.0.1:web-4")
    assert latest["outputs"][0].endswith(Path(files[0]).name), latest
    again = client.predict(task_id=latest["task"], api_name="/task")
    assert again["task"] == latest["task"] and again["outputs"] == latest["outputs"]
    assert m.reporter.latest("addr:10.9.9.9") is None, "another caller has no latest task"
    # a cancel from the client: Gradio closes the handler, which cancels the engine's job
    stepping: list[Any] = []
    started = threading.Event()

    def on_step(job: Any, event: Any) -> None:  # in the job's thread
        if job.task_id == "web-3" and event.kind == "progress" and not started.is_set():
            stepping.append(job)
            started.set()

    m.jobs.add_listener(on_step)
    job = client.submit(prompt="long", seed=1, task_id="web-3", steps=150, batch_count=20,
                        width=64, height=64, api_name="/generate")  # fmt: skip
    assert started.wait(120), "the job never made a step"
    running = stepping[0]
    job.cancel()
    with pytest.raises(Cancelled):
        running.result(timeout=120)
    assert m.reporter.flush(10)
    refused = db.hgetall("atelier:task:addr:127.0.0.1:web-2")
    assert refused["status"] == "failed" and refused["error_field"] == "width", refused
    bad_file = db.hgetall("atelier:task:addr:127.0.0.1:web-4")
    assert bad_file["status"] == "failed" and bad_file["error_field"] == "init_image", bad_file
    cancelled = db.hgetall("atelier:task:addr:127.0.0.1:web-3")
    assert cancelled["status"] == "cancelled" and float(cancelled["progress"]) < 1, cancelled


def test_redis_killed_mid_job_the_upload_and_the_job_finish_and_redis_catches_up(
    cache_root, endpoint, bucket, tmp_path, caplog
):
    """Through an attached engine: Redis dies at step 2 of a job; the job ends `done`
    with its objects in S3, and its final state (with their URLs) is written when Redis
    is back (on the same port, empty: no persistence)."""
    import logging

    from pipelines import EngineSettings, PipelineManager

    m = PipelineManager(EngineSettings(default_model="tiny-sd", devices=("cpu",),
                                       cache_root=cache_root, loras_dir=None,
                                       models_dir=None))  # fmt: skip
    with redis_server(tmp_path) as own:
        values = {"redis_url": own.url, "redis_ttl_s": 600, "s3_bucket": bucket,
                  "s3_prefix": "kill", "s3_endpoint_url": endpoint,
                  "s3_region": "us-east-1"}  # fmt: skip

        def kill_at_step_2(job: Any, event: Any) -> None:  # before the reporter hears step 2
            if event.kind == "progress" and event.step == 2:
                own.kill()

        m.jobs.add_listener(kill_at_step_2)  # listeners run in order: this one first
        m.attach(RedisReporter(own.url, 600, retry_s=(0.05, 0.2)), S3Store.from_settings(values))
        caplog.set_level(logging.WARNING, logger="pipelines.status")
        req = GenerationRequest(prompt="a wave", seed=2, num_inference_steps=5, width=64,
                                height=64)  # fmt: skip
        job = m.submit(ImageJob(req, save_to=tmp_path / "out"), task_id="wave-1")
        result = job.result(timeout=120)
        assert job.state == "done" and result.paths[0].is_file() and len(result.urls) == 1
        obj = stored(endpoint, bucket, f"kill/wave-1/{result.paths[0].name}")
        assert obj["Body"].read() == result.paths[0].read_bytes()
        assert not m.reporter.flush(1.0) and m.reporter.down, "Redis is away"
        assert any("unreachable" in r.getMessage() for r in caplog.records)
        own.start()
        assert m.close(10), "the latest state is written once Redis answers"
        db = redis.Redis.from_url(own.url, decode_responses=True)
        h = db.hgetall("atelier:task:wave-1")
        db.close()
    assert h["status"] == "done" and json.loads(h["outputs"]) == result.urls, h


def test_the_studios_video_api_uploads_the_video_and_its_json(studio, db, endpoint, bucket):
    from gradio_client import Client

    client = Client(studio.test_url, verbose=False)
    video, sidecar, seed = client.predict(prompt="a wave", frames=5, width=32, height=32,
                                          steps=2, seed=4, api_name="/video")  # fmt: skip
    m = studio.atelier_context.manager
    assert m.reporter.flush(10)
    mine = ("video", "addr:127.0.0.1")
    tasks = [
        k for k in db.keys("atelier:task:*") if (db.hget(k, "kind"), db.hget(k, "caller")) == mine
    ]
    assert len(tasks) == 1, tasks
    h = db.hgetall(tasks[0])
    assert h["status"] == "done", h
    urls = json.loads(h["outputs"])
    assert [u.rsplit("/", 1)[1] for u in urls] == [f"video-{seed}.mp4", f"video-{seed}.mp4.json"]
    name = tasks[0].removeprefix("atelier:task:")
    obj = stored(endpoint, bucket, f"web/{name}/video-{seed}.mp4")
    assert obj["ContentType"] == "video/mp4" and obj["Body"].read() == Path(video).read_bytes()
    assert obj["Metadata"]["seed"] == "4"
