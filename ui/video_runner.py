"""Running one video request for a handler, and publishing its files.

`manager.generate_video` blocks until the frames are decoded, and Gradio can only
close a handler (on Stop, or a client's `Job.cancel()`) while it is suspended at a
`yield`. So, as for images, `ui.runner.stream_in_worker` runs the engine in a
worker thread, its progress events come back through a queue, and the handler
yields on each; closing the stream sets the CancelToken, and the engine stops
within one step, skipping the VAE decode.

Files: the chosen format and its JSON sidecar go to the outputs folder (if on) and
are copied into a fresh unguessable folder under the studio's scratch folder,
from where Gradio serves them (see `ui.runner.ImageStore` for why not the outputs
folder). The player always gets an H.264 MP4: when the chosen format is WebP, GIF
or a zip of frames, a player copy is written to the scratch folder only.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ui.runner import ImageStore, stream_in_worker

if TYPE_CHECKING:
    from PIL import Image


def stream_video(
    manager: Any,
    request: Any,
    image: Image.Image | None,
    end_image: Image.Image | None,
    cancel: Any,
    min_interval: float = 0.1,
) -> Iterator[Any]:
    """ProgressEvents (at most one per `min_interval` s unless it carries a preview or is
    the last step), then the VideoResult (it has `frames`). Engine errors are re-raised
    here, in the caller's thread. Closing this iterator early cancels the run."""
    return stream_in_worker(
        lambda on_progress: manager.generate_video(
            request, image=image, end_image=end_image, on_progress=on_progress, cancel=cancel
        ),
        cancel,
        min_interval,
        name="atelier-video",
    )


def is_result(item: Any) -> bool:
    return hasattr(item, "frames")


@dataclass(frozen=True)
class PublishedVideo:
    file: Path  # the chosen format (.mp4, .webp, .gif or .zip of PNG frames)
    parameters: Path  # its JSON sidecar
    player: Path  # an H.264 MP4 of the same frames, for gr.Video


def publish_video(store: ImageStore, result: Any, fmt: str) -> PublishedVideo:
    from pipelines.export import save_video, write_mp4

    fps = result.request.fps
    stem = f"video-{result.seed}"
    request_dir = Path(tempfile.mkdtemp(dir=store.scratch))
    if store.outputs_dir is None:
        file, sidecar = save_video(result.frames, request_dir, fps, result.parameters, fmt, stem)
    else:
        saved = save_video(result.frames, store.outputs_dir, fps, result.parameters, fmt, stem)
        file, sidecar = (request_dir / p.name for p in saved)
        for src, dst in zip(saved, (file, sidecar), strict=True):
            shutil.copyfile(src, dst)  # same bytes and metadata; no re-encode
    player = file
    if fmt != "mp4":
        player = request_dir / f"{stem}-player.mp4"
        write_mp4(result.frames, player, fps, comment=json.dumps(result.parameters, sort_keys=True))
    return PublishedVideo(file, sidecar, player)
