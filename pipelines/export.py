"""Writing generated videos: MP4 (H.264, yuv420p), animated WebP/GIF, a zip of PNGs.

The conversion is the classic trap (`ValueError: Image must have 1, 2, 3 or 4
channels`): diffusers returns a batch (B, F, H, W, 3) of float32 in [0, 1];
the writers want one video's frames, channels last, as uint8. So: frames[0] of
the batch (done by the engine), clip to [0, 1], scale, round, uint8.
The parameters go into the MP4's `comment` tag and into a JSON file beside it.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

FORMATS = ("mp4", "webp", "gif", "frames")


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """(F, H, W, 3) float in [0, 1] -> uint8, rounded (never wrapped)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (frames, height, width, 3), got shape {frames.shape}")
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _free_name(folder: Path, stem: str, suffix: str) -> Path:
    """The first `stem[-n].suffix` not taken, claimed with O_EXCL (never overwrites)."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(100_000):
        path = folder / (f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}")
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for {stem}{suffix} in {folder}")


def write_mp4(frames: np.ndarray, path: Path, fps: int, comment: str = "") -> None:
    import imageio.v2 as imageio

    data = to_uint8(frames)
    h, w = data.shape[1:3]
    if h % 2 or w % 2:
        raise ValueError(f"H.264 with yuv420p needs even sizes, got {w}x{h}")
    params = ["-metadata", f"comment={comment}"] if comment else []
    with imageio.get_writer(str(path), format="FFMPEG", mode="I", fps=fps, codec="libx264",
                            pixelformat="yuv420p", quality=8, macro_block_size=1,
                            output_params=params) as writer:  # fmt: skip
        for frame in data:
            writer.append_data(frame)


def write_animated(frames: np.ndarray, path: Path, fps: int, fmt: str) -> None:
    images = [Image.fromarray(f) for f in to_uint8(frames)]
    duration = max(1, round(1000 / fps))
    extra = {"lossless": True} if fmt == "webp" else {"disposal": 2}
    images[0].save(path, format=fmt.upper(), save_all=True, append_images=images[1:],
                   duration=duration, loop=0, **extra)  # fmt: skip


def write_frames_zip(frames: np.ndarray, path: Path) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for i, frame in enumerate(to_uint8(frames)):
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="PNG")
            z.writestr(f"frame_{i:05d}.png", buf.getvalue())


def save_video(
    frames: np.ndarray,
    folder: str | os.PathLike[str],
    fps: int,
    parameters: dict[str, Any],
    fmt: str = "mp4",
    stem: str = "video",
) -> tuple[Path, Path]:
    """Write the video in `fmt` plus `<name>.json` with the parameters; returns both paths."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    suffix = {"mp4": ".mp4", "webp": ".webp", "gif": ".gif", "frames": ".zip"}[fmt]
    path = _free_name(Path(folder), stem, suffix)
    text = json.dumps(parameters, ensure_ascii=False, sort_keys=True)
    try:
        if fmt == "mp4":
            write_mp4(frames, path, fps, comment=text)
        elif fmt == "frames":
            write_frames_zip(frames, path)
        else:
            write_animated(frames, path, fps, fmt)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    sidecar = path.with_suffix(path.suffix + ".json")
    sidecar.write_text(json.dumps(parameters, ensure_ascii=False, indent=2, sort_keys=True))
    return path, sidecar
