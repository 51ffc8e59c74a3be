"""A model's first use hashes it (A1111's Model hash) before the job takes a device,
reporting `hashing` progress; the hash is cached, so the next job reports none."""

from __future__ import annotations

import json

from pipelines import EngineSettings, GenerationRequest, ImageJob, PipelineManager


def test_first_use_of_a_single_file_reports_hashing_then_it_is_cached(cache_root, tmp_path):
    from diffusers import DiffusionPipeline
    from safetensors.torch import save_file

    from pipelines import builtin
    from pipelines import ldm_layout as ldm

    models = tmp_path / "models"
    models.mkdir()
    pipe = DiffusionPipeline.from_pretrained(builtin.ensure_model("tiny-sd", cache_root))
    state = ldm.pipeline_to_ldm(pipe.components, "sd1")
    save_file({k: v.contiguous() for k, v in state.items()}, models / "mine.safetensors")
    (models / "mine.atelier.json").write_text(json.dumps({"config": "tiny-sd"}))
    m = PipelineManager(EngineSettings(default_model="tiny-sd",
                                       devices=("cpu",), cache_root=cache_root,
                                       models_dir=models))  # fmt: skip
    req = GenerationRequest(prompt="x", model="mine", num_inference_steps=1, width=64,
                            height=64, seed=1)  # fmt: skip
    first = list(m.submit(ImageJob(req)).events(timeout=120))
    hashing = [(e.step, e.total) for e in first if e.kind == "hashing"]
    size = (models / "mine.safetensors").stat().st_size
    assert hashing and hashing[-1] == (size, size), hashing
    kinds = [e.kind for e in first]
    assert kinds.index("hashing") < kinds.index("started"), "hashed before taking a device"
    again = list(m.submit(ImageJob(req)).events(timeout=120))
    assert not [e for e in again if e.kind == "hashing"], "the hash is cached"
    assert first[-1].result.infotexts[0] == again[-1].result.infotexts[0]
