"""Engine benchmark: overhead against direct diffusers, scheduler swaps, model switches.

    python bench/engine_bench.py [--reps 5] [--no-record]

Everything is measured in one run on this machine and reported as ratios
against a baseline measured in the same run:
1. per-image time through the engine vs a direct diffusers call on the same
   folder and settings, on a mid-size SD-architecture model (random weights)
   whose step takes well over 100 ms here; goal ratio <= 1.02;
2. the engine's fixed overhead per request in ms (tiny-sd, 1 step, engine minus
   direct, median);
3. scheduler swap: building a fresh scheduler + pipeline object for a request,
   vs the "reload the pipeline" pattern;
4. model switch: a cached model vs a cold load from disk.
Results are printed as a table and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_mid_sd(folder: Path) -> Path:
    """An SD 1.5-architecture model at 1/5 of SD 1.5's UNet width, random weights."""
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

    if (folder / "model_index.json").is_file():
        return folder
    tok = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(64, 128, 256, 256),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=768, intermediate_size=1024, num_attention_heads=12,
        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    ))  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(32, 64, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
    )
    StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(folder)  # fmt: skip
    return folder


def median_time(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    import diffusers
    import torch

    from pipelines import EngineSettings, GenerationRequest, PipelineManager
    from pipelines.families import FAMILIES
    from pipelines.loading import fresh_pipeline
    from pipelines.schedulers import build_scheduler

    work = Path(tempfile.mkdtemp(prefix="atelier-bench-"))
    models = work / "models"
    build_mid_sd(models / "mid-sd")
    manager = PipelineManager(
        EngineSettings(devices=("cpu",), models_dir=models, cache_root=work / "cache")
    )
    rows: list[tuple[str, str, str, str]] = []

    # 1. per-image time, engine vs direct, on the mid-size model
    size, steps = 256, 8
    req = GenerationRequest(prompt="a lighthouse", model="mid-sd", scheduler="Euler",
                            num_inference_steps=steps, width=size, height=size, seed=1)  # fmt: skip
    manager.generate(req)  # load + warm up
    direct = diffusers.DiffusionPipeline.from_pretrained(
        str(models / "mid-sd"), dtype=torch.float32, safety_checker=None
    )
    direct.scheduler = diffusers.EulerDiscreteScheduler.from_config(direct.scheduler.config)
    direct.set_progress_bar_config(disable=True)

    def run_direct(p=direct, n=steps, s=size):
        return p("a lighthouse", num_inference_steps=n, width=s, height=s, guidance_scale=7.0,
                 generator=torch.Generator("cpu").manual_seed(1))  # fmt: skip

    run_direct()
    # Interleave the two so drift in machine speed hits both alike.
    eng_t, dir_t = [], []
    for _ in range(args.reps):
        eng_t.append(median_time(lambda: manager.generate(req), 1))
        dir_t.append(median_time(run_direct, 1))
    eng, dire = statistics.median(eng_t), statistics.median(dir_t)
    rows.append(("image, engine vs direct (mid-sd 256px, 8 steps)", f"{eng:.3f} s",
                 f"{dire:.3f} s", f"{eng / dire:.3f}"))  # fmt: skip
    rows.append(("step time (direct)", f"{dire / steps * 1000:.0f} ms", "", ""))

    # 2. fixed overhead per request on tiny-sd, 1 step
    tiny = GenerationRequest(prompt="a", model="tiny-sd", scheduler="Euler",
                             num_inference_steps=1, width=64, height=64, seed=1)  # fmt: skip
    manager.generate(tiny)
    tiny_path = manager.registry.resolve("tiny-sd").path
    tp = diffusers.DiffusionPipeline.from_pretrained(str(tiny_path), dtype=torch.float32)
    tp.scheduler = diffusers.EulerDiscreteScheduler.from_config(tp.scheduler.config)
    tp.set_progress_bar_config(disable=True)
    reps = args.reps * 10
    eng1 = median_time(lambda: manager.generate(tiny), reps)
    dir1 = median_time(lambda: run_direct(tp, 1, 64), reps)
    rows.append(("fixed overhead per request (tiny-sd, 1 step)", f"{eng1 * 1000:.1f} ms",
                 f"{dir1 * 1000:.1f} ms", f"+{(eng1 - dir1) * 1000:.1f} ms"))  # fmt: skip

    # 3. scheduler swap: fresh scheduler + pipeline object vs reloading the pipeline
    slot = manager.slots[0]
    loaded = slot.cache.get(next(k for k in slot.cache.names() if k.startswith("mid-sd@")))
    fam = FAMILIES["sd15"]
    names = ["Euler a", "DPM++ 2M Karras", "DDIM", "UniPC", "Heun"]
    i = iter(range(10**9))

    def swap():
        sched = build_scheduler(names[next(i) % 5], fam, loaded.pristine_scheduler, [1])
        return fresh_pipeline(loaded.pipeline, sched)

    swap_t = median_time(swap, 50)
    reload_t = median_time(
        lambda: diffusers.DiffusionPipeline.from_pretrained(
            str(models / "mid-sd"), dtype=torch.float32, safety_checker=None
        ),
        3,
    )
    rows.append(("scheduler swap vs pipeline reload (mid-sd)", f"{swap_t * 1000:.2f} ms",
                 f"{reload_t * 1000:.0f} ms", f"{reload_t / swap_t:.0f}x faster"))  # fmt: skip

    # 4. model switch: cached vs cold (tiny-sd <-> mid-sd, 1 step each)
    def one(model: str) -> float:
        r = GenerationRequest(prompt="a", model=model, num_inference_steps=1, width=64,
                              height=64, seed=1, scheduler="Euler")  # fmt: skip
        return manager.generate(r).timings["load"]

    cached = statistics.median(one("mid-sd") + 0 * one("tiny-sd") for _ in range(args.reps))
    cold = []
    for _ in range(3):
        slot.cache.evict(next(k for k in slot.cache.names() if k.startswith("mid-sd@")))
        cold.append(one("mid-sd"))
    cold_t = statistics.median(cold)
    ratio = f"{cold_t / max(cached, 1e-9):.0f}x faster"
    rows.append(("model switch: cached vs cold load (mid-sd)", f"{cached * 1000:.3f} ms",
                 f"{cold_t * 1000:.0f} ms", ratio))  # fmt: skip

    table = format_table(rows)
    print(table)
    if not args.no_record:
        record(table)
    return 0


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| measure | ours | baseline | ratio |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def record(table: str, name: str = "engine_bench") -> None:
    import torch

    head = (
        f"\n## {name}, {time.strftime('%Y-%m-%d %H:%M')}\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), CPU only.\n\n"
    )
    with open(ROOT / "bench" / "RESULTS.md", "a") as f:
        f.write(head + table + "\n")


if __name__ == "__main__":
    sys.exit(main())
