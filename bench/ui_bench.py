"""Studio benchmark in a real browser: page load time, and how responsive the UI
stays while a generation runs.

    python bench/ui_bench.py [--reps 5] [--no-record]

Launches the studio on 127.0.0.1 (built-in tiny-sd, one CPU slot), drives
Debian's chromium with Playwright, and measures, in one run:
1. page load: navigation until the Generate button is visible (fresh browser
   context each time, so nothing is cached), median of --reps; goal < 2 s;
2. UI round trip: click "Random" (a server event outside the GPU group) until
   the seed box shows -1, idle vs during a long generation, median; the ratio
   says how much a running generation slows the rest of the UI;
3. page load during a generation (a second user opening the studio);
4. page load on a phone (390x844, touch, mobile user agent), until Generate and the
   result area are visible; the baseline is the desktop load of the same run.
Results are printed as a table and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_ms(fn: Callable[[], float], reps: int) -> float:
    return statistics.median(fn() for _ in range(reps)) * 1000


PHONE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 3,
}


def page_load(browser: Any, url: str, **context_options: Any) -> float:
    context = browser.new_context(**context_options)
    page = context.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    page.locator("#atelier-generate").wait_for(state="visible")
    page.locator("#atelier-gallery").wait_for(state="visible")
    elapsed = time.perf_counter() - t0
    context.close()
    return elapsed


def round_trip(page: Any) -> float:
    seed = page.locator("#atelier-seed input")
    seed.fill("123")
    t0 = time.perf_counter()
    page.locator("#atelier-random").click()
    page.wait_for_function("document.querySelector('#atelier-seed input').value === '-1'")
    return time.perf_counter() - t0


def start_long_generation(page: Any) -> None:
    page.locator("#atelier-prompt textarea").fill("a long one")
    for elem_id, value in (("atelier-steps", 150), ("atelier-batch-count", 20),
                           ("atelier-width", 128), ("atelier-height", 128)):  # fmt: skip
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    page.locator("#atelier-generate").click()
    page.locator("#atelier-status p", has_text="Step").wait_for()  # running in the engine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from pipelines import EngineSettings, PipelineManager
    from ui.studio import build_studio

    manager = PipelineManager(EngineSettings(devices=("cpu",), loras_dir=None, models_dir=None))
    demo, assets = build_studio(manager, "off")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1",
                            server_port=free_port(), quiet=True, **assets)  # fmt: skip
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page_load(browser, url)  # warm-up: first compile of the frontend's bundles
            load_idle = median_ms(lambda: page_load(browser, url), args.reps)
            load_phone = median_ms(lambda: page_load(browser, url, **PHONE), args.reps)
            page = browser.new_page()
            page.goto(url)
            rt_idle = median_ms(lambda: round_trip(page), args.reps)
            start_long_generation(page)
            rt_busy = median_ms(lambda: round_trip(page), args.reps)
            load_busy = median_ms(lambda: page_load(browser, url), args.reps)
            still_running = page.locator("#atelier-status p", has_text="Step").count() > 0
            page.locator("#atelier-stop").click()
            browser.close()
    finally:
        demo.close()
        demo.atelier_context.store.close()
    if not still_running:
        print("warning: the generation ended before the busy measurements did", file=sys.stderr)
    rows = [
        ("page load, idle (median)", f"{load_idle:.0f} ms", "goal < 2000 ms", ""),
        ("page load on a phone (390x844, idle)", f"{load_phone:.0f} ms",
         f"{load_idle:.0f} ms desktop", f"{load_phone / load_idle:.2f}"),
        ("page load during a generation", f"{load_busy:.0f} ms", f"{load_idle:.0f} ms",
         f"{load_busy / load_idle:.2f}"),
        ("UI round trip (Random seed), during a generation", f"{rt_busy:.0f} ms",
         f"{rt_idle:.0f} ms idle", f"{rt_busy / rt_idle:.2f}"),
    ]  # fmt: skip
    table = ["| measure | value | baseline | ratio |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    print("\n".join(table))
    if not args.no_record:
        import torch

        machine = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads), chromium headless, CPU only; "
                   f"generation: tiny-sd 128x128, 150 steps x 20.")  # fmt: skip
        stamp = time.strftime("%Y-%m-%d %H:%M")
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            f.write(f"\n## ui_bench, {stamp}\n\n{machine}\n\n" + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
