"""The Video tab in a real browser: Debian's chromium driven by Playwright.

Opens the Video tab, types a prompt, sets a tiny clip (64x32, 9 frames, 2 steps),
generates and sees the player with a source, the downloads and the seed; then
checks that picking an image-to-video model shows the start image input.
Without chromium the test is skipped (outside CI) with the reason.
"""

from __future__ import annotations

import re
from typing import Any

from tests.ui_support import require_browser, set_number

playwright = require_browser()


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
