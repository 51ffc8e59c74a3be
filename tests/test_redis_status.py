"""Task status in Redis, against a real redis-server started by the tests.

The engine runs real jobs on the tiny built-in SD model; each test reads the task's
hash and its channels with the `redis` client.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from pipelines import Cancelled, GenerationRequest, ImageJob
from pipelines.errors import RequestError
from pipelines.status import RedisReporter, task_key
from tests.servers import IN_CI, REDIS_SERVER, redis_server

if not Path(REDIS_SERVER).exists():
    if IN_CI:  # in CI a missing server is a failure, not a skip (.ci/run installs it)
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    pytest.skip("redis-server is not installed (apt-get install -y redis-server)",
                allow_module_level=True)  # fmt: skip

SMALL = dict(num_inference_steps=3, width=64, height=64)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as s:
        yield s


@pytest.fixture
def reporter(server, listeners):
    r = RedisReporter(server.url, ttl_s=600, prefix=f"t{uuid.uuid4().hex[:8]}",
                      retry_s=(0.05, 0.2))  # fmt: skip
    listeners.append(r)
    yield r
    listeners.remove(r)
    r.close(timeout=1)


@pytest.fixture
def db(server):
    client = redis.Redis.from_url(server.url, decode_responses=True)
    yield client
    client.close()


def messages(pubsub, until_status, count=2, timeout=10.0):
    """Messages of a pattern subscription, up to the `count`th with `until_status`."""
    seen = []
    while count:
        m = pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
        assert m is not None, f"no message with status {until_status}; got {seen}"
        seen.append((m["channel"], json.loads(m["data"])))
        count -= seen[-1][1]["status"] == until_status
    return seen


def test_a_finished_job_is_done_with_progress_1_and_its_outputs_listed(engine, reporter, db,
                                                                       tmp_path):  # fmt: skip
    pubsub = db.pubsub()
    pubsub.psubscribe(f"{reporter.prefix}:events*")
    assert pubsub.get_message(timeout=5)["type"] == "psubscribe"
    req = GenerationRequest(prompt="a red fox", seed=4, batch_size=2, **SMALL)
    job = engine.submit(ImageJob(req, save_to=tmp_path), caller="ann")
    result = job.result(timeout=60)
    assert reporter.flush(10)
    name = reporter.task_name(job)
    h = db.hgetall(reporter.key(name))
    assert h["status"] == "done" and float(h["progress"]) == 1.0, h
    assert h["step"] == h["total"] == "3", h
    assert json.loads(h["outputs"]) == [str(p) for p in result.paths] and len(result.paths) == 2
    assert h["model"] == "tiny-sd" and h["kind"] == "image" and h["caller"] == "ann"
    assert h["job_id"] == job.id and h["task_id"] == name
    assert float(h["created"]) <= float(h["started"]) <= float(h["finished"])
    assert "error" not in h
    assert 0 < db.ttl(reporter.key(name)) <= 600
    seen = messages(pubsub, "done")
    own = [data for channel, data in seen if channel == reporter.channel(name)]
    every = [data for channel, data in seen if channel == reporter.channel()]
    assert own == every, "each change goes to the task's channel and the global one"
    # Writes are coalesced: the writer may publish the job's first state ("queued", taken
    # before its thread started) or already "running"; the order never goes back.
    order = ["queued", "running", "done"]
    statuses = [order.index(m["status"]) for m in own]
    assert statuses == sorted(statuses) and own[-1]["event"] == "result", statuses
    assert own[-1]["outputs"] == [str(p) for p in result.paths] and own[-1]["task"] == name
    pubsub.close()


def test_a_refused_request_is_a_failed_task_naming_the_field(engine, reporter, db):
    with pytest.raises(RequestError) as refused:
        engine.submit(ImageJob(GenerationRequest(prompt="x", width=65, height=64)), caller="bob")
    name = reporter.refused("task-7", refused.value, caller="bob")
    assert name == "bob:task-7", "a remote caller's task id is namespaced"
    assert reporter.flush(10)
    h = db.hgetall(reporter.key(name))
    assert h["status"] == "failed" and h["error_field"] == "width", h
    assert h["error_rule"] == refused.value.rule and "width" in h["error"]
    assert db.hgetall(reporter.key("task-7")) == {}, "another caller's id is untouched"


def test_task_names_namespace_remote_callers_and_are_unique_without_an_id(reporter):
    assert task_key("t1", "local") == "t1" and task_key("t1", "ann") == "ann:t1"
    ann = SimpleNamespace(id="3", caller="ann", task_id="t1")
    cli = SimpleNamespace(id="3", caller="local", task_id="t1")
    bare = SimpleNamespace(id="3", caller="ann", task_id=None)
    assert reporter.task_name(ann) == "ann:t1" and reporter.task_name(cli) == "t1"
    other = RedisReporter(reporter.url, prefix=reporter.prefix)
    try:
        assert reporter.task_name(bare) != other.task_name(bare), "job ids repeat per process"
    finally:
        other.close(1)


def test_a_cancelled_job_is_cancelled(engine, reporter, db):
    req = GenerationRequest(prompt="long", seed=1, num_inference_steps=150, width=64, height=64)
    job = engine.submit(ImageJob(req))
    for event in job.events(timeout=60):
        if event.kind == "progress":
            break
    job.cancel()
    with pytest.raises(Cancelled):
        job.result(timeout=60)
    assert reporter.flush(10)
    h = db.hgetall(reporter.key(reporter.task_name(job)))
    assert h["status"] == "cancelled" and "finished" in h, h
    assert float(h["progress"]) < 1.0 and h["total"] == "150"


def test_redis_killed_mid_job_the_job_finishes_and_the_state_is_written_on_return(
    engine, server, listeners, db, tmp_path, caplog
):
    reporter = RedisReporter(server.url, ttl_s=600, prefix=f"k{uuid.uuid4().hex[:8]}",
                             retry_s=(0.05, 0.2))  # fmt: skip

    def kill_at_step_2(job, event):  # in the job's thread, before the reporter hears step 2
        if event.kind == "progress" and event.step == 2:
            server.kill()

    listeners.extend([kill_at_step_2, reporter])
    try:
        caplog.set_level(logging.INFO, logger="pipelines.status")
        req = GenerationRequest(prompt="a wave", seed=2, num_inference_steps=6, width=64,
                                height=64)  # fmt: skip
        job = engine.submit(ImageJob(req, save_to=tmp_path, task_id="wave"))
        result = job.result(timeout=60)
        assert job.state == "done" and result.paths[0].is_file(), "outputs are kept"
        assert not reporter.flush(1.0), "nothing can be written while Redis is away"
        assert reporter.down and reporter.state(reporter.task_name(job))["status"] == "done"
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage(), warnings
        server.start()  # same port, empty (no persistence)
        assert reporter.flush(10), "the latest state is written once Redis answers"
        h = db.hgetall(reporter.key(reporter.task_name(job)))
        assert h["status"] == "done" and float(h["progress"]) == 1.0, h
        assert json.loads(h["outputs"]) == [str(p) for p in result.paths]
        assert not reporter.down and any("answers again" in r.getMessage()
                                         for r in caplog.records)  # fmt: skip
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    finally:
        listeners.remove(kill_at_step_2)
        listeners.remove(reporter)
        reporter.close(1)


def test_front_ends_can_set_outputs_and_fail_a_task_after_its_result(reporter, db):
    reporter.set_outputs("clip-1", ["s3://b/clip-1/clip.mp4", "s3://b/clip-1/clip.json"])
    assert reporter.flush(10)
    h = db.hgetall(reporter.key("clip-1"))
    assert json.loads(h["outputs"]) == ["s3://b/clip-1/clip.mp4", "s3://b/clip-1/clip.json"]
    reporter.fail("clip-1", OSError("upload failed: the file is kept locally"))
    assert reporter.flush(10)
    h = db.hgetall(reporter.key("clip-1"))
    assert h["status"] == "failed" and h["error"] == "upload failed: the file is kept locally"
    assert "error_field" not in h and len(json.loads(h["outputs"])) == 2
