"""The README's first command on a fresh machine: `python app.py` serves atelier-shapes,
and a first Generate in the browser draws what the prompt says (read back by the
pixel judge). Set ATELIER_SCREENSHOT=1 to refresh assets/studio.png (the README's).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from pipelines import builtin
from pipelines.shapes.judge import judge
from tests.ui_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    free_port,
    require_browser,
    set_number,
)

playwright = require_browser()
ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(builtin.shipped_model() is None, reason="no trained weights")


def wait_until_serving(url: str, proc: subprocess.Popen, limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)  # polling a port that is not open yet, not a synchronisation sleep
    raise AssertionError(f"app.py did not serve {url} in {limit_s} s")


def test_python_app_py_draws_the_prompt(cache_root: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "ATELIER_DEFAULT_MODEL"}
    outputs = tmp_path / "outputs"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--outputs-dir",
         str(outputs), "--cache-dir", str(cache_root), "--models-dir", "", "--loras-dir", ""],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, proc)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
            expect = playwright.expect
            expect(page.locator("#atelier-model input")).to_have_value(builtin.SHIPPED_MODEL)
            # the model's own defaults (its folder's atelier.json): 64x64, 20 steps
            expect(page.locator("#atelier-width input[type=number]")).to_have_value("64")
            expect(page.locator("#atelier-steps input[type=number]")).to_have_value("20")
            page.locator("#atelier-prompt textarea").fill("a red circle on a blue background")
            set_number(page, "atelier-seed", 1)
            page.locator("#atelier-generate").click()
            expect(page.locator("#atelier-gallery img").first).to_be_visible(timeout=120_000)
            expect(page.locator("#atelier-status")).to_contain_text("Done")
            if os.environ.get("ATELIER_SCREENSHOT"):
                page.screenshot(path=str(ROOT / "assets" / "studio.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    saved = sorted(outputs.glob("*.png"))
    assert len(saved) == 1
    verdict = judge(Image.open(saved[0]))
    assert verdict.background == "blue", verdict
    assert verdict.main is not None and (verdict.main.colour, verdict.main.kind) == (
        "red",
        "circle",
    ), verdict.main
