"""Model families: what differs between SD 1.5, SDXL, Flux and Wan, as data.

A family is decided from a model folder's `model_index.json` (its pipeline
class and components), never guessed from the model's name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    pipeline_class: str  # diffusers class that runs it (text-to-image / the video class)
    kind: str  # "image" or "video"
    size_multiple: int  # width and height must be multiples of this
    default_size: int
    min_size: int
    max_size: int
    default_steps: int
    default_cfg: float
    default_scheduler: str
    flow: bool  # flow-matching (Flux, Wan) or noise-prediction (SD, SDXL)
    gpu_dtype: str  # "float16" or "bfloat16"
    # video only
    start_image: str = "none"  # "none" (text-to-video), "required" (I2V) or "optional" (TI2V)
    end_image: bool = False  # takes a last frame too (WanImageToVideoPipeline's last_image)
    experts: int = 1  # Wan 2.2 A14B: 2 transformers switched at boundary_ratio
    default_height: int = 0  # video: frame height (default_size is the width)
    default_frames: int = 81


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("sd15", "Stable Diffusion 1.x/2.x", "StableDiffusionPipeline", "image",
               8, 512, 64, 2048, 20, 7.0, "DPM++ 2M Karras", False, "float16"),
        Family("sdxl", "Stable Diffusion XL", "StableDiffusionXLPipeline", "image",
               8, 1024, 64, 2048, 25, 6.0, "DPM++ 2M Karras", False, "float16"),
        Family("flux", "Flux", "FluxPipeline", "image",
               16, 1024, 64, 2048, 28, 3.5, "Flow Euler", True, "bfloat16"),
        Family("wan21", "Wan 2.1 T2V", "WanPipeline", "video",
               16, 832, 32, 1280, 30, 5.0, "UniPC", True, "bfloat16", default_height=480),
        Family("wan21-i2v", "Wan 2.1 I2V", "WanImageToVideoPipeline", "video",
               16, 832, 32, 1280, 30, 5.0, "UniPC", True, "bfloat16", "required",
               default_height=480),
        Family("wan22", "Wan 2.2 A14B T2V", "WanPipeline", "video",
               16, 832, 32, 1280, 40, 4.0, "UniPC", True, "bfloat16", experts=2,
               default_height=480),
        Family("wan22-i2v", "Wan 2.2 A14B I2V", "WanImageToVideoPipeline", "video",
               16, 832, 32, 1280, 40, 3.5, "UniPC", True, "bfloat16", "required", experts=2,
               end_image=True, default_height=480),
        Family("wan22-5b", "Wan 2.2 TI2V 5B", "WanPipeline", "video",
               32, 1280, 32, 1280, 50, 5.0, "UniPC", True, "bfloat16", "optional",
               default_height=704, default_frames=121),
    )
}  # fmt: skip
# Video request ranges (here, not in video.py, so the UI can import them without torch).
FPS_RANGE = (1, 60)
CFG_RANGE = (0.0, 30.0)
FLOW_SHIFT_RANGE = (0.1, 30.0)


def family_from_model_index(index: dict) -> Family:
    """Pick the family from a parsed model_index.json; raise ValueError if unknown."""
    cls = index.get("_class_name", "")
    two_experts = (index.get("transformer_2") or [None, None])[0] is not None
    if cls == "WanPipeline":
        if index.get("expand_timesteps"):
            return FAMILIES["wan22-5b"]
        return FAMILIES["wan22" if two_experts else "wan21"]
    if cls == "WanImageToVideoPipeline":
        return FAMILIES["wan22-i2v" if two_experts else "wan21-i2v"]
    for fam in FAMILIES.values():
        if fam.pipeline_class == cls and fam.kind == "image":
            return fam
    known = sorted({f.pipeline_class for f in FAMILIES.values()})
    raise ValueError(f"pipeline class {cls!r} is not supported; supported: {', '.join(known)}")
