"""Hires fix: A1111's sizes and rules, one job over two passes (progress, cancel, work),
pixel parity of the second pass with a direct diffusers img2img call on the upscaled
image (latent and model upscalers), and the infotext round trip."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import diffusers
import numpy as np
import pytest
import torch

from pipelines import EngineSettings, GenerationRequest, PipelineManager, builtin
from pipelines.errors import Cancelled, RequestError
from pipelines.families import FAMILIES
from pipelines.hires import check, hires_size, hires_work, request_from_infotext
from pipelines.image_job import image_work
from tests.test_upscale_files import tiny_upscaler

BASE = dict(prompt="a lighthouse at dusk", negative_prompt="blurry", model="tiny-sd",
            scheduler="Euler", num_inference_steps=4, guidance_scale=5.0, width=64, height=64,
            seed=1234, enable_hr=True, strength=0.5)  # fmt: skip


@pytest.fixture(scope="module")
def engine(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> PipelineManager:
    folder = tmp_path_factory.mktemp("upscalers")
    tiny_upscaler(folder / "tiny-2x.safetensors", scale=2)
    return PipelineManager(EngineSettings(default_model="tiny-sd",
                                          devices=("cpu",), cache_root=cache_root,
                                          loras_dir=None, models_dir=None,
                                          upscalers_dir=folder))  # fmt: skip


def req(**kw) -> GenerationRequest:
    return GenerationRequest(**{**BASE, **kw})


def test_sizes_follow_a1111():
    assert hires_size(req(hr_scale=2)).target == (128, 128)
    assert hires_size(req(width=64, height=96, hr_resize_x=128)).target == (128, 192)
    assert hires_size(req(width=64, height=96, hr_resize_y=192)).target == (128, 192)
    both = hires_size(req(width=64, height=96, hr_resize_x=128, hr_resize_y=128))
    assert both.upscale_to == (128, 192) and both.target == (128, 128)
    assert both.crop == (0, 32, 128, 160)


def test_rules_name_the_field():
    sd = FAMILIES["sd15"]
    for bad, field in ((dict(hr_scale=1.3), "hr_scale"),  # 83.2 px: not a multiple of 8
                       (dict(hr_scale=9.0), "hr_scale"),
                       (dict(hr_upscaler="Bogus"), "hr_upscaler"),
                       (dict(hr_second_pass_steps=-1), "hr_second_pass_steps"),
                       (dict(hr_resize_x=100), "hr_resize_x"),
                       (dict(strength=0.1), "strength"),
                       (dict(hr_prompt="<lora:x:1> a"), "hr_prompt"),
                       (dict(hr_sampler_name="Nope"), "scheduler")):  # fmt: skip
        with pytest.raises(RequestError) as e:
            check(req(**bad), sd, "txt2img", None)
        assert e.value.field == field, (bad, e.value)
    with pytest.raises(RequestError) as e:
        check(req(), sd, "img2img", None)
    assert e.value.field == "enable_hr"
    with pytest.raises(RequestError) as e:
        check(req(hr_upscaler="Latent"), FAMILIES["flux"], "txt2img", None)
    assert e.value.field == "hr_upscaler"
    check(req(hr_scale=1.5, hr_upscaler="Nearest"), sd, "txt2img", None)


def test_work_counts_both_passes():
    r = req(hr_scale=2, hr_second_pass_steps=10, batch_size=2)
    assert hires_work(r) == 128 * 128 * 5 * 2
    assert image_work(r) == 64 * 64 * 4 * 2 + 128 * 128 * 5 * 2
    assert hires_work(replace(r, enable_hr=False)) == 0


def direct(cache_root: Path):
    path = builtin.ensure_model("tiny-sd", cache_root)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        str(path), dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(
        pipe.scheduler.config, use_karras_sigmas=False
    )
    img2img = diffusers.StableDiffusionImg2ImgPipeline(**pipe.components)
    return pipe, img2img


def call(pipe, **kw):
    return pipe(prompt=BASE["prompt"], negative_prompt="blurry", guidance_scale=5.0,
                generator=torch.Generator("cpu").manual_seed(1234), **kw).images  # fmt: skip


def test_latent_hires_equals_direct_img2img_on_upscaled_latents(engine, cache_root):
    events = []
    ours = engine.generate(req(hr_upscaler="Latent (bicubic)", hr_second_pass_steps=6),
                           on_progress=events.append)  # fmt: skip
    assert ours.images[0].size == (128, 128)
    pipe, img2img = direct(cache_root)
    latents = call(pipe, num_inference_steps=4, width=64, height=64, output_type="latent")
    big = torch.nn.functional.interpolate(latents, size=(16, 16), mode="bicubic")
    theirs = call(img2img, image=big, strength=0.5, num_inference_steps=6)[0]
    assert np.array_equal(np.asarray(ours.images[0]), np.asarray(theirs))
    # one bar over both passes: 4 + int(6 x 0.5) steps, in order
    assert [e.step for e in events] == list(range(1, 8))
    assert {e.total for e in events} == {7}


def test_model_upscaler_hires_equals_direct_img2img(engine, cache_root):
    from spandrel import ModelLoader

    ours = engine.generate(req(hr_upscaler="tiny-2x", hr_scale=1.5))
    assert ours.images[0].size == (96, 96)
    pipe, img2img = direct(cache_root)
    first = call(pipe, num_inference_steps=4, width=64, height=64)[0]
    model = ModelLoader().load_from_file(str(engine.upscalers.get("tiny-2x").path)).eval()
    x = torch.from_numpy(np.asarray(first, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = model(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    from PIL import Image

    up = Image.fromarray((y * 255).round().astype(np.uint8)).resize((96, 96), Image.LANCZOS)
    theirs = call(img2img, image=up, strength=0.5, num_inference_steps=4)[0]
    assert np.array_equal(np.asarray(ours.images[0]), np.asarray(theirs))


def test_infotext_round_trip(engine):
    r = req(hr_upscaler="Nearest", hr_resize_x=96, hr_second_pass_steps=6,
            hr_sampler_name="Euler a", hr_prompt="sharp lighthouse")  # fmt: skip
    result = engine.generate(r)
    text = result.infotexts[0]
    for piece in ("Denoising strength: 0.5", "Hires resize: 96x0", "Hires steps: 6",
                  "Hires upscaler: Nearest", "Hires sampler: Euler a",
                  "Hires prompt: sharp lighthouse"):  # fmt: skip
        assert piece in text, piece
    back = request_from_infotext(text)
    for name in (
        "enable_hr",
        "hr_resize_x",
        "hr_resize_y",
        "hr_second_pass_steps",
        "hr_upscaler",
        "hr_sampler_name",
        "hr_prompt",
        "strength",
        "seed",
    ):
        assert getattr(back, name) == getattr(result.request, name), name
    assert result.images[0].size == (96, 96)
    scaled = engine.generate(req(num_inference_steps=2, hr_upscaler="Lanczos", hr_scale=1.5))
    again = request_from_infotext(scaled.infotexts[0])
    assert again.hr_scale == 1.5 and again.enable_hr and again.hr_upscaler == "Lanczos"


def test_cancel_during_the_second_pass(engine):
    from pipelines.progress import CancelToken

    token = CancelToken()
    seen = []

    def on_progress(event):
        seen.append(event.step)
        if event.step == 5:  # the first step of the hires pass
            token.cancel()

    with pytest.raises(Cancelled):
        engine.generate(req(hr_upscaler="Lanczos", hr_scale=1.5), on_progress=on_progress,
                        cancel=token)  # fmt: skip
    assert seen == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(("model", "upscaler"), [("tiny-sdxl", "Latent"), ("tiny-flux", "Lanczos")])
def test_other_families_make_the_hires_size(engine, model, upscaler):
    # Flux's img2img takes width/height (without them it makes 1024 px)
    r = engine.generate(req(model=model, negative_prompt="", num_inference_steps=2,
                            scheduler=None, hr_upscaler=upscaler, hr_scale=1.5))  # fmt: skip
    assert r.images[0].size == (96, 96)


def test_one_bar_over_both_passes_of_every_call(engine):
    events = []
    r = engine.generate(req(num_inference_steps=2, batch_count=2, hr_upscaler="Nearest",
                            hr_scale=1.5, hr_second_pass_steps=4),
                        on_progress=events.append)  # fmt: skip
    # per call: 2 first-pass steps + int(4 x 0.5) hires steps
    assert [e.step for e in events] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert {e.total for e in events} == {8} and r.seeds == [1234, 1235]
