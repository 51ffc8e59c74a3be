"""What the UI tests share: the studio launched on 127.0.0.1, and chromium under Playwright.

Each test module keeps its own module-scoped fixtures (its own server, with the
device slots, outputs folder and queue it needs) and builds them from these.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
IN_CI = bool(os.environ.get("CI") or os.environ.get("ATELIER_CI"))
TIMEOUT_MS = 30_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched_studio(
    cache_root: Path,
    outputs: Path | str,
    devices: tuple[str, ...] = ("cpu",),
    engine: dict[str, Any] | None = None,
    launch: dict[str, Any] | None = None,
    **build_options: Any,
) -> Iterator[Any]:
    """The studio on a free local port, closed on exit. The Blocks it yields carries
    `test_url` and `test_outputs` (the outputs folder, or "off"). `engine`: more
    EngineSettings; `launch`: more launch() arguments; the rest go to build_studio."""
    from pipelines import EngineSettings, PipelineManager
    from ui.studio import build_studio

    engine = {"default_model": "tiny-sd", **(engine or {})}  # the tests' model unless named
    manager = PipelineManager(EngineSettings(devices=devices, cache_root=cache_root,
                                             loras_dir=None, models_dir=None,
                                             **engine))  # fmt: skip
    demo, assets = build_studio(manager, outputs, **build_options)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1",
                            server_port=free_port(), quiet=True,
                            **{**assets, **(launch or {})})  # fmt: skip
    demo.test_outputs = outputs
    demo.test_url = url
    try:
        yield demo
    finally:
        demo.close()
        demo.atelier_context.store.close()


def require_browser() -> Any:
    """playwright.sync_api, or skip the calling module (at import) without chromium or
    Playwright; in CI a missing chromium is an error, not a skip."""
    if not Path(CHROMIUM).exists():
        if IN_CI:
            raise RuntimeError(
                f"{CHROMIUM} is missing in CI: .ci/run installs it (apt-get install chromium)"
            )
        pytest.skip(f"browser tests need {CHROMIUM} (apt-get install chromium); skipped",
                    allow_module_level=True)  # fmt: skip
    return pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@contextmanager
def browser_page(url: str) -> Iterator[Any]:
    """A chromium page (1400x1000, 30 s timeouts) opened at `url`."""
    playwright = require_browser()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        yield page
        browser.close()


def set_number(page: Any, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def first_progress(job: Any, accept: Any, timeout: float = 300.0) -> Any:
    """(update, unit): the first progress unit of a gradio_client `job` for which
    `accept(unit)` holds, read from the client's ordered stream of updates
    (Job.__aiter__); None when the job ends first, or is cancelled after `timeout`
    seconds without one. Polling `job.status()` instead races: the message that carries
    an output (a preview) carries no progress and replaces the latest status."""
    import asyncio
    import concurrent.futures

    from gradio_client.utils import StatusUpdate

    async def scan() -> Any:
        async for update in job:
            if isinstance(update, StatusUpdate):
                unit = next((u for u in update.progress_data or [] if accept(u)), None)
                if unit is not None:
                    return update, unit
        return None

    # In its own thread: a test driving Playwright's sync API already runs an event
    # loop in this one, where asyncio.run() is refused.
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(asyncio.run, scan()).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        job.cancel()  # the stream then ends, and with it the thread
        return None
    finally:
        pool.shutdown(wait=False)
