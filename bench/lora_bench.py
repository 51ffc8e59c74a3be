"""LoRA benchmark on an SD 1.5-size UNet (random weights, fp32, CPU).

    python bench/lora_bench.py [--no-record] [--latent 32]

One run measures, against baselines from the same run:
1. switching between two resident LoRAs (the engine's AdapterSet: set_adapters
   only) vs the "unload then load" pattern most Gradio demos use;
2. the first load of a LoRA file; a cold scan and a rescan of 2,000 headers;
3. per-step cost of an active unfused LoRA and of a fused one vs no LoRA
   (one UNet forward with CFG batch 2);
4. resident memory (RSS) after 200 switches among 10 LoRAs vs after the first 10.
Rank-16 LoRAs over the attention layers (to_q, to_k, to_v, to_out.0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def sd15_pipeline():
    """A StableDiffusionPipeline around an SD 1.5-config UNet (~860M parameters)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from pipelines.builtin import SD15_SCHEDULER
    from pipelines.tiny_tokenizers import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
    tok = clip_tokenizer()
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=768, intermediate_size=1024, num_attention_heads=12,
        num_hidden_layers=1, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))  # fmt: skip
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4)  # fmt: skip
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet.eval(),
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)  # fmt: skip


def make_loras(unet, folder: Path, count: int) -> list[Path]:
    """`count` rank-16 attention LoRAs for `unet`, diffusers format, from a throwaway copy."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))  # fmt: skip
    paths = []
    for i in range(count):
        torch.manual_seed(100 + i)
        with torch.no_grad():
            for name, p in unet.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.01)
        state = {f"unet.{k}": v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}
        path = folder / f"lora{i:02d}.safetensors"
        save_file(state, str(path), metadata={"ss_base_model_version": "sd_v1"})
        paths.append(path)
    unet.delete_adapters("default")
    return paths


def header_copies(src: Path, folder: Path, n: int) -> None:
    """n files with `src`'s real header (and no tensor data): what a scan reads."""
    with open(src, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        head = f.read(size)
    folder.mkdir(parents=True, exist_ok=True)
    blob = struct.pack("<Q", size) + head + b"\0" * 64
    for i in range(n):
        (folder / f"scan{i:04d}.safetensors").write_bytes(blob)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--latent", type=int, default=32, help="latent side for step timing")
    args = parser.parse_args()

    import torch
    from engine_bench import format_table, median_time, record

    from pipelines.adapters import AdapterSet
    from pipelines.loras import LoraLibrary

    work = Path(tempfile.mkdtemp(prefix="atelier-lora-bench-"))
    pipe = sd15_pipeline()
    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    paths = make_loras(pipe.unet, work / "loras", 10)
    lib = LoraLibrary(work / "loras", work / "cache")
    entries = [lib.get(p.stem) for p in paths]
    rows = []

    # 2a. first load of a LoRA file (through the engine's AdapterSet)
    adapters = AdapterSet(pipe, "switch", max_count=16)
    first_load = median_time(lambda: adapters.activate([(entries[0], 1.0)]), 1)
    adapters.activate([(entries[1], 1.0)])
    rows.append(("first load of a rank-16 LoRA file", f"{first_load * 1000:.0f} ms", "", ""))

    # 1. switching between two resident LoRAs vs unload-then-load
    flip = iter(range(10**9))
    switch = median_time(lambda: adapters.activate([(entries[next(flip) % 2], 1.0)]), 20)
    adapters.clean()
    turn = iter(range(10**9))

    def unload_then_load():
        pipe.unload_lora_weights()
        k = next(turn) % 2
        pipe.load_lora_weights(str(paths[k]), adapter_name=f"n{k}")
        pipe.set_adapters([f"n{k}"], [1.0])

    # The baseline needs a pipeline without our resident adapters.
    for name in list({a for v in pipe.get_list_adapters().values() for a in v}):
        pipe.delete_adapters(name)
    baseline = median_time(unload_then_load, 6)
    pipe.unload_lora_weights()
    rows.append(("switch between two resident LoRAs vs unload+load", f"{switch * 1000:.1f} ms",
                 f"{baseline * 1000:.0f} ms", f"{baseline / switch:.0f}x faster"))  # fmt: skip

    # 2b. cold scan and rescan of 2,000 headers
    header_copies(paths[0], work / "scan", 2000)
    scan_lib = LoraLibrary(work / "scan", work / "cache")
    cold = median_time(scan_lib.rescan, 1)
    warm = median_time(scan_lib.rescan, 3)
    assert len(scan_lib.names()) == 2001
    rows.append(("scan 2,000 LoRA headers: cold / rescan", f"{cold * 1000:.0f} ms",
                 f"{warm * 1000:.0f} ms", "goal < 2000 ms"))  # fmt: skip

    # 3. per-step overhead: one UNet forward (CFG batch 2)
    latent = torch.randn(2, 4, args.latent, args.latent)
    cond = torch.randn(2, 77, 768)
    t = torch.tensor([500])

    def step():
        with torch.no_grad():
            pipe.unet(latent, t, encoder_hidden_states=cond)

    step()
    # Interleaved (none, unfused, fused) per round, so machine-speed drift hits all alike.
    adapters = AdapterSet(pipe, "switch")
    fused = AdapterSet(pipe, "fused")
    adapters.activate([(entries[0], 1.0)])
    fused.resident = adapters.resident  # the same loaded adapter, fused when asked
    times: dict[str, list[float]] = {"none": [], "lora": [], "fused": []}
    for _ in range(3):
        adapters.deactivate()
        times["none"].append(median_time(step, 1))
        adapters.activate([(entries[0], 1.0)])
        times["lora"].append(median_time(step, 1))
        adapters.deactivate()
        fused.activate([(entries[0], 1.0)])
        times["fused"].append(median_time(step, 1))
        fused.clean()
    none_t, lora_t, fused_t = (statistics.median(times[k]) for k in ("none", "lora", "fused"))
    rows.append((f"UNet step, LoRA unfused vs none ({args.latent}x{args.latent} latent)",
                 f"{lora_t * 1000:.0f} ms", f"{none_t * 1000:.0f} ms",
                 f"{lora_t / none_t:.3f}"))  # fmt: skip
    rows.append(("UNet step, LoRA fused vs none", f"{fused_t * 1000:.0f} ms",
                 f"{none_t * 1000:.0f} ms", f"{fused_t / none_t:.3f}"))  # fmt: skip

    # 4. RSS after 200 switches among 10 resident LoRAs vs after the first 10
    adapters.max_count = 10  # the same resident set as above, now up to 10
    for e in entries:
        adapters.activate([(e, 1.0)])
    base_rss = rss_mb()
    for i in range(200):
        adapters.activate([(entries[(i * 7) % 10], 0.5 + (i % 3) * 0.25)])
    end_rss = rss_mb()
    rows.append(("RSS after 200 switches vs after first 10 LoRAs", f"{end_rss:.0f} MB",
                 f"{base_rss:.0f} MB", f"{(end_rss / base_rss - 1) * 100:+.2f}%"))  # fmt: skip
    rows.append(("UNet parameters; LoRA file size", f"{params:.0f} M",
                 f"{paths[0].stat().st_size / 2**20:.1f} MB", ""))  # fmt: skip

    table = format_table(rows)
    print(table)
    if not args.no_record:
        record(table, "lora_bench")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
