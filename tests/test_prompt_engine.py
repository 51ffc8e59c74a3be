"""A1111's prompt language in the engine: the image jobs encode prompts with
prompt_encoding (emphasis, long prompts, BREAK, prompt editing) and the pixels
equal a direct diffusers call given the same embeddings; Flux strips the syntax
with a warning in the result."""

from __future__ import annotations

from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import GenerationRequest, builtin
from pipelines.prompt_encoding import (
    encode_for_pipeline,
    encode_prompt_schedule,
    schedule_tensor_inputs,
)
from pipelines.tasks import Inputs

BASE = dict(num_inference_steps=4, guidance_scale=5.0, width=64, height=64, seed=77,
            scheduler="Euler")  # fmt: skip
INIT = Image.radial_gradient("L").resize((64, 64)).convert("RGB")


def px(result: Any) -> np.ndarray:
    return np.asarray(result.images[0])


def direct(cache_root: Any, model: str, cls: str = "") -> Any:
    path = str(builtin.ensure_model(model, cache_root))
    family = builtin.BUILTIN_MODELS[model]
    extra = {"safety_checker": None, "requires_safety_checker": False} if family == "sd15" else {}
    pipe_cls = getattr(diffusers, cls) if cls else diffusers.DiffusionPipeline
    pipe = pipe_cls.from_pretrained(path, dtype=torch.float32, **extra)
    kw = {"use_karras_sigmas": False} if family != "flux" else {}
    if family != "flux":
        pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config, **kw)
    return pipe


def gen(**call: Any) -> dict[str, Any]:
    return {"num_inference_steps": 4, "guidance_scale": 5.0, "width": 64, "height": 64,
            "generator": torch.Generator("cpu").manual_seed(77), **call}  # fmt: skip


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_emphasis_equals_diffusers_with_our_embeddings(manager, cache_root, model):
    prompt, negative = "a (lighthouse:1.4) at [dusk], ((stormy sea))", "blurry"
    ours = manager.generate(GenerationRequest(prompt=prompt, negative_prompt=negative,
                                              model=model, **BASE))  # fmt: skip
    assert ours.warnings == []
    pipe = direct(cache_root, model)
    family = builtin.BUILTIN_MODELS[model]
    embeds = encode_for_pipeline(pipe, family, prompt, negative)
    theirs = pipe(**embeds, **gen()).images[0]
    assert np.array_equal(px(ours), np.asarray(theirs))
    plain = manager.generate(
        GenerationRequest(
            prompt="a lighthouse at dusk, stormy sea", negative_prompt=negative, model=model, **BASE
        )
    )
    assert not np.array_equal(px(ours), px(plain)), "the weights had no effect"


def test_long_prompt_is_not_truncated(manager):
    words = ", ".join(f"tower {i}" for i in range(60))  # ~180 tokens: three chunks
    a = manager.generate(GenerationRequest(prompt=words + ", red roof", **BASE))
    b = manager.generate(GenerationRequest(prompt=words + ", blue roof", **BASE))
    assert not np.array_equal(px(a), px(b)), "words past token 77 were dropped"


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_prompt_editing_switches_at_step_k_like_a_hand_written_callback(manager, cache_root, model):
    prompt = "[a red fox:a blue whale:2] in the snow"
    ours = manager.generate(GenerationRequest(prompt=prompt, model=model, **BASE))
    pipe = direct(cache_root, model)
    family = builtin.BUILTIN_MODELS[model]
    schedule = encode_prompt_schedule(pipe, family, prompt, None, 4)
    assert [end for end, _ in schedule] == [2, 4]
    seen: list[int] = []

    def by_hand(p: Any, i: int, t: Any, kw: dict[str, Any]) -> dict[str, Any]:
        if i == 2:  # A1111: "a red fox" for steps 0..2, the whale from step 3
            seen.append(i)
            entry = schedule[1][1]
            out = {"prompt_embeds": torch.cat([entry["negative_prompt_embeds"],
                                               entry["prompt_embeds"]])}  # fmt: skip
            if family == "sdxl":
                out["add_text_embeds"] = torch.cat([entry["negative_pooled_prompt_embeds"],
                                                    entry["pooled_prompt_embeds"]])  # fmt: skip
            return out
        return {}

    theirs = pipe(
        **schedule[0][1],
        **gen(),
        callback_on_step_end=by_hand,
        callback_on_step_end_tensor_inputs=schedule_tensor_inputs(family),
    ).images[0]
    assert seen == [2]
    assert np.array_equal(px(ours), np.asarray(theirs))
    fox = manager.generate(GenerationRequest(prompt="a red fox in the snow", model=model, **BASE))
    assert not np.array_equal(px(ours), px(fox)), "the switch had no effect"


