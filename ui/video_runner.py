"""Publishing a video job's files (the job itself is followed by ui.runner.stream_job,
as every kind of job is).

Files: the chosen format and its JSON sidecar go to the outputs folder (if on) and
are copied into a fresh unguessable folder under the studio's scratch folder,
from where Gradio serves them (see `ui.runner.ImageStore` for why not the outputs
folder). The player always gets an H.264 MP4: when the chosen format is WebP, GIF
or a zip of frames, a player copy is written to the scratch folder only.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ui.runner import ImageStore


@dataclass(frozen=True)
class PublishedVideo:
    file: Path  # the chosen format (.mp4, .webp, .gif or .zip of PNG frames)
    parameters: Path  # its JSON sidecar
    player: Path  # an H.264 MP4 of the same frames, for gr.Video
    saved: tuple[Path, ...] = ()  # the file and its JSON in the outputs folder (if on)


def store_video(manager: Any, job: Any, result: Any, published: PublishedVideo) -> str | None:
    """The saved video and its JSON as the job's task outputs: uploaded when S3 is set,
    listed in Redis when task status is on (`manager.store_files`). A warning to show
    if the upload failed (the task is then failed; the files stay), else None."""
    from pipelines.storage import StorageError

    on = getattr(manager, "store", None) is not None or getattr(manager, "reporter", None)
    if not on or not published.saved or job is None:
        return None
    meta = {"seed": result.seed, "model": result.request.model}
    try:
        manager.store_files(job, list(published.saved), meta)
    except StorageError as e:
        return f"upload failed, kept locally: {e}"
    return None


def publish_video(
    store: ImageStore, result: Any, fmt: str, owner: str | None = None
) -> PublishedVideo:
    from pipelines.export import save_video, write_mp4

    fps = result.request.fps
    stem = f"video-{result.seed}"
    request_dir = store.new_folder()
    kept: tuple[Path, ...] = ()
    if store.outputs_dir is None:
        file, sidecar = save_video(result.frames, request_dir, fps, result.parameters, fmt, stem)
    else:
        saved = save_video(result.frames, store.outputs_dir, fps, result.parameters, fmt, stem)
        kept = tuple(saved)
        if owner is not None:
            store.browser.record([saved[0]], owner)
        file, sidecar = (request_dir / p.name for p in saved)
        for src, dst in zip(saved, (file, sidecar), strict=True):
            shutil.copyfile(src, dst)  # same bytes and metadata; no re-encode
    player = file
    if fmt != "mp4":
        player = request_dir / f"{stem}-player.mp4"
        write_mp4(result.frames, player, fps, comment=json.dumps(result.parameters, sort_keys=True))
    return PublishedVideo(file, sidecar, player, kept)
