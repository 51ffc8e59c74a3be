"""ControlNet preprocessors (controlnet-aux), as data.

- Imported lazily: `import controlnet_aux` costs seconds (timm, skimage).
- Canny, content shuffle and standard lineart need no weights. The others load
  their weights from the local annotators folder (`annotators_dir` setting) and
  never download: when a file is missing, the error says which file to put where.
- "none" passes a ready-made control image through.
- The output is always resized to the generation size (detectors pick their
  own resolution, e.g. Canny turns 640x480 into 704x512).
- Content shuffle draws from numpy's global RNG: it is seeded per call under a
  lock and the previous RNG state restored, so it reproduces with the seed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import RequestError


@dataclass(frozen=True)
class Preprocessor:
    name: str  # A1111 ControlNet "Module" name
    detector: str | None  # controlnet_aux class; None = no detector
    files: tuple[str, ...] = ()  # weight files needed in the annotators folder
    options: dict[str, Any] = field(default_factory=dict)  # from_pretrained kwargs


PREPROCESSORS: dict[str, Preprocessor] = {
    p.name: p
    for p in (
        Preprocessor("none", None),
        Preprocessor("canny", "CannyDetector"),
        Preprocessor("shuffle", "ContentShuffleDetector"),
        Preprocessor("lineart_standard", "LineartStandardDetector"),
        Preprocessor("softedge_hed", "HEDdetector", ("ControlNetHED.pth",)),
        Preprocessor("softedge_pidinet", "PidiNetDetector", ("table5_pidinet.pth",)),
        Preprocessor("depth_midas", "MidasDetector", ("dpt_hybrid-midas-501f0c75.pt",),
                     {"filename": "dpt_hybrid-midas-501f0c75.pt"}),
        Preprocessor("mlsd", "MLSDdetector", ("mlsd_large_512_fp32.pth",),
                     {"filename": "mlsd_large_512_fp32.pth"}),
        Preprocessor("openpose", "OpenposeDetector",
                     ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                     {"filename": "body_pose_model.pth", "hand_filename": "hand_pose_model.pth",
                      "face_filename": "facenet.pth"}),
        Preprocessor("normal_bae", "NormalBaeDetector", ("scannet.pt",)),
        Preprocessor("lineart_realistic", "LineartDetector", ("sk_model.pth", "sk_model2.pth")),
        Preprocessor("lineart_anime", "LineartAnimeDetector", ("netG.pth",)),
        Preprocessor("depth_zoe", "ZoeDetector", ("ZoeD_M12_N.pt",)),
    )
}  # fmt: skip

_detectors: dict[tuple[str, str], Any] = {}
_detectors_lock = threading.Lock()
_numpy_rng_lock = threading.Lock()


def missing_files(name: str, annotators_dir: Path | None) -> list[str]:
    spec = PREPROCESSORS[name]
    if not spec.files:
        return []
    folder = Path(annotators_dir) if annotators_dir else None
    return [f for f in spec.files if folder is None or not (folder / f).is_file()]


def availability(annotators_dir: Path | None) -> dict[str, str | None]:
    """Each preprocessor -> None when usable, else what to put where."""
    out: dict[str, str | None] = {}
    for name in PREPROCESSORS:
        missing = missing_files(name, annotators_dir)
        where = annotators_dir or "the annotators folder (--annotators-dir)"
        out[name] = f"put {', '.join(missing)} into {where}" if missing else None
    return out


def check(name: str, annotators_dir: Path | None, field_name: str = "controlnets") -> None:
    if name not in PREPROCESSORS:
        valid = ", ".join(PREPROCESSORS)
        raise RequestError(field_name, f"unknown preprocessor '{name}'; choose one of: {valid}")
    why = availability(annotators_dir)[name]
    if why:
        raise RequestError(field_name, f"preprocessor '{name}' needs weights: {why}")


def _detector(spec: Preprocessor, annotators_dir: Path | None) -> Any:
    key = (spec.name, str(annotators_dir))
    with _detectors_lock:
        if key not in _detectors:
            import controlnet_aux

            cls = getattr(controlnet_aux, spec.detector)
            if spec.files:
                _detectors[key] = cls.from_pretrained(str(annotators_dir), **spec.options)
            else:
                _detectors[key] = cls()
        return _detectors[key]


def run(
    name: str,
    image: Image.Image,
    width: int,
    height: int,
    annotators_dir: Path | None = None,
    low_threshold: int = 100,
    high_threshold: int = 200,
    seed: int = 0,
) -> Image.Image:
    """The control map for `image`, resized to width x height (RGB)."""
    check(name, annotators_dir)
    spec = PREPROCESSORS[name]
    image = image.convert("RGB")
    if spec.detector is None:
        out = image
    elif name == "canny":
        detect = _detector(spec, annotators_dir)
        out = detect(image, low_threshold=low_threshold, high_threshold=high_threshold,
                     output_type="pil")  # fmt: skip
    elif name == "shuffle":
        with _numpy_rng_lock:
            state = np.random.get_state()
            np.random.seed(seed % 2**32)
            try:
                out = _detector(spec, annotators_dir)(image, output_type="pil")
            finally:
                np.random.set_state(state)
    else:
        out = _detector(spec, annotators_dir)(image, output_type="pil")
    if out.size != (width, height):
        out = out.resize((width, height), Image.BICUBIC)
    return out.convert("RGB")
