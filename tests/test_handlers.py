"""The tabs' event handlers are plain functions: called here without a server, with a
StudioContext over the test engine, their updates checked by output name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from pipelines import EngineSettings, GenerationRequest, PipelineManager
from ui import generate_handlers, video_handlers
from ui.context import StudioContext

FORM = {"prompt": "a red fox", "negative_prompt": "", "model": "tiny-sd",
        "scheduler": "Euler", "steps": 2.0, "cfg": 7.0, "width": 64.0, "height": 64.0,
        "seed": 5.0, "batch_size": 2.0, "batch_count": 1.0, "loras": {}}  # fmt: skip


@pytest.fixture(scope="module")
def ctx(manager) -> Iterator[StudioContext]:
    context = StudioContext.create(manager, "off")
    yield context
    context.store.close()


def test_generate_handler_yields_status_then_the_published_result(ctx, manager):
    seen = []
    updates = list(generate_handlers.generate(ctx, FORM, [], "local", seen.append))
    assert updates[0]["status"] == "Waiting for a device…"
    assert set(updates[-1]) <= set(generate_handlers.OUTPUTS)
    final = updates[-1]
    assert final["status"].startswith("Done: 2 image(s)") and final["last_seed"] == 5
    # The first and the last step always reach `progress` (others may be throttled);
    # a first use of the model also reports hashing (in bytes) before them.
    steps = [e for e in seen if e.kind == "progress"]
    assert (steps[0].step, steps[-1].step, steps[-1].total) == (1, 2, 2)
    assert any(u.get("status", "").startswith("Step ") for u in updates[1:-1])
    files = [Path(p) for p, _ in final["history_items"]][::-1]
    same = GenerationRequest(
        prompt="a red fox",
        scheduler="Euler",
        num_inference_steps=2,
        guidance_scale=7.0,
        width=64,
        height=64,
        seed=5,
        batch_size=2,
    )
    direct = manager.generate(same)
    for path, image in zip(files, direct.images, strict=True):
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(image))


def test_generate_handler_names_the_bad_field_and_runs_nothing(ctx):
    updates = list(generate_handlers.generate(ctx, {**FORM, "width": 100.0}, [], "local"))
    assert len(updates) == 1 and updates[0]["status"] == ""
    assert "width" in updates[0]["error"].value and updates[0]["error"].visible


def test_a_refused_job_shows_the_limit(cache_root):
    m = PipelineManager(
        EngineSettings(
            default_model="tiny-sd", devices=("cpu",), cache_root=cache_root, max_work=1000
        )
    )
    c = StudioContext.create(m, "off")
    try:
        updates = list(generate_handlers.generate(c, FORM, [], "local"))
    finally:
        c.store.close()
    assert "max_work" in updates[-1]["error"].value


def test_model_change_and_refresh_handlers_come_from_the_engine(ctx):
    updates = generate_handlers.model_changed(ctx, "tiny-sdxl", units=3)
    assert updates[0].value == "DPM++ 2M Karras" and len(updates) == 4 + 1 + 1 + 3
    assert updates[3].value == 1024, "width: the SDXL default"
    assert all(u.choices == [] for u in updates[-3:]), "no ControlNet for SDXL here"
    refreshed = generate_handlers.models_refreshed(ctx, "tiny-sd")
    assert ("tiny-sd", "tiny-sd") in refreshed[0].choices
    assert ("tiny-wan", "tiny-wan") not in refreshed[0].choices, "image models only"


def test_pick_returns_the_selected_item_or_nothing():
    items = [("a.png", "text a"), ("b.png", "text b")]
    assert generate_handlers.pick(items, 1) == ("text b", "b.png")
    assert generate_handlers.pick(items, 5) == ("", None)


def test_video_handler_yields_the_files_and_the_seed(ctx):
    form = {"prompt": "waves", "negative_prompt": "", "model": "tiny-wan", "scheduler": "UniPC",
            "frames": 5.0, "fps": 8.0, "width": 32.0, "height": 32.0, "steps": 2.0, "cfg": 5.0,
            "cfg2": None, "flow_shift": 0, "seed": 3.0, "loras": "",
            "lora_experts": "both"}  # fmt: skip
    updates = list(video_handlers.generate(ctx, form, None, None, "mp4", "local"))
    final = updates[-1]
    assert final["last_seed"] == 3 and Path(final["player"]).suffix == ".mp4"
    assert isinstance(final["download"], gr.DownloadButton)
    bad = list(video_handlers.generate(ctx, {**form, "frames": 6.0}, None, None, "mp4", "x"))
    assert "num_frames" in bad[-1]["error"].value


def test_an_idle_gap_updates_nothing_but_is_a_valid_gradio_update():
    from pipelines.jobs import JobEvent

    update = generate_handlers.running(JobEvent("idle", "1"))
    # A dict Gradio reads as {component: value}: never empty (an empty dict is taken as
    # one output value and failed the event), and nothing in it changes.
    assert update and all(isinstance(v, type(gr.skip())) for v in update.values())
