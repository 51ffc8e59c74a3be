"""Diffusers state dicts -> the original (LDM / BFL) single-file key layout.

Why this exists: tests need single-file checkpoints of every family without
downloading any, so they build them from the tiny built-in models; the
full-size config check needs the same layout on the `meta` device. diffusers
ships only the forward direction (`diffusers.loaders.single_file_utils`) and a
repo script for SD 1.5; these are the reverse maps for SD 1.x, SD 2.x, SDXL
(base and 9-channel inpainting UNets) and the Flux transformer. Nothing at run
time imports this module: loading always goes through diffusers' own
converters, and the tests check that those take back every key written here.

Layouts, by component (`<prefix>` + the original module's own names):
- UNet: `model.diffusion_model.` (`input_blocks.N.M`, `middle_block.N`,
  `output_blocks.N.M`, `time_embed`, `label_emb`, `out`), as in ldm/sgm.
- VAE: `first_stage_model.` (`encoder.down.N.block.M`, `mid.attn_1` with 1x1
  conv q/k/v/proj_out, `decoder.up.N` numbered from the bottom).
- CLIP-L (SD 1.x, SDXL's first encoder): transformers' names under
  `cond_stage_model.transformer.text_model.` / `conditioner.embedders.0.transformer.text_model.`.
- OpenCLIP (SD 2.x, SDXL's second encoder): `cond_stage_model.model.` /
  `conditioner.embedders.1.model.` with fused `attn.in_proj_*`, `resblocks`,
  `ln_final`, `positional_embedding`, `text_projection` (transposed).
- Flux transformer: BFL names (`double_blocks`, `single_blocks`, fused qkv).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIXES = {
    "sd1": {"text_encoder": ("clip", "cond_stage_model.transformer.")},
    "sd2": {"text_encoder": ("openclip", "cond_stage_model.model.")},
    "sdxl": {
        "text_encoder": ("clip", "conditioner.embedders.0.transformer."),
        "text_encoder_2": ("openclip", "conditioner.embedders.1.model."),
    },
}

_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)


def _moved(sd: Mapping[str, Tensor], src: str, dst: str, out: StateDict, renames=()) -> None:
    """Copy every key under `src` to `dst`, renaming the first dotted part by `renames`."""
    for key, value in sd.items():
        if key.startswith(src):
            rest = key[len(src) :]
            for old, new in renames:
                if rest.startswith(old + "."):
                    rest = new + rest[len(old) :]
                    break
            out[dst + rest] = value


def unet_to_ldm(sd: Mapping[str, Tensor], config: Mapping[str, Any]) -> StateDict:
    """A diffusers `UNet2DConditionModel` state dict in the ldm/sgm `UNetModel` layout."""
    out: StateDict = {}
    p = UNET_PREFIX
    for src, dst in (
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
        ("class_embedding.linear_1", "label_emb.0.0"),
        ("class_embedding.linear_2", "label_emb.0.2"),
        ("conv_in", "input_blocks.0.0"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
    ):
        _moved(sd, src + ".", p + dst + ".", out)
    layers = config["layers_per_block"]
    n_blocks = len(config["block_out_channels"])
    idx = 1
    for b in range(n_blocks):
        for j in range(layers):
            _moved(sd, f"down_blocks.{b}.resnets.{j}.", f"{p}input_blocks.{idx}.0.", out, _RESNET)
            _moved(sd, f"down_blocks.{b}.attentions.{j}.", f"{p}input_blocks.{idx}.1.", out)
            idx += 1
        if any(k.startswith(f"down_blocks.{b}.downsamplers.0.") for k in sd):
            _moved(sd, f"down_blocks.{b}.downsamplers.0.conv.", f"{p}input_blocks.{idx}.0.op.", out)
            idx += 1
    _moved(sd, "mid_block.resnets.0.", p + "middle_block.0.", out, _RESNET)
    _moved(sd, "mid_block.attentions.0.", p + "middle_block.1.", out)
    _moved(sd, "mid_block.resnets.1.", p + "middle_block.2.", out, _RESNET)
    idx = 0
    for b in range(n_blocks):
        for j in range(layers + 1):
            _moved(sd, f"up_blocks.{b}.resnets.{j}.", f"{p}output_blocks.{idx}.0.", out, _RESNET)
            has_attn = any(k.startswith(f"up_blocks.{b}.attentions.{j}.") for k in sd)
            _moved(sd, f"up_blocks.{b}.attentions.{j}.", f"{p}output_blocks.{idx}.1.", out)
            if j == layers:
                at = 2 if has_attn else 1
                _moved(
                    sd,
                    f"up_blocks.{b}.upsamplers.0.conv.",
                    f"{p}output_blocks.{idx}.{at}.conv.",
                    out,
                )
            idx += 1
    return out


def vae_to_ldm(sd: Mapping[str, Tensor], prefix: str = VAE_PREFIX) -> StateDict:
    """A diffusers `AutoencoderKL` state dict in the ldm `AutoencoderKL` layout."""
    out: StateDict = {}
    res = (("conv_shortcut", "nin_shortcut"),)
    n_up = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.up_blocks."))
    for part in ("encoder", "decoder"):
        for src, dst in (
            ("conv_in", "conv_in"),
            ("conv_out", "conv_out"),
            ("conv_norm_out", "norm_out"),
        ):
            _moved(sd, f"{part}.{src}.", f"{prefix}{part}.{dst}.", out)
        for i in (0, 1):
            _moved(
                sd, f"{part}.mid_block.resnets.{i}.", f"{prefix}{part}.mid.block_{i + 1}.", out, res
            )
        for key, value in sd.items():
            head = f"{part}.mid_block.attentions.0."
            if key.startswith(head):
                name = key[len(head) :]
                for old, new in (
                    ("group_norm", "norm"),
                    ("to_q", "q"),
                    ("to_k", "k"),
                    ("to_v", "v"),
                    ("to_out.0", "proj_out"),
                ):
                    if name.startswith(old + "."):
                        name = new + name[len(old) :]
                        break
                if name.endswith("weight") and value.ndim == 2:
                    value = value[:, :, None, None]  # linear -> the original's 1x1 conv
                out[f"{prefix}{part}.mid.attn_1.{name}"] = value
    for key in {k.split(".")[2] for k in sd if k.startswith("encoder.down_blocks.")}:
        i = int(key)
        _moved(sd, f"encoder.down_blocks.{i}.resnets.", f"{prefix}encoder.down.{i}.block.", out)
        _moved(
            sd,
            f"encoder.down_blocks.{i}.downsamplers.0.conv.",
            f"{prefix}encoder.down.{i}.downsample.conv.",
            out,
        )
    for i in range(n_up):
        j = n_up - 1 - i  # the original numbers decoder levels from the bottom
        _moved(sd, f"decoder.up_blocks.{i}.resnets.", f"{prefix}decoder.up.{j}.block.", out)
        _moved(
            sd,
            f"decoder.up_blocks.{i}.upsamplers.0.conv.",
            f"{prefix}decoder.up.{j}.upsample.conv.",
            out,
        )
    for conv in ("quant_conv", "post_quant_conv"):
        _moved(sd, conv + ".", prefix + conv + ".", out)
    # resnets' conv_shortcut was moved verbatim above: rename it
    return {k.replace(".conv_shortcut.", ".nin_shortcut."): v for k, v in out.items()}


def clip_to_ldm(sd: Mapping[str, Tensor], prefix: str) -> StateDict:
    """A transformers CLIP text model (flat or `text_model.`-wrapped) under `prefix`."""
    out: StateDict = {}
    for key, value in sd.items():
        if key == "text_projection.weight":
            raise ValueError("CLIP-L layouts carry no text projection")
        out[prefix + "text_model." + key.removeprefix("text_model.")] = value
    return out


def openclip_to_ldm(sd: Mapping[str, Tensor], prefix: str) -> StateDict:
    """A transformers CLIP text model in OpenCLIP's layout (SD 2.x, SDXL's second encoder)."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out: StateDict = {
        prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
        prefix + "ln_final.weight": sd["final_layer_norm.weight"],
        prefix + "ln_final.bias": sd["final_layer_norm.bias"],
    }
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    n = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers."))
    names = (
        ("layer_norm1", "ln_1"),
        ("layer_norm2", "ln_2"),
        ("mlp.fc1", "mlp.c_fc"),
        ("mlp.fc2", "mlp.c_proj"),
        ("self_attn.out_proj", "attn.out_proj"),
    )
    for i in range(n):
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            qkv = [sd[f"{src}self_attn.{x}_proj.{part}"] for x in "qkv"]
            out[f"{dst}attn.in_proj_{part}"] = torch.cat(qkv, dim=0)
            for old, new in names:
                out[f"{dst}{new}.{part}"] = sd[f"{src}{old}.{part}"]
    return out


