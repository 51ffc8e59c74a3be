"""Textual-inversion embeddings from the embeddings folder: pixels equal diffusers'
`load_textual_inversion`, nothing leaks into the next request, A1111's TI hashes,
family and pickle refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines import EngineSettings, GenerationRequest, PipelineManager, RequestError, builtin

BASE = dict(num_inference_steps=4, guidance_scale=5.0, width=64, height=64, seed=21,
            scheduler="Euler")  # fmt: skip
WIDTH = 32  # the tiny models' CLIP width


def px(result: Any) -> np.ndarray:
    return np.asarray(result.images[0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("embeddings")
    g = torch.Generator().manual_seed(0)
    save_file({"emb_params": torch.randn(2, WIDTH, generator=g) * 2}, d / "shiny.safetensors")
    save_file(
        {
            "clip_l": torch.randn(1, WIDTH, generator=g) * 2,
            "clip_g": torch.randn(1, WIDTH, generator=g) * 2,
        },
        d / "glossy.safetensors",
    )
    (d / "unsafe.pt").write_bytes(b"\x80\x02}q\x00.")  # a pickle: never loaded
    return d


@pytest.fixture(scope="module")
def em(cache_root: Path, folder: Path) -> PipelineManager:
    return PipelineManager(EngineSettings(default_model="tiny-sd",
                                          devices=("cpu",), cache_root=cache_root,
                                          embeddings_dir=folder))  # fmt: skip


def test_pixels_equal_diffusers_load_textual_inversion(em, cache_root, folder):
    req = GenerationRequest(prompt="a photo of shiny, (shiny:1.0) castle",
                            negative_prompt="shiny blur", **BASE)  # fmt: skip
    ours = em.generate(req)
    path = str(builtin.ensure_model("tiny-sd", cache_root))
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        path, safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(
        pipe.scheduler.config, use_karras_sigmas=False
    )
    pipe.load_textual_inversion(str(folder / "shiny.safetensors"), token="shiny")
    theirs = pipe(prompt="a photo of shiny, shiny castle", negative_prompt="shiny blur",
                  num_inference_steps=4, guidance_scale=5.0, width=64, height=64,
                  generator=torch.Generator("cpu").manual_seed(21)).images[0]  # fmt: skip
    assert np.array_equal(px(ours), np.asarray(theirs))
    literal = em.generate(GenerationRequest(prompt="a photo of castle", negative_prompt="blur",
                                            **BASE))  # fmt: skip
    assert not np.array_equal(px(ours), px(literal)), "the embedding had no effect"


def test_nothing_leaks_into_the_next_request(em):
    plain = GenerationRequest(prompt="a photo of a castle", **BASE)
    before = em.generate(plain)
    em.generate(GenerationRequest(prompt="a photo of shiny castle", **BASE))
    after = em.generate(plain)
    assert np.array_equal(px(before), px(after))


def test_infotext_has_a1111_ti_hashes(em, folder):
    result = em.generate(GenerationRequest(prompt="shiny castle", **BASE))
    digest = hashlib.sha256((folder / "shiny.safetensors").read_bytes()).hexdigest()[:12]
    assert f'TI hashes: "shiny: {digest}"' in result.infotexts[0]
    assert result.infotexts[0].startswith("shiny castle\n")
    plain = em.generate(GenerationRequest(prompt="a castle", **BASE))
    assert "TI hashes" not in plain.infotexts[0]


def test_sdxl_embedding_equals_diffusers_loader_on_both_encoders(em, cache_root, folder):
    from safetensors.torch import load_file

    sdxl = dict(BASE, model="tiny-sdxl")
    used = em.generate(GenerationRequest(prompt="a glossy castle", **sdxl))
    path = str(builtin.ensure_model("tiny-sdxl", cache_root))
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(path)
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(
        pipe.scheduler.config, use_karras_sigmas=False
    )
    vectors = load_file(str(folder / "glossy.safetensors"))
    pipe.load_textual_inversion(vectors["clip_l"], token="glossy", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)  # fmt: skip
    pipe.load_textual_inversion(
        vectors["clip_g"],
        token="glossy",
        text_encoder=pipe.text_encoder_2,
        tokenizer=pipe.tokenizer_2,
    )
    theirs = pipe(
        prompt="a glossy castle",
        num_inference_steps=4,
        guidance_scale=5.0,
        width=64,
        height=64,
        generator=torch.Generator("cpu").manual_seed(21),
    ).images[0]
    assert np.array_equal(px(used), np.asarray(theirs))
    plain = em.generate(GenerationRequest(prompt="a castle", **sdxl))
    assert not np.array_equal(px(used), px(plain))
    assert "glossy" in em.embeddings.names("sdxl") and "glossy" not in em.embeddings.names("sd15")


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"prompt": "a glossy castle"}, "prompt", "for sdxl models"),
        ({"prompt": "x", "negative_prompt": "shiny", "model": "tiny-sdxl"}, "negative_prompt",
         "for sd15 models"),
        ({"prompt": "an unsafe castle"}, "prompt", "python app.py convert"),
    ],
)  # fmt: skip
def test_refusals_name_the_field(em, fields, field, fragment):
    with pytest.raises(RequestError) as e:
        em.generate(GenerationRequest(**{**BASE, **fields}))
    assert e.value.field == field and fragment in str(e.value)


def test_words_that_merely_contain_a_name_are_not_embeddings(em):
    assert em.embeddings.used_in({"prompt": "shinyness, unshiny"}, "sd15", "m") == []
    assert [e.name for e in em.embeddings.used_in({"prompt": "SHINY."}, "sd15", "m")] == ["shiny"]


def test_add_word_appends_the_embedding_to_a_prompt():
    from ui.generate_handlers import add_word

    assert add_word("a castle ", "shiny") == "a castle, shiny"
    assert add_word("", "shiny") == "shiny"
    assert add_word("a castle", None) == "a castle"


def test_a_file_added_later_is_found(tmp_path):
    from pipelines.embeddings import EmbeddingLibrary

    lib = EmbeddingLibrary(tmp_path)
    assert lib.names() == []
    save_file({"emb_params": torch.zeros(1, WIDTH)}, tmp_path / "late.safetensors")
    assert lib.names() == ["late"]
