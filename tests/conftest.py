"""Shared fixtures: offline, tiny built-in models in one cache per test session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread per process (subprocesses inherit it, so pixels compare equal across
# them): the tests run several engines, servers and workers at once, and two threads
# each on this 2-core machine made a 2-step tiny job ~50x slower under load.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The default model of app.py is the trained atelier-shapes; the architecture and
# parity tests run on the random tiny-sd (every fixture passes it; CLI subprocesses
# read this). tests/test_shapes_meaning.py tests atelier-shapes by name.
os.environ.setdefault("ATELIER_DEFAULT_MODEL", "tiny-sd")

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in models for the whole session (built once, from scratch, offline)."""
    root = os.environ.get("ATELIER_TEST_CACHE")
    return Path(root) if root else tmp_path_factory.mktemp("atelier-cache")


@pytest.fixture(scope="session")
def manager(cache_root: Path):
    """One CPU slot, shared by tests that only generate (never mutate settings)."""
    from pipelines import EngineSettings, PipelineManager

    return PipelineManager(
        EngineSettings(
            default_model="tiny-sd",
            devices=("cpu",),
            cache_root=cache_root,
            loras_dir=None,
            models_dir=None,
        )
    )


@pytest.fixture(scope="module")
def studio_url(cache_root: Path) -> Iterator[str]:
    """The studio (one CPU slot, outputs off) for one browser test module."""
    from tests.ui_support import launched_studio

    with launched_studio(cache_root, "off") as demo:
        yield demo.test_url


@pytest.fixture(scope="module")
def page(studio_url: str) -> Iterator[Any]:
    """A chromium page at the studio; the browser modules skip themselves without one."""
    from tests.ui_support import browser_page

    with browser_page(studio_url) as page:
        yield page


@pytest.fixture(scope="module")
def client(server: Any) -> Any:
    """A gradio_client Client of the studio that the test module's own `server` launched."""
    from gradio_client import Client

    return Client(server.test_url, verbose=False)


@pytest.fixture(scope="module")
def listeners() -> list:
    """Job listeners of the module's `engine`, changed per test (the queue cannot drop one)."""
    return []


@pytest.fixture(scope="module")
def engine(cache_root: Path, listeners: list):
    """One engine per module whose job events go to the functions in `listeners`."""
    from pipelines import EngineSettings, PipelineManager

    m = PipelineManager(EngineSettings(default_model="tiny-sd",
                                       devices=("cpu",), cache_root=cache_root, loras_dir=None,
                                       models_dir=None))  # fmt: skip
    m.jobs.add_listener(lambda job, event: [f(job, event) for f in list(listeners)])
    return m
