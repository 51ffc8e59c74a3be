"""Video widget values -> VideoRequest, and the Video tab's widget specs per model family.

Pure functions (no gradio, no torch at import), shared by the Video tab and the
`/video` API, unit-tested without a server. Nothing here rounds or repairs a
value: 9.0 frames becomes 9, but 10 frames reaches the engine's validation and
comes back as a RequestError naming `num_frames` with its 4k+1 rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pipelines import families
from pipelines.errors import RequestError
from pipelines.export import FORMATS
from pipelines.families import Family
from pipelines.request import MAX_STEPS
from ui.form import CFG_STEP, blank, parse_loras, whole

if TYPE_CHECKING:
    from PIL import Image

    from pipelines.manager import PipelineManager
    from pipelines.video import VideoRequest

# Widget / API keyword name -> VideoRequest field.
VIDEO_FIELDS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "model": "model",
    "scheduler": "scheduler",
    "frames": "num_frames",
    "fps": "fps",
    "width": "width",
    "height": "height",
    "steps": "num_inference_steps",
    "cfg": "guidance_scale",
    "cfg2": "guidance_scale_2",
    "flow_shift": "flow_shift",
    "seed": "seed",
    "loras": "loras",
    "lora_experts": "lora_experts",
}
DEFAULT_FORMAT = "mp4"
FRAMES_STEP = 4  # num_frames = 4k + 1
MIN_FRAMES = 5
FPS_RANGE = families.FPS_RANGE
MAX_VIDEO_CFG = families.CFG_RANGE[1]


def video_models(manager: PipelineManager) -> dict[str, Family]:
    """Models the Video tab can run (kind "video"), in the registry's order."""
    return manager.models("video")


def video_specs(family: Family) -> dict[str, dict[str, Any]]:
    """Ranges, steps and defaults of the Video tab's numeric widgets for a family, from
    the engine's tables (families.py, video.py): the UI never hand-copies them."""
    from pipelines.video import MAX_FRAMES, VideoRequest

    fps = VideoRequest.__dataclass_fields__["fps"].default

    def size(value: int) -> dict[str, Any]:
        return {"minimum": family.min_size, "maximum": family.max_size,
                "step": family.size_multiple, "value": value}  # fmt: skip

    frames = {"minimum": MIN_FRAMES, "maximum": MAX_FRAMES, "step": FRAMES_STEP,
              "value": family.default_frames}  # fmt: skip
    cfg = {"minimum": 0.0, "maximum": MAX_VIDEO_CFG, "step": CFG_STEP, "value": family.default_cfg}
    return {
        "frames": frames,
        "fps": {"minimum": FPS_RANGE[0], "maximum": FPS_RANGE[1], "step": 1, "value": fps},
        "width": size(family.default_size),
        "height": size(family.default_height or family.default_size),
        "steps": {"minimum": 1, "maximum": MAX_STEPS, "step": 1, "value": family.default_steps},
        "cfg": cfg,
        "cfg2": dict(cfg),
    }


def image_inputs(family: Family) -> dict[str, Any]:
    """Visibility and labels of the start / end image inputs for a family."""
    start = family.start_image
    label = {"required": "Start image (required)", "optional": "Start image (optional)"}
    return {
        "start_visible": start != "none",
        "start_label": label.get(start, "Start image"),
        "end_visible": family.end_image,
        "cfg2_visible": family.experts == 2,
    }


def for_family(
    values: Mapping[str, Any],
    image: Image.Image | None,
    end_image: Image.Image | None,
    family: Family,
) -> tuple[dict[str, Any], Image.Image | None, Image.Image | None]:
    """The tab's values as a request's: drop what the tab hides for this family (CFG 2 of
    one-expert models, images of text-to-video models: a hidden widget keeps its value
    when the model changes, and must not turn into an error about a control the user
    cannot see), and read flow shift 0 (what an empty number box sends) as the model's."""
    out = dict(values)
    if not out.get("flow_shift"):
        out["flow_shift"] = None
    if family.experts != 2:
        out["cfg2"] = None
        out["lora_experts"] = None  # one expert: the choice does not apply
    if family.start_image == "none":
        image = None
    if not family.end_image:
        end_image = None
    return out, image, end_image


def check_format(fmt: Any) -> str:
    """The export format (blank = mp4), or a RequestError listing the choices."""
    if blank(fmt):
        return DEFAULT_FORMAT
    if fmt not in FORMATS:
        raise RequestError("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return str(fmt)


def video_request_from_widgets(values: Mapping[str, Any]) -> VideoRequest:
    """A VideoRequest from values keyed by VIDEO_FIELDS' names. Missing or blank optional
    values mean "the model family's default" (flow shift: the model's own, fps: the
    request's default); seed blank means random (-1)."""
    from pipelines.video import VideoRequest

    unknown = set(values) - set(VIDEO_FIELDS)
    if unknown:
        raise RequestError(sorted(unknown)[0], f"unknown field; known: {', '.join(VIDEO_FIELDS)}")
    kwargs: dict[str, Any] = {
        "prompt": values.get("prompt") or "",
        "negative_prompt": values.get("negative_prompt") or "",
    }
    for name in ("model", "scheduler"):
        value = values.get(name)
        kwargs[name] = None if blank(value) else value
    for name in ("frames", "width", "height", "steps"):
        value = values.get(name)
        kwargs[VIDEO_FIELDS[name]] = None if blank(value) else whole(value)
    for name in ("cfg", "cfg2", "flow_shift"):
        value = values.get(name)
        kwargs[VIDEO_FIELDS[name]] = None if blank(value) else value
    fps = values.get("fps")
    if not blank(fps):  # else VideoRequest's default
        kwargs["fps"] = whole(fps)
    seed = values.get("seed")
    kwargs["seed"] = -1 if blank(seed) else whole(seed)
    kwargs["loras"] = parse_loras(values.get("loras"))
    experts = values.get("lora_experts")
    if not blank(experts):
        kwargs["lora_experts"] = experts
    return VideoRequest(**kwargs)


def timing_text(timings: Mapping[str, float]) -> str:
    parts = [f"{k} {timings[k]:.2f} s" for k in ("load", "run") if k in timings]
    if "queue" in timings:
        parts.append(f"waited {timings['queue']:.2f} s")
    extra = f" ({', '.join(parts)})" if parts else ""
    return f"Time: {timings.get('total', 0.0):.2f} s{extra}"
