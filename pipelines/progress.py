"""Progress, previews and cancel for a running diffusers pipeline.

Cancel raises `Cancelled` from diffusers' step-end callback: the run stops
within one step and the VAE decode never happens (setting `pipe._interrupt`
would still decode). Previews are a cheap latent projection (preview.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from .errors import Cancelled
from .preview import preview_from_latents


@dataclass(frozen=True)
class ProgressEvent:
    step: int  # steps done so far, over all calls of the request
    total: int
    preview: Image.Image | None = None


class CancelToken:
    """Set from any thread; the run stops at the end of its current step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


def step_callback(
    family: str,
    call: int,
    calls: int,
    height: int,
    width: int,
    on_progress: Callable[[ProgressEvent], None] | None,
    cancel: CancelToken | None,
    every: int = 0,
) -> Callable[..., dict[str, Any]]:
    """The callback for call `call` of `calls`; a preview every `every` steps (0 = none)."""

    def callback(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if cancel is not None and cancel.cancelled:
            # Raising (not pipe._interrupt) also skips the VAE decode.
            raise Cancelled("cancelled")
        if on_progress is not None:
            per_call = pipe.num_timesteps
            done = call * per_call + i + 1
            preview = None
            if every and (i + 1) % every == 0 and i + 1 < per_call:
                scale = getattr(pipe, "vae_scale_factor", None) or pipe.vae_scale_factor_spatial
                preview = preview_from_latents(kwargs["latents"], family, height, width, scale)
            on_progress(ProgressEvent(done, per_call * calls, preview))
        return {}

    return callback
