"""PNG Info for every studio: each format's image (written by tests/pnginfo_fixtures.py)
reads back to the same generation; our A1111 text round-trips exactly; what "Send to
Generate" does not apply is listed with its reason; an image without parameters never
changes the form; /png_info and /png_info_parsed answer over plain HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from PIL import Image

from pipelines.parameters import request_from_infotext
from pipelines.pnginfo import from_infotext, read_image_parameters, unapplied
from tests import pnginfo_fixtures as fx

MODELS = {"invokeai-dream": None, "novelai": "Stable Diffusion XL"}  # others: dreamshaper_8
LORAS = {"comfyui": 0.8, "comfyui-api": 0.8, "comfyui-custom": 0.8, "invokeai": 0.8,
         "fooocus": 0.8, "fooocus-jpeg": 0.8}  # fmt: skip


@pytest.mark.parametrize("name", list(fx.FORMATS))
def test_each_format_reads_back_to_the_same_generation(tmp_path: Path, name: str) -> None:
    writer, source, sampler, schedule = fx.FORMATS[name]
    found = read_image_parameters(writer(tmp_path))
    assert found is not None, f"{name}: no parameters found"
    assert found.source == source
    req = request_from_infotext(found.infotext)
    got = (req.prompt, req.negative_prompt, req.seed, req.num_inference_steps,
           req.guidance_scale, req.width, req.height, req.model)  # fmt: skip
    e = fx.EXPECTED
    want = (e["prompt"], e["negative_prompt"], e["seed"], e["steps"], e["cfg_scale"],
            e["width"], e["height"], MODELS.get(name, e["model"]))  # fmt: skip
    assert got == want, found.infotext
    assert (found.params.get("Sampler"), found.params.get("Schedule type")) == (sampler, schedule)
    assert dict(req.loras) == ({"detail": LORAS[name]} if name in LORAS else {})
    fields = found.to_json()
    assert (fields["source"], fields["seed"], fields["width"]) == (source, 1234, 512)
    assert from_infotext(found.infotext).source == source, "the text alone names the studio"


def test_a1111_text_round_trips_exactly(manager: Any, tmp_path: Path) -> None:
    """Our own infotext, and A1111's, come back byte for byte (PNG, JPEG and WebP)."""
    from pipelines import GenerationRequest
    from pipelines.outputs import save_png

    req = GenerationRequest(prompt='a "quoted", tricky: prompt\nsecond line é', model="tiny-sd",
                            negative_prompt="neg: x", num_inference_steps=2, width=64,
                            height=64, seed=7, scheduler="DPM++ 2M Karras")  # fmt: skip
    ours = manager.generate(req).infotexts[0]
    png = save_png(Image.new("RGB", (8, 8)), tmp_path, ours)
    for path in (png, fx.a1111_exif(tmp_path, "JPEG", ours), fx.a1111_exif(tmp_path, "WEBP", ours)):
        found = read_image_parameters(path)
        assert found is not None and found.infotext == ours and found.source == "A1111"
    assert read_image_parameters(fx.a1111_png(tmp_path)).infotext == fx.A1111
    assert request_from_infotext(from_infotext(ours).infotext) == request_from_infotext(ours)


def test_civitai_bare_json_is_quoted_so_the_keys_after_it_survive(tmp_path: Path) -> None:
    found = read_image_parameters(fx.civitai_png(tmp_path))
    resources = json.loads(found.params["Civitai resources"])
    assert [r["modelName"] for r in resources] == ["DreamShaper", "detail"]
    assert json.loads(found.params["Civitai metadata"]) == {"remixOfId": 1}
    assert found.params["Model"] == "dreamshaper_8", "the key after the JSON is read"
    assert from_infotext(found.infotext).infotext == found.infotext, "quoting is stable"


