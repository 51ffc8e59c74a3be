"""Running one generation for a handler: a worker thread, a queue, a cancel token.

`manager.generate` blocks until the images are done. Gradio handlers here are
generators: they must yield now and then, because Gradio can only close a
generator (on Stop, or a client's `Job.cancel()`) while it is suspended at a
`yield`. So the engine runs in a worker thread, its progress events come back
through a queue, and the handler yields on each. When Gradio closes the
handler, its `finally:` sets the CancelToken and the engine stops within one
step (raising Cancelled in the worker, which nobody waits for any more).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
_DONE = object()


def stream_generation(
    manager: Any, request: Any, cancel: Any, min_interval: float = 0.1, inputs: Any = None
) -> Iterator[Any]:
    """Yield ProgressEvents (at most one per `min_interval` s unless it carries a preview),
    then the GenerationResult. Engine errors are re-raised here, in the caller's thread.
    Closing this iterator early cancels the run. `inputs`: the request's images
    (pipelines.tasks.Inputs), None for text-to-image."""
    return stream_in_worker(
        lambda on_progress: manager.generate(
            request, on_progress=on_progress, cancel=cancel, inputs=inputs
        ),
        cancel,
        min_interval,
        name="atelier-generate",
    )


def stream_in_worker(
    run: Callable[[Callable[[Any], None]], Any], cancel: Any, min_interval: float, name: str
) -> Iterator[Any]:
    """`run(on_progress)` (a blocking engine call) in a worker thread named `name`: yield
    its ProgressEvents (at most one per `min_interval` s unless it carries a preview or
    is the last step), then its result. Its errors are re-raised here, in the caller's
    thread. Closing this iterator early sets `cancel` (a CancelToken)."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def work() -> None:
        try:
            result = run(lambda e: events.put(("progress", e)))
            events.put(("result", result))
        except BaseException as e:  # handed to the caller, who decides what it means
            events.put(("error", e))

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    last = 0.0
    try:
        while True:
            kind, value = events.get()
            if kind == "error":
                raise value
            if kind == "result":
                yield value
                return
            now = time.monotonic()
            if value.preview is not None or value.step == value.total or now - last >= min_interval:
                last = now
                yield value
    finally:
        if worker.is_alive():
            cancel.cancel()


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
    """Where result PNGs go: the outputs folder (if on) and a private scratch folder
    that Gradio serves them from.

    Files are served from the scratch folder (inside the system temp dir, which
    Gradio may move into its cache), not from the outputs folder: adding the
    outputs folder to Gradio's allowed_paths would let anyone fetch anyone's
    images by guessing `00042-<seed>.png`. Cached copies get unguessable paths.
    """

    def __init__(self, outputs_dir: Path | None) -> None:
        self.outputs_dir = outputs_dir
        self.scratch = Path(tempfile.mkdtemp(prefix="atelier-ui-"))

    def publish(self, result: Any) -> list[Path]:
        from pipelines.outputs import save_result

        request_dir = Path(tempfile.mkdtemp(dir=self.scratch))
        if self.outputs_dir is None:
            return save_result(result, request_dir)
        saved = save_result(result, self.outputs_dir)
        copies = []
        for path in saved:
            copy = request_dir / path.name
            shutil.copyfile(path, copy)  # same bytes, metadata included; no re-encode
            copies.append(copy)
        return copies

    def scratch_file(self, suffix: str) -> Path:
        """A new unguessable path in the scratch folder (served, never the outputs)."""
        handle, name = tempfile.mkstemp(suffix=suffix, dir=self.scratch)
        os.close(handle)
        return Path(name)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def on_zerogpu(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return bool(env.get("SPACES_ZERO_GPU")) or bool(env.get("SPACE_ID"))


def gpu(fn: F, env: dict[str, str] | None = None) -> F:
    """`spaces.GPU(fn)` on Hugging Face Spaces when the `spaces` package is installed;
    `fn` itself everywhere else (the package is not a dependency)."""
    if not on_zerogpu(env):
        return fn
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        log.info("on Spaces but the 'spaces' package is missing: no ZeroGPU wrapping")
        return fn
    return functools.wraps(fn)(spaces.GPU(fn))
