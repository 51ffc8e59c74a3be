"""Cheap live previews: latents -> RGB by a per-family linear projection.

No VAE call: a (channels x 3) matrix maps each latent pixel to RGB in about
[-1, 1] (factors from ENGINE_NOTES for SD 1.5 and SDXL). Families without a
known table (and the tiny built-ins, whose channel counts differ) use the first
three channels, normalised: a rough preview is better than none, and the final
image always comes from the real VAE decode.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

SD15 = [
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
]
SDXL = [
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
]
FACTORS = {"sd15": SD15, "sdxl": SDXL}


def unpack_flux(latents: torch.Tensor, height: int, width: int, vae_scale: int) -> torch.Tensor:
    """Flux packs 2x2 latent patches into the sequence: (B, HW/4, C*4) -> (B, C, H, W)."""
    b, _, c4 = latents.shape
    h, w = 2 * (height // (vae_scale * 2)), 2 * (width // (vae_scale * 2))
    x = latents.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, h, w)


def latent_to_image(latent: torch.Tensor, family: str) -> Image.Image:
    """One image's latent (C, H, W) -> a small RGB PIL image."""
    x = latent.detach().float().cpu()
    factors = FACTORS.get(family)
    if factors is not None and x.shape[0] == len(factors):
        rgb = torch.einsum("chw,cr->hwr", x, torch.tensor(factors))
    else:
        rgb = x[:3].permute(1, 2, 0) if x.shape[0] >= 3 else x[:1].permute(1, 2, 0).repeat(1, 1, 3)
        scale = rgb.abs().amax().clamp(min=1e-6)
        rgb = rgb / scale
    arr = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")


def preview_from_latents(
    latents: torch.Tensor, family: str, height: int, width: int, vae_scale: int
) -> Image.Image:
    """The first image of a batch of in-progress latents, as it stands now."""
    if latents.ndim == 3:  # Flux: packed sequence
        latents = unpack_flux(latents, height, width, vae_scale)
    if latents.ndim == 5:  # video (B, C, F, H, W): the middle frame
        latents = latents[:, :, latents.shape[2] // 2]
    return latent_to_image(latents[0], family)
