"""The A1111-compatible API over HTTP, on the studio's own server, the way A1111 clients
call it: plain `requests` with A1111's documented bodies, and the `webuiapi` client.
Pixels are compared with the engine's own generate for the same settings."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

ANN, BOB = ("ann", "pw-ann"), ("bob", "pw-bob")
BASE = {"prompt": "a red fox", "steps": 2, "width": 64, "height": 64, "seed": 5,
        "sampler_name": "Euler a", "cfg_scale": 7}  # fmt: skip
MAX_BODY = 2 * 2**20


@pytest.fixture(scope="module")
def events() -> list:
    """Job listeners of the server's engine, changed per test."""
    return []


@pytest.fixture(scope="module")
def server(cache_root: Path, events: list) -> Iterator[Any]:
    from tests.ui_support import launched_studio
    from ui.rest import RestConfig, mount

    with launched_studio(cache_root, "off", engine={"preview_every": 1}) as demo:
        config = RestConfig(users=dict([ANN, BOB]), max_body=MAX_BODY)
        mount(demo.app, demo.atelier_context, config)
        manager = demo.atelier_context.manager
        manager.jobs.add_listener(lambda job, event: [f(job, event) for f in list(events)])
        demo.base = demo.test_url.rstrip("/")
        demo.manager = manager
        yield demo


def post(server: Any, path: str, body: Any, auth: Any = ANN, **kw: Any) -> requests.Response:
    return requests.post(f"{server.base}/sdapi/v1/{path}", json=body, auth=auth, timeout=120, **kw)


def get(server: Any, path: str, auth: Any = ANN) -> requests.Response:
    return requests.get(f"{server.base}/sdapi/v1/{path}", auth=auth, timeout=60)


def b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decoded(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def same(a: Image.Image, b: Image.Image) -> bool:
    return np.array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))


def engine_images(server: Any, inputs: Any = None, **fields: Any) -> Any:
    from pipelines.request import GenerationRequest

    req = GenerationRequest(**{"prompt": "a red fox", "num_inference_steps": 2, "width": 64,
                               "height": 64, "seed": 5, "scheduler": "Euler a",
                               "guidance_scale": 7.0, **fields})  # fmt: skip
    return server.manager.generate(req, inputs=inputs)


def wait_for(events: list, caller: str, kind: str) -> tuple[threading.Event, list]:
    """An Event set when a job of `caller` emits an event of `kind` (no sleeps)."""
    seen, jobs = threading.Event(), []

    def listener(job: Any, event: Any) -> None:
        if job.caller == caller and event.kind == kind:
            jobs.append(job)
            seen.set()

    events.append(listener)
    return seen, jobs


def gradient(size: int = 64) -> Image.Image:
    x = np.linspace(0, 255, size, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(x, (size, 1)), np.tile(x[:, None], (1, size)),
                                     np.full((size, size), 90, np.uint8)], -1))  # fmt: skip


def square_mask(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (16, 16, 48, 48))
    return mask


def test_txt2img_pixels_info_and_png_text_match_the_engine(server):
    r = post(server, "txt2img", {**BASE, "batch_size": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])  # a JSON string, as A1111 returns it
    expected = engine_images(server, batch_size=2)
    assert info["all_seeds"] == [5, 6] and info["infotexts"] == expected.infotexts
    assert info["sd_model_name"] == "tiny-sd" and info["sd_model_hash"]
    assert body["parameters"]["prompt"] == "a red fox"
    images = [decoded(t) for t in body["images"]]
    assert all(same(a, b) for a, b in zip(images, expected.images, strict=True))
    assert images[1].info["parameters"] == expected.infotexts[1]


