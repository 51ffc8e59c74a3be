"""The studio in a real browser: Debian's chromium driven by Playwright.

Loads the page, types a prompt, picks a sampler, generates, opens the image in
PNG Info and sends its parameters back to Generate, then generates again with
Ctrl+Enter. Without chromium the tests are skipped (outside CI) with the reason.
Set ATELIER_SCREENSHOT=1 to refresh assets/studio.png (the README's picture).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from tests.ui_support import require_browser, set_number

playwright = require_browser()

ROOT = Path(__file__).resolve().parents[1]


def textarea(page: Any, elem_id: str) -> Any:
    return page.locator(f"#{elem_id} textarea")


def test_generate_then_png_info_then_send_back(page: Any, tmp_path: Path) -> None:
    expect = playwright.expect
    textarea(page, "atelier-prompt").fill("a lighthouse at dusk")
    for elem_id, value in (("atelier-width", 64), ("atelier-height", 64), ("atelier-steps", 3)):
        set_number(page, elem_id, value)
    page.locator("#atelier-scheduler input").click()
    page.get_by_role("option", name="Euler a", exact=True).click()
    expect(page.locator("#atelier-scheduler input")).to_have_value("Euler a")

    page.locator("#atelier-generate").click()
    expect(page.locator("#atelier-gallery img").first).to_be_visible()
    info = textarea(page, "atelier-infotext")
    expect(info).to_have_value(re.compile(r"Sampler: Euler a.*Size: 64x64", re.S))
    used_seed = int(info.input_value().split("Seed: ")[1].split(",")[0])
    shot = tmp_path / "studio.png"
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("ATELIER_SCREENSHOT"):
        shutil.copyfile(shot, ROOT / "assets" / "studio.png")

    # Change the form, then let PNG Info restore it from the image's own text chunk.
    textarea(page, "atelier-prompt").fill("something else")
    set_number(page, "atelier-width", 128)
    page.locator("#atelier-to-pnginfo").click()
    params = textarea(page, "atelier-pnginfo-text")
    expect(params).to_have_value(re.compile(r"^a lighthouse at dusk\nSteps: 3"))
    page.locator("#atelier-send-generate").click()
    expect(textarea(page, "atelier-prompt")).to_have_value("a lighthouse at dusk")
    expect(page.locator("#atelier-width input[type=number]")).to_have_value("64")
    expect(page.locator("#atelier-steps input[type=number]")).to_have_value("3")
    expect(page.locator("#atelier-scheduler input")).to_have_value("Euler a")
    expect(page.locator("#atelier-seed input")).to_have_value(str(used_seed))

    # Ctrl+Enter in the prompt generates; the history keeps both images, newest first.
    textarea(page, "atelier-prompt").press("Control+Enter")
    expect(page.locator("#atelier-history img")).to_have_count(2)
    expect(page.locator("#atelier-seed-used")).to_contain_text(f"Seed: {used_seed}")
