"""Outputs to S3, against moto's S3 server (real HTTP on loopback) started by the tests."""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest

from pipelines import GenerationRequest, ImageJob
from pipelines.storage import S3Store, StorageError, UploadingRunner
from tests.servers import IN_CI, REDIS_SERVER, free_port, moto_s3_server

SMALL = dict(num_inference_steps=2, width=64, height=64)


@pytest.fixture(scope="module")
def endpoint():
    with moto_s3_server() as url:
        yield url


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Test credentials from the environment only (the standard chain's first link)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role probe
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bucket(endpoint):
    name = f"atelier-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint)


def test_outputs_are_stored_with_their_bytes_content_type_and_metadata(endpoint, bucket, tmp_path):
    files = {"a.png": b"\x89PNG fake", "b.mp4": b"\0\0\0 ftypisom", "b.json": b'{"seed": 3}'}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    store = S3Store(bucket, prefix="/runs/", endpoint_url=endpoint, region="us-east-1")
    store.check()
    urls = [store.upload(tmp_path / n, "task-1", {"seed": 3, "model": "tiny-sd"}) for n in files]
    assert urls[0] == f"{endpoint}/{bucket}/runs/task-1/a.png"
    types = {"a.png": "image/png", "b.mp4": "video/mp4", "b.json": "application/json"}
    for name, data in files.items():
        obj = s3(endpoint).get_object(Bucket=bucket, Key=f"runs/task-1/{name}")
        assert obj["Body"].read() == data and obj["ContentType"] == types[name], name
        assert obj["Metadata"] == {"task-id": "task-1", "seed": "3", "model": "tiny-sd"}


def test_a_presigned_url_fetches_the_object(endpoint, bucket, tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"presigned bytes")
    store = S3Store(bucket, endpoint_url=endpoint, region="us-east-1", presign_seconds=300)
    url = store.upload(path, "t2")
    assert "X-Amz-Expires=300" in url and "X-Amz-Signature=" in url, url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"presigned bytes"
    assert "testing-secret" not in url and "testing-secret" not in repr(store)


def test_check_names_a_missing_bucket_and_missing_credentials(endpoint, monkeypatch):
    with pytest.raises(StorageError, match="'no-such-bucket' does not exist.*NoSuchBucket"):
        S3Store("no-such-bucket", endpoint_url=endpoint, region="us-east-1").check()
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError, match="no AWS credentials found"):
        S3Store("any-bucket", endpoint_url=endpoint, region="us-east-1").check()


def test_a_refusing_endpoint_is_retried_with_backoff_then_fails_and_keeps_the_file(tmp_path):
    path = tmp_path / "kept.png"
    path.write_bytes(b"precious")
    waits: list[float] = []
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    store = S3Store("some-bucket", endpoint_url=dead, region="us-east-1", attempts=3,
                    backoff_s=(0.5, 8.0), sleep=waits.append)  # fmt: skip
    with pytest.raises(StorageError, match="after 3 attempts.*kept locally") as failed:
        store.upload(path, "t3")
    assert waits == [0.5, 1.0], "exponential backoff between the attempts"
    assert "s3://some-bucket/t3/kept.png" in str(failed.value)
    assert path.read_bytes() == b"precious"


def test_a_permanent_error_is_not_retried(endpoint, tmp_path):
    path = tmp_path / "y.png"
    path.write_bytes(b"y")
    waits: list[float] = []
    store = S3Store("missing-bucket", endpoint_url=endpoint, region="us-east-1", sleep=waits.append)
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.upload(path, "t4")
    assert waits == [] and path.exists()


def test_jobs_upload_their_images_or_fail_keeping_them(engine, endpoint, bucket, tmp_path):
    m = engine
    store = S3Store(bucket, prefix="out", endpoint_url=endpoint, region="us-east-1")
    m.jobs.register(ImageJob, UploadingRunner(m.images, store, name=lambda job: f"job{job.id}"))
    req = GenerationRequest(prompt="a fox", seed=11, batch_size=2, **SMALL)
    job = m.submit(ImageJob(req, save_to=tmp_path / "ok"))
    result = job.result(timeout=60)
    assert result.urls == [f"{endpoint}/{bucket}/out/job{job.id}/{p.name}" for p in result.paths]
    for path, seed in zip(result.paths, [11, 12], strict=True):
        obj = s3(endpoint).get_object(Bucket=bucket, Key=f"out/job{job.id}/{path.name}")
        assert obj["Body"].read() == path.read_bytes() and obj["ContentType"] == "image/png"
        assert obj["Metadata"] == {"task-id": f"job{job.id}", "seed": str(seed), "model": "tiny-sd"}
    # The same engine with a bucket that is gone: the task fails, the PNGs stay.
    gone = S3Store("gone-bucket", endpoint_url=endpoint, region="us-east-1")
    m.jobs.register(ImageJob, UploadingRunner(m.images, gone))
    job = m.submit(ImageJob(req, save_to=tmp_path / "failed"))
    events = list(job.events(timeout=60))
    assert events[-1].kind == "error" and job.state == "failed"
    assert isinstance(events[-1].error, StorageError) and "NoSuchBucket" in str(events[-1].error)
    kept = sorted((tmp_path / "failed").glob("*.png"))
    assert len(kept) == 2 and all(p.stat().st_size > 0 for p in kept)


def test_redis_lists_the_object_urls_and_a_failed_upload_fails_the_task(
    engine, listeners, endpoint, bucket, tmp_path
):
    import redis

    from pipelines.status import RedisReporter
    from tests.servers import redis_server

    if not Path(REDIS_SERVER).exists() and not IN_CI:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    m = engine
    with redis_server(tmp_path) as server:
        reporter = RedisReporter(server.url, ttl_s=60, prefix=f"s{uuid.uuid4().hex[:8]}")
        listeners.append(reporter)
        db = redis.Redis.from_url(server.url, decode_responses=True)
        store = S3Store(bucket, endpoint_url=endpoint, region="us-east-1")
        m.jobs.register(ImageJob, UploadingRunner(m.images, store, reporter.task_name))
        req = GenerationRequest(prompt="a fox", seed=5, **SMALL)
        job = m.submit(ImageJob(req, save_to=tmp_path / "ok"))
        result = job.result(timeout=60)
        name = reporter.task_name(job)
        assert reporter.flush(10)
        h = db.hgetall(reporter.key(name))
        assert h["status"] == "done" and json.loads(h["outputs"]) == result.urls, h
        assert result.urls == [f"{endpoint}/{bucket}/{name}/{result.paths[0].name}"]
        gone = S3Store("gone-bucket", endpoint_url=endpoint, region="us-east-1")
        m.jobs.register(ImageJob, UploadingRunner(m.images, gone, reporter.task_name))
        job = m.submit(ImageJob(req, save_to=tmp_path / "failed"))
        with pytest.raises(StorageError):
            job.result(timeout=60)
        assert reporter.flush(10)
        h = db.hgetall(reporter.key(reporter.task_name(job)))
        assert h["status"] == "failed" and "NoSuchBucket" in h["error"], h
        assert "kept locally" in h["error"] and list((tmp_path / "failed").glob("*.png"))
        listeners.remove(reporter)
        reporter.close(1)
        db.close()