def pipeline_to_ldm(components: Mapping[str, Any], arch: str) -> StateDict:
    """One single-file state dict from a pipeline's modules ("sd1", "sd2" or "sdxl";
    9-channel inpainting UNets have the same layout)."""
    unet = components["unet"]
    out = unet_to_ldm(unet.state_dict(), unet.config)
    out.update(vae_to_ldm(components["vae"].state_dict()))
    for name, (kind, prefix) in TEXT_PREFIXES[arch].items():
        sd = components[name].state_dict()
        out.update(clip_to_ldm(sd, prefix) if kind == "clip" else openclip_to_ldm(sd, prefix))
    return out


def _swap_halves(w: Tensor) -> Tensor:
    """diffusers' AdaLayerNormContinuous is (scale, shift); BFL's final layer is (shift, scale)."""
    scale, shift = w.chunk(2, dim=0)
    return torch.cat([shift, scale], dim=0)


def flux_to_ldm(sd: Mapping[str, Tensor], prefix: str = "") -> StateDict:
    """A diffusers `FluxTransformer2DModel` state dict in BFL's original layout."""
    out: StateDict = {}

    def put(dst: str, src: str) -> None:
        for part in ("weight", "bias"):
            if f"{src}.{part}" in sd:
                out[f"{prefix}{dst}.{part}"] = sd[f"{src}.{part}"]

    def fused(dst: str, srcs: list[str]) -> None:
        for part in ("weight", "bias"):
            out[f"{prefix}{dst}.{part}"] = torch.cat([sd[f"{s}.{part}"] for s in srcs], dim=0)

    for src, dst in (
        ("time_text_embed.timestep_embedder", "time_in"),
        ("time_text_embed.text_embedder", "vector_in"),
        ("time_text_embed.guidance_embedder", "guidance_in"),
    ):
        put(f"{dst}.in_layer", f"{src}.linear_1")
        put(f"{dst}.out_layer", f"{src}.linear_2")
    put("txt_in", "context_embedder")
    put("img_in", "x_embedder")
    doubles = {int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")}
    for i in sorted(doubles):
        s, d = f"transformer_blocks.{i}.", f"double_blocks.{i}."
        put(d + "img_mod.lin", s + "norm1.linear")
        put(d + "txt_mod.lin", s + "norm1_context.linear")
        fused(d + "img_attn.qkv", [s + "attn.to_q", s + "attn.to_k", s + "attn.to_v"])
        fused(
            d + "txt_attn.qkv",
            [s + "attn.add_q_proj", s + "attn.add_k_proj", s + "attn.add_v_proj"],
        )
        for src, dst in (
            ("attn.norm_q", "img_attn.norm.query_norm"),
            ("attn.norm_k", "img_attn.norm.key_norm"),
            ("attn.norm_added_q", "txt_attn.norm.query_norm"),
            ("attn.norm_added_k", "txt_attn.norm.key_norm"),
        ):
            out[f"{prefix}{d}{dst}.scale"] = sd[f"{s}{src}.weight"]
        put(d + "img_mlp.0", s + "ff.net.0.proj")
        put(d + "img_mlp.2", s + "ff.net.2")
        put(d + "txt_mlp.0", s + "ff_context.net.0.proj")
        put(d + "txt_mlp.2", s + "ff_context.net.2")
        put(d + "img_attn.proj", s + "attn.to_out.0")
        put(d + "txt_attn.proj", s + "attn.to_add_out")
    singles = {int(k.split(".")[1]) for k in sd if k.startswith("single_transformer_blocks.")}
    for i in sorted(singles):
        s, d = f"single_transformer_blocks.{i}.", f"single_blocks.{i}."
        put(d + "modulation.lin", s + "norm.linear")
        fused(d + "linear1", [s + "attn.to_q", s + "attn.to_k", s + "attn.to_v", s + "proj_mlp"])
        out[f"{prefix}{d}norm.query_norm.scale"] = sd[f"{s}attn.norm_q.weight"]
        out[f"{prefix}{d}norm.key_norm.scale"] = sd[f"{s}attn.norm_k.weight"]
        put(d + "linear2", s + "proj_out")
    put("final_layer.linear", "proj_out")
    for part in ("weight", "bias"):
        out[f"{prefix}final_layer.adaLN_modulation.1.{part}"] = _swap_halves(
            sd[f"norm_out.linear.{part}"]
        )
    return out
