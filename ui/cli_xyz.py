"""The command line of issue 14: styles and hires fix flags for `generate`, and the
`upscale` and `xyz` subcommands.

    python app.py generate --prompt "a castle" --style photo --enable-hr --hr-scale 2 \\
        --hr-upscaler "Latent" --denoising-strength 0.6
    python app.py upscale photo.png --upscaler 4x-UltraSharp --scale 2 --out outputs
    python app.py xyz --x "steps: 10,20" --y "sampler: Euler a, DPM++ 2M" --prompt "a fox"

app.py registers the flags and dispatches here; the engine is imported inside the
functions only (importing this module does nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS = ("upscale", "xyz")
HIRES_FLAGS = ("enable_hr", "hr_scale", "hr_resize_x", "hr_resize_y", "hr_upscaler",
               "hr_second_pass_steps", "hr_prompt", "hr_negative_prompt",
               "hr_sampler_name")  # fmt: skip


def add_generate_arguments(gen: argparse.ArgumentParser) -> None:
    """--style and the hires fix flags (A1111's field names) on a generate-like parser."""
    gen.add_argument("--style", action="append", default=[], metavar="NAME",
                     help="apply a style of the styles file (repeatable, in order)")  # fmt: skip
    hr = gen.add_argument_group("hires fix (A1111's second pass)")
    hr.add_argument("--enable-hr", action="store_true", help="run the hires fix second pass")
    hr.add_argument("--hr-scale", type=float, help="upscale by (2)")
    hr.add_argument("--hr-resize-x", type=int, help="resize width to (0 = from --hr-scale)")
    hr.add_argument("--hr-resize-y", type=int, help="resize height to (0 = from --hr-scale)")
    hr.add_argument("--hr-upscaler", help='"Latent" (default), "Latent (bicubic)", Lanczos, '
                    "Nearest, or an upscaler model of upscalers_dir")  # fmt: skip
    hr.add_argument("--hr-second-pass-steps", type=int, help="hires steps (0 = same as --steps)")
    hr.add_argument("--hr-prompt", help="prompt of the second pass (default: --prompt)")
    hr.add_argument("--hr-negative-prompt", help="negative prompt of the second pass")
    hr.add_argument("--hr-sampler-name", help="sampler of the second pass (default: the same)")
    if not any(a.dest == "strength" for a in gen._actions):
        hr.add_argument("--strength", type=float, help="denoising strength (0.75)")
    hr.add_argument("--denoising-strength", dest="strength", type=float,
                    help="A1111's name of --strength: the hires pass's denoising")  # fmt: skip


def generate_options(args: argparse.Namespace) -> dict[str, Any]:
    """GenerationRequest fields from add_generate_arguments' flags (unset ones left out)."""
    out: dict[str, Any] = {}
    if getattr(args, "style", None):
        out["styles"] = tuple(args.style)
    for name in HIRES_FLAGS:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            out[name] = value
    return out


def add_parsers(sub: Any) -> None:
    """The `upscale` and `xyz` subcommands."""
    from pipelines.settings import ENGINE_SETTINGS, add_arguments

    up = sub.add_parser("upscale", help="upscale an image (A1111's Extras)")
    add_arguments(up, ENGINE_SETTINGS, subcommand=True)
    up.add_argument("image", type=Path, help="the picture (its A1111 parameters are kept)")
    up.add_argument("--upscaler", default="Lanczos",
                    help="Lanczos, Nearest, None, or a model of upscalers_dir")  # fmt: skip
    up.add_argument("--scale", type=float, default=2.0, help="upscale by (2)")
    up.add_argument("--width", type=int, default=0, help="exact width instead of --scale")
    up.add_argument("--height", type=int, default=0, help="exact height instead of --scale")
    up.add_argument("--out", type=Path, help="folder for the PNG (default: outputs dir)")
    up.add_argument("--json", action="store_true", help="print a JSON object")

    xyz = sub.add_parser("xyz", help="X/Y/Z plot: a grid of images over up to three axes")
    add_arguments(xyz, ENGINE_SETTINGS, subcommand=True)
    for axis in ("x", "y", "z"):
        xyz.add_argument(f"--{axis}", metavar='"TYPE: VALUES"',
                         help=f'{axis} axis, e.g. "steps: 10-30 (+10)", "cfg: 3, 7", '
                         '"sampler: Euler a, DPM++ 2M", "prompt s/r: fox, cat"')  # fmt: skip
    xyz.add_argument("--prompt", required=True, help="what to draw")
    xyz.add_argument("--negative-prompt", default="")
    xyz.add_argument("--model")
    xyz.add_argument("--scheduler")
    xyz.add_argument("--steps", type=int)
    xyz.add_argument("--cfg", type=float)
    xyz.add_argument("--seed", type=int, default=-1)
    xyz.add_argument("--width", type=int)
    xyz.add_argument("--height", type=int)
    xyz.add_argument("--lora", action="append", default=[], metavar="NAME:WEIGHT")
    xyz.add_argument("--clip-skip", type=int, default=1)
    xyz.add_argument("--vae")
    add_generate_arguments(xyz)
    xyz.add_argument("--grid-only", action="store_true", help="save the grid(s), not the cells")
    xyz.add_argument("--out", type=Path, help="folder for the PNGs (default: outputs dir)")
    xyz.add_argument("--task-id", help="name the files <task-id>-grid-<k>.png, <task-id>-<n>-0.png")
    xyz.add_argument("--json", action="store_true", help="print a JSON object")


def run(args: argparse.Namespace, build_manager: Callable[..., Any],
        lora_pairs: Callable[[list[str]], dict[str, float]]) -> int:  # fmt: skip
    """Run `upscale` or `xyz`; `error: FIELD: RULE` and exit 2 for bad input."""
    from pipelines.errors import AtelierError, RequestError
    from ui.cli_jobs import EXIT_BAD_INPUT, check_out_dir

    manager, values = build_manager(args)
    out = args.out or (None if values["outputs_dir"] == "off" else Path(values["outputs_dir"]))
    if args.command == "upscale" and out is None:
        out = Path("outputs")
    check_out_dir("out" if args.out else "outputs_dir", out)
    try:
        report = (_upscale if args.command == "upscale" else _xyz)(args, manager, out,
                                                                   lora_pairs)  # fmt: skip
    except AtelierError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(e, RequestError) else 1
    print(json.dumps(report, ensure_ascii=False) if args.json else "\n".join(report["paths"]))
    return 0


def _upscale(args: argparse.Namespace, manager: Any, out: Path, _: Any) -> dict[str, Any]:
    from pipelines.images import open_image
    from pipelines.upscale_job import UpscaleJob, UpscaleRequest

    image = open_image("image", args.image, manager.settings.max_image_pixels, str(args.image))
    req = UpscaleRequest(args.upscaler, args.scale, args.width, args.height)
    result = manager.submit(UpscaleJob(req, image, save_to=out)).result()
    return {"paths": [str(p) for p in result.paths], "size": list(result.images[0].size),
            "infotext": result.infotexts[0], "slot": result.slot,
            "seconds": round(result.timings["total"], 3)}  # fmt: skip


def _xyz(args: argparse.Namespace, manager: Any, out: Path | None,
         lora_pairs: Callable[[list[str]], dict[str, float]]) -> dict[str, Any]:  # fmt: skip
    from pipelines.request import GenerationRequest
    from pipelines.xyz import parse_axis
    from pipelines.xyz_job import XyzJob

    axes = tuple(parse_axis(a, getattr(args, a)) if getattr(args, a) else None
                 for a in ("x", "y", "z"))  # fmt: skip
    base = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative_prompt, model=args.model,
        scheduler=args.scheduler, num_inference_steps=args.steps, guidance_scale=args.cfg,
        width=args.width, height=args.height, seed=args.seed, loras=lora_pairs(args.lora),
        clip_skip=args.clip_skip, vae=args.vae, **generate_options(args),
        **({} if args.strength is None else {"strength": args.strength}),
    )  # fmt: skip
    job = XyzJob(base, axes, save_to=out, task_id=args.task_id, keep_cells=not args.grid_only)
    result = manager.submit(job).result()
    grids = len(result.grids)
    return {"paths": [str(p) for p in result.paths[:grids]] if args.grid_only
            else [str(p) for p in result.paths],
            "grids": grids, "labels": result.labels, "seed": result.request.seed,
            "cells": [{"seeds": c.seeds, "infotext": c.infotexts[0]} for c in result.cells],
            "warnings": result.warnings, "seconds": round(result.timings["total"], 3)}  # fmt: skip
