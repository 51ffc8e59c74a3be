"""The studio under load: the engine's admission limits generations from every front
end, and light events (PNG Info) still answer while the generation queue is full."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.ui_support import launched_studio

SMALL = dict(steps=2, width=64, height=64)
LONG = dict(steps=150, width=64, height=64, batch_count=100)  # a minute unless cancelled


@pytest.fixture(scope="module")
def server(cache_root: Path) -> Iterator[Any]:
    with launched_studio(cache_root, "off", queue_size=1) as demo:
        yield demo


def wait_for(manager: Any, what: Any) -> bool:
    with manager._cond:  # signalled whenever the line or a slot changes
        return manager._cond.wait_for(what, 60)


def png_info_over_http(url: str, png: Path) -> dict:
    with httpx.Client(base_url=url, timeout=30) as http:
        uploaded = http.post("gradio_api/upload", files={"files": png.open("rb")}).json()
        file = {"path": uploaded[0], "meta": {"_type": "gradio.FileData"}}
        answer = http.post("gradio_api/run/png_info", json={"data": [file]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_full_generation_queue_refuses_the_next_job_but_png_info_answers(server, tmp_path):
    from PIL import Image

    from pipelines.outputs import save_png

    manager = server.atelier_context.manager
    a, b, c = (Client(server.test_url, verbose=False) for _ in range(3))
    running = a.submit(prompt="a long one", seed=1, **LONG, api_name="/generate")
    assert wait_for(manager, lambda: manager.status()["slots"][0]["busy"])
    waiting = b.submit(prompt="waits", seed=2, **SMALL, api_name="/generate")
    assert wait_for(manager, lambda: manager.status()["waiting"] == 1)
    with pytest.raises(AppError, match="queue_size: the generation queue is full"):
        c.predict(prompt="one too many", seed=3, **SMALL, api_name="/generate")
    # PNG Info is answered over plain HTTP while the generation queue is full.
    png = save_png(Image.new("RGB", (8, 8)), tmp_path, "a cat\nSteps: 2, Seed: 9, Size: 8x8")
    out = png_info_over_http(server.test_url, png)
    assert out["data"][0].startswith("a cat\n"), out
    running.cancel()
    files, _, seed = waiting.result(timeout=120)
    assert seed == 2 and len(files) == 1, "the waiting job ran once the long one was stopped"


def test_stop_takes_a_waiting_job_out_of_the_line_at_once(server):
    manager = server.atelier_context.manager
    a, b = (Client(server.test_url, verbose=False) for _ in range(2))
    running = a.submit(prompt="a long one", seed=1, **LONG, api_name="/generate")
    assert wait_for(manager, lambda: manager.status()["slots"][0]["busy"])
    waiting = b.submit(prompt="waits", seed=2, **SMALL, api_name="/generate")
    assert wait_for(manager, lambda: manager.status()["waiting"] == 1)
    waiting.cancel()
    # The long job still runs (a minute): the waiting one must leave the line well before.
    assert wait_for(manager, lambda: manager.status()["waiting"] == 0)
    assert manager.status()["slots"][0]["busy"], "the running job is not affected"
    running.cancel()
    assert wait_for(manager, lambda: not manager.status()["slots"][0]["busy"])
