"""The OpenAI-compatible Images API, driven with the official `openai` Python client
against the studio's own server. Pixels are compared with the engine's own generate."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

openai = pytest.importorskip("openai")
KEY, OTHER_KEY = "sk-atelier-test-1", "sk-atelier-test-2"
EXTRA = {"seed": 5, "steps": 2, "cfg_scale": 7, "scheduler": "Euler a"}


@pytest.fixture(scope="module")
def server(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.ui_support import launched_studio
    from ui.rest import RestConfig, mount

    with launched_studio(cache_root, tmp_path_factory.mktemp("outputs")) as demo:
        mount(demo.app, demo.atelier_context, RestConfig(api_keys=frozenset({KEY, OTHER_KEY})))
        demo.base = demo.test_url.rstrip("/")
        demo.manager = demo.atelier_context.manager
        yield demo


@pytest.fixture(scope="module")
def client(server: Any) -> Any:
    return openai.OpenAI(api_key=KEY, base_url=f"{server.base}/v1", max_retries=0, timeout=120)


def engine_images(server: Any, inputs: Any = None, **fields: Any) -> Any:
    from pipelines.request import GenerationRequest

    req = GenerationRequest(**{"prompt": "a red fox", "num_inference_steps": 2, "width": 64,
                               "height": 64, "seed": 5, "scheduler": "Euler a",
                               "guidance_scale": 7.0, **fields})  # fmt: skip
    return server.manager.generate(req, inputs=inputs)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def from_b64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_generations_b64_match_the_engine(server, client):
    out = client.images.generate(prompt="a red fox", model="dall-e-3", n=2, size="64x64",
                                 response_format="b64_json", extra_body=EXTRA)  # fmt: skip
    expected = engine_images(server, batch_size=2)
    assert len(out.data) == 2
    for item, image, text in zip(out.data, expected.images, expected.infotexts, strict=True):
        made = from_b64(item.b64_json)
        assert np.array_equal(pixels(made), pixels(image))
        assert made.info["parameters"] == text  # the PNG carries its infotext


def test_url_links_serve_the_same_png_and_expire(server, client):
    from ui.rest import ImageLinks

    out = client.images.generate(prompt="a red fox", size="64x64", response_format="url",
                                 model="tiny-sd", extra_body=EXTRA)  # fmt: skip
    url = out.data[0].url
    assert url.startswith(server.base + "/v1/images/files/")
    r = requests.get(url, timeout=30)  # a capability: no key needed, like a presigned URL
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert np.array_equal(pixels(image), pixels(engine_images(server).images[0]))
    assert requests.get(url[:-8] + "xxxx.png", timeout=30).status_code == 404
    links = ImageLinks(ttl_s=60)
    token = links.add(Path(__file__), now=1000.0)
    assert links.get(token, now=1059.0) == Path(__file__)
    assert links.get(token, now=1060.0) is None  # expired


def test_url_points_at_the_s3_object_when_outputs_go_to_s3(server, client, monkeypatch, tmp_path):
    boto3 = pytest.importorskip("boto3")
    from pipelines.image_job import ImageJob
    from pipelines.storage import S3Store, UploadingRunner
    from tests.servers import moto_s3_server

    for name, value in (("AWS_ACCESS_KEY_ID", "testing-key"),
                        ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true"),
                        ("AWS_CONFIG_FILE", str(tmp_path / "none")),
                        ("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))):  # fmt: skip
        monkeypatch.setenv(name, value)
    manager = server.manager
    with moto_s3_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="atelier-out")
        store = S3Store("atelier-out", endpoint_url=endpoint, region="us-east-1",
                        presign_seconds=300)  # fmt: skip
        manager.jobs.register(ImageJob, UploadingRunner(manager.images, store, manager.task_name))
        try:
            out = client.images.generate(prompt="a red fox", size="64x64",
                                         response_format="url", extra_body=EXTRA)  # fmt: skip
        finally:
            manager.jobs.register(ImageJob, manager.images)
        url = out.data[0].url
        assert url.startswith(endpoint + "/atelier-out/") and "X-Amz-Signature=" in url, url
        r = requests.get(url, timeout=30)
        assert r.status_code == 200
    image = Image.open(io.BytesIO(r.content))
    assert np.array_equal(pixels(image), pixels(engine_images(server).images[0]))


def test_edits_convert_openais_transparent_mask(server, client):
    from pipelines.tasks import Inputs

    x = np.linspace(0, 255, 64, dtype=np.uint8)
    init = Image.fromarray(np.stack([np.tile(x, (64, 1)), np.tile(x[:, None], (1, 64)),
                                     np.full((64, 64), 90, np.uint8)], -1))  # fmt: skip
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent = the area to edit
    out = client.images.edit(image=("init.png", png_bytes(init), "image/png"),
                             mask=("mask.png", png_bytes(mask), "image/png"),
                             prompt="a red fox", response_format="b64_json",
                             extra_body=EXTRA)  # fmt: skip
    ours = Image.new("L", (64, 64), 0)
    ours.paste(255, (16, 16, 48, 48))  # white = repaint
    expected = engine_images(server, Inputs(init_image=init, mask_image=ours), strength=1.0)
    assert np.array_equal(pixels(from_b64(out.data[0].b64_json)), pixels(expected.images[0]))
    opaque = ("mask.png", png_bytes(init), "image/png")  # no alpha channel
    with pytest.raises(openai.BadRequestError) as e:
        client.images.edit(image=("init.png", png_bytes(init), "image/png"), mask=opaque,
                           prompt="x", extra_body=EXTRA)  # fmt: skip
    assert e.value.body["param"] == "mask"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"size": "63x64"}, "size"), ({"size": "big"}, "size"), ({"n": 20}, "n"),
     ({"model": "no-such-model"}, "model"), ({"background": "transparent"}, "background"),
     ({"output_format": "jpeg"}, "output_format"), ({"extra_body": {"steps": 0}}, "steps"),
     ({"response_format": "gif"}, "response_format")],
)  # fmt: skip
def test_bad_parameters_are_openai_errors_naming_the_param(client, kwargs, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(prompt="a red fox", **kwargs)
    assert e.value.status_code == 400
    assert e.value.body["param"] == param and e.value.body["type"] == "invalid_request_error"


def test_keys_are_required(server):
    bad = openai.OpenAI(api_key="sk-wrong", base_url=f"{server.base}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.images.generate(prompt="x")
    r = requests.post(f"{server.base}/v1/images/generations", json={"prompt": "x"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = requests.get(f"{server.base}/v1/models", headers={"Authorization": f"Bearer {KEY}"},
                     timeout=30)  # fmt: skip
    assert "tiny-sd" in [m["id"] for m in r.json()["data"]]


def test_admission_is_a_rate_limit_error_per_key(server, client):
    from pipelines.image_job import ImageJob
    from pipelines.request import GenerationRequest
    from ui.rest import caller_of

    jobs = server.manager.jobs
    limits = jobs.limits
    request = type("R", (), {"client": None, "headers": {}})()
    mine = caller_of(request, key=KEY)  # the caller a key stands for
    hold = GenerationRequest(
        "hold", num_inference_steps=150, width=64, height=64, batch_count=50
    )  # minutes: cancelled long before
    jobs.limits = replace(limits, max_jobs_per_user=1)
    held = server.manager.submit(ImageJob(hold), mine)
    try:
        with pytest.raises(openai.RateLimitError) as e:
            client.images.generate(prompt="a red fox", size="64x64", extra_body=EXTRA)
        assert e.value.body["code"] == "rate_limit_exceeded" and "max_jobs_per_user" in str(
            e.value.body["message"])  # fmt: skip
        other = caller_of(request, key=OTHER_KEY)
        server.manager.submit(ImageJob(hold), other).cancel()  # another key is admitted
    finally:
        held.cancel()
        jobs.limits = limits


def test_readme_example_runs(server, capsys):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```python\n(import base64\n[^`]*?from openai import OpenAI.*?)```",
                      readme, re.S)  # fmt: skip
    assert block, "README has no OpenAI API example"
    code = block.group(1).replace("http://127.0.0.1:7860", server.base)
    code = code.replace('"sk-my-key"', repr(KEY))
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(64, 64)" in out and f"{server.base}/v1/images/files/" in out
