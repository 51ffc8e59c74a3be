"""Defaults per model: a model folder's atelier.json sets its own size, steps and CFG
(the trained atelier-shapes opens at 64x64), within its family's rules."""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines import EngineSettings, GenerationRequest, PipelineManager
from pipelines.errors import ModelUnavailableError


@pytest.fixture
def models(tmp_path, cache_root):
    from pipelines.builtin import ensure_model

    folder = tmp_path / "models" / "small-sd"
    shutil.copytree(ensure_model("tiny-sd", cache_root), folder)
    return folder


def test_a_models_own_defaults_fill_the_request(models, cache_root):
    (models / "atelier.json").write_text(json.dumps({"default_size": 64, "default_steps": 3,
                                                     "default_cfg": 4.5}))  # fmt: skip
    m = PipelineManager(EngineSettings(default_model="tiny-sd",
                                       devices=("cpu",), cache_root=cache_root,
                                       models_dir=models.parent))  # fmt: skip
    family = m.registry.family_of("small-sd")
    assert (family.default_size, family.default_steps, family.default_cfg) == (64, 3, 4.5)
    assert m.models("image")["small-sd"].default_size == 64, "the studio's pickers see it"
    result = m.generate(GenerationRequest(prompt="x", model="small-sd", seed=1))
    req = result.request
    assert (req.width, req.height, req.num_inference_steps, req.guidance_scale) == (64, 64, 3, 4.5)
    assert result.images[0].size == (64, 64)
    assert m.registry.family_of("tiny-sd").default_size == 512, "other models keep theirs"


@pytest.mark.parametrize(
    ("content", "rule"),
    [("{not json", "not valid JSON"), ('{"default_size": 100}', "breaks the"),
     ('{"default_steps": "many"}', "default_steps must be a int, got 'many'")],
)  # fmt: skip
def test_a_bad_atelier_json_is_a_clear_error(models, cache_root, content, rule):
    from pipelines.registry import read_family

    (models / "atelier.json").write_text(content)
    with pytest.raises(ModelUnavailableError, match=rule):
        read_family(models)
