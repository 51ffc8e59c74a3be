"""Single-file checkpoints: first load of a single file vs the same weights as a
diffusers folder, and the model hash per GB (first time vs cached).

    python bench/singlefile_bench.py [--reps 5] [--gb 1] [--no-record]

1. The built-in tiny-sd and tiny-sdxl are written in the original (LDM) single-file
   layout; each rep loads the folder and the file through the registry, alternately, in
   fresh processes (so neither profits from the other's warm imports), and the medians
   are compared: the ratio is the single file's cost over the folder's.
2. A file of `--gb` GB of random bytes is hashed (A1111's model hash) twice in one
   process, then once in a new process that reads the on-disk hash cache. The page cache
   is warm (the file was just written): a cold disk is slower.
Printed as a table and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LOAD = """
import sys, time
from pathlib import Path
from pipelines.loading import LoadOptions, load_pipeline
from pipelines.registry import ModelRegistry
import diffusers, torch
t0 = time.perf_counter()  # the load, with the pipeline modules diffusers imports lazily
reg = ModelRegistry(Path(sys.argv[1]), Path(sys.argv[2]))
load_pipeline(reg.resolve(sys.argv[3]), torch.device("cpu"), LoadOptions(), ["cpu"])
print(time.perf_counter() - t0)
"""
HASH = """
import sys, time
from pathlib import Path
from pipelines.hashes import model_hash
t0 = time.perf_counter()
model_hash(sys.argv[1], cache_file=Path(sys.argv[2]))
print(time.perf_counter() - t0)
"""


def run(code: str, *args: str) -> float:
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def write_library(root: Path, cache: Path) -> None:
    """models/<name>-folder (a diffusers folder) and models/<name>-file.safetensors."""
    import shutil

    from diffusers import DiffusionPipeline
    from safetensors.torch import save_file

    from pipelines import builtin
    from pipelines import ldm_layout as ldm

    for name, arch in (("tiny-sd", "sd1"), ("tiny-sdxl", "sdxl")):
        folder = builtin.ensure_model(name, cache)
        shutil.copytree(folder, root / f"{name}-folder")
        pipe = DiffusionPipeline.from_pretrained(folder)
        state = ldm.pipeline_to_ldm(pipe.components, arch)
        path = root / f"{name}-file.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        path.with_name(path.stem + ".atelier.json").write_text(f'{{"config": "{name}"}}')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models, cache = Path(tmp) / "models", Path(tmp) / "cache"
        models.mkdir()
        write_library(models, cache)
        for name in ("tiny-sd", "tiny-sdxl"):
            folder, file = [], []
            for _ in range(args.reps):  # interleaved
                folder.append(run(LOAD, str(models), str(cache), f"{name}-folder"))
                file.append(run(LOAD, str(models), str(cache), f"{name}-file"))
            f, s = statistics.median(folder), statistics.median(file)
            what = f"first load, fresh process (lazy diffusers imports in), {name}: file vs folder"
            rows.append((what, f"{s * 1000:.0f} ms", f"{f * 1000:.0f} ms", f"x{s / f:.2f}"))
        big = Path(tmp) / "big.safetensors"
        with big.open("wb") as out:
            chunk = os.urandom(2**24)
            for _ in range(int(args.gb * 2**30 / len(chunk))):
                out.write(chunk)
        gb = big.stat().st_size / 1e9
        hashes = Path(tmp) / "hashes.json"
        first = run(HASH, str(big), str(hashes))
        again = run(HASH, str(big), str(hashes))
        rows.append(("model hash per GB: first time vs from the hash cache (new process)",
                     f"{first / gb:.2f} s/GB", f"{again * 1000 / gb:.2f} ms/GB",
                     f"{first / max(again, 1e-9):.0f}x faster cached"))  # fmt: skip
    import torch

    python = platform.python_version()
    threads = torch.get_num_threads()
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {python}, "
               f"torch {torch.__version__} ({threads} threads), CPU only")  # fmt: skip
    table = ["| measure | ours | baseline | ratio |", "|---|---|---|---|"]
    table += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    text = "\n".join(table)
    print(text)
    if not args.no_record:
        stamp = time.strftime("%Y-%m-%d %H:%M")
        with (ROOT / "bench" / "RESULTS.md").open("a") as f:
            f.write(f"\n## singlefile_bench, {stamp}\n\nMachine: {machine}; {args.reps} "
                    f"interleaved reps, medians; hash file {gb:.2f} GB, page cache warm.\n\n"
                    f"{text}\n")  # fmt: skip


if __name__ == "__main__":
    main()
