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
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]
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
