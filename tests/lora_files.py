"""Real LoRA files for tests, made offline from the tiny built-in models with peft."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

ATTN = ["to_q", "to_k", "to_v", "to_out.0"]


def make_lora(
    model_dir: Path,
    out: Path,
    seed: int,
    rank: int = 4,
    targets: list[str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A random (visibly acting) UNet LoRA for the model in `model_dir`, diffusers format."""
    unet = DiffusionPipeline.from_pretrained(str(model_dir)).unet
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets or ATTN,
                                init_lora_weights=False))  # fmt: skip
    state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata=metadata)
    return out


def to_kohya(src: Path, out: Path) -> Path:
    """The same weights under Kohya/A1111 key names (lora_unet_*, lora_down/up, alpha)."""
    converted = {}
    for key, t in load_file(str(src)).items():
        module, kind = key[len("unet.") :].rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        if kind.startswith("A"):
            converted[f"{name}.lora_down.weight"] = t
            converted[f"{name}.alpha"] = torch.tensor(float(t.shape[0]))
        else:
            converted[f"{name}.lora_up.weight"] = t
    save_file(converted, str(out), metadata={"ss_base_model_version": "sd_v1"})
    return out


def write_sidecar(lora: Path, **fields: object) -> None:
    lora.with_suffix(".json").write_text(json.dumps(fields))


__all__ = ["make_lora", "to_kohya", "write_sidecar"]
