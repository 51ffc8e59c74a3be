"""The command line, run as a user runs it: `python app.py ...` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import GenerationRequest
from pipelines.outputs import read_png_parameters
from pipelines.parameters import request_from_infotext

ROOT = Path(__file__).resolve().parents[1]


def app(cache_root: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATELIER_CACHE_DIR": str(cache_root), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *args],
        capture_output=True, text=True, env=env, cwd=cwd or ROOT, timeout=300,
    )  # fmt: skip


def test_models_json_lists_builtins_with_paths(cache_root):
    out = app(cache_root, "models", "--json")
    assert out.returncode == 0, out.stderr
    models = {m["name"]: m for m in json.loads(out.stdout)}
    assert {"tiny-sd", "tiny-sdxl", "tiny-flux", "tiny-wan", "tiny-wan22"} <= set(models)
    assert models["tiny-sdxl"]["family"] == "sdxl" and models["tiny-wan22"]["family"] == "wan22"
    assert (Path(models["tiny-sd"]["path"]) / "model_index.json").is_file()


def test_generate_writes_pngs_equal_to_the_engine(cache_root, manager, tmp_path):
    out = app(cache_root, "generate", "--prompt", "a blue bird", "--scheduler", "DPM++ 2M Karras",
              "--steps", "3", "--cfg", "6", "--seed", "77", "--width", "64", "--height", "64",
              "--batch-size", "2", "--lora", "tiny-sd-lora:0.5", "--out", str(tmp_path),
              "--task-id", "job-1", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["task_id"] == "job-1" and report["seeds"] == [77, 78]
    paths = [Path(p) for p in report["paths"]]
    assert [p.name for p in paths] == ["job-1-0.png", "job-1-1.png"]
    engine = manager.generate(
        GenerationRequest(prompt="a blue bird", scheduler="DPM++ 2M Karras", num_inference_steps=3,
                          guidance_scale=6, seed=77, width=64, height=64, batch_size=2,
                          loras={"tiny-sd-lora": 0.5})
    )  # fmt: skip
    for k, path in enumerate(paths):
        assert np.array_equal(np.asarray(Image.open(path)), np.asarray(engine.images[k]))
        info = read_png_parameters(path)
        assert info == engine.infotexts[k]
        again = request_from_infotext(info)
        assert (again.seed, again.scheduler, dict(again.loras)) == (
            77 + k,
            "DPM++ 2M Karras",
            {"tiny-sd-lora": 0.5},
        )


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--prompt", "x", "--steps", "0"], "num_inference_steps"),
        (["--prompt", "x", "--width", "100"], "width"),
        (["--prompt", "x", "--scheduler", "Nope"], "scheduler"),
        (["--prompt", "x", "--model", "../etc"], "model"),
        (["--prompt", "x", "--lora", "nope:1"], "loras"),
        (["--prompt", "x", "--task-id", "../evil"], "task_id"),
    ],
)
def test_bad_input_exits_2_with_one_line(cache_root, tmp_path, args, field):
    out = app(cache_root, "generate", "--out", str(tmp_path), *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {field}: "), out.stderr
    assert list(tmp_path.iterdir()) == []


def test_jobs_file_runs_all_and_reports_bad_jobs(cache_root, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        {"prompt": "one", "steps": 2, "width": 64, "height": 64, "seed": 1, "task_id": "a"},
        {"prompt": "two", "steps": 2, "width": 65, "height": 64, "task_id": "b"},
        "not json",
        {"prompt": "three", "steps": 2, "width": 64, "height": 64, "seed": 3, "batch_size": 2},
    ]
    jobs.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    out = app(cache_root, "generate", "--jobs", str(jobs), "--out", str(tmp_path / "o"))
    assert out.returncode == 2, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["ok"] for r in results] == [True, False, False, True]
    assert results[1]["field"] == "width" and results[1]["task_id"] == "b"
    assert results[3]["seeds"] == [3, 4]
    assert len(list((tmp_path / "o").glob("*.png"))) == 3
    assert "jobs" in out.stderr  # the progress bar


def test_video_command_writes_mp4_and_json(cache_root, tmp_path):
    out = app(cache_root, "video", "--prompt", "a wave", "--frames", "9", "--width", "32",
              "--height", "32", "--steps", "2", "--seed", "4", "--fps", "8", "--out",
              str(tmp_path), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    mp4, sidecar = (Path(p) for p in report["paths"])
    assert mp4.suffix == ".mp4" and mp4.stat().st_size > 0
    assert json.loads(sidecar.read_text())["num_frames"] == 9
    bad = app(cache_root, "video", "--prompt", "a wave", "--frames", "10", "--out", str(tmp_path))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: num_frames: must be 4k+1")


def test_generate_only_masked_inpaint_keeps_the_init_size(cache_root, tmp_path):
    from PIL import ImageDraw

    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    Image.radial_gradient("L").resize((128, 96)).convert("RGB").save(init)
    m = Image.new("L", (128, 96), 0)
    ImageDraw.Draw(m).rectangle([40, 30, 59, 49], fill=255)
    m.save(mask)
    out = app(cache_root, "generate", "--prompt", "a", "--steps", "2", "--width", "64",
              "--height", "64", "--seed", "1", "--init-image", str(init), "--mask", str(mask),
              "--inpaint-area", "masked", "--inpaint-padding", "8", "--out", str(tmp_path / "o"),
              "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    (path,) = json.loads(out.stdout)["paths"]
    assert Image.open(path).size == (128, 96)
    assert "Inpaint area: Only masked, Masked area padding: 8" in read_png_parameters(path)
