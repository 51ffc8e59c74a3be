"""Styles: A1111's styles.csv read, applied in order ({prompt} placeholder), saved, and
expanded into the resolved request and the infotext."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import RequestError
from pipelines.request import GenerationRequest
from pipelines.styles import StyleLibrary, merge, read_styles

CSV = """name,prompt,negative_prompt
photo,"{prompt}, photograph, 35mm",cartoon
moody,"dark, moody",
"with, comma","a ""quoted"" {prompt} style",
"""


@pytest.fixture
def library(tmp_path: Path) -> StyleLibrary:
    path = tmp_path / "styles.csv"
    path.write_text(CSV, encoding="utf-8")
    return StyleLibrary(path)


def test_merge_is_a1111s_merge_prompts():
    assert merge("{prompt}, photograph", "a cat") == "a cat, photograph"
    assert merge("dark, moody", "a cat") == "a cat, dark, moody"
    assert merge("dark", "") == "dark"
    assert merge("", "a cat") == "a cat"


def test_read_csv_with_quotes_and_commas(library):
    assert library.names() == ["photo", "moody", "with, comma"]
    assert library.get("with, comma").prompt == 'a "quoted" {prompt} style'
    assert read_styles("name,prompt,negative_prompt,description\nx,p,n,d\n")["x"].prompt == "p"


def test_styles_apply_in_order(library):
    prompt, negative = library.apply("a cat", "blurry", ["photo", "moody"])
    assert prompt == "a cat, photograph, 35mm, dark, moody"
    assert negative == "blurry, cartoon"
    prompt, _ = library.apply("a cat", "", ["moody", "photo"])
    assert prompt == "a cat, dark, moody, photograph, 35mm"


def test_unknown_style_names_the_field(library):
    with pytest.raises(RequestError) as e:
        library.apply("a", "", ["nope"])
    assert e.value.field == "styles" and "photo" in e.value.rule


def test_save_then_read_back_and_file_is_a1111_csv(library, tmp_path):
    library.save("new one", 'x, "y", {prompt}', "bad")
    again = StyleLibrary(tmp_path / "styles.csv")
    assert again.get("new one").prompt == 'x, "y", {prompt}'
    assert again.get("photo").negative_prompt == "cartoon"  # the others kept
    assert (tmp_path / "styles.csv").read_text().splitlines()[0] == "name,prompt,negative_prompt"
    with pytest.raises(RequestError):
        library.save("", "x", "")


def test_library_rereads_a_changed_file(library, tmp_path):
    assert "later" not in library.names()
    (tmp_path / "styles.csv").write_text(CSV + "later,l,\n", encoding="utf-8")
    assert "later" in library.names()


def test_request_accepts_a_name_or_a_list():
    assert GenerationRequest(prompt="a", styles="photo").styles == ("photo",)
    assert GenerationRequest.from_dict({"prompt": "a", "styles": ["a", "b"]}).styles == ("a", "b")
    with pytest.raises(RequestError):
        GenerationRequest(prompt="a", styles=[1])


def test_resolved_request_and_infotext_hold_the_expanded_prompt(cache_root, tmp_path):
    from pipelines import EngineSettings, PipelineManager

    (tmp_path / "styles.csv").write_text(CSV, encoding="utf-8")
    settings = EngineSettings(default_model="tiny-sd", devices=("cpu",), cache_root=cache_root,
                              loras_dir=None, models_dir=None,
                              styles_file=tmp_path / "styles.csv")  # fmt: skip
    m = PipelineManager(settings)
    req, _ = m.prepare(GenerationRequest(prompt="a cat", styles=["photo", "moody"]))
    assert req.prompt == "a cat, photograph, 35mm, dark, moody"
    assert req.negative_prompt == "cartoon" and req.styles == ()
    with pytest.raises(RequestError) as e:
        m.prepare(GenerationRequest(prompt="a cat", styles=["missing"]))
    assert e.value.field == "styles"
    result = m.generate(GenerationRequest(prompt="a cat", styles=["photo"], width=64, height=64,
                                          num_inference_steps=1, seed=3))  # fmt: skip
    assert result.infotexts[0].startswith("a cat, photograph, 35mm\nNegative prompt: cartoon\n")
