"""A1111's weighting and chunking on the tiny built-in SD and SDXL text encoders.

References are computed by hand from token ids (A1111's algorithm written out
step by step) or taken from diffusers itself (`encode_prompt`, its TI loader).
The tiny CLIP tokenizer is byte-level: a word of n letters is n tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipelines.builtin import ensure_model
from pipelines.errors import RequestError
from pipelines.prompt_encoding import (
    Chunker,
    encode_for_pipeline,
    encode_prompt_schedule,
    schedule_callback,
    schedule_tensor_inputs,
)

SDXL_KEYS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
             "negative_pooled_prompt_embeds")  # fmt: skip


def _load(name: str, root: Path) -> Any:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(ensure_model(name, root))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def sd(cache_root: Path) -> Any:
    return _load("tiny-sd", cache_root)


@pytest.fixture(scope="module")
def sdxl(cache_root: Path) -> Any:
    return _load("tiny-sdxl", cache_root)


def ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def frame(tokenizer: Any, tokens: list[int]) -> list[int]:
    """BOS + tokens + EOS, then the pad token up to 77 (A1111's chunk)."""
    assert len(tokens) <= 75
    return [tokenizer.bos_token_id, *tokens, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * (
        75 - len(tokens)
    )


@torch.no_grad()
def clip(model: Any, *rows: list[int]) -> torch.Tensor:
    """Last hidden state of each 77-token row, encoded alone, concatenated (A1111's chunks)."""
    return torch.cat([model(torch.tensor([r])).last_hidden_state for r in rows], dim=1)


# ---------------------------------------------------------------- parity with diffusers


@pytest.mark.parametrize("negative", ["", "ugly, blurry"])
def test_plain_prompt_is_exactly_diffusers_sd(sd: Any, negative: str) -> None:
    ours = encode_for_pipeline(sd, "sd15", "a red fox, in the snow", negative)
    theirs = sd.encode_prompt("a red fox, in the snow", "cpu", 1, True, negative or None)
    assert torch.equal(ours["prompt_embeds"], theirs[0])
    assert torch.equal(ours["negative_prompt_embeds"], theirs[1])


@pytest.mark.parametrize("negative", ["", "ugly, blurry"])
def test_plain_prompt_is_exactly_diffusers_sdxl(sdxl: Any, negative: str) -> None:
    ours = encode_for_pipeline(sdxl, "sdxl", "a red fox, in the snow", negative)
    theirs = sdxl.encode_prompt(
        "a red fox, in the snow", device="cpu", negative_prompt=negative or None
    )
    for key, tensor in zip(SDXL_KEYS, theirs, strict=True):
        assert torch.equal(ours[key], tensor), key
    if not negative:  # diffusers' (and A1111's) SDXL zeros for an empty negative prompt
        assert ours["negative_prompt_embeds"].count_nonzero() == 0


def test_plain_prompt_gives_diffusers_pixels(sd: Any) -> None:
    def run(**kwargs: Any) -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(7)
        return sd(num_inference_steps=3, height=64, width=64, generator=generator,
                  output_type="np", **kwargs).images  # fmt: skip

    by_text = run(prompt="a red fox", negative_prompt=None)
    by_embeds = run(**encode_for_pipeline(sd, "sd15", "a red fox", ""))
    assert np.array_equal(by_text, by_embeds)


# ---------------------------------------------------------------- chunks


def test_200_token_prompt_is_three_chunks(sd: Any) -> None:
    tok = sd.tokenizer
    prompt = " ".join(["xy"] * 100)  # 200 tokens, no comma
    t = ids(tok, prompt)
    assert len(t) == 200
    chunked = Chunker(tok).chunk(prompt)
    assert chunked.token_count == 200
    rows = [frame(tok, t[0:75]), frame(tok, t[75:150]), frame(tok, t[150:200])]
    assert [c.tokens for c in chunked.chunks] == rows
    embeds = encode_for_pipeline(sd, "sd15", prompt, "")["prompt_embeds"]
    assert embeds.shape == (1, 231, 32)
    assert torch.equal(embeds, clip(sd.text_encoder, *rows))


def test_full_chunk_backs_up_to_a_comma_within_20_tokens(sd: Any) -> None:
    tok = sd.tokenizer
    near = "a" * 69 + ", " + "b" * 10  # the comma is token 70; the chunk fills at 75
    t = ids(tok, near)
    first, second = Chunker(tok).chunk(near).chunks
    assert t[69] == ids(tok, ",")[0]
    assert first.tokens == frame(tok, t[:70])  # cut after the comma, padded
    assert second.tokens == frame(tok, t[70:])  # the 5 moved tokens, then the rest
    far = "a" * 40 + ", " + "b" * 50  # the comma 35 tokens back: no backtrack
    t = ids(tok, far)
    assert [c.tokens for c in Chunker(tok).chunk(far).chunks] == [
        frame(tok, t[:75]),
        frame(tok, t[75:]),
    ]


def test_break_starts_a_new_chunk(sd: Any) -> None:
    tok = sd.tokenizer
    rows = [frame(tok, ids(tok, "a cat")), frame(tok, ids(tok, "a dog"))]
    assert [c.tokens for c in Chunker(tok).chunk("a cat BREAK a dog").chunks] == rows
    embeds = encode_for_pipeline(sd, "sd15", "a cat BREAK a dog", "")["prompt_embeds"]
    assert torch.equal(embeds, clip(sd.text_encoder, *rows))


def test_negative_is_padded_to_the_positive_with_empty_chunks(sd: Any, sdxl: Any) -> None:
    tok = sd.tokenizer
    long = " ".join(["xy"] * 100)
    kw = encode_for_pipeline(sd, "sd15", long, "ugly")
    empty = sd.encode_prompt("", "cpu", 1, False)[0]
    neg = kw["negative_prompt_embeds"]
    assert neg.shape == kw["prompt_embeds"].shape == (1, 231, 32)
    assert torch.equal(neg[:, :77], clip(sd.text_encoder, frame(tok, ids(tok, "ugly"))))
    assert torch.equal(neg[:, 77:154], empty) and torch.equal(neg[:, 154:], empty)
    swapped = encode_for_pipeline(sd, "sd15", "ugly", long)  # the positive is padded too
    assert torch.equal(swapped["prompt_embeds"], neg)
    xl = encode_for_pipeline(sdxl, "sdxl", long, "")
    assert xl["negative_prompt_embeds"].shape == (1, 231, 64)
    assert xl["negative_prompt_embeds"].count_nonzero() == 0


# ---------------------------------------------------------------- weights


def test_emphasis_scales_only_its_tokens_then_restores_the_mean(sd: Any) -> None:
    tok = sd.tokenizer
    row = frame(tok, ids(tok, "a cat sat"))  # "a cat sat" = the fragments' tokens
    plain = clip(sd.text_encoder, row)
    weighted = encode_for_pipeline(sd, "sd15", "a (cat:1.5) sat", "")["prompt_embeds"]
    w = torch.ones(77)
    w[2:5] = 1.5  # c, a, t</w> after BOS and "a</w>"
    by_hand = plain * w[None, :, None]
    by_hand = by_hand * (plain.mean() / by_hand.mean())
    assert torch.allclose(weighted, by_hand, rtol=0, atol=1e-6)
    assert torch.allclose(weighted.mean(), plain.mean(), rtol=1e-5)
    ratio = weighted / plain
    scale = ratio[0, 0, 0]
    assert not torch.allclose(scale, torch.tensor(1.0))
    assert torch.allclose(ratio[0, 2:5], 1.5 * scale, rtol=1e-4)
    assert torch.allclose(ratio[0, w == 1.0], scale, rtol=1e-4)


def test_sdxl_weights_each_encoder_and_keeps_pooled(sdxl: Any) -> None:
    plain = encode_for_pipeline(sdxl, "sdxl", "a cat sat", "")
    weighted = encode_for_pipeline(sdxl, "sdxl", "a (cat:0.5) sat", "")
    p, q = plain["prompt_embeds"], weighted["prompt_embeds"]
    for half in (slice(0, 32), slice(32, 64)):  # CLIP-L, then CLIP-G: each mean restored
        assert torch.allclose(q[..., half].mean(), p[..., half].mean(), rtol=1e-5)
        assert not torch.allclose(q[..., half], p[..., half])
    assert torch.equal(weighted["pooled_prompt_embeds"], plain["pooled_prompt_embeds"])


# ---------------------------------------------------------------- clip skip


@torch.no_grad()
def test_clip_skip_2_is_penultimate_layer_through_final_norm(sd: Any) -> None:
    te, tok = sd.text_encoder, sd.tokenizer
    kw = encode_for_pipeline(sd, "sd15", "a red fox", "ugly", clip_skip=2)
    for key, text in (("prompt_embeds", "a red fox"), ("negative_prompt_embeds", "ugly")):
        out = te(torch.tensor([frame(tok, ids(tok, text))]), output_hidden_states=True)
        assert torch.equal(kw[key], te.final_layer_norm(out.hidden_states[-2])), key
    with pytest.raises(RequestError) as err:
        encode_for_pipeline(sd, "sd15", "a", "", clip_skip=3)  # the tiny encoder has 2 layers
    assert err.value.field == "clip_skip"


@torch.no_grad()
def test_sdxl_clip_skip_only_with_sdxl_clip_l_skip(sdxl: Any) -> None:
    row = torch.tensor([frame(sdxl.tokenizer, ids(sdxl.tokenizer, "a red fox"))])
    hidden = sdxl.text_encoder(row, output_hidden_states=True).hidden_states
    default = encode_for_pipeline(sdxl, "sdxl", "a red fox", "", clip_skip=1)
    assert torch.equal(default["prompt_embeds"][..., :32], hidden[-2])
    skipped = encode_for_pipeline(sdxl, "sdxl", "a red fox", "", 1, sdxl_clip_l_skip=True)
    assert torch.equal(skipped["prompt_embeds"][..., :32], hidden[-1])  # A1111: no final norm
    assert torch.equal(skipped["prompt_embeds"][..., 32:], default["prompt_embeds"][..., 32:])


# ---------------------------------------------------------------- textual inversion


def test_textual_inversion_vectors_match_diffusers_loader(sd: Any, cache_root: Path) -> None:
    vectors = torch.randn(3, 32, generator=torch.Generator().manual_seed(3))
    ours = encode_for_pipeline(sd, "sd15", "a mytok cat", "", embeddings={"mytok": vectors})
    loaded = _load("tiny-sd", cache_root)  # diffusers' loader adds tokens to its own copy
    loaded.load_textual_inversion({"<tok>": vectors}, token="<tok>")
    theirs = loaded.encode_prompt("a <tok> cat", "cpu", 1, True)
    assert torch.equal(ours["prompt_embeds"], theirs[0])
    # diffusers-loaded tokens are expanded in our encoder too
    assert torch.equal(encode_for_pipeline(loaded, "sd15", "a <tok> cat", "")["prompt_embeds"],
                       theirs[0])  # fmt: skip


def test_textual_inversion_never_straddles_chunks(sd: Any) -> None:
    chunked = Chunker(sd.tokenizer, {"mytok": torch.zeros(3, 32)}).chunk("a" * 73 + " mytok")
    first, second = chunked.chunks
    assert first.fixes == [] and first.tokens[74] == sd.tokenizer.eos_token_id
    assert [o for o, _ in second.fixes] == [1] and second.tokens[1:4] == [0, 0, 0]


def test_textual_inversion_shapes_are_checked(sd: Any, sdxl: Any) -> None:
    with pytest.raises(RequestError, match="width 16"):
        encode_for_pipeline(sd, "sd15", "mytok", "", embeddings={"mytok": torch.zeros(2, 16)})
    with pytest.raises(RequestError, match="clip_l and clip_g"):
        encode_for_pipeline(sdxl, "sdxl", "mytok", "", embeddings={"mytok": torch.zeros(2, 32)})
    both = {"clip_l": torch.randn(2, 32), "clip_g": torch.randn(2, 32)}
    plain = encode_for_pipeline(sdxl, "sdxl", "a mytok", "")["prompt_embeds"]
    with_ti = encode_for_pipeline(sdxl, "sdxl", "a mytok", "", embeddings={"mytok": both})
    assert with_ti["prompt_embeds"].shape == plain.shape
    assert not torch.allclose(with_ti["prompt_embeds"], plain)


# ---------------------------------------------------------------- schedules


def test_schedule_entries_and_their_texts(sd: Any) -> None:
    entries = encode_prompt_schedule(sd, "sd15", "a [dog:cat:2]", "[p|q]", 4)
    assert [end for end, _ in entries] == [1, 2, 3, 4]
    expect = [("a dog", "p"), ("a dog", "q"), ("a cat", "p"), ("a cat", "q")]
    for (_, kw), (pos, neg) in zip(entries, expect, strict=True):
        alone = encode_for_pipeline(sd, "sd15", pos, neg)  # batched vs alone: float order
        assert torch.allclose(kw["prompt_embeds"], alone["prompt_embeds"], atol=1e-5)
        assert torch.allclose(
            kw["negative_prompt_embeds"], alone["negative_prompt_embeds"], atol=1e-5
        )
    never = encode_prompt_schedule(sd, "sd15", "[a:b:6]", "", 4)  # N >= steps: plain "a"
    assert len(never) == 1
    assert torch.equal(
        never[0][1]["prompt_embeds"], encode_for_pipeline(sd, "sd15", "a", "")["prompt_embeds"]
    )
    with pytest.raises(RequestError):
        encode_for_pipeline(sd, "sd15", "a [b:c:2]", "")
    with pytest.raises(ValueError, match="flux"):
        encode_for_pipeline(sd, "flux", "a", "")


def _capture(unet: Any) -> tuple[list[dict[str, torch.Tensor]], Any]:
    seen: list[dict[str, torch.Tensor]] = []

    def hook(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        added = kwargs.get("added_cond_kwargs") or {}
        seen.append({"states": kwargs["encoder_hidden_states"].clone(),
                     "pooled": added.get("text_embeds")})  # fmt: skip

    return seen, unet.register_forward_pre_hook(hook, with_kwargs=True)


def _cfg(entry: dict[str, torch.Tensor], key: str, images: int) -> torch.Tensor:
    neg, pos = entry["negative_" + key], entry[key]
    return torch.cat(
        [neg.repeat(images, *[1] * (neg.dim() - 1)), pos.repeat(images, *[1] * (pos.dim() - 1))]
    )


def test_callback_switches_at_a1111_steps_sd(sd: Any) -> None:
    from diffusers import EulerDiscreteScheduler

    entries = encode_prompt_schedule(sd, "sd15", "a [dog:cat:1]", "", 4)
    # one UNet call per step (the built-in's PNDM makes steps + 1)
    euler = type(sd)(
        **{**sd.components, "scheduler": EulerDiscreteScheduler.from_config(sd.scheduler.config)}
    )
    seen, handle = _capture(sd.unet)
    try:
        euler(**entries[0][1], num_inference_steps=4, height=64, width=64, num_images_per_prompt=2,
           output_type="latent", generator=torch.Generator().manual_seed(0),
           callback_on_step_end=schedule_callback(entries),
           callback_on_step_end_tensor_inputs=schedule_tensor_inputs("sd15"))  # fmt: skip
    finally:
        handle.remove()
    expected = [0, 0, 1, 1]  # A1111: steps 0 and 1 (<= 1) use "a dog"
    assert len(seen) == 4
    for step, index in enumerate(expected):
        assert torch.equal(seen[step]["states"], _cfg(entries[index][1], "prompt_embeds", 2)), step


def test_callback_swaps_pooled_too_sdxl(sdxl: Any) -> None:
    entries = encode_prompt_schedule(sdxl, "sdxl", "[a|b]", "c", 3)
    calls: list[int] = []

    def progress(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        calls.append(i)
        return {}

    seen, handle = _capture(sdxl.unet)
    try:
        sdxl(**entries[0][1], num_inference_steps=3, height=64, width=64, output_type="latent",
             callback_on_step_end=schedule_callback(entries, then=progress),
             callback_on_step_end_tensor_inputs=schedule_tensor_inputs("sdxl"))  # fmt: skip
    finally:
        handle.remove()
    assert calls == [0, 1, 2]
    for step, index in enumerate([0, 0, 1]):  # [a|b]: a, a, b (A1111's step rule)
        assert torch.equal(seen[step]["states"], _cfg(entries[index][1], "prompt_embeds", 1))
        assert torch.equal(seen[step]["pooled"], _cfg(entries[index][1], "pooled_prompt_embeds", 1))
    assert not torch.equal(seen[1]["pooled"], seen[2]["pooled"])
