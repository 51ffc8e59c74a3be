"""Video: parity with direct Wan calls, experts, I2V, export round trip, rules, cancel."""

from __future__ import annotations

import json

import diffusers
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import Cancelled, CancelToken, EngineSettings, PipelineManager, RequestError, builtin
from pipelines.export import save_video, to_uint8
from pipelines.video import VideoRequest

BASE = dict(prompt="a boat on a lake", num_frames=9, width=64, height=32,
            num_inference_steps=3, seed=21)  # fmt: skip


@pytest.fixture(scope="module")
def vm(cache_root):
    return PipelineManager(
        EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root)
    )


def direct(cache_root, model, **extra):
    path = builtin.ensure_model(model, cache_root)
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(path), dtype=torch.float32)
    out = pipe(prompt=BASE["prompt"], num_frames=9, width=64, height=32, num_inference_steps=3,
               guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(21),
               output_type="np", **extra)  # fmt: skip
    return pipe, out.frames[0]


def test_t2v_frames_equal_direct_wan_call(vm, cache_root):
    ours = vm.generate_video(VideoRequest(**BASE, guidance_scale=5.0))
    _, theirs = direct(cache_root, "tiny-wan")
    assert ours.frames.shape == (9, 32, 64, 3) and ours.frames.dtype == np.float32
    assert np.array_equal(ours.frames, theirs)


def test_two_experts_switch_at_the_boundary(vm, cache_root):
    req = VideoRequest(**{**BASE, "num_inference_steps": 8}, model="tiny-wan22",
                       guidance_scale=4.0, guidance_scale_2=3.0,
                       scheduler="Flow Euler")  # fmt: skip
    vm.generate_video(req)  # load
    slot = vm.slots[0]
    pipe = slot.cache.get(
        next(k for k in slot.cache.names() if k.startswith("tiny-wan22@"))
    ).pipeline
    calls = {"high": 0, "low": 0}

    def counter(name):
        return lambda *a: calls.__setitem__(name, calls[name] + 1)

    hooks = [pipe.transformer.register_forward_hook(counter("high")),
             pipe.transformer_2.register_forward_hook(counter("low"))]  # fmt: skip
    try:
        out = vm.generate_video(req)
    finally:
        for h in hooks:
            h.remove()
    # boundary 0.875 of 1000 train steps: timesteps >= 875 use the high-noise expert.
    sched = diffusers.FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=3.0)
    sched.set_timesteps(8)
    high = int((sched.timesteps >= 875).sum())
    assert calls == {"high": 2 * high, "low": 2 * (8 - high)}  # x2: CFG runs cond + uncond
    assert 0 < high < 8 and out.frames.shape[0] == 9


def test_i2v_conditions_on_the_start_image(vm, cache_root):
    red, blue = Image.new("RGB", (64, 32), "red"), Image.new("RGB", (64, 32), "blue")
    req = VideoRequest(**BASE, model="tiny-wan-i2v")
    a = vm.generate_video(req, image=red).frames
    b = vm.generate_video(req, image=blue).frames
    assert not np.array_equal(a, b)
    _, theirs = direct(cache_root, "tiny-wan-i2v", image=red, guidance_scale_2=None)
    assert np.array_equal(a, theirs)


def test_export_mp4_round_trip_and_metadata(vm, tmp_path):
    result = vm.generate_video(VideoRequest(**{**BASE, "width": 64, "height": 64}, fps=12))
    mp4, sidecar = save_video(result.frames, tmp_path, 12, result.parameters)
    gen = imageio_ffmpeg.read_frames(str(mp4))
    meta = next(gen)
    w, h = meta["size"]
    decoded = np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen])
    assert decoded.shape == (9, 64, 64, 3) and meta["fps"] == 12
    ref = to_uint8(result.frames).astype(float)
    mse = np.mean((decoded.astype(float) - ref) ** 2)
    psnr = 10 * np.log10(255**2 / max(mse, 1e-9))
    assert psnr > 30, psnr
    assert json.loads(sidecar.read_text())["seed"] == 21
    assert b'"prompt": "a boat on a lake"' in mp4.read_bytes()  # the comment tag
    for fmt in ("webp", "gif", "frames"):
        path, _ = save_video(result.frames, tmp_path, 12, result.parameters, fmt=fmt)
        assert path.stat().st_size > 0


def test_to_uint8_takes_one_video_channels_last():
    with pytest.raises(ValueError, match=r"frames must be \(frames, height, width, 3\)"):
        to_uint8(np.zeros((1, 9, 32, 32, 3), np.float32))  # the whole batch: refused
    out = to_uint8(np.array([[[[1.2, -0.1, 0.5]]]], np.float32))
    assert out.tolist() == [[[[255, 0, 128]]]]


@pytest.mark.parametrize(
    ("fields", "kwargs", "field", "fragment"),
    [
        ({"num_frames": 10}, {}, "num_frames", "must be 4k+1"),
        ({"width": 100}, {}, "width", "multiple of 16"),
        ({"height": 8}, {}, "height", "from 32 to 1280"),
        ({"model": "tiny-wan-i2v"}, {}, "image", "need a start image"),
        ({}, {"image": Image.new("RGB", (8, 8))}, "image", "takes no start image"),
        ({"guidance_scale_2": 3.0}, {}, "guidance_scale_2", "one expert"),
        ({"model": "tiny-sd"}, {}, "model", "image model"),
        ({"scheduler": "Euler a"}, {}, "scheduler", "choose one of: Flow Euler"),
        ({"loras": {"tiny-sd-lora": 1.0}}, {}, "loras", "is a SD 1.x/2.x LoRA"),
    ],
)
def test_bad_video_input_states_the_rule(vm, fields, kwargs, field, fragment):
    with pytest.raises(RequestError) as err:
        vm.generate_video(VideoRequest(**{**BASE, **fields}), **kwargs)
    assert err.value.field == field and fragment in str(err.value)