def test_webuiapi_client(server):
    webuiapi = pytest.importorskip("webuiapi")
    port = int(server.base.rsplit(":", 1)[1])
    api = webuiapi.WebUIApi(host="127.0.0.1", port=port, sampler="Euler a", steps=2,
                            username=ANN[0], password=ANN[1])  # fmt: skip
    result = api.txt2img(prompt="a red fox", seed=5, cfg_scale=7, width=64, height=64)
    assert same(result.image, engine_images(server).images[0])
    assert result.info["all_seeds"] == [5]
    assert "tiny-sd" in [m["model_name"] for m in api.get_sd_models()]
    assert "Euler a" in api.util_get_sampler_names()
    assert api.png_info(result.image).info.startswith("a red fox\nSteps: 2")
    up = api.extra_single_image(result.image, upscaler_1="Lanczos", upscaling_resize=2)
    assert same(up.image, result.image.resize((128, 128), Image.Resampling.LANCZOS))


def test_img2img_and_inpainting_match_the_engine(server):
    from pipelines.tasks import Inputs

    init, mask = gradient(), square_mask()
    body = {**BASE, "init_images": [b64(init)], "denoising_strength": 0.6}
    r = post(server, "img2img", body)
    assert r.status_code == 200, r.text
    expected = engine_images(server, Inputs(init_image=init), strength=0.6)
    assert same(decoded(r.json()["images"][0]), expected.images[0])
    assert r.json()["parameters"]["init_images"] is None  # not echoed back
    inpaint = {**body, "mask": b64(mask), "inpainting_fill": 1, "inpaint_full_res": False,
               "mask_blur": 0}  # fmt: skip
    r = post(server, "img2img", inpaint)
    assert r.status_code == 200, r.text
    expected = engine_images(server, Inputs(init_image=init, mask_image=mask), strength=0.6,
                             mask_blur=0)  # fmt: skip
    assert same(decoded(r.json()["images"][0]), expected.images[0])
    inverted = {**inpaint, "mask": b64(Image.eval(mask, lambda v: 255 - v)),
                "inpainting_mask_invert": 1}  # fmt: skip
    assert same(decoded(post(server, "img2img", inverted).json()["images"][0]),
                expected.images[0])  # fmt: skip


def test_controlnet_unit_as_the_extension_sends_it(server):
    from pipelines.tasks import Inputs

    control = gradient()
    unit = {"enabled": True, "image": b64(control), "module": "none",
            "model": "tiny-sd-controlnet [1a2b3c4d]", "weight": 0.8, "resize_mode": "Just Resize",
            "low_vram": False, "processor_res": 512, "threshold_a": -1, "threshold_b": -1,
            "guidance_start": 0.0, "guidance_end": 1.0, "control_mode": 0,
            "pixel_perfect": False}  # fmt: skip
    r = post(server, "txt2img", {**BASE, "alwayson_scripts": {"controlnet": {"args": [unit]}}})
    assert r.status_code == 200, r.text
    expected = engine_images(
        server,
        Inputs(control_images=[control]),
        controlnets=[{"model": "tiny-sd-controlnet", "weight": 0.8}],
    )
    assert same(decoded(r.json()["images"][0]), expected.images[0])
    assert "ControlNet 0" in json.loads(r.json()["info"])["infotexts"][0]
    bad = post(server, "txt2img", {**BASE, "alwayson_scripts": {
        "ControlNet": {"args": [{**unit, "model": "None"}]}}})  # fmt: skip
    assert (
        bad.status_code == 422
        and bad.json()["field"] == "alwayson_scripts.controlnet.args[0].model"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [({"width": 63}, "width"), ({"cfg_scale": 99}, "cfg_scale"), ({"steps": 0}, "steps"),
     ({"sampler_name": "Nope"}, "sampler_name"), ({"tiling": True}, "tiling"),
     ({"n_iter": 0}, "n_iter"),
     ({"override_settings": {"sd_model_checkpoint": "nope"}}, "sd_model_checkpoint"),
     ({"alwayson_scripts": {"ADetailer": {"args": [True]}}}, "alwayson_scripts.ADetailer")],
)  # fmt: skip
def test_bad_input_is_a_422_naming_the_a1111_field(server, change, field):
    r = post(server, "txt2img", {**BASE, **change})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["field"] == field and body["detail"].startswith(f"{field}: "), body
    assert set(body) >= {"error", "detail", "body", "errors"}


