"""Public studios: when a studio counts as public, the defaults that follow, who a
caller is (client address, trusted proxies), and the limits applied per address."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from pipelines import Cancelled, EngineSettings, GenerationRequest, ImageJob, LimitError
from pipelines.settings import ENGINE_SETTINGS, add_arguments, engine_settings, resolve
from ui.context import client_address
from ui.settings import SERVER_SETTINGS, engine_limits, server_values


def settings_for(argv: list[str], env: dict[str, str]) -> tuple[dict, EngineSettings]:
    parser = argparse.ArgumentParser()
    add_arguments(parser, ENGINE_SETTINGS)
    add_arguments(parser, SERVER_SETTINGS)
    args = parser.parse_args(argv)
    server = server_values(args, env)
    return server, engine_settings({**resolve(ENGINE_SETTINGS, args, env),
                                    **engine_limits(server)})  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "env", "public"),
    [
        ([], {}, False),
        (["--host", "0.0.0.0"], {}, True),
        (["--share", "true"], {}, True),
        ([], {"SPACE_ID": "ann/atelier"}, True),
        (["--host", "0.0.0.0", "--public", "false"], {}, False),
        (["--public", "true"], {}, True),  # behind a reverse proxy on 127.0.0.1
    ],
)
def test_a_studio_is_public_beyond_loopback_with_share_or_on_spaces(argv, env, public):
    server, engine = settings_for(argv, env)
    assert server["public_resolved"] is public
    assert engine.max_jobs_per_user == (2 if public else 0)
    assert (engine.max_work > 0) is public


def test_explicit_limits_win_over_the_public_defaults():
    _, engine = settings_for(["--public", "true", "--max-work", "0",
                              "--max-jobs-per-user", "5"], {})  # fmt: skip
    assert (engine.max_work, engine.max_jobs_per_user) == (0, 5)


def test_public_budget_admits_every_family_default_and_refuses_the_huge_request(cache_root):
    from pipelines import PipelineManager
    from pipelines.families import FAMILIES

    _, public = settings_for(["--public", "true"], {})
    for f in FAMILIES.values():
        frames = f.default_frames if f.kind == "video" else 4
        work = f.default_size * (f.default_height or f.default_size) * f.default_steps * frames
        assert work <= public.max_work, f.name
    m = PipelineManager(EngineSettings(default_model="tiny-sd",
                                       devices=("cpu",), cache_root=cache_root,
                                       max_work=public.max_work))  # fmt: skip
    huge = GenerationRequest(prompt="x", model="tiny-sdxl", width=2048, height=2048,
                             batch_size=8, batch_count=100, num_inference_steps=150)  # fmt: skip
    with pytest.raises(LimitError) as e:
        m.submit(ImageJob(huge))
    assert e.value.field == "max_work" and f"{2048 * 2048 * 8 * 100 * 150:,}" in e.value.rule
    sdxl = GenerationRequest(prompt="x", model="tiny-sdxl", batch_size=4)  # family defaults
    job = m.submit(ImageJob(sdxl))  # admitted (then stopped: it would take a while here)
    job.cancel()
    with pytest.raises(Cancelled):
        job.result(timeout=120)


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "caller"),
    [
        ("10.0.0.5", "", frozenset(), "10.0.0.5"),
        ("10.0.0.5", "1.2.3.4", frozenset(), "10.0.0.5"),  # an untrusted peer's header: ignored
        ("127.0.0.1", "1.2.3.4", frozenset({"127.0.0.1"}), "1.2.3.4"),
        ("127.0.0.1", "6.6.6.6, 1.2.3.4", frozenset({"127.0.0.1"}), "1.2.3.4"),  # spoofed left
        ("127.0.0.1", "1.2.3.4, 10.0.0.9", frozenset({"127.0.0.1", "10.0.0.9"}), "1.2.3.4"),
        ("127.0.0.1", "", frozenset({"127.0.0.1"}), "127.0.0.1"),
    ],
)
def test_the_caller_is_the_client_address_believing_only_trusted_proxies(
    peer, header, trusted, caller
):
    assert client_address(peer, header, trusted) == caller


@pytest.fixture(scope="module")
def server(cache_root: Path) -> Iterator[Any]:
    from tests.ui_support import launched_studio

    with launched_studio(cache_root, "off", engine={"max_jobs_per_user": 2},
                         trusted_proxies=frozenset({"127.0.0.1"})) as demo:  # fmt: skip
        yield demo


def test_a_third_job_from_one_address_is_refused_while_another_address_is_admitted(server):
    manager = server.atelier_context.manager
    long = dict(steps=150, width=64, height=64, batch_count=100)
    ann = [Client(server.test_url, verbose=False, headers={"X-Forwarded-For": "1.1.1.1"})
           for _ in range(3)]  # fmt: skip
    bob = Client(server.test_url, verbose=False, headers={"X-Forwarded-For": "2.2.2.2"})
    first = ann[0].submit(prompt="ann 1", seed=1, **long, api_name="/generate")
    second = ann[1].submit(prompt="ann 2", seed=2, steps=2, width=64, height=64,
                           api_name="/generate")  # fmt: skip
    with manager._cond:
        assert manager._cond.wait_for(lambda: len(manager.jobs.caller_jobs("addr:1.1.1.1")) == 2,
                                      60)  # fmt: skip
    with pytest.raises(AppError, match="max_jobs_per_user: you already have 2 jobs"):
        ann[2].predict(prompt="ann 3", seed=3, steps=2, width=64, height=64, api_name="/generate")
    other = bob.submit(prompt="bob", seed=4, steps=2, width=64, height=64, api_name="/generate")
    first.cancel()
    assert other.result(timeout=120)[2] == 4 and second.result(timeout=120)[2] == 2
