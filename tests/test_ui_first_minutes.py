"""A new user's first ten minutes, in Chromium at desktop (1400x1000) and phone (390x844)
sizes: where things are, errors that go away, restored settings that show, defaults
that fit the device, the status line and the Outputs tab. Positions are asserted as
bounding boxes, not pixels.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.ui_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    first_progress,
    launched_studio,
    require_browser,
    set_number,
)

playwright = require_browser()
expect = playwright.expect
ROOT = Path(__file__).resolve().parents[1]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1400, "height": 1000}


@pytest.fixture(scope="module")
def studio(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    outputs = tmp_path_factory.mktemp("outputs")
    with launched_studio(cache_root, outputs) as demo:
        yield demo


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser: Any, url: str, viewport: dict[str, int]) -> Any:
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    expect(page.locator("#atelier-generate")).to_be_visible()
    return page


def box(page: Any, selector: str) -> dict[str, float]:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, f"{selector} is not shown"
    return found


def open_tab(page: Any, name: str) -> None:
    """Click tab `name`; on a phone, tabs that do not fit are under "More tabs"."""
    tab = page.get_by_role("tab", name=name)
    if not tab.count():
        page.get_by_role("button", name="More tabs").click()
        tab = page.locator(".overflow-dropdown button", has_text=name)
    tab.click()


def textarea(page: Any, elem_id: str) -> Any:
    return page.locator(f"#{elem_id} textarea")


def test_phone_shows_prompt_generate_and_result_on_the_first_screen(studio, browser) -> None:
    page = open_page(browser, studio.test_url, PHONE)
    try:
        prompt, run, stop = (box(page, s) for s in
                             ("#atelier-prompt", "#atelier-generate", "#atelier-stop"))  # fmt: skip
        gallery = box(page, "#atelier-gallery")
        for name, b in (("prompt", prompt), ("Generate", run), ("Stop", stop),
                        ("result", gallery)):  # fmt: skip
            assert b["y"] + b["height"] <= PHONE["height"], f"{name} is below the first screen"
        assert prompt["y"] < run["y"] < gallery["y"]  # prompt, then the buttons, then the result
        assert abs(run["y"] - stop["y"]) < 2  # Generate and Stop on one line
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways ({width} px)"
        # the settings follow; "Reuse last" stays on the seed's line
        assert box(page, "#atelier-negative")["y"] > gallery["y"] + gallery["height"]
        seed, reuse = box(page, "#atelier-seed"), box(page, "#atelier-reuse")
        assert abs(seed["y"] - reuse["y"]) < 2 and reuse["x"] > seed["x"]
        assert reuse["x"] + reuse["width"] <= PHONE["width"]
        # after a result (the gallery's preview and its strip of thumbnails): still no
        # sideways scroll, Stop still on the screen
        textarea(page, "atelier-prompt").fill("a red circle")
        set_number(page, "atelier-steps", 2)
        set_number(page, "atelier-batch-size", 4)
        page.locator("#atelier-generate").click()
        expect(page.locator("#atelier-status")).to_contain_text("Done", timeout=120_000)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"a result widened the page to {width} px"
        stop = box(page, "#atelier-stop")
        assert stop["x"] + stop["width"] <= PHONE["width"], "Stop is off the screen"
    finally:
        page.close()


def test_desktop_keeps_the_results_beside_the_form(studio, browser) -> None:
    page = open_page(browser, studio.test_url, DESKTOP)
    try:
        prompt, run = box(page, "#atelier-prompt"), box(page, "#atelier-generate")
        gallery = box(page, "#atelier-gallery")
        assert run["x"] >= prompt["x"] + prompt["width"]  # the right-hand column
        assert abs(run["y"] - prompt["y"]) < 40  # at the top, level with the prompt
        assert gallery["y"] + gallery["height"] <= DESKTOP["height"]
        negative = box(page, "#atelier-negative")
        assert negative["y"] < box(page, "#atelier-model")["y"]  # the form's own order
    finally:
        page.close()


def test_a_field_error_goes_when_the_form_changes(studio, browser) -> None:
    page = open_page(browser, studio.test_url, DESKTOP)
    try:
        textarea(page, "atelier-prompt").fill("a red circle")
        set_number(page, "atelier-steps", 2)
        set_number(page, "atelier-width", 100)  # not a multiple of 8
        page.locator("#atelier-generate").click()
        error = page.locator("#atelier-error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("width")
        set_number(page, "atelier-width", 64)
        expect(error).to_be_hidden()
    finally:
        page.close()


def test_send_to_generate_opens_a_restored_controlnet_unit(studio, browser, tmp_path) -> None:
    from pipelines.outputs import save_png

    name = "control_v11p_sd15_canny_long_name_example"
    unit = (f"Module: canny, Model: {name} [abcd1234], Weight: 0.8, Guidance Start: 0, "
            "Guidance End: 1, Threshold A: 100, Threshold B: 200")  # fmt: skip
    text = (f'a cat\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x64, '
            f'Model: tiny-sd, ControlNet 0: "{unit}"')  # fmt: skip
    image = save_png(Image.new("RGB", (64, 64), "white"), tmp_path, text, stem="cn")
    page = open_page(browser, studio.test_url, DESKTOP)
    try:
        section = page.locator("#atelier-controlnet")
        unit_model = page.locator("#atelier-control-0-model input")
        expect(unit_model).to_be_hidden()  # closed at first
        open_tab(page, "PNG Info")
        page.locator("#atelier-pnginfo-image input[type=file]").set_input_files(str(image))
        expect(textarea(page, "atelier-pnginfo-text")).to_have_value(re.compile("ControlNet 0"))
        page.locator("#atelier-send-generate").click()
        expect(textarea(page, "atelier-prompt")).to_have_value("a cat")
        expect(section).to_be_visible()
        expect(page.locator("#atelier-control-0-enabled input")).to_be_checked()
        expect(unit_model).to_be_visible()
        expect(unit_model).to_have_value(name)
        cut = unit_model.evaluate("e => e.scrollWidth > e.clientWidth")
        assert not cut, "the ControlNet name is cut off in its dropdown"
    finally:
        page.close()


def test_cpu_defaults_are_reduced_and_said_so(studio, browser) -> None:
    from pipelines.families import FAMILIES
    from ui.form import CPU_VIDEO

    page = open_page(browser, studio.test_url, DESKTOP)
    try:
        expect(page.locator("#atelier-statusline")).to_contain_text("CPU server: defaults reduced")
        open_tab(page, "Video")
        frames = page.locator("#atelier-video-frames input[type=number]")
        expect(frames).to_have_value(str(CPU_VIDEO["frames"]))
        assert FAMILIES["wan21"].default_frames == 81  # the family's own, kept for GPUs
        steps = page.locator("#atelier-video-steps input[type=number]")
        expect(steps).to_have_value(str(CPU_VIDEO["steps"]))
        width = int(page.locator("#atelier-video-width input[type=number]").input_value())
        assert width <= CPU_VIDEO["long_side"]
    finally:
        page.close()


def test_the_status_line_shows_a_busy_device_and_frees_it(studio, browser) -> None:
    from pipelines import GenerationRequest
    from pipelines.image_job import ImageJob

    manager = studio.atelier_context.manager
    hold, started = threading.Event(), threading.Event()

    def block(job: Any, event: Any) -> None:  # holds the job on its slot, in its thread
        if event.kind == "progress" and job.caller == "hold":
            started.set()
            hold.wait(60)

    manager.jobs.add_listener(block)
    page = open_page(browser, studio.test_url, DESKTOP)
    try:
        line = page.locator("#atelier-statusline")
        expect(line).to_contain_text("1 of 1 device(s) free")
        job = manager.submit(ImageJob(GenerationRequest(prompt="x", num_inference_steps=2,
                                                        width=64, height=64)), "hold")  # fmt: skip
        assert started.wait(60)
        expect(line).to_contain_text("0 of 1 device(s) free", timeout=20_000)
        expect(line).to_contain_text("busy (image, tiny-sd)")
        hold.set()
        job.result()
        expect(line).to_contain_text("1 of 1 device(s) free", timeout=20_000)
    finally:
        hold.set()
        page.close()


def test_outputs_tab_lists_searches_and_sends_back(studio, browser) -> None:
    from gradio_client import Client

    client = Client(studio.test_url, verbose=False)
    before = len(list(studio.test_outputs.glob("*.png")))  # other tests' images share it
    for prompt in ("a zebra in the rain", "a lighthouse at dusk"):
        client.predict(prompt=prompt, steps=2, width=64, height=64, seed=3, api_name="/generate")
    page = open_page(browser, studio.test_url, PHONE)
    try:
        open_tab(page, "Outputs")
        items = page.locator("#atelier-outputs-gallery img")
        expect(items).to_have_count(before + 2)
        note = page.locator("#atelier-outputs-note")
        expect(note).to_contain_text(f"{before + 2} file(s)")
        search = page.locator("#atelier-outputs-search textarea, #atelier-outputs-search input")
        search.first.fill("zebra")
        search.first.press("Enter")
        expect(items).to_have_count(1)
        items.first.click()
        expect(textarea(page, "atelier-outputs-infotext")).to_have_value(
            re.compile(r"^a zebra in the rain\n")
        )
        if os.environ.get("ATELIER_SCREENSHOT"):
            page.screenshot(path=str(ROOT / "assets" / "outputs-phone.png"))
        page.locator("#atelier-outputs-to-generate").click()
        expect(textarea(page, "atelier-prompt")).to_have_value("a zebra in the rain")
        expect(page.locator("#atelier-seed input")).to_have_value("3")
    finally:
        page.close()


def test_with_logins_each_user_sees_only_their_own_outputs(cache_root, tmp_path) -> None:
    from gradio_client import Client

    from pipelines.outputs import read_png_parameters

    outputs = tmp_path / "outputs"
    shutil.rmtree(outputs, ignore_errors=True)
    launch = {"auth": [("alice", "pw-a"), ("bob", "pw-b")]}
    with launched_studio(cache_root, outputs, launch=launch) as demo:
        for user, pw, prompt in (("alice", "pw-a", "alice's fox"), ("bob", "pw-b", "bob's owl")):
            Client(demo.test_url, auth=(user, pw), verbose=False).predict(
                prompt=prompt, steps=2, width=64, height=64, api_name="/generate")  # fmt: skip
        for user, pw, mine in (("alice", "pw-a", "alice's fox"), ("bob", "pw-b", "bob's owl")):
            client = Client(demo.test_url, auth=(user, pw), verbose=False)
            items, _, note = client.predict("", 1, api_name="/outputs")
            names = [item["caption"] for item in items]  # captions are the file names
            assert len(names) == 1, (user, names, note)
            assert read_png_parameters(outputs / names[0]).startswith(mine)


ETA = re.compile(r"Step \d+/\d+ · (about \d+ s|under a second) left")


def test_the_progress_line_and_the_api_show_the_jobs_eta(studio, browser) -> None:

    from gradio_client import Client

    page = open_page(browser, studio.test_url, PHONE)
    try:
        textarea(page, "atelier-prompt").fill("a long one")
        set_number(page, "atelier-steps", 150)
        page.locator("#atelier-generate").click()
        expect(page.locator("#atelier-status")).to_have_text(ETA, timeout=60_000)
        page.locator("#atelier-stop").click()
    finally:
        page.close()
    job = Client(studio.test_url, verbose=False).submit(
        prompt="eta", steps=150, width=64, height=64, api_name="/generate"
    )
    try:
        found = first_progress(job, lambda u: bool(u.desc and ETA.search(u.desc)))
    finally:
        job.cancel()
    assert found is not None, "no progress description with an ETA reached the API client"
