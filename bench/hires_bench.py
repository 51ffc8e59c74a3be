"""Hires fix as one job vs its two passes run by hand, on the same engine.

    python bench/hires_bench.py [--model tiny-sd] [--size 64] [--steps 8] [--repeat 5]

"By hand" is what a user without hires fix does: generate at the base size, upscale
the picture (Lanczos), then image to image at the large size with the same seed,
steps and denoising strength: two jobs. The hires job does the same work in one job
(one queue wait, one slot, the prompt encoded once); with `Latent` it also skips the
first pass's VAE decode and the second pass's VAE encode. Each row is the median of
`--repeat` runs after one warm-up; the ratio is hires / by hand (< 1 = hires faster).
Prints a Markdown table (append it to bench/RESULTS.md with the machine line).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-sd")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--scale", type=float, default=2.0)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from PIL import Image

    from pipelines import EngineSettings, GenerationRequest, PipelineManager
    from pipelines.tasks import Inputs

    manager = PipelineManager(EngineSettings(devices=("cpu",), cache_root=args.cache_dir,
                                             loras_dir=None, models_dir=None))  # fmt: skip
    base = dict(prompt="a lighthouse at dusk, detailed", model=args.model, seed=11,
                scheduler="Euler", num_inference_steps=args.steps, width=args.size,
                height=args.size, strength=args.strength)  # fmt: skip
    big = int(args.size * args.scale)

    def hires(upscaler: str) -> None:
        manager.generate(GenerationRequest(**base, enable_hr=True, hr_scale=args.scale,
                                           hr_upscaler=upscaler))  # fmt: skip

    def by_hand() -> None:
        first = manager.generate(GenerationRequest(**base)).images[0]
        up = first.resize((big, big), Image.LANCZOS)
        manager.generate(GenerationRequest(**{**base, "width": big, "height": big}),
                         inputs=Inputs(init_image=up))  # fmt: skip

    # Interleaved (hand, Lanczos, Latent, hand, ...): a shared machine's load changes
    # over minutes, and each ratio compares runs made side by side.
    runs = {"hand": by_hand, "Lanczos": lambda: hires("Lanczos"),
            "Latent": lambda: hires("Latent")}  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up: load, first hash, caches
    for _ in range(args.repeat):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    hand = statistics.median(times["hand"])
    rows = [("hires fix, Lanczos (one job)", statistics.median(times["Lanczos"])),
            ("hires fix, Latent (one job)", statistics.median(times["Latent"]))]  # fmt: skip
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), CPU only; {args.model} {args.size}px -> "
        f"{big}px, {args.steps} steps, denoising {args.strength}, median of {args.repeat}.\n"
    )
    print("| measure | hires fix | two passes by hand | ratio |\n|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t * 1000:.0f} ms | {hand * 1000:.0f} ms | {t / hand:.2f} |")


if __name__ == "__main__":
    main()