def test_images_without_parameters_give_none(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    commented = fx._png(tmp_path / "commented.png", {"parameters": "made with GIMP",
                                                     "Comment": "hello"})  # fmt: skip
    jpeg = tmp_path / "comment.jpg"
    Image.new("RGB", (8, 8)).save(jpeg, comment=b"a camera comment")
    for path in (plain, commented, jpeg):
        assert read_image_parameters(path) is None, path.name


def names(items: list[tuple[str, str]]) -> dict[str, str]:
    return dict(items)


def test_unapplied_names_missing_and_unsupported_settings(manager: Any, tmp_path: Path) -> None:
    found = read_image_parameters(fx.a1111_png(tmp_path))
    listed = names(unapplied(found, manager, "tiny-sd"))
    assert (
        listed["Model"] == "'dreamshaper_8' (hash 879db523c3) is not installed: 'tiny-sd' is kept"
    )
    assert "hires fix" in listed["Hires upscale"] and "hires fix" in listed["Hires steps"]
    assert "ADetailer" in listed["ADetailer model"]
    assert "Embedding easynegative" in listed
    clip_skip_read = request_from_infotext(found.infotext) != request_from_infotext(
        found.infotext.replace("Clip skip: 2, ", "")
    )
    assert ("Clip skip" in listed) != clip_skip_read, "listed exactly when not applied"
    for applied in ("Steps", "Seed", "CFG scale", "Size", "Sampler", "Version", "Lora hashes"):
        assert applied not in listed
    fooocus = names(unapplied(read_image_parameters(fx.fooocus_png(tmp_path)), manager))
    assert {"Styles", "Sharpness", "ADM guidance", "Performance", "LoRA detail"} <= set(fooocus)
    assert fooocus["LoRA detail"] == "'detail' is not installed: left out"


def test_unapplied_samplers_loras_and_controlnets(manager: Any) -> None:
    family = manager.models("image")["tiny-sd"]
    base = "a cat <lora:tiny-sd-lora:0.5> <lora:nowhere:1>\nSteps: 2, Seed: 1, Size: 64x64, "
    listed = names(unapplied(base + "Sampler: DPM++ 3M SDE, Model: tiny-sd", manager))
    assert listed["Sampler"] == ("'DPM++ 3M SDE' is not available (Stable Diffusion 1.x/2.x "
                                 f"models have no such sampler here): '{family.default_scheduler}'"
                                 " is used instead")  # fmt: skip
    assert listed["LoRA nowhere"] and "LoRA tiny-sd-lora" not in listed
    assert "Model" not in listed
    listed = names(unapplied(base + "Sampler: Euler, Schedule type: Karras, Model: tiny-sd",
                             manager))  # fmt: skip
    assert (
        listed["Schedule type"]
        == "'Karras' is not available with Euler: its default schedule is used"
    )
    assert "Sampler" not in listed
    unit = ("Module: canny, Model: not-here [abcd1234], Weight: 1, Guidance Start: 0, "
            "Guidance End: 1, Threshold A: 100, Threshold B: 200")  # fmt: skip
    text = f'a cat\nSteps: 2, Sampler: Euler, Seed: 1, Model: tiny-sd, ControlNet 0: "{unit}"'
    assert "model 'not-here' is not installed" in [w for k, w in unapplied(text, manager)
                                                   if k == "ControlNet 0"]  # fmt: skip
    assert unapplied("a cat <lora:a:b:c>\nSteps: 2, Seed: 1, Sampler: Euler", manager)[0][0] == (
        "prompt"
    )


# -- "Send to Generate" as a plain function -------------------------------------------
@pytest.fixture(scope="module")
def studio(manager: Any) -> Iterator[tuple[Any, Any]]:
    from ui.context import StudioContext
    from ui.generate_tab import build_generate_tab

    ctx = StudioContext.create(manager, "off")
    yield ctx, build_generate_tab(ctx)
    ctx.store.close()


def sent(studio: tuple[Any, Any], text: str, model: str = "tiny-sd") -> dict[str, Any]:
    """send_to_generate's updates by widget name (the form part of its outputs)."""
    from ui.studio import send_outputs, send_to_generate

    ctx, gen = studio
    updates = send_to_generate(ctx, gen, text, model)
    by_component = dict(zip(send_outputs(gen), updates, strict=False))
    rows = updates[len(send_outputs(gen)) : len(send_outputs(gen)) + len(gen.loras.outputs())]
    out = {name: by_component[c] for name, c in gen.widgets.items() if c in by_component}
    out["lora_names"] = [name for name in rows[1::4] if name]  # rows: Row, name, weight, trigger
    return out


def test_send_to_generate_applies_a_fooocus_png_read_by_the_tab(studio, tmp_path) -> None:
    """The old path put Fooocus's JSON into the prompt and reset the rest."""
    from ui.pnginfo_tab import read_parameters

    text, note = read_parameters(str(fx.fooocus_png(tmp_path)))
    assert "**Fooocus**" in note.value
    out = sent(studio, text)
    assert out["prompt"] == "a lighthouse at dusk" and out["negative_prompt"] == "blurry"
    assert out["seed"] == 1234 and out["width"].value == 512 and out["steps"].value == 20
    assert out["model"].value == "tiny-sd", "dreamshaper_8 is not installed: the form's kept"
    assert out["lora_names"] == [], "the LoRA that is not installed is left out (and listed)"


def test_no_parameters_never_change_the_form(studio, tmp_path) -> None:
    from ui.pnginfo_tab import read_parameters

    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    text, note = read_parameters(str(plain))
    assert text == "" and "no generation parameters" in note.value
    for empty in (text, "made with GIMP", "just a prompt\nand a second line"):
        with pytest.raises(gr.Error):
            sent(studio, empty)


def test_settings_the_text_lacks_keep_the_form(studio) -> None:
    out = sent(studio, "a cat <lora:tiny-sd-lora:0.5>\nSampler: Euler, CFG scale: 5, Size: 64x64")
    assert out["prompt"] == "a cat" and out["cfg"].value == 5 and out["width"].value == 64
    assert "value" not in out["steps"].constructor_args, "no Steps: the form's steps stay"
    assert out["seed"] == gr.skip(), "no Seed: the form's seed stays"
    assert out["lora_names"] == ["tiny-sd-lora"]


# -- the API over plain HTTP ------------------------------------------------------------
@pytest.fixture(scope="module")
def server(cache_root: Path) -> Iterator[Any]:
    from tests.ui_support import launched_studio

    with launched_studio(cache_root, "off") as demo:
        yield demo


def run(url: str, api_name: str, data: list[Any]) -> list[Any]:
    with httpx.Client(base_url=url, timeout=60) as http:
        for i, item in enumerate(data):
            if isinstance(item, Path):
                with item.open("rb") as f:
                    up = http.post("gradio_api/upload", files={"files": (item.name, f)}).json()
                data[i] = {"path": up[0], "meta": {"_type": "gradio.FileData"}}
        answer = http.post(f"gradio_api/run/{api_name}", json={"data": data})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_png_info_and_png_info_parsed_over_http(server, tmp_path) -> None:
    png = fx.comfyui_png(tmp_path)
    text, note = run(server.test_url, "png_info", [png])
    assert text.startswith("a lighthouse at dusk <lora:detail:0.8>\nNegative prompt: blurry\n")
    assert "ComfyUI" in note["value"]
    parsed, items, markdown = run(server.test_url, "png_info_parsed", [png, "tiny-sd"])
    assert parsed["source"] == "ComfyUI" and parsed["infotext"] == text
    assert (parsed["seed"], parsed["steps"], parsed["model"]) == (1234, 20, "dreamshaper_8")
    assert ["LoRA detail", "'detail' is not installed: left out"] in items
    assert "**LoRA detail**" in markdown["value"]
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert run(server.test_url, "png_info_parsed", [plain, "tiny-sd"])[:2] == [{}, []]


@pytest.mark.parametrize("key", ["prompt", "invokeai_metadata", "sd-metadata", "Dream", "Comment",
                                 "parameters"])  # fmt: skip
def test_broken_metadata_is_no_parameters_not_a_crash(key: str) -> None:
    from pipelines.pnginfo import parameters_from_texts

    for junk in ("{not json", "[1, 2]", '{"a": 1}', "null", '{"3": {"inputs": 5}}'):
        texts = {key: junk, "Description": "x", "Software": "NovelAI"}
        assert parameters_from_texts(texts) is None, (key, junk)


def test_an_unreadable_text_is_one_item_not_a_crash(manager: Any) -> None:
    text = 'a cat\nSteps: 2, Sampler: Euler, Seed: 1, Model: tiny-sd, ControlNet 0: "Weight: x"'
    why = "cannot be read: unreadable unit 'Weight: x'"
    assert unapplied(text, manager) == [("ControlNet", why)]


def test_the_tab_lists_what_it_will_not_apply_and_keeps_the_form(server, tmp_path) -> None:
    from tests.ui_support import browser_page, require_browser

    expect = require_browser().expect
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    prompt = "#atelier-prompt textarea"
    with browser_page(server.test_url) as page:
        page.locator(prompt).fill("keep me")
        page.get_by_role("tab", name="PNG Info").click()
        upload = page.locator("#atelier-pnginfo-image input[type=file]")
        upload.set_input_files(str(plain))
        expect(page.locator("#atelier-pnginfo-note")).to_contain_text("no generation parameters")
        page.locator("#atelier-send-generate").click()
        page.get_by_role("tab", name="Generate").click()
        expect(page.locator(prompt)).to_have_value("keep me")
        page.reload()  # an empty image box again
        page.get_by_role("tab", name="PNG Info").click()
        upload.set_input_files(str(fx.comfyui_png(tmp_path)))
        expect(page.locator("#atelier-pnginfo-note")).to_contain_text("ComfyUI")
        listed = page.locator("#atelier-pnginfo-unapplied")
        expect(listed).to_contain_text("LoRA detail: 'detail' is not installed: left out")
        expect(listed).to_contain_text("'dreamshaper_8' is not installed: 'tiny-sd' is kept")
        page.locator("#atelier-send-generate").click()
        expect(page.locator(prompt)).to_have_value("a lighthouse at dusk")
        expect(page.locator("#atelier-seed input")).to_have_value("1234")


def test_big_seeds_and_odd_numbers_are_read_exactly(tmp_path: Path) -> None:
    from pipelines.pnginfo import parameters_from_texts

    raw = {**fx.FOOOCUS, "seed": "9007199254740993", "steps": "1e999"}
    found = parameters_from_texts({"parameters": json.dumps(raw)})
    assert found.fields()["seed"] == 9007199254740993 and found.fields()["steps"] is None


def test_a_vae_or_embedding_that_is_not_installed_is_named(manager: Any) -> None:
    text = ('a cat, easynegative\nSteps: 2, Sampler: Euler, Seed: 1, Model: tiny-sd, '
            'VAE hash: 1234abcd, VAE: my-vae, TI hashes: "easynegative: c74b4e810b03"')  # fmt: skip
    listed = names(unapplied(text, manager))
    assert listed["VAE"] == "'my-vae' is not installed: the model's own VAE is used"
    assert listed["Embedding easynegative"].startswith("'easynegative' ")
    assert "VAE hash" not in listed and "TI hashes" not in listed
