"""Model identification: built-ins, a models folder, added folders, Hub ids offline."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pipelines import (
    EngineSettings,
    GenerationRequest,
    ModelUnavailableError,
    PipelineManager,
    builtin,
)
from pipelines.registry import ModelRegistry


def test_family_comes_from_the_folder_not_the_name(cache_root, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(builtin.ensure_model("tiny-sdxl", cache_root), models / "sd15-looking-name")
    reg = ModelRegistry(models, cache_root)
    assert reg.resolve("sd15-looking-name").family.name == "sdxl"
    assert "sd15-looking-name" in [e.name for e in reg.list()]


def test_local_folder_runs_through_the_same_path_as_builtin(cache_root, tmp_path, manager):
    folder = tmp_path / "my-model"
    shutil.copytree(builtin.ensure_model("tiny-sd", cache_root), folder)
    m = PipelineManager(
        EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root)
    )
    name = m.registry.add(str(folder))
    req = dict(prompt="a tree", num_inference_steps=2, width=64, height=64, seed=9)
    mine = m.generate(GenerationRequest(model=name, **req))
    ref = manager.generate(GenerationRequest(model="tiny-sd", **req))
    assert np.array_equal(np.asarray(mine.images[0]), np.asarray(ref.images[0]))
    assert "Model: my-model" in mine.infotexts[0]


def test_hub_id_not_cached_offline_fails_clearly(cache_root, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    reg = ModelRegistry(None, cache_root)
    with pytest.raises(ModelUnavailableError) as err:
        reg.resolve("someone/some-model")
    assert "'someone/some-model' is not available offline" in str(err.value)


def test_hub_ids_can_be_switched_off(cache_root):
    from pipelines import RequestError

    reg = ModelRegistry(None, cache_root, allow_hub=False)
    with pytest.raises(RequestError, match="unknown model 'someone/x'; available: tiny-sd"):
        reg.resolve("someone/x")
