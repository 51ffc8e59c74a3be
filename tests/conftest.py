"""Shared fixtures: offline, tiny built-in models in one cache per test session."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

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
        EngineSettings(devices=("cpu",), cache_root=cache_root, loras_dir=None, models_dir=None)
    )