def test_unknown_fields_are_ignored_as_in_a1111_and_named(server):
    overrides = {"eta_noise_seed_delta": 31337, "CLIP_stop_at_last_layers": 1}
    r = post(server, "txt2img", {**BASE, "colour": "red", "override_settings": overrides})
    assert r.status_code == 200, r.text
    warnings = json.loads(r.json()["info"])["warnings"]
    assert [w.split(":")[0] for w in warnings] == [
        "colour", "override_settings.eta_noise_seed_delta"]  # fmt: skip
    assert post(server, "options", {"eta_noise_seed_delta": 1}).status_code == 200


def test_bad_images_and_bodies(server):
    r = post(server, "img2img", {**BASE, "init_images": ["bm90IGFuIGltYWdl"]})
    assert r.status_code == 422 and r.json()["field"] == "init_images[0]"
    r = requests.post(f"{server.base}/sdapi/v1/txt2img", data="{nope", auth=ANN, timeout=30)
    assert r.status_code == 422 and r.json()["field"] == "body"
    big = {**BASE, "prompt": "x" * (MAX_BODY + 1)}
    r = post(server, "txt2img", big)
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_login_is_required(server):
    assert get(server, "sd-models", auth=None).status_code == 401
    r = post(server, "txt2img", BASE, auth=("ann", "wrong"))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Basic"


def test_admission_refuses_with_the_limit_named(server):
    from pipelines.image_job import ImageJob
    from pipelines.request import GenerationRequest

    jobs = server.manager.jobs
    limits = jobs.limits
    try:
        jobs.limits = replace(limits, max_work=64 * 64 * 2)
        r = post(server, "txt2img", {**BASE, "steps": 3})
        assert r.status_code == 422 and r.json()["field"] == "max_work"
        jobs.limits = replace(limits, max_jobs_per_user=1)
        hold = GenerationRequest(
            "hold", num_inference_steps=150, width=64, height=64, batch_count=50
        )  # minutes: cancelled long before
        held = server.manager.submit(ImageJob(hold), "user:ann")
        try:
            r = post(server, "txt2img", BASE)
            assert r.status_code == 429 and r.json()["field"] == "max_jobs_per_user"
            server.manager.submit(ImageJob(hold), "user:bob").cancel()  # bob is admitted
        finally:
            held.cancel()
    finally:
        jobs.limits = limits


def test_interrupt_stops_only_the_callers_jobs(server, events):
    started, _ = wait_for(events, "user:ann", "progress")
    out: dict[str, Any] = {}
    slow = {**BASE, "steps": 150, "n_iter": 50}  # minutes: stopped long before
    thread = threading.Thread(target=lambda: out.update(r=post(server, "txt2img", slow)))
    thread.start()
    assert started.wait(60), "ann's job never started"
    from pipelines.image_job import ImageJob
    from pipelines.request import GenerationRequest

    bobs = server.manager.submit(
        ImageJob(GenerationRequest("bob", num_inference_steps=2, width=64, height=64)), "user:bob"
    )
    try:
        assert post(server, "interrupt", {}, auth=BOB).status_code == 200
        ann_jobs = server.manager.jobs.caller_jobs("user:ann")
        assert ann_jobs and not any(j.cancelled for j in ann_jobs)  # bob stopped nothing of ann's
        assert bobs.cancelled
        assert post(server, "interrupt", {}).status_code == 200
        thread.join(60)
        r = out["r"]
        assert r.status_code == 200 and r.json()["images"] == []
        assert json.loads(r.json()["info"])["interrupted"] is True
    finally:
        bobs.cancel()
        for job in server.manager.jobs.caller_jobs("user:ann"):
            job.cancel()