def test_editing_at_or_after_the_last_step_is_the_first_text(manager):
    late = manager.generate(GenerationRequest(prompt="[a red fox:a blue whale:10]", **BASE))
    fox = manager.generate(GenerationRequest(prompt="a red fox", **BASE))
    assert np.array_equal(px(late), px(fox))


def test_editing_in_img2img_with_sdxl_runs_and_switches(manager):
    req = dict(model="tiny-sdxl", strength=0.8, **BASE)
    edited = manager.generate(GenerationRequest(prompt="[a fox:a whale:1]", **req),
                              inputs=Inputs(init_image=INIT))  # fmt: skip
    fox = manager.generate(GenerationRequest(prompt="a fox", **req), inputs=Inputs(init_image=INIT))
    assert edited.warnings == []
    assert not np.array_equal(px(edited), px(fox))


def test_controlnet_and_inpaint_take_weighted_embeddings(manager, cache_root):
    from tests.test_tasks import CONTROL, MASK

    unit = {"model": builtin.TINY_CONTROLNET}
    req = dict(prompt="a (house:1.3) [a:b:2]", **BASE)
    cn = manager.generate(GenerationRequest(**req, controlnets=[unit]),
                          inputs=Inputs(control_images=[CONTROL]))  # fmt: skip
    inp = manager.generate(GenerationRequest(**req, controlnets=[unit]),
                           inputs=Inputs(init_image=INIT, mask_image=MASK,
                                         control_images=[CONTROL]))  # fmt: skip
    assert len(cn.images) == len(inp.images) == 1


def test_flux_strips_the_syntax_and_warns(manager):
    flux = dict(model="tiny-flux", num_inference_steps=3, width=64, height=64, seed=3)
    weighted = manager.generate(GenerationRequest(prompt="a (castle:1.3) BREAK [at night]",
                                                  **flux))  # fmt: skip
    plain = manager.generate(GenerationRequest(prompt="a castle at night", **flux))
    assert np.array_equal(px(weighted), px(plain))
    assert plain.warnings == []
    assert len(weighted.warnings) == 1 and "emphasis" in weighted.warnings[0]
    assert weighted.infotexts[0].startswith("a (castle:1.3) BREAK [at night]\n")
    edited = manager.generate(GenerationRequest(prompt="[a castle:a ship:2]", **flux))
    assert any("prompt editing" in w for w in edited.warnings)


def test_infotext_keeps_the_prompt_as_typed(manager):
    prompt = "a (fox:1.2) [in:on:2] snow BREAK night"
    result = manager.generate(GenerationRequest(prompt=prompt, **BASE))
    assert result.infotexts[0].splitlines()[0] == prompt


def test_status_line_shows_warnings():
    from ui.generate_handlers import done_text

    assert done_text(1, "cpu", []) == "Done: 1 image(s) on cpu"
    assert "emphasis ignored" in done_text(1, "cpu", ["emphasis ignored"])


def test_cli_json_carries_warnings(manager, caplog):
    from ui.cli_jobs import run_one

    req = GenerationRequest(prompt="a (castle:1.3)", model="tiny-flux", num_inference_steps=2,
                            width=64, height=64, seed=1)  # fmt: skip
    with caplog.at_level("WARNING"):
        out = run_one(manager, req, None, None)
    assert "emphasis" in out["warnings"][0]
    assert "emphasis" in caplog.text
    plain = run_one(manager, GenerationRequest(prompt="a castle", **BASE), None, None)
    assert "warnings" not in plain
