"""Built-in tiny models: real architectures with random weights, built offline on first use.

Policy:
- Every built-in is a real diffusers pipeline (SD 1.5, SDXL, Flux, Wan 2.1, Wan 2.2
  A14B) made of the real diffusers/transformers classes, only very small, so the
  whole engine (loading, schedulers, LoRA, ControlNet, video) runs end to end on a
  CPU with nothing downloaded. Tokenizers are built in memory (`tiny_tokenizers`).
- Each one is saved with `save_pretrained` into `<root>/builtin/<name>/` and is
  afterwards loaded like any model folder: `DiffusionPipeline.from_pretrained(dir)`.
- Deterministic: each component is built right after `torch.manual_seed(seed)`
  inside `torch.random.fork_rng`, so the caller's global RNG state is left as it
  was and two builds give byte-identical safetensors files.
- Atomic and shared: a model is built into a temporary sibling folder and renamed
  into place when complete, under an exclusive `fcntl.flock` on `<root>/builtin/.lock`
  (threads and processes alike). A folder is complete when its marker file
  `.atelier-complete` (written last) holds `BUILDER_VERSION`; bump that constant
  to make every cache rebuild.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .seeding import seeded

BUILDER_VERSION = "atelier-builtin-2"
MARKER = ".atelier-complete"

BUILTIN_MODELS: dict[str, str] = {
    "tiny-sd": "sd15",
    "tiny-sdxl": "sdxl",
    "tiny-flux": "flux",
    "tiny-wan": "wan21",
    "tiny-wan22": "wan22",
    "tiny-wan-i2v": "wan21-i2v",
}
# Trained models shipped in the repository (assets/, made by pipelines/shapes/train.py):
# loaded like any model folder, listed once their files are there.
ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_MODEL = "atelier-shapes"
SHIPPED_CONTROLNET = "atelier-shapes-canny"
SHIPPED_LORA = "atelier-shapes-outline"


def shipped_model() -> Path | None:
    folder = ASSETS / SHIPPED_MODEL
    return folder if (folder / "model_index.json").is_file() else None


def shipped_controlnet() -> Path | None:
    folder = ASSETS / SHIPPED_CONTROLNET
    return folder if (folder / "config.json").is_file() else None


def shipped_lora() -> Path | None:
    path = ASSETS / f"{SHIPPED_LORA}.safetensors"
    return path if path.is_file() else None


TINY_CONTROLNET = "tiny-sd-controlnet"
TINY_LORA = "tiny-sd-lora"
LORA_FILE = f"{TINY_LORA}.safetensors"
LORA_METADATA = {
    "format": "pt",
    "ss_base_model_version": "sd_v1",
    "modelspec.architecture": "stable-diffusion-v1/lora",
    "modelspec.title": "Tiny SD LoRA",
    "modelspec.trigger_phrase": "tinystyle",
}

# Scheduler configs as the real repos ship them (SD 1.5, SDXL base, FLUX.1-dev; Wan 2.1
# 480p is in builtin_video.py).
SD15_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}
SDXL_SCHEDULER = {**SD15_SCHEDULER, "timestep_spacing": "leading", "interpolation_type": "linear"}
FLUX_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def default_root() -> Path:
    """The cache root: $ATELIER_CACHE_DIR if set, else ~/.cache/atelier."""
    env = os.environ.get("ATELIER_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "atelier"


def ensure_model(name: str, root: Path | None = None) -> Path:
    """The diffusers folder of built-in `name`, built first if missing or outdated."""
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}")
    return _ensure(name, root, _BUILDERS[name])


def ensure_controlnet(root: Path | None = None) -> Path:
    """The `ControlNetModel` folder made for tiny-sd (8x downsampling hint encoder)."""
    return _ensure(TINY_CONTROLNET, root, _build_controlnet)


def ensure_lora(root: Path | None = None) -> Path:
    """The path of a diffusers-format LoRA `.safetensors` file for tiny-sd's UNet."""
    return _ensure(TINY_LORA, root, _build_lora) / LORA_FILE


# ---------------------------------------------------------------- folder policy


def _is_complete(folder: Path) -> bool:
    try:
        return (folder / MARKER).read_text().strip() == BUILDER_VERSION
    except OSError:
        return False


@contextmanager
def _exclusive(base: Path) -> Iterator[None]:
    """Hold an exclusive flock on `<base>/.lock` (blocks other threads and processes)."""
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ensure(name: str, root: Path | None, build: Callable[[Path], None]) -> Path:
    base = Path(root if root is not None else default_root()) / "builtin"
    final = base / name
    if _is_complete(final):
        return final
    with _exclusive(base):
        if _is_complete(final):  # another thread or process built it while we waited
            return final
        for stale in base.glob(".tmp-*"):  # left by a crashed build: we hold the only lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=base))
        try:
            with _quiet_saving():
                build(tmp)
            _make_readable(tmp)
            (tmp / MARKER).write_text(BUILDER_VERSION + "\n")
            if final.exists():  # incomplete or built by an older BUILDER_VERSION
                old = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-old-", dir=base))
                os.replace(final, old / name)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _make_readable(folder: Path) -> None:
    """mkdtemp makes a 0700 folder: give the cache the usual 755/644 modes."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


@contextmanager
def _quiet_saving() -> Iterator[None]:
    """Hide transformers' "Writing model shards" bars while a built-in is saved."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------- components


