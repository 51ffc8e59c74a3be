"""Request <-> A1111 infotext: what the engine writes parses back to the same request."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipelines import GenerationRequest
from pipelines.infotext import parse_infotext
from pipelines.parameters import infotext_for, request_from_infotext

RESOLVED = GenerationRequest(
    prompt="a castle, on a hill\nat night: moody",
    negative_prompt="blurry, lowres",
    model="tiny-sd", scheduler="DPM++ 2M SDE Karras", num_inference_steps=30,
    guidance_scale=6.5, width=512, height=768, seed=1057871485,
    loras=(("tiny-sd-lora", 0.8), ("other", -0.25)),
)  # fmt: skip


@pytest.mark.parametrize("scheduler", ["DPM++ 2M SDE Karras", "Euler a", "LMS Karras", "UniPC"])
def test_round_trip(scheduler):
    req = replace(RESOLVED, scheduler=scheduler)
    text = infotext_for(req, req.seed, "0123456789", {"tiny-sd-lora": "aabbccddeeff"})
    back = request_from_infotext(text)
    assert back == req


def test_written_like_a1111():
    text = infotext_for(RESOLVED, 42, "0123456789", {"tiny-sd-lora": "aabbccddeeff"})
    prompt, negative, params = parse_infotext(text)
    assert prompt.endswith("<lora:tiny-sd-lora:0.8> <lora:other:-0.25>")
    assert params["Sampler"] == "DPM++ 2M SDE" and params["Schedule type"] == "Karras"
    assert params["CFG scale"] == "6.5" and params["Size"] == "512x768"
    assert params["Seed"] == "42" and params["Model hash"] == "0123456789"
    assert params["Lora hashes"] == "tiny-sd-lora: aabbccddeeff"
    assert text.splitlines()[-1].startswith("Steps: 30, Sampler: DPM++ 2M SDE, Schedule type")


def test_reads_other_studios_infotext():
    text = (
        "masterpiece, 1girl, <lora:detail:0.8>\n"
        "Negative prompt: lowres, bad anatomy\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1057871485, "
        'Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "detail: '
        '1a2b3c4d5e6f", Version: v1.10.1'
    )
    req = request_from_infotext(text)
    assert req.prompt == "masterpiece, 1girl" and dict(req.loras) == {"detail": 0.8}
    assert req.scheduler == "DPM++ 2M Karras" and req.num_inference_steps == 20
    assert (req.width, req.height, req.seed, req.guidance_scale) == (512, 512, 1057871485, 7.0)
    old_style = request_from_infotext("a cat\nSteps: 5, Sampler: Euler a, CFG scale: 3, Seed: 1")
    assert old_style.scheduler == "Euler a"
