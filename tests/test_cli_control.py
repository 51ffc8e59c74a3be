"""`python app.py generate` with an init image, a mask and ControlNet units, run as a
user runs it (a subprocess), compared with the engine called directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipelines import GenerationRequest
from pipelines.tasks import Inputs
from tests.test_cli import app

SMALL = ["--steps", "3", "--width", "64", "--height", "64", "--seed", "5"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-images")
    rng = np.random.default_rng(1)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    control = Image.new("RGB", (72, 64), "black")
    ImageDraw.Draw(control).rectangle((12, 10, 50, 40), fill="white")
    paths = {"init": folder / "init.png", "control": folder / "control.png",
             "small_mask": folder / "small-mask.png"}  # fmt: skip
    init.save(paths["init"])
    control.save(paths["control"])
    Image.new("L", (32, 32), 255).save(paths["small_mask"])
    return paths


def pixels(image: Image.Image | Path) -> np.ndarray:
    return np.asarray((Image.open(image) if isinstance(image, Path) else image).convert("RGB"))


def test_init_image_and_control_image_give_the_engines_image(cache_root, manager, images,
                                                             tmp_path):  # fmt: skip
    out = app(cache_root, "generate", "--prompt", "a tower", *SMALL, "--init-image",
              str(images["init"]), "--strength", "0.7", "--control-image", str(images["control"]),
              "--control-type", "canny", "--control-scale", "0.8", "--control-start", "0.1",
              "--control-end", "0.9", "--out", str(tmp_path), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    unit = {"model": "tiny-sd-controlnet", "module": "canny", "weight": 0.8,
            "guidance_start": 0.1, "guidance_end": 0.9}  # fmt: skip
    assert report["request"]["controlnets"] == [{**unit, "low_threshold": 100,
                                                 "high_threshold": 200}]  # fmt: skip
    assert report["request"]["strength"] == 0.7
    request = GenerationRequest(prompt="a tower", num_inference_steps=3, width=64, height=64,
                                seed=5, strength=0.7, controlnets=[unit])  # fmt: skip
    inputs = Inputs(Image.open(images["init"]), None, [Image.open(images["control"])])
    expected = manager.generate(request, inputs=inputs)
    assert np.array_equal(pixels(Path(report["paths"][0])), pixels(expected.images[0]))
    assert "Denoising strength: 0.7" in report["infotexts"][0]


@pytest.mark.parametrize(
    "args, field, rule",
    [(["--init-image", "{init}", "--mask", "{small_mask}"], "mask_image",
      "must be the same size as init_image (64x64), got 32x32"),
     (["--control-image", "{init}-missing.png"], "control_image", "no such file")],
)  # fmt: skip
def test_bad_image_inputs_exit_2_naming_the_field(cache_root, images, tmp_path, args, field, rule):
    args = [a.format(**images) for a in args]
    out = app(cache_root, "generate", "--prompt", "x", *SMALL, *args, "--out", str(tmp_path))
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {field}: ") and rule in last, last
    assert not list(tmp_path.iterdir()), "nothing is written for a refused request"


def test_jobs_with_two_units_and_image_paths(cache_root, manager, images, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    units = [
        {"module": "canny", "weight": 0.5, "image": "control.png"},
        {"model": "tiny-sd-controlnet", "image": str(images["init"]), "weight": 0.3},
    ]
    lines = [{"prompt": "two units", "steps": 3, "width": 64, "height": 64, "seed": 9,
              "init_image": "init.png", "mask_image": str(images["init"]), "strength": 0.9,
              "controlnets": units},
             {"prompt": "lost", "controlnets": [{"image": "nowhere.png"}]}]  # fmt: skip
    jobs.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    for name in ("init", "control"):  # relative paths: from the jobs file's folder
        (tmp_path / images[name].name).write_bytes(images[name].read_bytes())
    out = app(cache_root, "generate", "--jobs", str(jobs), "--out", str(tmp_path / "out"))
    assert out.returncode == 2, out.stderr
    first, second = (json.loads(line) for line in out.stdout.splitlines())
    assert first["ok"], first
    assert [u["model"] for u in first["request"]["controlnets"]] == ["tiny-sd-controlnet"] * 2
    assert second == {
        "job": 1,
        "ok": False,
        "task_id": None,
        "field": "controlnets[0].image",
        "error": f"controlnets[0].image: no such file: {tmp_path / 'nowhere.png'}",
    }
    request = GenerationRequest(prompt="two units", num_inference_steps=3, width=64, height=64,
                                seed=9, strength=0.9,
                                controlnets=[{"model": "tiny-sd-controlnet", **u}
                                             for u in (
                                                 {"module": "canny", "weight": 0.5},
                                                 {"weight": 0.3})])  # fmt: skip
    mask = Image.open(images["init"])  # any image works as a mask: grey levels blend
    inputs = Inputs(Image.open(images["init"]), mask,
                    [Image.open(images["control"]), Image.open(images["init"])])  # fmt: skip
    expected = manager.generate(request, inputs=inputs)
    assert np.array_equal(pixels(Path(first["paths"][0])), pixels(expected.images[0]))
    assert "Mask blur: 4" in first["infotexts"][0] and "ControlNet 1:" in first["infotexts"][0]
