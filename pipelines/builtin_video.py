"""Built-in tiny Wan video models (see builtin.py for the policy)."""

from __future__ import annotations

from pathlib import Path

import torch

from .seeding import seeded

WAN_SCHEDULER = {
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
}


def wan_transformer(
    seed: int, in_channels: int = 16, image_dim: int | None = None
) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    with seeded(seed):
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=in_channels,
            image_dim=image_dim,
            out_channels=16,
            text_dim=32,  # = the UMT5 encoder's d_model
            freq_dim=256,
            ffn_dim=32,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=32,
        ).eval()


def build_wan(folder: Path, two_experts: bool) -> None:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    from .tiny_tokenizers import t5_config_kwargs, t5_tokenizer

    with seeded(0):
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],  # 4x in time, 8x in space
        ).eval()
    with seeded(0):
        umt5 = UMT5EncoderModel(UMT5Config(**t5_config_kwargs())).eval()
    pipe = WanPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=umt5,
        vae=vae,
        scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER),
        transformer=wan_transformer(0),
        transformer_2=wan_transformer(1) if two_experts else None,
        boundary_ratio=0.875 if two_experts else None,
    )
    pipe.save_pretrained(folder)


def build_wan_i2v(folder: Path) -> None:
    """Wan 2.1 image-to-video: a CLIP image encoder, and a transformer that also
    takes the encoded start frame (16 latent + 16 image-latent + 4 mask channels)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    from .tiny_tokenizers import t5_config_kwargs, t5_tokenizer

    with seeded(0):
        vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True]).eval()  # fmt: skip
    with seeded(0):
        umt5 = UMT5EncoderModel(UMT5Config(**t5_config_kwargs())).eval()
    with seeded(2):
        image_encoder = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=4,
                projection_dim=4,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=32,
                intermediate_size=16,
                patch_size=1,
            )  # fmt: skip
        ).eval()
    WanImageToVideoPipeline(
        tokenizer=t5_tokenizer(),
        text_encoder=umt5,
        vae=vae,
        scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER),
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
        image_encoder=image_encoder,
        transformer=wan_transformer(3, in_channels=36, image_dim=4),
    ).save_pretrained(folder)
