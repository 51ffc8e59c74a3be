"""Train `atelier-shapes` (VAE, UNet + text encoder), its ControlNet and its outline LoRA.

    python -m pipelines.shapes.train --workdir /work/atelier-train --out assets [--pilot]

Stages run in order: vae, unet, controlnet, lora, decoder (then `eval`, see `shapes_eval`);
`decoder` fine-tunes the VAE decoder only (run 3), so the latents stay the same.
Each stage exports fp16 weights into `--out` when it finishes, and the next stage
starts FROM THOSE EXPORTED FILES, so what is shipped is exactly what later stages
were trained against, and a fresh workdir resumes from the assets a commit holds:
a stage whose export exists is skipped. To retrain a stage, delete its export
(and `<workdir>/<stage>/`).

Resumable: every stage saves `<workdir>/<stage>/state.pt` (weights, optimizer, EMA,
step) atomically every few minutes; a killed run picks up at the last save. Every
random draw of step `s` comes from a generator seeded with (stage seed, s), so a
resumed run draws the same batches as an uninterrupted one.

Layout of the exports (all fp16 safetensors):
    <out>/atelier-shapes/              StableDiffusionPipeline.save_pretrained + atelier.json
    <out>/atelier-shapes-canny/        ControlNetModel.save_pretrained
    <out>/atelier-shapes-outline.safetensors   diffusers-format UNet LoRA
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..builtin import SD15_SCHEDULER, write_safetensors_metadata  # SD 1.5 scheduler config
from . import scenes as S

log = logging.getLogger("atelier.shapes")

MODEL = "atelier-shapes"
CONTROLNET = "atelier-shapes-canny"
LORA_FILE = "atelier-shapes-outline.safetensors"
# Run in this order. "decoder" came last (run 3) and is appended, so the other stages'
# seeds (step_rng keys use the index) stay those of the recorded runs.
STAGES = ("vae", "unet", "controlnet", "lora", "decoder")
DEFAULTS = {"default_steps": 20, "default_cfg": 5.0, "default_size": S.SIZE}
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0", "proj_in", "proj_out", "conv1", "conv2"]
# Kohya-style metadata, as real LoRAs carry it: the studio reads the family from it.
LORA_METADATA = {
    "format": "pt",
    "ss_base_model_version": "sd_v1",
    "modelspec.architecture": "stable-diffusion-v1/lora",
    "modelspec.title": "Outline (atelier-shapes)",
}
SAVE_EVERY_S = 240.0  # checkpoint at least this often (a session may be killed any time)


@dataclass(frozen=True)
class Plan:
    """Steps, batch sizes and learning rates of every stage (the recorded settings)."""

    # The shipped runs' settings (bench/SHAPES_TRAINING.md). Run 2: the UNet ran 1600
    # steps, then resumed to 3936 under a 4800-step schedule. Run 3: the LoRA again
    # (rank 32, lr 2e-3, 3000 steps; run 2's rank 8 left 6% hollow) and the decoder.
    vae_steps: int = 1000
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_groups: int = 4  # GroupNorm groups: 16 (per-channel) normalised flat colours away
    n_latents: int = 16384  # precomputed scenes for the UNet/ControlNet stages
    n_outline: int = 4096  # precomputed outline scenes for the LoRA stage
    unet_steps: int = 3936
    unet_batch: int = 32
    unet_lr: float = 1e-3
    controlnet_steps: int = 1200
    controlnet_batch: int = 16
    controlnet_lr: float = 1e-3
    lora_steps: int = 3000
    lora_batch: int = 16
    lora_lr: float = 2e-3
    lora_rank: int = 32
    # Run 3: the VAE decoder alone, fine-tuned on half outline scenes (the encoder, so
    # every latent the UNet/ControlNet/LoRA learned from, stays exactly as it was).
    decoder_steps: int = 1500
    decoder_batch: int = 16
    decoder_lr: float = 5e-4
    decoder_outline: float = 0.5
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0
    warmup: int = 100
    seed: int = 1234


PILOT = Plan(
    vae_steps=60,
    n_latents=1024,
    n_outline=512,
    unet_steps=60,
    controlnet_steps=20,
    lora_steps=20,
    decoder_steps=20,
    warmup=10,
)


# ---------------------------------------------------------------- models


def build_tokenizer():  # -> CLIPTokenizer
    """A CLIP tokenizer whose vocabulary holds every caption word as ONE token.

    Byte-level base (any text still tokenizes), plus BPE merges that build each word
    of `scenes.vocabulary()`; merges are added until every word is a single token.
    """
    from transformers import CLIPTokenizer

    from ..tiny_tokenizers import CLIP_MAX_LENGTH, clip_vocab

    vocab, merges = clip_vocab(), []
    for _ in range(20):
        tok = CLIPTokenizer(
            vocab=dict(vocab), merges=list(merges), model_max_length=CLIP_MAX_LENGTH
        )
        done = True
        for word in S.vocabulary():
            pieces = tok.tokenize(word)
            if pieces == [f"{word}</w>"]:
                continue
            done, cur = False, pieces[0]
            for piece in pieces[1:]:
                if (cur, piece) not in merges:
                    merges.append((cur, piece))
                cur += piece
                vocab.setdefault(cur, len(vocab))
        if done:
            return tok
    raise RuntimeError("could not build a word-level vocabulary")


def build_text_encoder(tok):  # -> CLIPTextModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=256,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=tok.model_max_length,
        projection_dim=64,
        hidden_act="quick_gelu",
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    return CLIPTextModel(cfg)


def build_vae(groups: int = 4):  # -> AutoencoderKL
    """Three blocks: 4x downsampling, 64x64x3 -> 16x16x4 (vae_scale_factor 4).

    Few GroupNorm groups: with one channel per group, the norm removes each channel's
    mean, i.e. the absolute colour of a flat picture, and colours learn very slowly."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64),
        layers_per_block=1,
        norm_num_groups=groups,
        latent_channels=4,
        sample_size=S.SIZE,
    )


