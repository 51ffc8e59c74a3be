"""Bad input: every case is refused up front with RequestError naming the field and the rule."""

from __future__ import annotations

import math

import pytest

from pipelines import GenerationRequest, RequestError

BIG = "x" * 100_000

CASES = [
    # (request fields, field named in the error, a fragment of the rule)
    ({"num_inference_steps": 0}, "num_inference_steps", "from 1 to 150"),
    ({"num_inference_steps": -5}, "num_inference_steps", "from 1 to 150"),
    ({"num_inference_steps": 10**9}, "num_inference_steps", "from 1 to 150"),
    ({"num_inference_steps": 2.5}, "num_inference_steps", "whole number"),
    ({"num_inference_steps": True}, "num_inference_steps", "whole number"),
    ({"width": 100}, "width", "multiple of 8"),
    ({"height": 65}, "height", "multiple of 8"),
    ({"width": 0}, "width", "from 64 to 2048"),
    ({"width": 100_000}, "width", "from 64 to 2048"),
    ({"guidance_scale": math.nan}, "guidance_scale", "number from 0 to 30"),
    ({"guidance_scale": -1.0}, "guidance_scale", "number from 0 to 30"),
    ({"guidance_scale": math.inf}, "guidance_scale", "number from 0 to 30"),
    ({"guidance_scale": "7"}, "guidance_scale", "number"),
    ({"model": "no-such-model"}, "model", "available: tiny-sd"),
    ({"model": "../../etc/passwd"}, "model", "no paths"),
    ({"model": "/etc"}, "model", "no paths"),
    ({"model": "owner/../x"}, "model", "no paths"),
    ({"scheduler": "Bogus"}, "scheduler", "choose one of: Euler, Euler a"),
    ({"scheduler": "Flow Euler"}, "scheduler", "not a scheduler for Stable Diffusion"),
    (
        {"loras": {"missing": 1.0}},
        "loras",
        "unknown LoRA 'missing'; available: atelier-shapes-outline, tiny-sd-lora",
    ),
    ({"loras": {"../secret": 1.0}}, "loras", "no paths"),
    ({"loras": {"tiny-sd-lora": 5.0}}, "loras[tiny-sd-lora]", "from -2 to 2"),
    ({"loras": "tiny-sd-lora"}, "loras", "mapping of LoRA name to weight"),
    ({"prompt": BIG}, "prompt", "at most 10000 characters"),
    ({"negative_prompt": BIG}, "negative_prompt", "at most 10000 characters"),
    ({"prompt": None}, "prompt", "must be text"),
    ({"prompt": "a\x00b"}, "prompt", "NUL"),
    ({"seed": -2}, "seed", "from 0 to 4294967295"),
    ({"seed": 2**40}, "seed", "from 0 to 4294967295"),
    ({"batch_size": 0}, "batch_size", "from 1 to 8"),
    ({"batch_size": 9}, "batch_size", "from 1 to 8"),
    ({"batch_count": 0}, "batch_count", "from 1 to 100"),
    ({"model": "tiny-flux", "width": 72}, "width", "multiple of 16 for Flux"),
    ({"model": "tiny-flux", "negative_prompt": "blur"}, "negative_prompt", "no negative prompt"),
    ({"model": "tiny-flux", "scheduler": "DPM++ 2M Karras"}, "scheduler", "Flow Euler"),
    ({"model": "tiny-wan"}, "model", "video model"),
    ({"prompt": "<lora:x:heavy>"}, "prompt", "<lora:NAME:WEIGHT> with a number"),
    ({"prompt": "<lora:a:1:2>"}, "prompt", "is not <lora:NAME>"),
]


@pytest.mark.parametrize(
    ("fields", "field", "fragment"), CASES, ids=[str(c[0])[:60] for c in CASES]
)
def test_bad_input_is_refused_with_field_and_rule(manager, fields, field, fragment):
    base = {"prompt": "a cat", "num_inference_steps": 2, "width": 64, "height": 64}
    with pytest.raises(RequestError) as err:
        manager.prepare(GenerationRequest(**{**base, **fields}))
    assert err.value.field == field, str(err.value)
    assert fragment in str(err.value)
    assert str(err.value).startswith(f"{field}: ")


def test_unknown_json_field_is_named():
    with pytest.raises(RequestError) as err:
        GenerationRequest.from_dict({"prompt": "a", "stepz": 3})
    assert err.value.field == "stepz" and "known fields" in err.value.rule


def test_json_round_trip_and_aliases():
    req = GenerationRequest(
        prompt="a fox", negative_prompt="blur", model="tiny-sd", scheduler="DPM++ 2M Karras",
        num_inference_steps=7, guidance_scale=6.5, width=64, height=128, seed=42,
        batch_size=2, batch_count=3, loras={"tiny-sd-lora": 0.5},
    )  # fmt: skip
    assert GenerationRequest.from_json(req.to_json()) == req
    short = GenerationRequest.from_dict({"prompt": "a", "steps": 3, "cfg": 2})
    assert (short.num_inference_steps, short.guidance_scale) == (3, 2)


def test_server_keeps_serving_after_bad_input(manager):
    with pytest.raises(RequestError):
        manager.generate(GenerationRequest(prompt="a", width=63))
    result = manager.generate(
        GenerationRequest(prompt="a", num_inference_steps=1, width=64, height=64, seed=1)
    )
    assert len(result.images) == 1
