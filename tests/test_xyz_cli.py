"""The command line of issue 14 (in-process app.main): generate --style and hires
flags, `upscale` and `xyz`; bad input is one `error: FIELD: RULE` line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from pipelines.outputs import read_png_parameters
from tests.test_upscale_files import tiny_upscaler


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli14")
    tiny_upscaler(d / "up" / "tiny-2x.safetensors")
    (d / "styles.csv").write_text('name,prompt,negative_prompt\nphoto,"{prompt}, photo",toy\n')
    Image.new("RGB", (40, 30), (10, 200, 30)).save(d / "in.png")
    return d


def run(capsys, cache_root: Path, folder: Path, *args: str) -> tuple[int, str, str]:
    code = app.main(["--cache-dir", str(cache_root), "--upscalers-dir", str(folder / "up"),
                     "--styles-file", str(folder / "styles.csv"), "--models-dir", "",
                     "--loras-dir", "", "--default-model", "tiny-sd", *args])  # fmt: skip
    out = capsys.readouterr()
    return code, out.out, out.err


def test_upscale_command(capsys, cache_root, folder, tmp_path):
    code, out, _ = run(capsys, cache_root, folder, "upscale", str(folder / "in.png"),
                       "--upscaler", "tiny-2x", "--out", str(tmp_path), "--json")  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert report["size"] == [80, 60]
    assert read_png_parameters(report["paths"][0]) == (
        "Postprocess upscale by: 2, Postprocess upscaler: tiny-2x")  # fmt: skip
    code, _, err = run(capsys, cache_root, folder, "upscale", str(folder / "in.png"),
                       "--upscaler", "bogus", "--out", str(tmp_path))  # fmt: skip
    assert code == 2 and err.startswith("error: upscaler: unknown upscaler 'bogus'")


def test_generate_with_style_and_hires(capsys, cache_root, folder, tmp_path):
    code, out, _ = run(capsys, cache_root, folder, "generate", "--prompt", "a fox", "--style",
                       "photo", "--enable-hr", "--hr-scale", "1.5", "--hr-upscaler", "Nearest",
                       "--denoising-strength", "0.5", "--steps", "2", "--width", "64",
                       "--height", "64", "--seed", "5", "--out", str(tmp_path),
                       "--json")  # fmt: skip
    assert code == 0
    report = json.loads(out)
    text = report["infotexts"][0]
    assert text.startswith("a fox, photo\nNegative prompt: toy\n")
    assert "Denoising strength: 0.5, Hires upscale: 1.5, Hires upscaler: Nearest" in text
    assert Image.open(report["paths"][0]).size == (96, 96)


def test_xyz_command(capsys, cache_root, folder, tmp_path):
    code, out, _ = run(capsys, cache_root, folder, "xyz", "--x", "steps: 1-2", "--y",
                       "prompt s/r: fox, cat", "--prompt", "a fox", "--width", "64",
                       "--height", "64", "--seed", "9", "--out", str(tmp_path), "--task-id",
                       "plot", "--json")  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert report["labels"] == {"x": ["Steps: 1", "Steps: 2"], "y": ["fox", "cat"], "z": []}
    assert report["paths"][0].endswith("plot-grid-0.png") and len(report["paths"]) == 5
    assert report["cells"][2]["infotext"].startswith("a cat\n")
    grid = np.asarray(Image.open(report["paths"][0]))
    assert grid.shape[0] > 128 and grid.shape[1] > 128
    code, _, err = run(capsys, cache_root, folder, "xyz", "--x", "steps: many", "--prompt",
                       "a fox", "--out", str(tmp_path))  # fmt: skip
    assert code == 2 and err.startswith("error: x: 'many' is not a whole number")
