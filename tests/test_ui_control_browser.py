"""A ControlNet generation from the studio page in chromium: upload an image to unit 1
(which enables it), pick canny, preview the control map, Generate, and the image
appears with the unit in its infotext. Skipped without chromium, as the other
browser tests (see tests/test_ui_browser.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from tests.test_ui_browser import textarea
from tests.ui_support import require_browser, set_number

playwright = require_browser()


def test_controlnet_generation_from_the_page(page: Any, tmp_path: Path) -> None:
    expect = playwright.expect
    picture = tmp_path / "shapes.png"
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle((16, 16, 48, 40), fill="white")
    image.save(picture)

    textarea(page, "atelier-prompt").fill("a box")
    for elem_id, value in (("atelier-width", 64), ("atelier-height", 64), ("atelier-steps", 2)):
        set_number(page, elem_id, value)
    page.locator("#atelier-controlnet").get_by_text("ControlNet").first.click()
    page.locator("#atelier-control-0-image input[type=file]").set_input_files(str(picture))
    expect(page.locator("#atelier-control-0-enabled input")).to_be_checked()
    page.locator("#atelier-control-0-module input").click()
    page.get_by_role("option", name="canny", exact=True).click()
    expect(page.locator("#atelier-control-0-module input")).to_have_value("canny")
    expect(page.locator("#atelier-control-0-low")).to_be_visible()  # canny's thresholds
    expect(page.locator("#atelier-control-0-model input")).to_have_value("tiny-sd-controlnet")

    page.locator("#atelier-control-0-preview").click()
    expect(page.locator("#atelier-control-0-map img")).to_be_visible()

    page.locator("#atelier-generate").click()
    expect(page.locator("#atelier-gallery img").first).to_be_visible()
    expect(textarea(page, "atelier-infotext")).to_have_value(
        re.compile(r'ControlNet 0: "Module: canny, Model: tiny-sd-controlnet.*Size: 64x64|'
                   r'Size: 64x64.*ControlNet 0: "Module: canny, Model: tiny-sd-controlnet', re.S)
    )  # fmt: skip
    expect(page.locator("#atelier-error")).to_be_hidden()
