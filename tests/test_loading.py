"""Load options are applied to the cached model as configured (checked on CPU)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from pipelines import EngineSettings, GenerationRequest, ModelUnavailableError, PipelineManager
from pipelines.families import FAMILIES
from pipelines.loading import LoadOptions, choose_dtype


def only_model(manager):
    slot = manager.slots[0]
    return slot.cache.get(slot.cache.names()[0]).pipeline


def test_vae_tiling_attention_slicing_and_dtype_are_applied(cache_root):
    opts = LoadOptions(dtype="bfloat16", attention_slicing=True, vae_tiling=True)
    m = PipelineManager(
        EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root, load=opts)
    )
    m.generate(GenerationRequest(prompt="a", num_inference_steps=1, width=64, height=64, seed=1))
    pipe = only_model(m)
    assert pipe.vae.use_tiling is True
    assert pipe.unet.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert processors == {"SlicedAttnProcessor"}


def test_default_cpu_load_is_fp32_with_sdpa(manager):
    manager.generate(GenerationRequest(prompt="a", num_inference_steps=1, width=64, height=64))
    pipe = only_model(manager)
    assert pipe.unet.dtype == torch.float32 and not pipe.vae.use_tiling
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}


def test_dtype_choice():
    cpu = torch.device("cpu")
    assert choose_dtype("auto", FAMILIES["sdxl"], cpu) == torch.float32
    assert choose_dtype("float16", FAMILIES["flux"], cpu) == torch.float16
    with pytest.raises(ValueError, match="dtype must be one of auto, float32"):
        choose_dtype("fp8", FAMILIES["sd15"], cpu)


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers installed")
def test_xformers_requested_without_the_package_fails_clearly(cache_root):
    opts = LoadOptions(attention="xformers")
    m = PipelineManager(
        EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root, load=opts)
    )
    with pytest.raises(ModelUnavailableError, match="needs the 'xformers' package"):
        m.generate(GenerationRequest(prompt="a", num_inference_steps=1, width=64, height=64))


def test_group_offload_is_applied_and_gives_the_same_video(cache_root):
    from pipelines.video import VideoRequest

    req = VideoRequest(prompt="a boat", num_frames=5, width=32, height=32,
                       num_inference_steps=2, seed=3)  # fmt: skip
    plain = PipelineManager(
        EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root)
    )
    opts = LoadOptions(offload="group", vae_tiling=True)
    grouped = PipelineManager(
        EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root, load=opts)
    )
    a = plain.generate_video(req)
    b = grouped.generate_video(req)
    pipe = only_model(grouped)
    assert hasattr(pipe.transformer, "_diffusers_hook") and pipe.vae.use_tiling
    assert b.parameters["memory"] == {"offload": "group", "vae_tiling": True, "devices": ["cpu"]}
    assert torch.equal(torch.from_numpy(a.frames), torch.from_numpy(b.frames))


def test_model_offload_needs_a_gpu_slot_and_spans_need_gpus(cache_root):
    from pipelines.loading import placement

    opts = LoadOptions(offload="model")
    m = PipelineManager(
        EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root, load=opts)
    )
    with pytest.raises(ModelUnavailableError, match="offload=model .* this slot has none"):
        m.generate(GenerationRequest(prompt="a", num_inference_steps=1, width=64, height=64))
    assert placement(["cuda:0"]) == {}
    with pytest.raises(ValueError, match="must list CUDA GPUs"):
        placement(["cpu", "cpu"])
