"""Image-to-image, inpainting and ControlNet: parity with direct diffusers calls,
effects, preprocessors, validation and the no-copy memory contract."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from pipelines import (
    EngineSettings,
    GenerationRequest,
    PipelineManager,
    RequestError,
    builtin,
    preprocess,
)
from pipelines.parameters import request_from_infotext
from pipelines.tasks import Inputs
from pipelines.tasks import build as build_task

BASE = dict(prompt="a house", num_inference_steps=6, guidance_scale=7.0, width=64, height=64,
            seed=5, scheduler="Euler")  # fmt: skip
CN = "tiny-sd-controlnet"


def square(size=64, lo=16, hi=48, fill="white", bg="black"):
    im = Image.new("RGB", (size, size), bg)
    ImageDraw.Draw(im).rectangle([lo, lo, hi - 1, hi - 1], fill=fill)
    return im


INIT = Image.radial_gradient("L").resize((64, 64)).convert("RGB")
MASK = Image.new("L", (64, 64), 0)
ImageDraw.Draw(MASK).rectangle([0, 0, 31, 63], fill=255)
CONTROL = square()


@pytest.fixture(scope="module")
def tm(cache_root):
    return PipelineManager(
        EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root)
    )


def px(result):
    return np.asarray(result.images[0])


def direct(cache_root, cls_name, **call):
    path = str(builtin.ensure_model("tiny-sd", cache_root))
    cls = getattr(diffusers, cls_name)
    extra = {"safety_checker": None, "requires_safety_checker": False}
    if "ControlNet" in cls_name:
        extra["controlnet"] = diffusers.ControlNetModel.from_pretrained(
            str(builtin.ensure_controlnet(cache_root))
        )
    pipe = cls.from_pretrained(path, **extra)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    return pipe(prompt="a house", num_inference_steps=6, guidance_scale=7.0,
                generator=torch.Generator("cpu").manual_seed(5), **call).images[0]  # fmt: skip


UNIT = {"model": CN, "weight": 0.8, "guidance_start": 0.1, "guidance_end": 0.9}
CASES = [
    ("img2img", {"strength": 0.6}, Inputs(init_image=INIT), "StableDiffusionImg2ImgPipeline",
     {"image": INIT, "strength": 0.6}),
    ("inpaint", {"strength": 0.9, "mask_blur": 3}, Inputs(init_image=INIT, mask_image=MASK),
     "StableDiffusionInpaintPipeline",
     {"image": INIT, "mask_image": MASK.filter(ImageFilter.GaussianBlur(3)), "strength": 0.9,
      "width": 64, "height": 64}),
    ("controlnet", {"controlnets": [UNIT]}, Inputs(control_images=[CONTROL]),
     "StableDiffusionControlNetPipeline",
     {"image": CONTROL, "controlnet_conditioning_scale": 0.8, "control_guidance_start": [0.1],
      "control_guidance_end": [0.9], "width": 64, "height": 64}),
    ("controlnet+img2img", {"controlnets": [UNIT], "strength": 0.7},
     Inputs(init_image=INIT, control_images=[CONTROL]), "StableDiffusionControlNetImg2ImgPipeline",
     {"image": INIT, "control_image": CONTROL, "strength": 0.7,
      "controlnet_conditioning_scale": 0.8, "control_guidance_start": [0.1],
      "control_guidance_end": [0.9], "width": 64, "height": 64}),
    ("controlnet+inpaint", {"controlnets": [UNIT], "mask_blur": 0},
     Inputs(init_image=INIT, mask_image=MASK, control_images=[CONTROL]),
     "StableDiffusionControlNetInpaintPipeline",
     {"image": INIT, "mask_image": MASK, "control_image": CONTROL, "strength": 0.75,
      "controlnet_conditioning_scale": 0.8, "control_guidance_start": [0.1],
      "control_guidance_end": [0.9], "width": 64, "height": 64}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fields", "inputs", "cls", "call"), CASES, ids=[c[0] for c in CASES]
)
def test_task_equals_direct_diffusers(tm, cache_root, name, fields, inputs, cls, call):
    ours = tm.generate(GenerationRequest(**BASE, **fields), inputs=inputs)
    theirs = direct(cache_root, cls, **call)
    assert np.array_equal(px(ours), np.asarray(theirs)), name


def test_controlnet_has_an_effect_and_scale_zero_is_plain_txt2img(tm):
    plain = px(tm.generate(GenerationRequest(**BASE)))

    def cn(img, w=1.0):
        unit = {"model": CN, "weight": w}
        return px(tm.generate(GenerationRequest(**BASE, controlnets=[unit]),
                              inputs=Inputs(control_images=[img])))  # fmt: skip

    a, b = cn(CONTROL), cn(square(lo=4, hi=30))
    assert not np.array_equal(a, b) and not np.array_equal(a, plain)
    assert np.array_equal(cn(CONTROL, 0.0), plain)


@pytest.mark.parametrize(("strength", "steps"), [(1.0, 10), (0.5, 5), (0.25, 2)])
def test_strength_sets_the_steps_run(tm, strength, steps):
    events = []
    req = GenerationRequest(**{**BASE, "num_inference_steps": 10}, strength=strength)
    tm.generate(req, on_progress=events.append, inputs=Inputs(init_image=INIT))
    assert len(events) == steps and events[-1].total == steps


def test_canny_finds_the_square_outline():
    image = square(512, 128, 384)
    edges = np.asarray(preprocess.run("canny", image, 512, 512).convert("L")) > 127
    ys, xs = np.nonzero(edges)
    assert 950 <= edges.sum() <= 1100, edges.sum()  # perimeter of a 256 px square
    on_border = (np.minimum(abs(xs - 128), abs(xs - 383)) <= 1) | (
        np.minimum(abs(ys - 128), abs(ys - 383)) <= 1
    )
    assert on_border.all()


@pytest.mark.parametrize("name", ["canny", "shuffle", "lineart_standard", "none"])
def test_preprocessor_output_has_the_generation_size(name):
    out = preprocess.run(name, Image.new("RGB", (640, 480), "gray"), 96, 64)
    assert out.size == (96, 64) and out.mode == "RGB"


def test_weight_based_preprocessors_say_which_file_goes_where(tmp_path):
    why = preprocess.availability(tmp_path)
    assert why["canny"] is None
    assert why["softedge_hed"] == f"put ControlNetHED.pth into {tmp_path}"
    (tmp_path / "ControlNetHED.pth").write_bytes(b"x")
    assert preprocess.availability(tmp_path)["softedge_hed"] is None


BAD = [
    ({}, Inputs(mask_image=MASK), "init_image", "needs an init image"),
    ({}, Inputs(init_image=INIT, mask_image=MASK.resize((32, 64))), "mask_image",
     "same size as init_image (64x64), got 32x64"),
    ({"strength": 0.0}, Inputs(init_image=INIT), "strength", "must be > 0"),
    ({"strength": 1.5}, Inputs(init_image=INIT), "strength", "from 0 to 1"),
    ({"controlnets": [{"model": CN, "guidance_start": 0.6, "guidance_end": 0.5}]},
     Inputs(control_images=[CONTROL]), "controlnets[0].guidance_start", "less than guidance_end"),
    ({"controlnets": [{"model": CN}]}, Inputs(), "controlnets[0]", "needs a control image"),
    ({"controlnets": [{"model": CN}], "model": "tiny-sdxl"}, Inputs(control_images=[CONTROL]),
     "controlnets[0].model", "is a ControlNet for sd15; model 'tiny-sdxl' is sdxl"),
    ({"controlnets": [{"model": "nope"}]}, Inputs(control_images=[CONTROL]),
     "controlnets[0].model", "unknown ControlNet 'nope'"),
    ({"controlnets": [{"model": CN, "module": "blur"}]}, Inputs(control_images=[CONTROL]),
     "controlnets[0].module", "unknown preprocessor 'blur'"),
    ({"controlnets": [{"model": CN, "module": "depth_midas"}]}, Inputs(control_images=[CONTROL]),
     "controlnets[0].module", "needs weights: put dpt_hybrid-midas-501f0c75.pt into"),
    ({"controlnets": [{"model": CN, "weight": 3}]}, Inputs(control_images=[CONTROL]),
     "controlnets[0].weight", "from 0 to 2"),
    ({"controlnets": [{"mdl": CN}]}, Inputs(), "controlnets[0]", "unknown field"),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "inputs", "field", "fragment"), BAD)
def test_bad_task_input_names_field_and_rule(tm, fields, inputs, field, fragment):
    with pytest.raises(RequestError) as err:
        tm.generate(GenerationRequest(**{**BASE, **fields}), inputs=inputs)
    assert err.value.field == field and fragment in str(err.value), str(err.value)


def test_controlnet_on_flux_is_refused(tm):
    with pytest.raises(
        RequestError, match=r"ControlNet is not supported for model 'tiny-flux' \(flux\)"
    ):
        tm.generate(GenerationRequest(**{**BASE, "model": "tiny-flux", "scheduler": None},
                                      controlnets=[{"model": CN}]),
                    inputs=Inputs(control_images=[CONTROL]))  # fmt: skip


def test_tasks_share_the_cached_modules_and_add_only_the_controlnet(cache_root):
    m = PipelineManager(
        EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root)
    )
    m.generate(GenerationRequest(**BASE))
    slot = m.slots[0]
    base_bytes = slot.cache.total_bytes()
    m.generate(GenerationRequest(**BASE), inputs=Inputs(init_image=INIT, mask_image=MASK))
    m.generate(GenerationRequest(**BASE, controlnets=[{"model": CN}]),
               inputs=Inputs(init_image=INIT, control_images=[CONTROL]))  # fmt: skip
    cn = slot.cache.get(next(k for k in slot.cache.names() if k.startswith("controlnet:")))
    cn_bytes = sum(p.numel() * p.element_size() for p in cn.parameters())
    cn_bytes += sum(b.numel() * b.element_size() for b in cn.buffers())
    assert slot.loads == 1 and slot.cache.total_bytes() == base_bytes + cn_bytes
    base = slot.cache.get(next(k for k in slot.cache.names() if k.startswith("tiny-sd@")))
    pipe = build_task(base.pipeline, "sd15", "inpaint+cn", base.pipeline.scheduler, [cn])
    assert pipe.unet is base.pipeline.unet and pipe.vae is base.pipeline.vae
    assert pipe.unet.dtype == torch.float32


def test_infotext_restores_strength_mask_blur_and_units(tm):
    unit = {"model": CN, "module": "canny", "weight": 0.8, "guidance_start": 0.1,
            "guidance_end": 0.9, "low_threshold": 50, "high_threshold": 150}  # fmt: skip
    req = GenerationRequest(**BASE, strength=0.6, mask_blur=2, controlnets=[unit])
    out = tm.generate(req, inputs=Inputs(init_image=INIT, mask_image=MASK,
                                         control_images=[CONTROL]))  # fmt: skip
    text = out.infotexts[0]
    assert 'ControlNet 0: "Module: canny, Model: tiny-sd-controlnet [' in text
    back = request_from_infotext(text)
    assert (back.strength, back.mask_blur) == (0.6, 2)
    assert back.controlnets == out.request.controlnets


def test_whole_number_weights_and_too_few_steps(tm):
    unit = {"model": CN, "weight": 1, "guidance_start": 0, "guidance_end": 1}
    out = tm.generate(GenerationRequest(**BASE, controlnets=[unit]),
                      inputs=Inputs(control_images=[CONTROL]))  # fmt: skip
    assert len(out.images) == 1
    with pytest.raises(RequestError, match="strength: 0.35 x 2 steps leaves no step to run"):
        tm.generate(GenerationRequest(**{**BASE, "num_inference_steps": 2}, strength=0.35),
                    inputs=Inputs(init_image=INIT))  # fmt: skip


def test_controlnet_names_by_family_without_building(tmp_path):
    from pipelines.controlnets import ControlNetLibrary

    lib = ControlNetLibrary(None, tmp_path / "empty-cache")
    shipped = [builtin.SHIPPED_CONTROLNET] if builtin.shipped_controlnet() else []
    assert lib.names("sd15") == [CN, *shipped] and lib.names("sdxl") == []
    assert not (tmp_path / "empty-cache").exists()


def test_builtin_controlnets_are_offered_only_for_their_own_model(tmp_path):
    from pipelines.controlnets import ControlNetLibrary

    user = tmp_path / "controlnets" / "my-canny"
    user.mkdir(parents=True)
    (user / "config.json").write_text(
        '{"_class_name": "ControlNetModel", "cross_attention_dim": 768}'
    )
    lib = ControlNetLibrary(tmp_path / "controlnets", tmp_path / "cache")
    assert lib.names("sd15", "tiny-sd") == [CN, "my-canny"]
    assert lib.names("sd15", "dreamshaper_8") == ["my-canny"]  # a real SD 1.5 UNet
    if builtin.shipped_controlnet():
        assert lib.names("sd15", builtin.SHIPPED_MODEL) == [builtin.SHIPPED_CONTROLNET, "my-canny"]


def test_sdxl_controlnet_equals_direct_diffusers(cache_root, tmp_path):
    sdxl = builtin.ensure_model("tiny-sdxl", cache_root)
    unet = diffusers.UNet2DConditionModel.from_pretrained(str(sdxl / "unet"))
    torch.manual_seed(0)
    cn = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8))
    with torch.no_grad():  # zero-initialised outputs would make the ControlNet a no-op
        for p in cn.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    cn.save_pretrained(tmp_path / "cn" / "xl-canny")
    m = PipelineManager(EngineSettings(default_model="tiny-sd",
                                       devices=("cpu",), cache_root=cache_root,
                                       controlnets_dir=tmp_path / "cn"))  # fmt: skip
    assert m.controlnets.names("sdxl") == ["xl-canny"]
    unit = {"model": "xl-canny", "weight": 0.7}
    req = GenerationRequest(**{**BASE, "model": "tiny-sdxl"}, controlnets=[unit])
    ours = px(m.generate(req, inputs=Inputs(control_images=[CONTROL])))
    plain = px(m.generate(GenerationRequest(**{**BASE, "model": "tiny-sdxl"})))
    pipe = diffusers.StableDiffusionXLControlNetPipeline.from_pretrained(
        str(sdxl),
        controlnet=diffusers.ControlNetModel.from_pretrained(str(tmp_path / "cn" / "xl-canny")),
    )
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    theirs = pipe(prompt="a house", num_inference_steps=6, guidance_scale=7.0, width=64, height=64,
                  image=CONTROL, controlnet_conditioning_scale=0.7,
                  generator=torch.Generator("cpu").manual_seed(5)).images[0]  # fmt: skip
    assert np.array_equal(ours, np.asarray(theirs)) and not np.array_equal(ours, plain)


def test_only_masked_inpaints_a_crop_and_pastes_it_back(tm):
    from pipelines.tasks import masked_crop

    init = Image.radial_gradient("L").resize((128, 96)).convert("RGB")
    mask = Image.new("L", (128, 96), 0)
    ImageDraw.Draw(mask).rectangle([40, 30, 59, 49], fill=255)
    box = masked_crop(mask, 8, 64, 64)
    assert box == (32, 22, 68, 58)  # the 20x20 mask + 8 px each side, square like 64x64
    req = GenerationRequest(**BASE, inpaint_area="masked", inpaint_padding=8, mask_blur=0)
    out = tm.generate(req, inputs=Inputs(init_image=init, mask_image=mask))
    got, ref = np.asarray(out.images[0]), np.asarray(init)
    assert got.shape == ref.shape  # the whole picture comes back, at its own size
    outside = np.ones(ref.shape[:2], bool)
    outside[30:50, 40:60] = False
    assert np.array_equal(got[outside], ref[outside])  # unmasked pixels untouched
    assert not np.array_equal(got[30:50, 40:60], ref[30:50, 40:60])
    back = request_from_infotext(out.infotexts[0])
    assert (back.inpaint_area, back.inpaint_padding) == ("masked", 8)


def test_only_masked_box_keeps_inside_the_image():
    from pipelines.tasks import masked_crop

    mask = Image.new("L", (100, 100), 0)
    ImageDraw.Draw(mask).rectangle([0, 0, 9, 9], fill=255)
    x0, y0, x1, y1 = masked_crop(mask, 16, 128, 64)
    assert (x0, y0) == (0, 0) and x1 <= 100 and y1 <= 100 and x1 - x0 > y1 - y0
    with pytest.raises(RequestError, match="mask_image: is empty"):
        masked_crop(Image.new("L", (10, 10), 0), 4, 64, 64)