def test_cancel_skips_the_vae_decode(vm):
    vm.generate_video(VideoRequest(**BASE))
    slot = vm.slots[0]
    pipe = slot.cache.get(next(k for k in slot.cache.names() if k.startswith("tiny-wan@"))).pipeline
    decodes = []
    hook = pipe.vae.decoder.register_forward_hook(lambda *a: decodes.append(1))
    token = CancelToken()
    try:
        with pytest.raises(Cancelled):
            vm.generate_video(VideoRequest(**{**BASE, "num_inference_steps": 10}),
                              on_progress=lambda e: e.step == 2 and token.cancel(),
                              cancel=token)  # fmt: skip
        assert decodes == []
        vm.generate_video(VideoRequest(**BASE))
        assert decodes  # the next request decodes normally
    finally:
        hook.remove()


def test_end_image_only_where_the_family_takes_one(vm):
    blue = Image.new("RGB", (64, 32), "blue")
    with pytest.raises(RequestError, match="end_image: Wan 2.1 T2V models take no end image"):
        vm.generate_video(VideoRequest(**BASE), end_image=blue)
    # Wan 2.1 I2V encodes one image; first-last-frame needs the FLF2V model.
    with pytest.raises(RequestError, match="end_image: Wan 2.1 I2V models take no end image"):
        vm.generate_video(VideoRequest(**BASE, model="tiny-wan-i2v"), image=blue, end_image=blue)


@pytest.fixture(scope="module")
def wan_lora(cache_root, tmp_path_factory):
    """A rank-4 attention LoRA for the tiny Wan transformers (same layout in both)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("wan-loras")
    wan = diffusers.DiffusionPipeline.from_pretrained(
        str(builtin.ensure_model("tiny-wan", cache_root))
    )
    torch.manual_seed(7)
    wan.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                           target_modules=["to_q", "to_k", "to_v"]))  # fmt: skip
    state = {f"transformer.{k}": v.contiguous()
             for k, v in get_peft_model_state_dict(wan.transformer).items()}  # fmt: skip
    save_file(state, str(folder / "wan-style.safetensors"))
    # the same plus one layer for a block this transformer does not have
    extra = {k.replace("blocks.0.", "blocks.99."): v.clone() for k, v in state.items()
             if k.startswith("transformer.blocks.0.attn1.to_q.")}  # fmt: skip
    save_file({**state, **extra}, str(folder / "wan-extra.safetensors"))
    return folder


def test_a_video_lora_that_partly_loads_says_so(cache_root, wan_lora):
    from pipelines.adapters import file_layers

    m = PipelineManager(EngineSettings(default_model="tiny-sd", devices=("cpu",),
                                       cache_root=cache_root, loras_dir=wan_lora))  # fmt: skip
    whole = m.generate_video(VideoRequest(**BASE, loras={"wan-style": 1.0}))
    part = m.generate_video(VideoRequest(**BASE, loras={"wan-extra": 1.0}))
    held = file_layers(wan_lora / "wan-extra.safetensors")
    assert held == file_layers(wan_lora / "wan-style.safetensors") + 1
    assert whole.warnings == []
    assert part.warnings == [f"loras: 'wan-extra': 1 of its {held} layers were not loaded "
                             "(their names fit no module of this model)"]  # fmt: skip
    assert np.array_equal(part.frames, whole.frames), "what fits is the same LoRA"


def test_wan_loras_equal_diffusers_and_go_into_one_or_both_experts(cache_root, wan_lora):
    m = PipelineManager(
        EngineSettings(
            default_model="tiny-sd", devices=("cpu",), cache_root=cache_root, loras_dir=wan_lora
        )
    )
    lora = {"wan-style": 1.0}
    ours = m.generate_video(VideoRequest(**BASE, guidance_scale=5.0, loras=lora)).frames
    pipe = diffusers.DiffusionPipeline.from_pretrained(
        str(builtin.ensure_model("tiny-wan", cache_root))
    )
    pipe.load_lora_weights(str(wan_lora / "wan-style.safetensors"), adapter_name="w")
    pipe.set_adapters(["w"], [1.0])
    theirs = pipe(prompt=BASE["prompt"], num_frames=9, width=64, height=32,
                  num_inference_steps=3, guidance_scale=5.0, output_type="np",
                  generator=torch.Generator("cpu").manual_seed(21)).frames[0]  # fmt: skip
    assert np.array_equal(ours, theirs)

    two = dict(**BASE, model="tiny-wan22", loras=lora)
    runs = {e: m.generate_video(VideoRequest(**two, lora_experts=e)).frames
            for e in ("both", "high", "low")}  # fmt: skip
    plain = m.generate_video(VideoRequest(**{**two, "loras": {}})).frames
    slot = m.slots[0]
    p22 = slot.cache.get(
        next(k for k in slot.cache.names() if k.startswith("tiny-wan22@"))
    ).pipeline
    adapters = p22.get_list_adapters()
    assert any(a.endswith("_high") for a in adapters["transformer"])
    assert not any(a.endswith("_high") for a in adapters["transformer_2"])
    assert any(a.endswith("_low") for a in adapters["transformer_2"])
    frames = [runs["both"], runs["high"], runs["low"], plain]
    assert all(not np.array_equal(a, b) for i, a in enumerate(frames) for b in frames[i + 1 :])
    with pytest.raises(RequestError, match="lora_experts: Wan 2.1 T2V models have one expert"):
        m.generate_video(VideoRequest(**BASE, loras=lora, lora_experts="low"))
