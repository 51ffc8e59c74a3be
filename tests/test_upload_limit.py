"""The upload size limit: --max-upload-mb becomes Gradio's max_file_size, and a bigger
upload is refused before it is stored."""

from __future__ import annotations

import argparse

import httpx

from pipelines.settings import add_arguments
from tests.ui_support import launched_studio
from ui.settings import SERVER_SETTINGS, launch_options, server_values


def test_max_upload_mb_is_gradios_max_file_size():
    parser = argparse.ArgumentParser()
    add_arguments(parser, SERVER_SETTINGS)
    assert launch_options(server_values(parser.parse_args([]), {}))["max_file_size"] == "50mb"
    values = server_values(parser.parse_args(["--max-upload-mb", "2"]), {})
    assert launch_options(values)["max_file_size"] == "2mb"


def test_an_upload_over_the_limit_is_refused_and_a_small_one_is_kept(cache_root):
    with (
        launched_studio(cache_root, "off", launch={"max_file_size": "1mb"}) as demo,
        httpx.Client(base_url=demo.test_url, timeout=30) as http,
    ):
        big = http.post("gradio_api/upload", files={"files": ("a.png", b"x" * 1_100_000)})
        small = http.post("gradio_api/upload", files={"files": ("b.png", b"x" * 1000)})
    assert big.status_code == 413, big.text
    assert small.status_code == 200 and len(small.json()) == 1


def test_gradios_cache_of_this_app_is_emptied_at_shutdown(cache_root):
    from pathlib import Path

    from gradio_client import Client, handle_file
    from PIL import Image

    from pipelines.outputs import save_png

    with launched_studio(cache_root, "off") as demo:
        png = save_png(Image.new("RGB", (8, 8)), Path(demo.atelier_context.store.scratch),
                       "x\nSteps: 1, Seed: 1, Size: 8x8")  # fmt: skip
        Client(demo.test_url, verbose=False).predict(handle_file(str(png)), api_name="/png_info")
        cached = [Path(f) for files in demo.temp_file_sets for f in files]
        assert cached and all(f.exists() for f in cached)
    assert not any(f.exists() for f in cached), "the app's cached files outlived it"