def _clip_text(seed: int, projection: bool = False, act: str = "quick_gelu") -> torch.nn.Module:
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from .tiny_tokenizers import clip_text_config

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    with seeded(seed):
        return cls(clip_text_config(hidden_act=act)).eval()


def _sd_vae(seed: int, latent_channels: int = 4, **extra: object) -> torch.nn.Module:
    """AutoencoderKL with four blocks, so vae_scale_factor is 8 as in the real models."""
    from diffusers import AutoencoderKL

    with seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 16, 16),
            layers_per_block=1,
            norm_num_groups=8,
            latent_channels=latent_channels,
            sample_size=64,
            **extra,
        ).eval()


def _sd_unet(seed: int = 0) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    with seeded(seed):
        return UNet2DConditionModel(
            sample_size=8,  # 8 latents * vae factor 8 = a 64 px default size
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            cross_attention_dim=32,
            attention_head_dim=4,
        ).eval()


def _sdxl_unet(seed: int = 0) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    with seeded(seed):
        return UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(32, 64),
            layers_per_block=1,
            norm_num_groups=8,
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            transformer_layers_per_block=(1, 2),
            cross_attention_dim=64,  # both text encoders' hidden states, concatenated
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=8 * 6 + 32,  # 6 time ids + pooled text
        ).eval()


# ---------------------------------------------------------------- pipelines


def _build_sd(folder: Path) -> None:
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from .tiny_tokenizers import clip_tokenizer

    pipe = StableDiffusionPipeline(
        vae=_sd_vae(0),
        text_encoder=_clip_text(0),
        tokenizer=clip_tokenizer(),
        unet=_sd_unet(0),
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)


def _build_sdxl(folder: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from .tiny_tokenizers import clip_tokenizer

    pipe = StableDiffusionXLPipeline(
        vae=_sd_vae(0),
        text_encoder=_clip_text(0),
        text_encoder_2=_clip_text(1, projection=True, act="gelu"),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=_sdxl_unet(0),
        scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        add_watermarker=False,
    )
    pipe.save_pretrained(folder)


def _build_flux(folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from .tiny_tokenizers import clip_tokenizer, t5_config_kwargs, t5_tokenizer

    with seeded(0):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels packed 2x2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,  # = T5 d_model
            pooled_projection_dim=32,  # = CLIP hidden size
            guidance_embeds=True,  # guidance-distilled, like FLUX.1-dev
            axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
        ).eval()
    with seeded(0):
        t5 = T5EncoderModel(T5Config(**t5_config_kwargs())).eval()
    vae = _sd_vae(
        0,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER),
        vae=vae,
        text_encoder=_clip_text(0),
        tokenizer=clip_tokenizer(),
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer(),
        transformer=transformer,
    )
    pipe.save_pretrained(folder)


def _build_controlnet(folder: Path) -> None:
    """ControlNet copied from tiny-sd's UNet; its zero convs get random weights so it acts."""
    from diffusers import ControlNetModel

    unet = _sd_unet(0)
    with seeded(0):  # the hint encoder is new, hence random: seed it too
        controlnet = ControlNetModel.from_unet(
            unet, conditioning_embedding_out_channels=(8, 8, 16, 16)
        )
    zero_convs = [
        controlnet.controlnet_cond_embedding.conv_out,
        *controlnet.controlnet_down_blocks,
        controlnet.controlnet_mid_block,
    ]
    with seeded(2):
        for conv in zero_convs:
            conv.reset_parameters()
    controlnet.eval().save_pretrained(folder)


def _build_lora(folder: Path) -> None:
    """A rank-4 attention LoRA on a fresh tiny-sd UNet, random A and B (it visibly acts).

    UNet only, on purpose: text-encoder LoRAs cannot be hotswapped. No adapter
    metadata is stored (LoraConfig holds sets, whose order varies per process).
    """
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = _sd_unet(0)
    config = LoraConfig(
        r=4,
        lora_alpha=4,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        init_lora_weights=False,
    )
    with seeded(3):
        unet.add_adapter(config)
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=LORA_FILE
    )
    # Kohya-style metadata, as real LoRAs carry it: family and trigger words.
    write_safetensors_metadata(folder / LORA_FILE, LORA_METADATA)


def write_safetensors_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Rewrite a safetensors file with `metadata`, header keys sorted: safetensors
    writes metadata in hash-map order, which would make builds differ."""
    import json
    import struct

    from safetensors.torch import load_file, save

    blob = save(load_file(path), metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    path.write_bytes(blob[:8] + header.encode().ljust(n) + blob[8 + n :])


def _video() -> Any:
    from . import builtin_video  # the Wan builders; imported late (they import diffusers' Wan)

    return builtin_video


_BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny-sd": _build_sd,
    "tiny-sdxl": _build_sdxl,
    "tiny-flux": _build_flux,
    "tiny-wan": lambda folder: _video().build_wan(folder, two_experts=False),
    "tiny-wan22": lambda folder: _video().build_wan(folder, two_experts=True),
    "tiny-wan-i2v": lambda folder: _video().build_wan_i2v(folder),
}