def test_progress_shows_the_callers_job_with_a_preview(server, events):
    previewed, _ = wait_for(events, "user:ann", "preview")
    out: dict[str, Any] = {}
    slow = {**BASE, "steps": 150, "n_iter": 50}  # minutes: stopped long before
    thread = threading.Thread(target=lambda: out.update(r=post(server, "txt2img", slow)))
    thread.start()
    try:
        assert previewed.wait(60), "no preview of ann's job"
        mine = get(server, "progress").json()
        assert mine["state"]["job_count"] == 1 and mine["state"]["sampling_steps"] == 150 * 50
        assert 0 < mine["progress"] < 1 and mine["eta_relative"] >= 0
        assert decoded(mine["current_image"]).size == (8, 8)  # the latent preview, 64 / 8
        theirs = get(server, "progress", auth=BOB).json()
        assert theirs["state"]["job_count"] == 0 and theirs["current_image"] is None
        skipped = requests.get(f"{server.base}/sdapi/v1/progress?skip_current_image=true",
                               auth=ANN, timeout=30).json()  # fmt: skip
        assert skipped["current_image"] is None
    finally:
        post(server, "skip", {})  # stops ann's running job
        thread.join(60)
    assert out["r"].json()["images"] == []


def test_options_are_per_caller(server):
    r = post(server, "options", {"sd_model_checkpoint": "tiny-sdxl [0123456789]"})
    assert r.status_code == 200, r.text
    try:
        assert get(server, "options").json()["sd_model_checkpoint"] == "tiny-sdxl"
        assert get(server, "options", auth=BOB).json()["sd_model_checkpoint"] == "tiny-sd"
        r = post(server, "txt2img", {**BASE, "steps": 1, "sampler_name": "Euler"})
        assert r.status_code == 200, r.text
        assert json.loads(r.json()["info"])["sd_model_name"] == "tiny-sdxl"
        bad = post(server, "options", {"sd_model_checkpoint": "nope"})
        assert bad.status_code == 422 and bad.json()["field"] == "sd_model_checkpoint"
        bad = post(server, "options", {"samples_format": "jpg"})
        assert bad.status_code == 422 and bad.json()["field"] == "samples_format"
        echoed = post(server, "options", get(server, "options").json())  # what GET gave
        assert echoed.status_code == 200, echoed.text
    finally:
        post(server, "options", {"sd_model_checkpoint": "tiny-sd"})


def test_png_info_and_lists(server):
    made = post(server, "txt2img", BASE).json()["images"][0]
    info = post(server, "png-info", {"image": made}).json()
    assert info["info"].startswith("a red fox\nSteps: 2, Sampler: Euler a")
    assert info["parameters"]["Seed"] == "5" and info["parameters"]["Size-1"] == "64"
    samplers = {s["name"]: s for s in get(server, "samplers").json()}
    assert "DPM++ 2M Karras" in samplers["DPM++ 2M"]["aliases"]
    assert [s["name"] for s in get(server, "schedulers").json()] == ["automatic", "karras"]
    assert "tiny-sd-lora" in [x["name"] for x in get(server, "loras").json()]
    assert get(server, "upscalers").json()[0]["name"] == "None"
    assert set(get(server, "embeddings").json()) == {"loaded", "skipped"}
    models = requests.get(f"{server.base}/controlnet/model_list", auth=ANN, timeout=30).json()
    assert "tiny-sd-controlnet" in models["model_list"]
    for path in ("refresh-checkpoints", "refresh-loras"):
        assert post(server, path, {}).status_code == 200


def test_karras_schedule_type_maps_to_the_karras_sampler(server):
    r = post(server, "txt2img", {**BASE, "sampler_name": "DPM++ 2M", "scheduler": "karras"})
    assert r.status_code == 200, r.text
    expected = engine_images(server, scheduler="DPM++ 2M Karras")
    assert same(decoded(r.json()["images"][0]), expected.images[0])
    r = post(server, "txt2img", {**BASE, "scheduler": "exponential"})
    assert r.status_code == 422 and r.json()["field"] == "scheduler"


