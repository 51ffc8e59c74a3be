"""Following one engine job from a Gradio handler, and where result files go.

Jobs run in the engine (`manager.submit` returns a handle whose events arrive
from the job's own thread). Gradio handlers here are generators: they must yield
now and then, because Gradio can only close a generator (on Stop, or a client's
`Job.cancel()`) while it is suspended at a `yield`. `stream_job` yields the job's
events (throttled), and when Gradio closes the handler its `finally:` cancels the
job: the engine stops within one step. One helper serves every kind of job.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pipelines.jobs import Job, JobEvent
    from pipelines.manager import PipelineManager

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


def stream_job(job: Job, min_interval: float = 0.1) -> Iterator[JobEvent]:
    """The job's events: every queued/started/preview event, progress at most once per
    `min_interval` s (and the last step), then the result; an error event is raised
    here as its exception. Closing this iterator early cancels the job."""
    last = 0.0
    try:
        # idle events let a handler yield (and Gradio close it on Stop) while the job
        # waits in a long line with nothing to report
        for event in job.events(idle=1.0):
            if event.kind in ("error", "cancelled"):
                assert event.error is not None
                raise event.error
            if event.kind == "progress":
                now = time.monotonic()
                if event.step != event.total and now - last < min_interval:
                    continue
                last = now
            yield event
    finally:
        if not job.done:
            job.cancel()


def progress_text(event: JobEvent) -> str:
    """'Step 3/20 · about 12 s left' (the ETA once the job has measured its steps), or
    for a download 'Downloading the model: 120 of 2,100 MB'."""
    if event.kind in ("download", "hashing"):
        what = "Downloading" if event.kind == "download" else "Hashing (first use)"
        return f"{what} the model: {event.step / 1e6:,.0f} of {event.total / 1e6:,.0f} MB"
    text = f"Step {event.step}/{event.total}"
    if event.eta is not None and event.step < event.total:
        text += f" · about {event.eta:.0f} s left" if event.eta >= 1 else " · under a second left"
    return text


def status_line(status: dict[str, Any], cpu_only: bool) -> str:
    """The studio's status line from `manager.status()`: devices free/busy (and what
    each busy one runs), jobs waiting; on a CPU-only server, that defaults are reduced."""
    slots = status["slots"]
    busy = [s for s in slots if s["busy"]]
    parts = [f"{len(slots) - len(busy)} of {len(slots)} device(s) free"]
    parts += [f"{s['slot']} busy ({s['kind'] or 'job'}{', ' + s['model'] if s['model'] else ''})"
              for s in busy]  # fmt: skip
    parts.append(f"{status['waiting']} waiting")
    if cpu_only:
        parts.append("CPU server: defaults reduced")
    return " · ".join(parts)


def unit_of(event: JobEvent) -> str:
    """What a progress event counts: bytes (download, first hash) or steps."""
    return "bytes" if event.kind in ("download", "hashing") else "steps"


def queue_text(event: JobEvent) -> str:
    return f"Waiting for a device… (number {event.position} in line)"


def endpoint_stream(
    manager: PipelineManager, spec: Any, caller: str, publish: Callable[[Any], tuple], outputs: int,
    progress: Any = None, on_job: Callable[[Any], None] | None = None,
) -> Iterator[tuple]:  # fmt: skip
    """An API endpoint's body for any kind of job: submit `spec` for `caller`, yield
    gr.skip() for every output while it runs (so Gradio can close the handler on
    `Job.cancel()`, which cancels the job) and report steps to `progress`
    (a gr.Progress: `job.status()` shows them), then yield `publish(result)`."""
    import gradio as gr

    with shown_as_gradio_errors():
        job = manager.submit(spec, caller)
        if on_job is not None:  # the handle, for a publish that needs it (task outputs)
            on_job(job)
        for event in stream_job(job):
            if event.kind == "result":
                yield publish(event.result)
                return
            if progress is not None and event.total:
                progress((event.step, event.total), desc=progress_text(event), unit=unit_of(event))
            yield tuple(gr.skip() for _ in range(outputs))


@contextlib.contextmanager
def shown_as_gradio_errors() -> Iterator[None]:
    """An engine error (AtelierError) raised inside becomes a gr.Error with its text, for
    the API client to read (a RequestError reads "field: rule"); other errors pass."""
    import gradio as gr

    from pipelines.errors import AtelierError

    try:
        yield
    except AtelierError as e:
        raise gr.Error(str(e), print_exception=False) from None


class ImageStore:
    """Where result files go: the outputs folder (if on) and a private scratch folder
    that Gradio serves them from.

    Files are served from the scratch folder (inside the system temp dir, which
    Gradio may move into its cache), not from the outputs folder: adding the
    outputs folder to Gradio's allowed_paths would let anyone fetch anyone's
    images by guessing `00042-<seed>.png`. Cached copies get unguessable paths.

    The scratch folder is capped at `max_bytes` (oldest request folders go first,
    while serving) and removed by `close()` (at shutdown; also registered with
    atexit). The outputs folder is never trimmed.
    """

    def __init__(self, outputs_dir: Path | None, max_bytes: int = 2 * 2**30) -> None:
        from ui.outputs_browser import OutputsBrowser

        self.outputs_dir = outputs_dir
        self.max_bytes = max_bytes
        self.browser = OutputsBrowser(outputs_dir)  # the Outputs tab; owners of saved files
        self.scratch = Path(tempfile.mkdtemp(prefix="atelier-ui-"))
        atexit.register(self.close)

    def publish(self, result: Any, owner: str | None = None) -> list[Path]:
        """Copies of the result's PNGs in a new scratch folder. The engine saved them
        into the outputs folder as each was decoded when the job said so
        (`result.paths`); otherwise they are saved here. `owner` (the caller) is
        recorded for the Outputs tab."""
        from pipelines.outputs import save_result

        request_dir = self.new_folder()
        saved = getattr(result, "paths", None)
        if not saved:
            if self.outputs_dir is None:
                return save_result(result, request_dir)
            saved = save_result(result, self.outputs_dir)
        if owner is not None:
            self.browser.record(list(saved), owner)
        copies = []
        for path in saved:
            copy = request_dir / path.name
            shutil.copyfile(path, copy)  # same bytes, metadata included; no re-encode
            copies.append(copy)
        return copies

    def new_folder(self) -> Path:
        """A new unguessable folder in the scratch folder, after making room."""
        self.trim()
        return Path(tempfile.mkdtemp(dir=self.scratch))

    def scratch_file(self, suffix: str) -> Path:
        """A new unguessable path in the scratch folder (served, never the outputs)."""
        self.trim()
        handle, name = tempfile.mkstemp(suffix=suffix, dir=self.scratch)
        os.close(handle)
        return Path(name)

    def trim(self) -> None:
        """Remove the oldest entries of the scratch folder until it is under its cap."""
        entries = []
        for entry in self.scratch.iterdir():
            files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
            size = sum(p.stat().st_size for p in files)
            entries.append((entry.stat().st_mtime, size, entry))
        total = sum(size for _, size, _ in entries)
        for _, size, entry in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            total -= size

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def on_zerogpu(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return bool(env.get("SPACES_ZERO_GPU")) or bool(env.get("SPACE_ID"))


def gpu(fn: F, duration: Callable[..., int] | None = None, env: dict[str, str] | None = None) -> F:
    """`spaces.GPU(fn)` on Hugging Face Spaces when the `spaces` package is installed;
    `fn` itself everywhere else (the package is not a dependency). `duration`, called
    with fn's arguments, gives the seconds of GPU time a call may take (ZeroGPU's own
    default is 60 s, too short for a video)."""
    if not on_zerogpu(env):
        return fn
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        log.info("on Spaces but the 'spaces' package is missing: no ZeroGPU wrapping")
        return fn
    wrapped = spaces.GPU(fn, duration=duration) if duration else spaces.GPU(fn)
    return functools.wraps(fn)(wrapped)


# GPU work per second assumed for ZeroGPU durations (width x height x steps x images per
# second; an H100-class slice does ~6M for SDXL and ~4M for Wan 2.1 1.3B): conservative.
ZEROGPU_WORK_PER_S = 4_000_000
ZEROGPU_SECONDS = (60, 300)  # at least ZeroGPU's default; at most what a Space may ask


def gpu_seconds(ctx: Any, make_spec: Callable[[], Any]) -> int:
    """GPU seconds to ask ZeroGPU for a job, from its work (the engine's own measure).
    `ctx`: the StudioContext (its manager); `make_spec()`: the job the call would submit."""
    try:
        spec = make_spec()
        work = ctx.manager.jobs.runner_for(spec).prepare(spec).work
    except Exception:  # a bad request fails fast inside the GPU function anyway
        return ZEROGPU_SECONDS[0]
    lo, hi = ZEROGPU_SECONDS
    return int(min(hi, max(lo, 30 + work / ZEROGPU_WORK_PER_S)))
