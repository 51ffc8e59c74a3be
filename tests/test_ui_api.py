"""The studio's API end to end: the app launched on 127.0.0.1, called with gradio_client.

One server per module, on two CPU device slots so that two clients run at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from tests.ui_support import launched_studio

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
SMALL = {"model": "tiny-sd", "steps": 3, "width": 64, "height": 64}


@pytest.fixture(scope="module")
def server(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    outputs = tmp_path_factory.mktemp("ui-outputs")
    with launched_studio(cache_root, outputs, ("cpu", "cpu"), queue_size=16) as demo:
        yield demo


def test_generate_returns_the_engines_pixels_and_a_parsable_infotext(client, manager):
    from pipelines import GenerationRequest
    from pipelines.outputs import read_png_parameters
    from pipelines.parameters import request_from_infotext

    files, infotext, seed = client.predict(
        prompt="a red fox", negative_prompt="blurry", scheduler="Euler a", cfg=5.5, seed=11,
        loras=json.dumps({"tiny-sd-lora": 0.5}), **SMALL, api_name="/generate",
    )  # fmt: skip
    assert len(files) == 1 and seed == 11
    assert Path(files[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "images must come back as PNG"
    assert read_png_parameters(files[0]) == infotext
    request = GenerationRequest(
        prompt="a red fox", negative_prompt="blurry", model="tiny-sd", scheduler="Euler a",
        num_inference_steps=3, guidance_scale=5.5, width=64, height=64, seed=11,
        loras={"tiny-sd-lora": 0.5},
    )  # fmt: skip
    expected = manager.generate(request)
    got = np.asarray(Image.open(files[0]).convert("RGB"))
    assert np.array_equal(got, np.asarray(expected.images[0].convert("RGB")))
    assert infotext == expected.infotexts[0]
    assert request_from_infotext(infotext) == expected.request


def test_bad_input_names_the_field_and_the_server_keeps_serving(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"width: must be a multiple of 8.*got 100"):
        client.predict(prompt="x", model="tiny-sd", width=100, api_name="/generate")
    with pytest.raises(AppError, match=r"loras: must be a JSON object"):
        client.predict(prompt="x", loras="{not json", api_name="/generate")
    files, _, seed = client.predict(prompt="x", seed=3, **SMALL, api_name="/generate")
    assert len(files) == 1 and seed == 3


def test_two_clients_get_their_own_images_and_a_cancelled_job_stops(server):
    from gradio_client.utils import Status

    from pipelines.outputs import read_png_parameters

    manager = server.atelier_context.manager
    a, b = Client(server.test_url, verbose=False), Client(server.test_url, verbose=False)
    # A is long (about a minute here) unless its cancel reaches the engine.
    long_job = a.submit(prompt="a slow owl", seed=1, batch_count=50, **{**SMALL, "steps": 60},
                        api_name="/generate")  # fmt: skip
    short_job = b.submit(prompt="a quick hare", seed=2, batch_size=2, **SMALL,
                         api_name="/generate")  # fmt: skip
    files, infotext, _ = short_job.result(timeout=60)
    assert [read_png_parameters(f).splitlines()[0] for f in files] == ["a quick hare"] * 2
    assert infotext.startswith("a quick hare\n")
    # Wait until A runs in the engine: its generator yields once per step.
    for _ in long_job:
        break
    # PROGRESS: the endpoint reports its steps through gr.Progress (job.status() shows them).
    assert long_job.status().code in (Status.ITERATING, Status.PROGRESS)
    long_job.cancel()
    with manager._cond:  # the engine signals this condition whenever a slot is released
        freed = manager._cond.wait_for(lambda: not any(s.busy for s in manager.slots), 20)
    assert freed, "the cancelled run kept its device slot: the engine never saw the cancel"
    assert not [p for p in server.test_outputs.glob("*.png") if "slow owl" in
                (read_png_parameters(p) or "")], "a cancelled job saved images"  # fmt: skip
    # The server still serves both clients.
    assert a.predict(prompt="after", seed=5, **SMALL, api_name="/generate")[2] == 5


def test_readme_gradio_client_example_runs_as_printed(server, monkeypatch, capsys):
    block = re.search(r"```python\n(from gradio_client import.*?)```", README, re.S)
    assert block, "README has no gradio_client example"
    code = block.group(1).replace("http://127.0.0.1:7860/", server.test_url)
    assert server.test_url in code, "the example must call the default local address"
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Seed: 42" in out and ".png" in out, out
