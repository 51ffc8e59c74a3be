"""Bad image files at every entry point of the studio, end to end: each comes back as
"field: rule" (never Gradio's generic "upstream Gradio app has raised an exception",
never a server path), nothing big is decoded, and the server keeps serving.

One studio for the module. The bad files are made here: a 13000x13000 one-bit PNG (a
few KB on disk, 169 MP decoded), an empty file, a text file named .png, a truncated PNG.
The studio's own events (Generate, Video, the preprocessor preview) are called over
plain HTTP as the browser calls them, with their inputs taken from the page's config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from pipelines.errors import RequestError
from pipelines.images import open_image
from tests.ui_support import launched_studio

SMALL = {"model": "tiny-sd", "steps": 2, "width": 64, "height": 64, "seed": 3}
RULES = {
    "big": "13000x13000 is over the 40-megapixel limit",
    "empty": "is empty (0 bytes)",
    "text": "not an image file (cannot identify image file)",
    "truncated": "truncated or corrupt image data",
}


def make_bad_files(folder: Path) -> dict[str, Path]:
    paths = {name: folder / f"{name}.png" for name in (*RULES, "good")}
    Image.new("1", (13000, 13000)).save(paths["big"], optimize=True)
    paths["empty"].write_bytes(b"")
    paths["text"].write_text("just words, not a picture\n")
    Image.radial_gradient("L").resize((256, 256)).save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    paths["truncated"].write_bytes(data[: len(data) // 2])
    Image.new("RGB", (64, 64), (200, 40, 40)).save(paths["good"])
    return paths


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_bad_files(tmp_path_factory.mktemp("bad-files"))


@pytest.fixture(scope="module")
def server(cache_root: Path) -> Iterator[Any]:
    with launched_studio(cache_root, "off", queue_size=8) as demo:
        yield demo


# -- the one opener, without a server --------------------------------------------------
@pytest.mark.parametrize("bad", list(RULES))
def test_open_image_names_the_field_and_the_rule(files, bad):
    with pytest.raises(RequestError) as e:
        open_image("init_image", files[bad], 40_000_000)
    assert e.value.field == "init_image" and RULES[bad] in e.value.rule
    assert str(files[bad].parent) not in str(e.value), "a server path leaked"


def decoded_images() -> int:
    """How many image memories Pillow has made in this process (the server runs in it)."""
    return Image.core.get_stats()["new_count"]


def test_open_image_checks_the_header_before_decoding(files):
    """The 13000x13000 file is refused from its header: decoding it would take 169 MB."""
    before = decoded_images()
    with pytest.raises(RequestError):
        open_image("x", files["big"], 40_000_000)
    assert decoded_images() == before, "the pixels were decoded before the size was checked"
    open_image("x", files["good"], 40_000_000)
    assert decoded_images() > before, "a decode must show in the count (or this test is moot)"


def test_every_source_kind_and_the_other_rules(files, tmp_path):
    good = files["good"].read_bytes()
    for source in (files["good"], str(files["good"]), good, files["good"].open("rb"),
                   {"path": str(files["good"]), "orig_name": "a.png"}):  # fmt: skip
        assert open_image("f", source, 10_000).size == (64, 64)
    with pytest.raises(RequestError, match=r"f: 64x64 is over the 0.001-megapixel limit"):
        open_image("f", good, 1_000)
    with pytest.raises(RequestError, match=r"f: no such file: nowhere.png$"):
        open_image("f", tmp_path / "nowhere.png", 10_000)
    with pytest.raises(RequestError, match=r"f: is a folder"):
        open_image("f", tmp_path, 10_000)
    deep = tmp_path / "deep.png"
    Image.new("I;16", (8, 8)).save(deep)  # 16-bit greyscale: convert("RGB") would clip it
    with pytest.raises(RequestError, match=r"f: unsupported image mode I;16"):
        open_image("f", deep, 10_000)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)  # over Pillow's own ceiling (179 MP)
    with pytest.raises(RequestError, match=r"f: 400,000,000 pixels is over the 40-megapixel"):
        open_image("f", bomb, 40_000_000)


# -- the documented API endpoints (gradio_client) --------------------------------------
API_CASES = [
    ("/generate", "init_image", "init_image", {}),
    ("/generate", "mask_image", "mask_image", {"init_image": "good"}),
    ("/generate", "control_images", "control_images[1]", {}),
    ("/video", "image", "image", {}),
    ("/video", "end_image", "end_image", {}),
    ("/preprocess", "image", "image", {}),
]


@pytest.mark.parametrize("bad", list(RULES))
@pytest.mark.parametrize("endpoint, argument, field, others", API_CASES)
def test_api_endpoints_name_the_field(client, files, endpoint, argument, field, others, bad):
    kwargs: dict[str, Any] = {k: handle_file(str(files[v])) for k, v in others.items()}
    upload = handle_file(str(files[bad]))
    if argument == "control_images":  # the second of two files
        kwargs[argument] = [handle_file(str(files["good"])), upload]
    else:
        kwargs[argument] = upload
    if endpoint == "/generate":
        kwargs.update(prompt="x", **SMALL)
    elif endpoint == "/video":
        kwargs.update(prompt="x", model="tiny-wan-i2v", frames=5, width=32, height=32, steps=1)
    before = decoded_images()
    with pytest.raises(AppError) as e:
        client.predict(**kwargs, api_name=endpoint)
    if bad == "big" and argument not in ("mask_image", "control_images"):  # no good file first
        assert decoded_images() == before, "the server decoded the 169 MP file"
    message = str(e.value)
    assert f"{field}: {RULES[bad]}" in message, message
    assert "/tmp" not in message and "gradio" not in message.lower(), message


def test_the_server_keeps_serving_after_bad_files(client, files):
    # (runs after the parametrized cases above: pytest keeps the file's order)
    paths, _, seed = client.predict(prompt="still here", **SMALL, api_name="/generate")
    assert seed == 3 and len(paths) == 1
    control_map = client.predict(handle_file(str(files["good"])), "canny", 64, 64,
                                 api_name="/preprocess")  # fmt: skip
    assert Image.open(control_map).size == (64, 64)


# -- PNG Info over plain HTTP (its route answers without the queue) --------------------
def upload(http: httpx.Client, path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        answer = http.post("gradio_api/upload", files={"files": (path.name, f)})
    assert answer.status_code == 200, answer.text
    return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("bad", list(RULES))
def test_png_info_says_what_is_wrong_with_the_file(server, files, bad):
    """In its note (an unqueued event's raised error shows as a bare "Error" on the page)."""
    with httpx.Client(base_url=server.test_url, timeout=60) as http:
        answer = http.post("gradio_api/run/png_info", json={"data": [upload(http, files[bad])]})
    assert answer.status_code == 200, answer.text
    text, note = answer.json()["data"]
    assert text == "" and note["visible"] and note["value"].startswith(f"**image**: {RULES[bad]}")


def test_png_info_on_the_page_shows_the_rule_not_a_bare_error(server, files):
    from tests.ui_support import browser_page, require_browser

    expect = require_browser().expect
    with browser_page(server.test_url) as page:
        page.get_by_role("tab", name="PNG Info").click()
        page.locator("#atelier-pnginfo-image input[type=file]").set_input_files(str(files["empty"]))
        expect(page.locator("#atelier-pnginfo-note")).to_contain_text("image: is empty (0 bytes)")
        expect(page.get_by_text("Error", exact=True)).to_have_count(0)


# -- the studio's own events, as the browser sends them --------------------------------
def studio_call(server: Any, api_name: str, values: dict[str, Any]) -> tuple[str, Any]:
    """Call a studio event over HTTP (POST /gradio_api/call/NAME, then its SSE stream),
    every input at the page's initial value except `values` (keyed by elem_id).
    Returns the last SSE event's kind ("complete" or "error") and its data."""
    with httpx.Client(base_url=server.test_url, timeout=120) as http:
        config = http.get("config").json()
        dep = next(d for d in config["dependencies"] if d.get("api_name") == api_name)
        components = {c["id"]: c for c in config["components"]}
        data = []
        for cid in dep["inputs"]:
            props = components[cid].get("props", {})
            data.append(values.get(props.get("elem_id"), props.get("value")))
        event_id = http.post(f"gradio_api/call/{api_name}", json={"data": data}).json()["event_id"]
        kind, payload = "", None
        with http.stream("GET", f"gradio_api/call/{api_name}/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: ") and kind in ("complete", "error"):
                    payload = json.loads(line[len("data: ") :])
        return kind, payload


def shown_error(payload: Any) -> str:
    """The text of the error box among a handler's outputs."""
    texts = [v.get("value") if isinstance(v, dict) else v for v in payload or []]
    return next((t for t in texts if isinstance(t, str) and t.startswith("**")), "")


STUDIO_CASES = [  # (event, elem_id of the image input, other inputs, the box's field)
    ("studio_generate", "atelier-init-image", {"atelier-image-mode": "img2img"}, "init_image"),
    ("studio_generate", "atelier-mask-upload", {"atelier-image-mode": "inpaint"}, "mask_image"),
    ("studio_generate", "atelier-control-1-image", {"atelier-control-1-enabled": True},
     "controlnets[0].image"),
    ("studio_video", "atelier-video-image", {"atelier-video-model": "tiny-wan-i2v"}, "image"),
]  # fmt: skip


@pytest.mark.parametrize("bad", list(RULES))
@pytest.mark.parametrize("event, elem_id, others, field", STUDIO_CASES)
def test_studio_events_show_the_field_in_the_error_box(server, files, event, elem_id, others,
                                                       field, bad):  # fmt: skip
    with httpx.Client(base_url=server.test_url, timeout=60) as http:
        bad_file, good_file = upload(http, files[bad]), upload(http, files["good"])
    values: dict[str, Any] = dict(others)
    if elem_id == "atelier-init-image":
        values[elem_id] = {"background": bad_file, "layers": [], "composite": bad_file}
    else:
        values[elem_id] = bad_file
        if event == "studio_generate":  # an init image for inpainting
            values["atelier-init-image"] = {"background": good_file, "layers": [],
                                            "composite": good_file}  # fmt: skip
    before = decoded_images()
    kind, payload = studio_call(server, event, values)
    assert kind == "complete", (kind, payload)
    if bad == "big" and elem_id != "atelier-mask-upload":  # (no good init image opened first)
        assert decoded_images() == before, "the server decoded the 169 MP file"
    box = shown_error(payload)
    assert box.startswith(f"**{field}**: ") and RULES[bad] in box, payload
    if field.startswith("controlnets"):
        assert "ControlNet unit 2: " in box, "the box names the UI's unit"


@pytest.mark.parametrize("bad", list(RULES))
def test_the_preprocessor_preview_names_the_image(server, files, bad):
    with httpx.Client(base_url=server.test_url, timeout=60) as http:
        bad_file = upload(http, files[bad])
    before = decoded_images()
    kind, payload = studio_call(server, "control_preview_0", {"atelier-control-0-image": bad_file})
    assert bad != "big" or decoded_images() == before, "the server decoded the 169 MP file"
    assert kind == "error" and payload["error"].startswith(f"image: {RULES[bad]}"), payload


def test_a_good_file_still_works_in_the_studio_events(server, files):
    with httpx.Client(base_url=server.test_url, timeout=60) as http:
        good = upload(http, files["good"])
    kind, payload = studio_call(
        server,
        "control_preview_0",
        {"atelier-control-0-image": good, "atelier-control-0-module": "none"},
    )
    assert kind == "complete" and payload[0]["path"].endswith(".png"), payload
    kind, payload = studio_call(server, "studio_generate", {
        "atelier-image-mode": "img2img", "atelier-steps": 2, "atelier-width": 64,
        "atelier-height": 64, "atelier-prompt": "a red square",
        "atelier-init-image": {"background": good, "layers": [], "composite": good}})  # fmt: skip
    assert kind == "complete" and not shown_error(payload), payload


def test_the_upload_components_write_no_stub_files():
    """Gradio writes a .pyi beside the module of a Component subclass; ours must not
    (a generated file in the tree would be linted and committed by accident)."""
    import ui.api
    import ui.img2img_panel

    for module in (ui.img2img_panel, ui.api):
        assert not Path(module.__file__).with_suffix(".pyi").exists()
