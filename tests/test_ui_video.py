"""The Video tab's form and the `/video` API end to end (app on 127.0.0.1, gradio_client).

One server per module, on two CPU device slots so that two clients run at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from pipelines.errors import RequestError
from pipelines.families import FAMILIES
from tests.ui_support import launched_studio
from ui.video_form import (
    check_format,
    for_family,
    image_inputs,
    video_models,
    video_request_from_widgets,
    video_specs,
)

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SMALL = {"model": "tiny-wan", "frames": 9, "width": 64, "height": 32, "steps": 3}


# -- the form: pure functions ----------------------------------------------------------
def test_widget_values_become_a_request_and_blanks_mean_defaults() -> None:
    req = video_request_from_widgets(
        {"prompt": "a wave", "model": "tiny-wan22", "frames": 9.0, "fps": 8.0, "width": 64.0,
         "height": "32", "steps": 3.0, "cfg": 4.5, "cfg2": 3.0, "flow_shift": "", "seed": 7.0,
         "loras": '{"wan-lora": 0.5}', "scheduler": ""}
    )  # fmt: skip
    assert (req.num_frames, req.fps, req.width, req.height, req.num_inference_steps) == (
        9, 8, 64, 32, 3)  # fmt: skip
    assert isinstance(req.num_frames, int) and req.seed == 7
    assert (req.guidance_scale, req.guidance_scale_2, req.flow_shift) == (4.5, 3.0, None)
    assert req.scheduler is None and dict(req.loras) == {"wan-lora": 0.5}
    blank = video_request_from_widgets({"prompt": "x", "seed": None, "fps": None})
    assert (blank.model, blank.num_frames, blank.seed, blank.fps) == (None, None, -1, 16)
    # Not rounded: the engine reports 10 frames and 9.5 steps with their rules.
    odd = video_request_from_widgets({"prompt": "x", "frames": 10.0, "steps": 9.5})
    assert (odd.num_frames, odd.num_inference_steps) == (10, 9.5)
    with pytest.raises(RequestError, match="frames_count: unknown field"):
        video_request_from_widgets({"prompt": "x", "frames_count": 9})
    with pytest.raises(RequestError, match="loras: must be a JSON object"):
        video_request_from_widgets({"prompt": "x", "loras": "{oops"})


def test_specs_and_hidden_inputs_follow_the_family() -> None:
    five_b = video_specs(FAMILIES["wan22-5b"])
    assert five_b["width"]["step"] == 32 and five_b["frames"]["value"] == 121
    assert (five_b["frames"]["minimum"] - 1) % 4 == 0 and five_b["frames"]["step"] == 4
    assert video_specs(FAMILIES["wan21"])["height"]["value"] == 480
    assert image_inputs(FAMILIES["wan21"]) == {
        "start_visible": False, "start_label": "Start image", "end_visible": False,
        "cfg2_visible": False}  # fmt: skip
    assert image_inputs(FAMILIES["wan22-i2v"])["start_label"] == "Start image (required)"
    assert image_inputs(FAMILIES["wan22"])["cfg2_visible"]
    picture = Image.new("RGB", (8, 8))
    values, start, end = for_family({"cfg2": 3.0, "flow_shift": 0}, picture, picture,
                                    FAMILIES["wan21"])  # fmt: skip
    assert values["cfg2"] is None and start is None and end is None
    assert values["flow_shift"] is None, "0 (an empty number box) means the model's shift"
    values, start, _ = for_family({"cfg2": 3.0, "flow_shift": 2.5}, picture, None,
                                  FAMILIES["wan22-i2v"])  # fmt: skip
    assert values["cfg2"] == 3.0 and values["flow_shift"] == 2.5 and start is picture
    assert check_format("") == "mp4" and check_format("gif") == "gif"
    with pytest.raises(RequestError, match="format: must be one of mp4, webp, gif, frames"):
        check_format("avi")


def test_latent_previews_are_shown_enlarged_by_a_whole_factor() -> None:
    from ui.video_tab import enlarged

    small = Image.new("RGB", (16, 8))
    small.putpixel((0, 0), (255, 0, 0))
    big = enlarged(small)
    assert big.size == (256, 128) and big.getpixel((15, 15)) == (255, 0, 0)
    assert enlarged(Image.new("RGB", (400, 300))).size == (400, 300)


def test_only_video_models_are_offered(manager: Any) -> None:
    models = video_models(manager)
    assert {"tiny-wan", "tiny-wan22", "tiny-wan-i2v"} <= set(models)
    assert "tiny-sd" not in models and all(f.kind == "video" for f in models.values())


# -- the API on a launched server ------------------------------------------------------
@pytest.fixture(scope="module")
def server(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    outputs = tmp_path_factory.mktemp("ui-video-outputs")
    with launched_studio(cache_root, outputs, ("cpu", "cpu"), queue_size=16) as demo:
        yield demo


def decode(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    reader = imageio_ffmpeg.read_frames(path)
    meta = next(reader)
    w, h = meta["size"]
    frames = np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader])
    return frames, meta


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_video_returns_an_mp4_close_to_the_engines_frames(client: Client, manager: Any) -> None:
    from pipelines.export import to_uint8
    from pipelines.video import VideoRequest

    video, parameters, seed = client.predict(prompt="a boat on a lake", fps=8, seed=21,
                                             cfg=5.0, **SMALL, api_name="/video")  # fmt: skip
    assert seed == 21 and video.endswith(".mp4")
    got, meta = decode(video)
    assert got.shape == (9, 32, 64, 3), "frame count and size must be the requested ones"
    assert meta["fps"] == 8 and meta["codec"].startswith("h264"), meta
    expected = manager.generate_video(VideoRequest(
        prompt="a boat on a lake", model="tiny-wan", num_frames=9, fps=8, width=64, height=32,
        num_inference_steps=3, guidance_scale=5.0, seed=21))  # fmt: skip
    assert psnr(got, to_uint8(expected.frames)) > 30
    saved = json.loads(Path(parameters).read_text())
    assert saved["seed"] == 21 and saved["num_frames"] == 9 and saved["model"] == "tiny-wan"
    assert saved == json.loads(json.dumps(expected.parameters))  # the engine's own record


def test_bad_input_names_the_rule_and_the_server_keeps_serving(client: Client) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"num_frames: must be 4k\+1 .*got 10; try 9 or 13"):
        client.predict(prompt="x", **{**SMALL, "frames": 10}, api_name="/video")
    with pytest.raises(AppError, match=r"image: Wan 2.1 I2V models need a start image"):
        client.predict(prompt="x", **{**SMALL, "model": "tiny-wan-i2v"}, api_name="/video")
    with pytest.raises(AppError, match=r"format: must be one of"):
        client.predict(prompt="x", format="avi", **SMALL, api_name="/video")
    _, _, seed = client.predict(prompt="still here", seed=3, **SMALL, api_name="/video")
    assert seed == 3


def test_image_to_video_from_a_file_as_animated_webp(client: Client, tmp_path: Path) -> None:
    start = tmp_path / "start.png"
    Image.new("RGB", (64, 32), (220, 30, 30)).save(start)
    video, parameters, _ = client.predict(prompt="a red wall", image=handle_file(str(start)),
                                          format="webp", seed=4,
                                          **{**SMALL, "model": "tiny-wan-i2v"},
                                          api_name="/video")  # fmt: skip
    with Image.open(video) as im:
        assert im.format == "WEBP" and im.n_frames == 9 and im.size == (64, 32)
    assert json.loads(Path(parameters).read_text())["start_image"] is True


def test_a_cancelled_video_frees_its_slot_and_saves_nothing(server: Any) -> None:
    from gradio_client.utils import Status

    manager = server.atelier_context.manager
    a, b = Client(server.test_url, verbose=False), Client(server.test_url, verbose=False)
    # About two minutes here (150 steps of 33 frames at 128x128) unless the cancel lands.
    long_job = a.submit(prompt="a slow river", model="tiny-wan", frames=33, width=128,
                        height=128, steps=150, seed=1, api_name="/video")  # fmt: skip
    for _ in long_job:  # the endpoint yields once per step: A runs in the engine
        break
    # PROGRESS: the endpoint reports its steps through gr.Progress (job.status() shows them).
    assert long_job.status().code in (Status.ITERATING, Status.PROGRESS)
    _, _, seed = b.predict(prompt="a quick hare", seed=2, **SMALL, api_name="/video")
    assert seed == 2, "another user's job runs while A's runs"
    long_job.cancel()
    assert manager.wait_idle(30), "the cancelled run kept its slot: the engine never saw it"
    saved = [json.loads(p.read_text()) for p in server.test_outputs.glob("*.json")]
    assert saved and not [p for p in saved if p["prompt"] == "a slow river"], (
        "a cancelled job saved a video")  # fmt: skip


def test_readme_video_example_runs_as_printed(server: Any, capsys: Any) -> None:
    blocks = re.findall(r"```python\n(from gradio_client import.*?)```", README, re.S)
    block = next((b for b in blocks if 'api_name="/video"' in b), None)
    assert block, "README has no gradio_client example for /video"
    code = block.replace("http://127.0.0.1:7860/", server.test_url)
    assert server.test_url in code, "the example must call the default local address"
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Seed: 42" in out and ".mp4" in out and ".json" in out, out


def test_lora_experts_reach_the_request_only_for_two_expert_models():
    from pipelines.families import FAMILIES
    from ui.video_form import for_family, video_request_from_widgets

    values = {"prompt": "a", "loras": '{"x": 1}', "lora_experts": "low"}
    assert video_request_from_widgets(values).lora_experts == "low"
    two, _, _ = for_family(values, None, None, FAMILIES["wan22"])
    one, _, _ = for_family(values, None, None, FAMILIES["wan21"])
    assert video_request_from_widgets(two).lora_experts == "low"
    assert video_request_from_widgets(one).lora_experts == "both"
