"""Clip skip (A1111's meaning: 1 = last layer): request, infotext round trip, CLI
flag, form, and pixels against diffusers given embeddings taken by hand from the
text encoder's hidden states."""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import pytest
import torch

from pipelines import EngineSettings, GenerationRequest, PipelineManager, RequestError, builtin
from pipelines.parameters import infotext_for, request_from_infotext
from pipelines.request import validate

BASE = dict(prompt="a lighthouse at dusk", negative_prompt="blurry", num_inference_steps=4,
            guidance_scale=5.0, width=64, height=64, seed=9, scheduler="Euler")  # fmt: skip


def px(result: Any) -> np.ndarray:
    return np.asarray(result.images[0])


def sd_pipe(cache_root: Any) -> Any:
    path = str(builtin.ensure_model("tiny-sd", cache_root))
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        path, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(
        pipe.scheduler.config, use_karras_sigmas=False
    )
    return pipe


@torch.no_grad()
def by_hand(pipe: Any, text: str, skip: int) -> torch.Tensor:
    """A1111: hidden_states[-skip] through the final layer norm (skip 1 = last_hidden_state)."""
    ids = pipe.tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
    out = pipe.text_encoder(ids, output_hidden_states=True)
    if skip == 1:
        return out.last_hidden_state
    te = pipe.text_encoder  # transformers 5 flattened CLIPTextModel's text_model
    return getattr(te, "text_model", te).final_layer_norm(out.hidden_states[-skip])


def test_clip_skip_2_equals_diffusers_with_hand_made_penultimate_embeddings(manager, cache_root):
    ours = manager.generate(GenerationRequest(**BASE, clip_skip=2))
    pipe = sd_pipe(cache_root)
    theirs = pipe(
        prompt_embeds=by_hand(pipe, BASE["prompt"], 2),
        negative_prompt_embeds=by_hand(pipe, "blurry", 2),
        num_inference_steps=4, guidance_scale=5.0, width=64, height=64,
        generator=torch.Generator("cpu").manual_seed(9),
    ).images[0]  # fmt: skip
    assert np.array_equal(px(ours), np.asarray(theirs))
    one = manager.generate(GenerationRequest(**BASE))
    assert not np.array_equal(px(ours), px(one)), "clip skip 2 had no effect"
    assert "Clip skip: 2" in ours.infotexts[0]
    assert "Clip skip" not in one.infotexts[0]  # A1111 writes it from 2 on


def test_clip_skip_past_the_models_layers_is_a_field_error(manager):
    with pytest.raises(RequestError) as e:  # tiny-sd's text encoder has 2 layers
        manager.generate(GenerationRequest(**BASE, clip_skip=3))
    assert e.value.field == "clip_skip" and "1..2" in str(e.value)


@pytest.mark.parametrize("value", [0, 13, 1.5, "2"])
def test_clip_skip_range(value):
    from pipelines.families import FAMILIES

    req = GenerationRequest(**{**BASE, "model": "tiny-sd"}, clip_skip=value)
    with pytest.raises(RequestError) as e:
        validate(req, FAMILIES["sd15"])
    assert e.value.field == "clip_skip"


def test_sdxl_ignores_clip_skip_unless_sdxl_clip_l_skip(manager, cache_root):
    sdxl = {**BASE, "model": "tiny-sdxl"}
    plain = manager.generate(GenerationRequest(**sdxl))
    skipped = manager.generate(GenerationRequest(**sdxl, clip_skip=2))
    assert np.array_equal(px(plain), px(skipped))
    assert any("sdxl_clip_l_skip" in w for w in skipped.warnings)
    on = PipelineManager(EngineSettings(default_model="tiny-sd",
                                        devices=("cpu",), cache_root=cache_root,
                                        sdxl_clip_l_skip=True))  # fmt: skip
    # A1111 with the option: CLIP-L takes hidden_states[-clip_skip] (SDXL's default is -2)
    two = on.generate(GenerationRequest(**sdxl, clip_skip=2))
    assert two.warnings == [] and np.array_equal(px(plain), px(two))
    last = on.generate(GenerationRequest(**sdxl, clip_skip=1))
    assert not np.array_equal(px(plain), px(last)), "CLIP-L skip had no effect"


def test_infotext_round_trip():
    req = GenerationRequest(**{**BASE, "model": "tiny-sd"}, clip_skip=2)
    text = infotext_for(req, 9, None, {})
    assert request_from_infotext(text).clip_skip == 2
    plain = infotext_for(GenerationRequest(**{**BASE, "model": "tiny-sd"}), 9, None, {})
    assert request_from_infotext(plain).clip_skip == 1


def test_form_and_json_carry_clip_skip():
    from ui.form import request_from_widgets, widgets_from_request

    req = request_from_widgets({"prompt": "x", "clip_skip": 2.0})
    assert req.clip_skip == 2
    assert widgets_from_request(req)["clip_skip"] == 2
    assert request_from_widgets({"prompt": "x", "clip_skip": None}).clip_skip == 1
    assert GenerationRequest.from_json('{"prompt": "x", "clip_skip": 2}').clip_skip == 2


def test_cli_flag():
    import app

    args = app.build_parser().parse_args(["generate", "--prompt", "x", "--clip-skip", "2"])
    assert args.clip_skip == 2
