"""The command line's errors: one `error: FIELD: RULE` line and exit 2, never a
traceback, for bad flags, paths and image files; a bad image in a `--jobs` line fails
that job only.

Most cases call app.main in this process (the engine is imported once: fast); one
case of each kind also runs `python app.py` as a user does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import app
from tests.test_bad_files import RULES, make_bad_files

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--steps", "2", "--width", "64", "--height", "64", "--seed", "1"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-files")
    paths = make_bad_files(folder)
    paths["bomb"] = folder / "bomb.png"  # over Pillow's own ceiling: a DecompressionBombError
    Image.new("1", (20000, 20000)).save(paths["bomb"])
    return paths


def run(capsys: pytest.CaptureFixture, cache_root: Path, *argv: str) -> tuple[int, str, str]:
    code = app.main(["--cache-dir", str(cache_root), "--models-dir", "", "--loras-dir", "",
                     *argv])  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def subprocess_app(cache_root: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ATELIER_CACHE_DIR": str(cache_root), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *argv], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    "argv, line",
    [
        (["generate", "--prompt", "x", "--out", "{good}"], "error: out: {good} is a file, "
         "not a folder"),
        (["generate", "--prompt", "x", "--out", "{good}/sub"], "error: out: cannot make "
         "{good}/sub: {good} is a file"),
        (["generate", "--jobs", "{tmp}/nowhere.jsonl"], "error: jobs: no such file: "
         "{tmp}/nowhere.jsonl"),
        (["generate", "--jobs", "{tmp}"], "error: jobs: {tmp} is a folder; give a JSON-lines "
         "file"),
        (["generate", "--prompt", "x", "--devices", "gpu:7"], "error: devices: 'gpu:7' is not a "
         "device: use cpu, cuda or cuda:N"),
        (["generate", "--prompt", "x", "--dtype", "float8"], "error: dtype: must be one of auto, "
         "float32, float16, bfloat16; got 'float8'"),
        (["video", "--prompt", "x", "--image", "{text}"], "error: image: not an image file "
         "(cannot identify image file)"),
        (["video", "--prompt", "x", "--steps", "0"], "error: num_inference_steps: must be from "
         "1 to 150, got 0"),  # not silently the family's 30
    ],
)  # fmt: skip
def test_bad_flags_and_paths_are_one_line_and_exit_2(capsys, cache_root, files, tmp_path, argv,
                                                     line):  # fmt: skip
    names = {"tmp": str(tmp_path), **{k: str(v) for k, v in files.items()}}
    argv = [a.format(**names) for a in argv]
    small = [] if "--steps" in argv else SMALL
    code, out, err = run(capsys, cache_root, *argv, *small)
    assert code == 2, err
    assert one_error_line(err).startswith(line.format(**names)), err
    assert out == "" and not list(tmp_path.iterdir())


@pytest.mark.parametrize("bad", list(RULES))
@pytest.mark.parametrize(
    "argv, field",
    [(["generate", "--prompt", "x", "--init-image", "{bad}"], "init_image"),
     (["generate", "--prompt", "x", "--init-image", "{good}", "--mask", "{bad}"], "mask_image"),
     (["generate", "--prompt", "x", "--control-image", "{bad}"], "control_image"),
     (["video", "--prompt", "x", "--model", "tiny-wan-i2v", "--image", "{bad}"], "image"),
     (["video", "--prompt", "x", "--end-image", "{bad}"], "end_image")],
)  # fmt: skip
def test_bad_image_files_name_the_flag_field(capsys, cache_root, files, tmp_path, argv, field,
                                             bad):  # fmt: skip
    argv = [a.format(bad=files[bad], good=files["good"]) for a in argv]
    code, _, err = run(capsys, cache_root, *argv, "--out", str(tmp_path))
    assert code == 2, err
    assert one_error_line(err).startswith(f"error: {field}: {RULES[bad]}"), err
    assert not list(tmp_path.iterdir()), "nothing is written for a refused request"


def test_a_bomb_in_a_jobs_file_fails_that_job_only(capsys, cache_root, files, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    good = {"prompt": "a red square", "steps": 2, "width": 64, "height": 64}
    lines = [{**good, "seed": 1, "task_id": "first"},
             {**good, "init_image": str(files["bomb"]), "task_id": "bomb"},
             {**good, "init_image": "big.png", "task_id": "big"},  # relative to the jobs file
             {**good, "controlnets": [{"image": str(files["truncated"])}], "task_id": "cut"},
             {**good, "seed": 5, "task_id": "last"}]  # fmt: skip
    jobs.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (tmp_path / "big.png").write_bytes(files["big"].read_bytes())
    out_dir = tmp_path / "out"
    code, out, err = run(capsys, cache_root, "generate", "--jobs", str(jobs), "--out",
                         str(out_dir))  # fmt: skip
    assert code == 2 and "Traceback" not in err, err
    reports = [json.loads(line) for line in out.splitlines()]
    assert [(r["task_id"], r["ok"]) for r in reports] == [
        ("first", True),
        ("bomb", False),
        ("big", False),
        ("cut", False),
        ("last", True),
    ]
    assert reports[1]["field"] == "init_image" and "decompression bomb" in reports[1]["error"]
    assert reports[2]["error"] == f"init_image: {RULES['big']}"
    assert reports[3]["field"] == "controlnets[0].image"
    assert RULES["truncated"] in reports[3]["error"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["first-0.png", "last-0.png"]


def test_the_real_command_line_prints_one_line(cache_root, files):
    """As a user runs it: a subprocess, for a flag (devices) and an image (video --image)."""
    bad = subprocess_app(cache_root, "generate", "--prompt", "x", "--devices", "gpu:7")
    assert bad.returncode == 2 and one_error_line(bad.stderr).startswith("error: devices: ")
    bad = subprocess_app(cache_root, "video", "--prompt", "x", "--image", str(files["empty"]))
    assert bad.returncode == 2, bad.stderr
    assert one_error_line(bad.stderr) == "error: image: is empty (0 bytes)"


def test_auth_without_a_colon_stops_before_serving(cache_root):
    """Run as a subprocess: were the check missing, the studio would start (and time out)."""
    bad = subprocess_app(cache_root, "serve", "--auth", "admin", "--port", "1")
    assert bad.returncode == 2, bad.stderr
    assert one_error_line(bad.stderr) == (
        "error: auth: auth entries must be user:password, got 'admin' in --auth"
    )