def build_unet():  # -> UNet2DConditionModel
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=S.SIZE // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128),
        layers_per_block=1,
        norm_num_groups=8,  # 8 channels a group (SD: 10); 2 a group strips flat colours
        cross_attention_dim=64,
        attention_head_dim=8,
    )


def build_controlnet(unet):  # -> ControlNetModel
    from diffusers import ControlNetModel

    # Two stride-2 convs: the 64x64 control map meets the 16x16 latents.
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64))


# ---------------------------------------------------------------- plumbing


class Checkpoint:
    """`<workdir>/<stage>/state.pt`, written atomically (tmp file + rename)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "state.pt"

    def load(self) -> dict | None:
        return torch.load(self.path, weights_only=False) if self.path.exists() else None

    def save(self, state: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)


def step_rng(plan: Plan, stage: str, step: int) -> tuple[random.Random, torch.Generator]:
    """Python and torch generators for one step: a pure function of (seed, stage, step)."""
    key = plan.seed * 1_000_003 + STAGES.index(stage) * 10_000_019 + step
    return random.Random(key), torch.Generator().manual_seed(key)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_loop(
    stage: str,
    plan: Plan,
    workdir: Path,
    modules: dict[str, torch.nn.Module],
    params: list[torch.nn.Parameter],
    steps: int,
    lr: float,
    loss_fn: Callable[[int], torch.Tensor],
    ema: bool = True,
) -> None:
    """AdamW over `params` for `steps` steps, resumable; ends with EMA weights loaded."""
    ckpt = Checkpoint(workdir / stage)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    shadow = [p.detach().clone() for p in params] if ema else []
    start = 0
    state = ckpt.load()
    if state is not None:
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name], strict=False)
        opt.load_state_dict(state["opt"])
        shadow = state["ema"]
        start = state["step"]
        log.info("%s: resumed at step %d/%d", stage, start, steps)
    losses = (workdir / stage / "loss.csv").open("a", newline="")
    writer = csv.writer(losses)
    last_save, t0 = time.monotonic(), time.monotonic()
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, plan.warmup)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema:
            decay = min(plan.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for s, p in zip(shadow, params, strict=True):
                    s.lerp_(p.detach(), 1 - decay)
        writer.writerow([step, f"{loss.item():.5f}"])
        done = step + 1
        if done % 25 == 0 or done == steps:
            losses.flush()
            rate = (time.monotonic() - t0) / (done - start)
            log.info(
                "%s step %d/%d loss %.4f  %.2f s/step  eta %.0f min",
                stage,
                done,
                steps,
                loss.item(),
                rate,
                rate * (steps - done) / 60,
            )
        if time.monotonic() - last_save > SAVE_EVERY_S or done == steps:
            losses.flush()
            trained = {n: {k: v for k, v in m.state_dict().items()} for n, m in modules.items()}
            ckpt.save({"modules": trained, "opt": opt.state_dict(), "ema": shadow, "step": done})
            last_save = time.monotonic()
    losses.close()
    if ema:
        with torch.no_grad():
            for s, p in zip(shadow, params, strict=True):
                p.copy_(s)


def encode_text(tok, text_encoder, captions: list[str]) -> torch.Tensor:
    ids = tok(
        captions,
        padding="max_length",
        max_length=tok.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return text_encoder(ids)[0]


def to_tensor(images: list) -> torch.Tensor:
    """PIL images -> (B, 3, H, W) in [-1, 1]."""
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def noisy_batch(sched, latents: torch.Tensor, gen: torch.Generator, gamma: float):
    """Noise, timesteps, noisy latents and min-SNR-gamma loss weights (epsilon target)."""
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen)
    noisy = sched.add_noise(latents, noise, t)
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    weight = torch.clamp(snr, max=gamma) / snr
    return noise, t, noisy, weight


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    per = ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3))
    return (per * weight).mean()


# ---------------------------------------------------------------- exports


def load_pipeline(out: Path, dtype: torch.dtype = torch.float32):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(out / MODEL, dtype=dtype)


def export_pipeline(out: Path, vae, text_encoder, tok, unet, info: dict) -> None:
    """Save the pipeline in fp16 (copies; the training modules stay fp32)."""
    import copy

    from diffusers import PNDMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae).half(),
        text_encoder=copy.deepcopy(text_encoder).half(),
        tokenizer=tok,
        unet=copy.deepcopy(unet).half(),
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out / MODEL, safe_serialization=True)
    (out / MODEL / "atelier.json").write_text(json.dumps({**DEFAULTS, "training": info}, indent=2))
    strip_local_paths(out / MODEL)


def strip_local_paths(folder: Path) -> None:
    """Drop `_name_or_path` (this machine's training folder) from the exported configs."""
    for path in folder.rglob("*.json"):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and config.pop("_name_or_path", None) is not None:
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def stage_done(out: Path, stage: str) -> bool:
    marks = {
        "vae": out / MODEL / "vae" / "diffusion_pytorch_model.safetensors",
        "unet": out / MODEL / "model_index.json",
        "controlnet": out / CONTROLNET / "diffusion_pytorch_model.safetensors",
        "lora": out / LORA_FILE,
        "decoder": out / MODEL / "atelier.json",
    }
    if stage == "decoder":
        info = json.loads(marks[stage].read_text()) if marks[stage].exists() else {}
        return "decoder_steps" in info.get("training", {})
    return marks[stage].exists()


# ---------------------------------------------------------------- stages


def recon_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The autoencoder's reconstruction loss: MSE + 0.5 L1."""
    return ((recon - x) ** 2).mean() + 0.5 * (recon - x).abs().mean()


def stage_vae(plan: Plan, workdir: Path, out: Path) -> None:
    """Autoencoder on freshly rendered scenes (30% outlines, which the LoRA must decode)."""
    torch.manual_seed(plan.seed)
    vae = build_vae(plan.vae_groups).train()

    def loss_fn(step: int) -> torch.Tensor:
        rng, gen = step_rng(plan, "vae", step)
        base = plan.seed * 7_919 + step * plan.vae_batch
        images = [
            S.render(S.sample_scene(base + i), outline=rng.random() < 0.3)
            for i in range(plan.vae_batch)
        ]
        x = to_tensor(images)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        recon = vae.decode(z).sample
        return recon_loss(recon, x) + 1e-6 * post.kl().mean()

    train_loop(
        "vae",
        plan,
        workdir,
        {"vae": vae},
        list(vae.parameters()),
        plan.vae_steps,
        plan.vae_lr,
        loss_fn,
    )
    vae.eval()
    with torch.no_grad():
        x = to_tensor([S.render(S.sample_scene(10**7 + i)) for i in range(256)])
        std = vae.encode(x).latent_dist.mean.std().item()
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    log.info("vae: latent std %.4f -> scaling_factor %.5f", std, 1.0 / std)
    (out / MODEL).mkdir(parents=True, exist_ok=True)
    import copy

    copy.deepcopy(vae).half().save_pretrained(out / MODEL / "vae", safe_serialization=True)


def latents(plan: Plan, workdir: Path, vae, outline: bool) -> tuple[torch.Tensor, list[int]]:
    """Scaled VAE means of `n` scenes (cached in workdir); scene i has seed seeds[i]."""
    n = plan.n_outline if outline else plan.n_latents
    first = 5 * 10**7 if outline else 2 * 10**7
    seeds = list(range(first, first + n))
    path = workdir / f"latents_{'outline' if outline else 'main'}_{n}.pt"
    if path.exists():
        return torch.load(path), seeds
    t0 = time.monotonic()
    chunks = []
    with torch.no_grad():
        for i in range(0, n, 256):
            x = to_tensor(
                [S.render(S.sample_scene(s), outline=outline) for s in seeds[i : i + 256]]
            )
            chunks.append(vae.encode(x.to(vae.dtype)).latent_dist.mean.float())
    lat = torch.cat(chunks) * vae.config.scaling_factor
    torch.save(lat, path)
    log.info(
        "latents (%s): %d in %.0f s", "outline" if outline else "main", n, time.monotonic() - t0
    )
    return lat, seeds


def caption_batch(rng: random.Random, seeds: list[int], idx: torch.Tensor) -> list[str]:
    return [S.sample_caption(S.sample_scene(seeds[i]), rng) for i in idx.tolist()]


def stage_unet(plan: Plan, workdir: Path, out: Path) -> None:
    """UNet and text encoder together on precomputed latents, min-SNR weighted epsilon loss."""
    from diffusers import AutoencoderKL, DDPMScheduler

    vae = AutoencoderKL.from_pretrained(out / MODEL / "vae", dtype=torch.float32).eval()
    lat, seeds = latents(plan, workdir, vae, outline=False)
    torch.manual_seed(plan.seed + 1)
    tok = build_tokenizer()
    text_encoder, unet = build_text_encoder(tok).train(), build_unet().train()
    sched = DDPMScheduler.from_config(SD15_SCHEDULER)

    def loss_fn(step: int) -> torch.Tensor:
        rng, gen = step_rng(plan, "unet", step)
        idx = torch.randint(0, len(seeds), (plan.unet_batch,), generator=gen)
        enc = encode_text(tok, text_encoder, caption_batch(rng, seeds, idx))
        noise, t, noisy, w = noisy_batch(sched, lat[idx], gen, plan.min_snr_gamma)
        return weighted_mse(unet(noisy, t, enc).sample, noise, w)

    params = list(unet.parameters()) + list(text_encoder.parameters())
    modules = {"unet": unet, "text_encoder": text_encoder}
    train_loop("unet", plan, workdir, modules, params, plan.unet_steps, plan.unet_lr, loss_fn)
    info = {"plan": asdict(plan), "unet_steps": plan.unet_steps}
    export_pipeline(out, vae, text_encoder.eval(), tok, unet.eval(), info)


def control_map(scene: S.Scene, rng: random.Random):
    """Half mask edges (1-2 px), half OpenCV Canny of the render: both kinds the studio sends."""
    if rng.random() < 0.5:
        return S.edge_map(scene, thickness=rng.choice((1, 1, 2)))
    return S.canny_map(S.render(scene))


def stage_controlnet(plan: Plan, workdir: Path, out: Path) -> None:
    """ControlNet (initialised from the UNet) on edge maps; UNet and text encoder frozen."""
    from diffusers import DDPMScheduler

    pipe = load_pipeline(out)
    lat, seeds = latents(plan, workdir, pipe.vae, outline=False)
    unet, text_encoder, tok = pipe.unet.eval(), pipe.text_encoder.eval(), pipe.tokenizer
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    torch.manual_seed(plan.seed + 2)
    controlnet = build_controlnet(unet).train()
    sched = DDPMScheduler.from_config(SD15_SCHEDULER)

    def loss_fn(step: int) -> torch.Tensor:
        rng, gen = step_rng(plan, "controlnet", step)
        idx = torch.randint(0, len(seeds), (plan.controlnet_batch,), generator=gen)
        with torch.no_grad():
            enc = encode_text(tok, text_encoder, caption_batch(rng, seeds, idx))
        cond = to_tensor([control_map(S.sample_scene(seeds[i]), rng) for i in idx.tolist()])
        cond = (cond + 1) / 2  # the pipeline feeds control images in [0, 1]
        noise, t, noisy, w = noisy_batch(sched, lat[idx], gen, plan.min_snr_gamma)
        down, mid = controlnet(
            noisy, t, encoder_hidden_states=enc, controlnet_cond=cond, return_dict=False
        )
        pred = unet(
            noisy, t, enc, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample
        return weighted_mse(pred, noise, w)

    train_loop(
        "controlnet",
        plan,
        workdir,
        {"controlnet": controlnet},
        list(controlnet.parameters()),
        plan.controlnet_steps,
        plan.controlnet_lr,
        loss_fn,
    )
    import copy

    copy.deepcopy(controlnet).eval().half().save_pretrained(
        out / CONTROLNET, safe_serialization=True
    )
    strip_local_paths(out / CONTROLNET)


def stage_lora(plan: Plan, workdir: Path, out: Path) -> None:
    """A rank-r UNet LoRA (attention and ResNet convs) on outline renderings, same captions."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = load_pipeline(out)
    lat, seeds = latents(plan, workdir, pipe.vae, outline=True)
    unet, text_encoder, tok = pipe.unet, pipe.text_encoder.eval(), pipe.tokenizer
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    torch.manual_seed(plan.seed + 3)
    unet.add_adapter(
        LoraConfig(
            r=plan.lora_rank,
            lora_alpha=plan.lora_rank,
            init_lora_weights="gaussian",
            # Attention alone (run 1: 400 steps) left 3% of the shapes hollow: an outline
            # is a spatial change, so the ResNet convs and the projections adapt too.
            target_modules=LORA_TARGETS,
        )
    )
    params = [p for p in unet.parameters() if p.requires_grad]
    sched = DDPMScheduler.from_config(SD15_SCHEDULER)

    def loss_fn(step: int) -> torch.Tensor:
        rng, gen = step_rng(plan, "lora", step)
        idx = torch.randint(0, len(seeds), (plan.lora_batch,), generator=gen)
        with torch.no_grad():
            enc = encode_text(tok, text_encoder, caption_batch(rng, seeds, idx))
        noise, t, noisy, w = noisy_batch(sched, lat[idx], gen, plan.min_snr_gamma)
        return weighted_mse(unet(noisy, t, enc).sample, noise, w)

    train_loop(
        "lora",
        plan,
        workdir,
        {"unet": unet},
        params,
        plan.lora_steps,
        plan.lora_lr,
        loss_fn,
        ema=False,
    )
    # PEFT's own key names (lora_A/lora_B). convert_state_dict_to_diffusers renamed only
    # the attention layers (to_k.lora.down) and left proj/conv as lora_A: diffusers reads
    # such a mixed file as PEFT format and silently DROPPED every attention layer
    # (runs 1-2 shipped like that: 30 of 86 layers loaded).
    layers = {k: v.detach().half().contiguous()
              for k, v in get_peft_model_state_dict(unet).items()}  # fmt: skip
    StableDiffusionPipeline.save_lora_weights(
        out, unet_lora_layers=layers, weight_name=LORA_FILE, safe_serialization=True
    )
    write_safetensors_metadata(out / LORA_FILE, lora_metadata(plan))


def lora_metadata(plan: Plan) -> dict[str, str]:
    """The LoRA file's Kohya-style metadata, with the run's rank and steps."""
    rank = str(plan.lora_rank)
    return {**LORA_METADATA, "ss_network_dim": rank, "ss_network_alpha": rank,
            "ss_max_train_steps": str(plan.lora_steps)}  # fmt: skip


def stage_decoder(plan: Plan, workdir: Path, out: Path) -> None:
    """Fine-tune the VAE decoder (and post_quant_conv) on half outline scenes.

    The shipped VAE (run 1, 1000 steps) blurred thin strokes: 77% of outline scenes came
    back hollow through encode/decode (stars 40%), a ceiling for the outline LoRA. The
    encoder is frozen, so the latents, and every model trained on them, are unchanged.
    """
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(out / MODEL / "vae", dtype=torch.float32)
    vae.requires_grad_(False)
    vae.encoder.eval()
    tuned = [vae.decoder, vae.post_quant_conv]
    for module in tuned:
        module.requires_grad_(True)
    params = [p for m in tuned for p in m.parameters()]

    def loss_fn(step: int) -> torch.Tensor:
        rng, _ = step_rng(plan, "decoder", step)
        base = 31_000_000 + step * plan.decoder_batch
        images = [
            S.render(S.sample_scene(base + i), outline=rng.random() < plan.decoder_outline)
            for i in range(plan.decoder_batch)
        ]
        x = to_tensor(images)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean  # what the UNet's latents are
        return recon_loss(vae.decode(z).sample, x)

    train_loop(
        "decoder",
        plan,
        workdir,
        {"vae": vae},
        params,
        plan.decoder_steps,
        plan.decoder_lr,
        loss_fn,
    )
    vae.eval().half().save_pretrained(out / MODEL / "vae", safe_serialization=True)
    strip_local_paths(out / MODEL / "vae")
    info_path = out / MODEL / "atelier.json"
    info = json.loads(info_path.read_text())
    info.setdefault("training", {})["decoder_steps"] = plan.decoder_steps
    info["training"]["decoder_plan"] = {
        k: v for k, v in asdict(plan).items() if k.startswith("decoder_")
    }
    info_path.write_text(json.dumps(info, indent=2) + "\n")


RUNNERS: dict[str, Callable[[Plan, Path, Path], None]] = {
    "vae": stage_vae,
    "unet": stage_unet,
    "controlnet": stage_controlnet,
    "lora": stage_lora,
    "decoder": stage_decoder,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/work/atelier-train"))
    parser.add_argument("--out", type=Path, default=Path("assets"))
    parser.add_argument("--pilot", action="store_true", help="a few steps per stage")
    parser.add_argument(
        "--stages",
        default=",".join((*STAGES, "eval")),
        help="comma-separated subset of vae,unet,controlnet,lora,decoder,eval",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--bench",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "bench",
        help="where the loss-curve PNG goes",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a Plan field, e.g. --set unet_steps=100",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        # Measured here with other jobs on the 2 cores: a UNet step took 20 s with
        # spinning OpenMP threads and 2.5 s with OMP_WAIT_POLICY=PASSIVE.
        log.warning("set OMP_WAIT_POLICY=PASSIVE before starting: spinning threads are ~8x slower")
    torch.set_num_threads(args.threads)
    plan = PILOT if args.pilot else Plan()
    for item in args.set:
        key, value = item.split("=", 1)
        plan = replace(plan, **{key: type(getattr(plan, key))(value)})
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log.info("plan: %s", asdict(plan))
    for stage in args.stages.split(","):
        t0 = time.monotonic()
        if stage == "eval":
            from .evaluate import evaluate

            evaluate(args.out, args.workdir, seeds=8 if args.pilot else 32)
            continue
        if stage_done(args.out, stage):
            log.info("%s: export exists in %s, skipped", stage, args.out)
            continue
        RUNNERS[stage](plan, args.workdir, args.out)
        minutes = (time.monotonic() - t0) / 60
        log.info("%s: done in %.1f min", stage, minutes)
        with (args.workdir / "times.csv").open("a") as f:
            f.write(f"{stage},{minutes:.2f}\n")
        from .evaluate import plot_losses

        plot_losses(args.workdir, args.bench / "shapes_loss.png")


if __name__ == "__main__":
    main()
