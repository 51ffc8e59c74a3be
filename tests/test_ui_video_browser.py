"""The Video tab in a real browser: Debian's chromium driven by Playwright.

Opens the Video tab, types a prompt, sets a tiny clip (64x32, 9 frames, 2 steps),
generates and sees the player with a source, the downloads and the seed; then
checks that picking an image-to-video model shows the start image input.
Without chromium the test is skipped (outside CI) with the reason.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
IN_CI = bool(os.environ.get("CI") or os.environ.get("ATELIER_CI"))
TIMEOUT_MS = 30_000

if not Path(CHROMIUM).exists():
    if IN_CI:
        raise RuntimeError(
            f"{CHROMIUM} is missing in CI: .ci/run installs it (apt-get install chromium)"
        )
    pytest.skip(f"browser tests need {CHROMIUM} (apt-get install chromium); skipped",
                allow_module_level=True)  # fmt: skip
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio_url(cache_root: Path) -> Iterator[str]:
    from pipelines import EngineSettings, PipelineManager
    from ui.studio import build_studio

    manager = PipelineManager(EngineSettings(devices=("cpu",), cache_root=cache_root,
                                             loras_dir=None, models_dir=None))  # fmt: skip
    demo, assets = build_studio(manager, "off")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1",
                            server_port=free_port(), quiet=True, **assets)  # fmt: skip
    try:
        yield url
    finally:
        demo.close()
        demo.atelier_context.store.close()


@pytest.fixture(scope="module")
def page(studio_url: str) -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(studio_url)
        yield page
        browser.close()


def set_number(page: Any, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def test_video_tab_generates_a_clip_and_plays_it(page: Any) -> None:
    expect = playwright.expect
    page.get_by_role("tab", name="Video").click()
    page.locator("#atelier-video-prompt textarea").fill("a wave breaking")
    sizes = {"width": 64, "height": 32, "frames": 9, "steps": 2}
    for name, value in sizes.items():
        set_number(page, f"atelier-video-{name}", value)
    for name, value in sizes.items():  # the sliders took the values (not clamped or rounded)
        expect(page.locator(f"#atelier-video-{name} input[type=number]")).to_have_value(str(value))
    set_number(page, "atelier-video-seed", 5)
    expect(page.locator("#atelier-video-image")).to_be_hidden()  # tiny-wan is text-to-video

    page.locator("#atelier-video-generate").click()
    video = page.locator("#atelier-video-player video")
    expect(video).to_have_attribute("src", re.compile(r"/file=.*\.mp4"))
    expect(page.locator("#atelier-video-seed-used")).to_contain_text("Seed: 5")
    expect(page.locator("#atelier-video-download")).to_be_visible()
    expect(page.locator("#atelier-video-download-json")).to_be_visible()
    expect(page.locator("#atelier-video-error")).to_be_hidden()

    # An image-to-video model shows its (required) start image input.
    page.locator("#atelier-video-model input").click()
    page.get_by_role("option", name="tiny-wan-i2v", exact=True).click()
    expect(page.locator("#atelier-video-image")).to_be_visible()
    expect(page.locator("#atelier-video-image")).to_contain_text("Start image (required)")