def test_task_id_reaches_the_engine(server, events):
    import inspect

    if "task_id" not in inspect.signature(server.manager.submit).parameters:
        pytest.skip("this engine takes no task ids")
    _, jobs = wait_for(events, "user:ann", "started")
    r = post(server, "txt2img", {**BASE, "force_task_id": "my-task"})
    assert r.status_code == 200, r.text
    assert jobs[-1].task_id == "my-task"
    if hasattr(server.manager, "task_name"):  # Redis/S3 name: namespaced by the caller
        assert server.manager.task_name(jobs[-1]) == "user:ann:my-task"
    r = post(server, "txt2img", {**BASE, "force_task_id": "../x"})
    assert r.status_code == 422 and r.json()["field"] == "force_task_id"


def test_settings_give_the_logins_keys_and_body_limit(tmp_path):
    from app import build_parser
    from ui.rest import rest_config
    from ui.settings import server_values

    keys = tmp_path / "keys.txt"
    keys.write_text("# keys\nsk-one\nsk-two\n")
    args = build_parser().parse_args(["serve", "--api", "true", "--api-auth", "ann:pw,bob:x:y",
                                      "--max-upload-mb", "3"])  # fmt: skip
    values = server_values(args, {"ATELIER_API_KEYS": str(keys)})
    config = rest_config(values)
    assert values["api"] is True and config.users == {"ann": "pw", "bob": "x:y"}
    assert config.api_keys == {"sk-one", "sk-two"}
    assert config.max_body == 4 * 2**20 + 2**20  # 3 MB of file as base64, plus 1 MB
    studio_users = rest_config(server_values(build_parser().parse_args(["--auth", "eve:z"]), {}))
    assert studio_users.users == {"eve": "z"} and not studio_users.api_keys


def test_app_serve_api_mounts_the_routes(cache_root):
    import os
    import subprocess
    import sys

    from tests.ui_support import free_port

    port = free_port()
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "app.py", "--cache-dir", str(cache_root), "--devices", "cpu",
           "--outputs-dir", "off", "--models-dir", str(cache_root / "none"), "--log-level",
           "INFO", "serve", "--api", "true", "--api-auth", "ann:pw",
           "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    try:
        seen = []
        for line in proc.stdout:  # logged once the routes are added
            seen.append(line)
            if "REST APIs ready" in line:
                break
        else:
            pytest.fail("the server never listened:\n" + "".join(seen))
        url = f"http://127.0.0.1:{port}/sdapi/v1/sd-models"
        assert requests.get(url, timeout=60).status_code == 401
        r = requests.get(url, auth=("ann", "pw"), timeout=60)
        assert r.status_code == 200 and "tiny-sd" in [m["title"] for m in r.json()]
    finally:
        proc.terminate()
        proc.wait(30)


