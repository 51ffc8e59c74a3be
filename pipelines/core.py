"""What every kind of job shares: the engine's settings and the parts built from
them once (model registry, LoRA and ControlNet libraries, device slots).

The job runners (image_job.py, video.py, ...) are peers over an EngineCore; the
PipelineManager (manager.py) builds the core and registers the runners.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .controlnets import ControlNetLibrary
from .embeddings import EmbeddingLibrary
from .loading import LoadOptions
from .loras import LoraLibrary
from .registry import ModelRegistry
from .slots import SlotPool
from .styles import StyleLibrary
from .upscale import UpscalerLibrary
from .vaes import VaeLibrary


@dataclass(frozen=True)
class EngineSettings:
    devices: tuple[str, ...] = ()  # () = every CUDA GPU, else one CPU slot
    default_model: str = "atelier-shapes"  # the trained built-in model (assets/)
    models_dir: Path | None = None
    loras_dir: Path | None = None
    controlnets_dir: Path | None = None
    annotators_dir: Path | None = None  # weights of the ControlNet preprocessors
    cache_root: Path | None = None  # built-in models; None = ~/.cache/atelier
    cache_budget_mb: int | None = None  # per slot; None = 90% of GPU memory / half the RAM
    allow_hub: bool = True  # old name: False is hub_models "off"
    hub_models: str = "any"  # off | cached | owner/name patterns | any (see hub.py)
    hub_max_gb: float = 40.0
    flux_base: str | None = None  # diffusers Flux folder or Hub id for Flux single files
    preview_every: int = 0  # steps between previews; 0 = none
    lora_mode: str = "switch"  # "switch" | "fused" | "hotswap" (see adapters.py)
    lora_cache_count: int = 16  # resident adapters per cached model
    lora_cache_mb: int = 2048
    lora_hotswap_rank: int = 64
    queue_size: int = 0  # jobs waiting for a slot (0 = unlimited); see jobs.Limits
    max_jobs_per_user: int = 0  # waiting + running jobs of one caller (0 = unlimited)
    max_work: int = 0  # work of one request, width x height x steps x images (0 = unlimited)
    max_image_pixels: int = 40_000_000  # any input image, checked from its header
    sdxl_clip_l_skip: bool = False  # A1111's option: clip skip on SDXL, CLIP-L only
    embeddings_dir: Path | None = None  # textual-inversion .safetensors (embeddings.py)
    vae_dir: Path | None = None  # single-file VAEs and diffusers VAE folders (vaes.py)
    styles_file: Path | None = None  # A1111's styles.csv (styles.py)
    upscalers_dir: Path | None = None  # upscaler models, .safetensors (upscale.py)
    load: LoadOptions = field(default_factory=LoadOptions)


@dataclass
class EngineCore:
    settings: EngineSettings
    registry: ModelRegistry
    loras: LoraLibrary
    controlnets: ControlNetLibrary
    pool: SlotPool
    embeddings: EmbeddingLibrary = field(default_factory=lambda: EmbeddingLibrary(None))
    vaes: VaeLibrary = field(default_factory=lambda: VaeLibrary(None))
    styles: StyleLibrary = field(default_factory=lambda: StyleLibrary(None))
    upscalers: UpscalerLibrary = field(default_factory=lambda: UpscalerLibrary(None))
