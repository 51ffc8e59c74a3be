"""Every scheduler entry runs on every family it claims; every other family refuses it."""

from __future__ import annotations

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import GenerationRequest, RequestError, builtin
from pipelines.families import FAMILIES
from pipelines.loading import fresh_pipeline
from pipelines.schedulers import (
    SCHEDULERS,
    available_schedulers,
    build_scheduler,
    flow_shift_of,
    unavailable_schedulers,
)

IMAGE_MODELS = {"sd15": "tiny-sd", "sdxl": "tiny-sdxl", "flux": "tiny-flux"}
VIDEO_MODELS = {"wan21": "tiny-wan", "wan22": "tiny-wan22", "wan21-i2v": "tiny-wan-i2v"}
PAIRS = [(s.name, fam) for s in SCHEDULERS for fam in s.families]


@pytest.mark.parametrize(("name", "family"), PAIRS, ids=[f"{f}:{n}" for n, f in PAIRS])
def test_entry_runs_two_steps_on_each_claimed_family(manager, cache_root, name, family):
    if family in IMAGE_MODELS:
        out = manager.generate(
            GenerationRequest(prompt="a boat", model=IMAGE_MODELS[family], scheduler=name,
                              num_inference_steps=2, width=64, height=64, seed=5)
        )  # fmt: skip
        image = np.asarray(out.images[0])
        assert image.shape == (64, 64, 3) and image.std() > 0
        return
    # Video families: run the real Wan pipelines here (the video engine has its own tests).
    fam = FAMILIES[family]
    if family not in VIDEO_MODELS:  # no tiny model of this layout: the scheduler must build
        wan = builtin.ensure_model("tiny-wan", cache_root)
        config = diffusers.DiffusionPipeline.from_pretrained(str(wan)).scheduler.config
        assert build_scheduler(name, fam, dict(config), [5]).config.num_train_timesteps == 1000
        return
    path = builtin.ensure_model(VIDEO_MODELS[family], cache_root)
    base = diffusers.DiffusionPipeline.from_pretrained(str(path), dtype=torch.float32)
    scheduler = build_scheduler(name, fam, dict(base.scheduler.config), [5])
    extra = {"image": Image.new("RGB", (32, 32), "red")} if fam.start_image == "required" else {}
    frames = fresh_pipeline(base, scheduler)(
        prompt="a boat", num_inference_steps=2, height=32, width=32, num_frames=5,
        generator=torch.Generator("cpu").manual_seed(5), output_type="np", **extra,
    ).frames[0]  # fmt: skip
    assert frames.shape == (5, 32, 32, 3) and np.isfinite(frames).all()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_refuses_what_it_cannot_run(family):
    fam = FAMILIES[family]
    offered = set(available_schedulers(fam)) | set(unavailable_schedulers(fam))
    for spec in SCHEDULERS:
        if spec.name in offered:
            continue
        with pytest.raises(RequestError) as err:
            build_scheduler(spec.name, fam, {})
        assert err.value.field == "scheduler" and "choose one of" in err.value.rule


def test_flux_never_offers_heun_and_sd_never_offers_flow():
    assert "Flow Heun" not in available_schedulers(FAMILIES["flux"])
    assert "Flow Heun" in available_schedulers(FAMILIES["wan21"])
    assert not {"Flow Euler", "Flow Heun"} & set(available_schedulers(FAMILIES["sd15"]))


def test_flow_overrides_use_the_models_shift_under_either_name():
    wan = FAMILIES["wan21"]
    unipc_cfg = {"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction",
                 "use_flow_sigmas": True, "flow_shift": 5.0}  # fmt: skip
    euler = build_scheduler("Flow Euler", wan, unipc_cfg)
    assert euler.config.shift == 5.0
    euler_cfg = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
    unipc = build_scheduler("UniPC", wan, euler_cfg)
    assert unipc.config.prediction_type == "flow_prediction"
    assert unipc.config.use_flow_sigmas and unipc.config.flow_shift == 3.0
    assert flow_shift_of(euler_cfg) == 3.0 and flow_shift_of(unipc_cfg) == 5.0


def test_plain_name_switches_karras_off_even_if_model_ships_it_on():
    shipped = {"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": True}
    plain = build_scheduler("DPM++ 2M", FAMILIES["sd15"], shipped)
    karras = build_scheduler("DPM++ 2M Karras", FAMILIES["sd15"], shipped)
    assert plain.config.use_karras_sigmas is False and karras.config.use_karras_sigmas is True


def test_missing_package_is_listed_with_reason(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "torchsde" else real(n))
    fam = FAMILIES["sd15"]
    assert "DPM++ SDE Karras" not in available_schedulers(fam)
    assert "torchsde" in unavailable_schedulers(fam)["DPM++ SDE Karras"]
    with pytest.raises(RequestError, match="unavailable here: needs the 'torchsde' package"):
        build_scheduler("DPM++ SDE Karras", fam, {})