def test_readme_example_runs(server, capsys):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(import base64\n.*?/sdapi/v1/txt2img.*?)```", readme, re.S)
    assert block, "README has no A1111 API example"
    code = block.group(1).replace("http://127.0.0.1:7860", server.base)
    code = code.replace('("user", "password")', repr(ANN))
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "[42] (64, 64)" in out and 'ControlNet 0: "Module: canny' in out


def test_hires_fix_and_styles_pass_through_to_the_engine(server):
    from dataclasses import fields

    from pipelines.request import GenerationRequest

    if "enable_hr" not in {f.name for f in fields(GenerationRequest)}:
        pytest.skip("this engine has no hires fix")
    hires = {"enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent",
             "hr_second_pass_steps": 2, "denoising_strength": 0.5}  # fmt: skip
    r = post(server, "txt2img", {**BASE, **hires})
    assert r.status_code == 200, r.text
    expected = engine_images(server, enable_hr=True, hr_scale=2.0, hr_upscaler="Latent",
                             hr_second_pass_steps=2, strength=0.5)  # fmt: skip
    made = decoded(r.json()["images"][0])
    assert made.size == (128, 128) and same(made, expected.images[0])
    r = post(server, "txt2img", {**BASE, **hires, "hr_checkpoint_name": "other"})
    assert r.status_code == 422 and r.json()["field"] == "hr_checkpoint_name"
    r = post(server, "txt2img", {**BASE, "styles": ["no-such-style"]})
    assert r.status_code == 422 and r.json()["field"] == "styles"


def test_a_client_that_goes_away_cancels_its_job(server, events):
    import socket

    started, jobs = wait_for(events, "user:ann", "progress")
    ended, _ = wait_for(events, "user:ann", "cancelled")
    body = json.dumps({**BASE, "steps": 150, "n_iter": 50}).encode()
    auth = base64.b64encode(b"%s:%s" % (ANN[0].encode(), ANN[1].encode())).decode()
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nAuthorization: Basic "
                     + auth.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\n\r\n" + body)  # fmt: skip
        assert started.wait(60), "the job never started"
    try:
        assert ended.wait(60), "the job went on after its client left"
    finally:
        for job in jobs:
            job.cancel()


def test_extra_single_image_upscales_as_a1111_extras(server):
    from pipelines.outputs import read_png_parameters

    source = gradient(48)
    r = post(server, "extra-single-image", {"image": b64(source), "upscaler_1": "Lanczos",
                                            "upscaling_resize": 2})  # fmt: skip
    assert r.status_code == 200, r.text
    big = decoded(r.json()["image"])
    assert big.size == (96, 96)
    assert same(big, source.resize((96, 96), Image.Resampling.LANCZOS)), "a plain Lanczos resize"
    info = read_png_parameters(io.BytesIO(base64.b64decode(r.json()["image"])))
    assert "Postprocess upscale by: 2" in info and "Postprocess upscaler: Lanczos" in info
    assert "Postprocess upscaler: Lanczos" in r.json()["html_info"]
    # resize_mode 1 with crop: upscale to cover 96x64, then centre-crop (A1111's default)
    r = post(server, "extra-single-image", {"image": b64(source), "resize_mode": 1,
                                            "upscaling_resize_w": 96,
                                            "upscaling_resize_h": 64})  # fmt: skip
    assert r.status_code == 200, r.text
    cropped = decoded(r.json()["image"])
    cover = source.resize((96, 96), Image.Resampling.LANCZOS)  # "None" resizes with Lanczos
    assert same(cropped, cover.crop((0, 16, 96, 80)))
    assert "Postprocess crop to: 96x64" in r.json()["html_info"]
    r = post(server, "extra-single-image", {"image": b64(source), "resize_mode": 1,
                                            "upscaling_resize_w": 96, "upscaling_resize_h": 64,
                                            "upscaling_crop": False})  # fmt: skip
    assert decoded(r.json()["image"]).size == (96, 64), "stretched to the exact size"


@pytest.mark.parametrize(
    ("change", "field"),
    [({"upscaler_1": "4x-Nope"}, "upscaler_1"), ({"upscaling_resize": 99}, "upscaling_resize"),
     ({"gfpgan_visibility": 0.5}, "gfpgan_visibility"), ({"resize_mode": 2}, "resize_mode"),
     ({"image": "bm90IGFuIGltYWdl"}, "image"),
     ({"resize_mode": 1, "upscaling_resize_w": 0}, "upscaling_resize_w")],
)  # fmt: skip
def test_extra_single_image_refuses_naming_the_a1111_field(server, change, field):
    r = post(server, "extra-single-image", {"image": b64(gradient(32)), **change})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["detail"].startswith(f"{field}: "), r.json()
