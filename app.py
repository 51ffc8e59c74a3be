"""Atelier: a browser studio for diffusion models.

    python app.py                      # the studio on http://127.0.0.1:7860
    python app.py serve --port 8000    # the same, with server settings
    python app.py models --json        # list models
    python app.py generate --prompt "a red fox" --steps 20 --out outputs
    python app.py generate --jobs jobs.jsonl --out outputs

Nothing happens at import: settings are read and the engine is built in main().
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ui import cli_xyz
from ui.cli_jobs import (
    EXIT_BAD_INPUT,
    check_out_dir,
    default_controlnet,
    open_image,
    run_jobs,
    run_one,
)

if TYPE_CHECKING:
    from pipelines.manager import PipelineManager


def build_parser() -> argparse.ArgumentParser:
    from pipelines.settings import ENGINE_SETTINGS, add_arguments
    from ui.settings import SERVER_SETTINGS

    # No abbreviations: with many --lora-* settings, `generate --lora x:1` would be an
    # ambiguous prefix for the top-level parser, which sees every argument first.
    parser = argparse.ArgumentParser(
        prog="app.py", description="Atelier diffusion studio", allow_abbrev=False
    )
    add_arguments(parser, ENGINE_SETTINGS)
    add_arguments(parser, SERVER_SETTINGS)
    parser.add_argument("--log-level", default="WARNING", help="logging level (default WARNING)")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the studio in the browser (the default command)")
    add_arguments(serve, ENGINE_SETTINGS, subcommand=True)
    add_arguments(serve, SERVER_SETTINGS, subcommand=True)

    models = sub.add_parser("models", help="list the available models")
    add_arguments(models, ENGINE_SETTINGS, subcommand=True)
    models.add_argument("--json", action="store_true", help="print a JSON list")

    gen = sub.add_parser("generate", help="generate images from the command line")
    add_arguments(gen, ENGINE_SETTINGS, subcommand=True)
    gen.add_argument("--prompt", help="what to draw")
    gen.add_argument("--negative-prompt", default="", help="what to avoid")
    gen.add_argument("--model", help="model name, Hub id (owner/name) or local diffusers folder")
    gen.add_argument("--scheduler", help='sampler name as in the table, e.g. "DPM++ 2M Karras"')
    gen.add_argument("--steps", type=int, help="number of denoising steps")
    gen.add_argument("--cfg", type=float, help="classifier-free guidance scale")
    gen.add_argument("--seed", type=int, default=-1, help="seed of image 0 (-1 = random)")
    gen.add_argument("--width", type=int)
    gen.add_argument("--height", type=int)
    gen.add_argument("--batch-size", type=int, default=1, help="images per call")
    gen.add_argument("--batch-count", type=int, default=1, help="number of calls")
    gen.add_argument("--lora", action="append", default=[], metavar="NAME:WEIGHT",
                     help="apply a LoRA (repeatable)")  # fmt: skip
    # -- prompt encoding and VAE (issue 11) --
    gen.add_argument(
        "--clip-skip",
        type=int,
        default=1,
        metavar="N",
        help="A1111 clip skip: 1 = last text-encoder layer, 2 = penultimate",
    )
    gen.add_argument(
        "--vae",
        metavar="NAME",
        help="a VAE of the VAE folder (vae_dir) by name; default: the model's own",
    )
    # -- end prompt encoding and VAE --
    add_image_arguments(gen)
    cli_xyz.add_generate_arguments(gen)  # --style, hires fix (issue 14)
    gen.add_argument("--out", type=Path, help="folder for the PNGs (default: outputs dir)")
    gen.add_argument("--task-id", help="name the files <task-id>-<n>.png and echo it in --json")
    gen.add_argument("--jobs", type=Path, help="JSON-lines file of requests, one per line")
    gen.add_argument("--json", action="store_true", help="print a JSON object per request")
    add_video_parser(sub)
    cli_xyz.add_parsers(sub)  # upscale, xyz (issue 14)
    conv = sub.add_parser("convert", help="rewrite a pickled .ckpt/.pt/.bin/.pth as .safetensors")
    conv.add_argument("file", type=Path, help="the pickled checkpoint (loaded weights-only)")
    conv.add_argument("--out", type=Path, help="output file (default: FILE with .safetensors)")
    return parser


def add_image_arguments(gen: argparse.ArgumentParser) -> None:
    """Image-to-image, inpainting and one ControlNet unit (more units: --jobs)."""
    img = gen.add_argument_group("image to image / inpainting")
    img.add_argument("--init-image", type=Path, metavar="PATH", help="start from this image")
    img.add_argument("--strength", type=float, help="denoising strength, 0 < F <= 1 (0.75)")
    img.add_argument("--mask", type=Path, metavar="PATH",
                     help="inpaint: white = repaint; same size as --init-image")  # fmt: skip
    img.add_argument("--mask-blur", type=int, help="blur of the mask in pixels (4)")
    img.add_argument(
        "--inpaint-area",
        choices=["whole", "masked"],
        help="inpaint the whole picture (default) or only a crop around the mask",
    )
    img.add_argument("--inpaint-padding", type=int, help="pixels around the mask for 'masked' (32)")
    cn = gen.add_argument_group("ControlNet (one unit)")
    cn.add_argument("--control-image", type=Path, metavar="PATH", help="enables the unit")
    cn.add_argument("--control-type", default="none", metavar="NAME",
                    help="preprocessor: none (image = map), canny, shuffle, ...")  # fmt: skip
    cn.add_argument("--control-scale", type=float, default=1.0, help="conditioning scale")
    cn.add_argument("--control-start", type=float, default=0.0, help="guidance start, 0..1")
    cn.add_argument("--control-end", type=float, default=1.0, help="guidance end, 0..1")
    cn.add_argument("--controlnet", metavar="NAME",
                    help="ControlNet (default: the first one for the model's family)")  # fmt: skip


def add_video_parser(sub: Any) -> None:
    from pipelines.settings import ENGINE_SETTINGS, add_arguments

    vid = sub.add_parser("video", help="generate a video with a Wan model")
    add_arguments(vid, ENGINE_SETTINGS, subcommand=True)
    vid.add_argument("--prompt", required=True, help="what happens in the video")
    vid.add_argument("--negative-prompt", default="", help="what to avoid")
    vid.add_argument("--model", help="Wan model name or folder (default tiny-wan)")
    vid.add_argument("--image", type=Path, help="start image (image-to-video models)")
    vid.add_argument("--end-image", type=Path, help="end image (where the model supports it)")
    vid.add_argument("--frames", type=int, help="number of frames, 4k+1 (e.g. 81)")
    vid.add_argument("--fps", type=int, default=16, help="frames per second of the file")
    vid.add_argument("--width", type=int)
    vid.add_argument("--height", type=int)
    vid.add_argument("--steps", type=int, help="number of denoising steps")
    vid.add_argument("--cfg", type=float, help="guidance scale")
    vid.add_argument("--cfg2", type=float, help="guidance of the low-noise expert (Wan 2.2 A14B)")
    vid.add_argument("--flow-shift", type=float, help="flow shift (default: the model's)")
    vid.add_argument("--scheduler", help='e.g. "UniPC", "Flow Euler"')
    vid.add_argument("--seed", type=int, default=-1)
    vid.add_argument("--lora", action="append", default=[], metavar="NAME:WEIGHT")
    vid.add_argument(
        "--lora-experts",
        default="both",
        choices=["both", "high", "low"],
        help="Wan 2.2 A14B: LoRAs into both experts, or the high/low-noise one",
    )
    vid.add_argument("--out", type=Path, help="folder for the file (default: outputs dir)")
    vid.add_argument("--format", default="mp4", choices=["mp4", "webp", "gif", "frames"])
    vid.add_argument("--task-id", help="the task's name in Redis and S3 (see --redis-url)")
    vid.add_argument("--json", action="store_true", help="print a JSON object")


def cmd_video(args: argparse.Namespace) -> int:
    from pipelines.errors import AtelierError
    from pipelines.export import save_video
    from pipelines.video import VideoJob, VideoRequest

    manager, values = build_manager(args)
    out = _out_dir(args, values) or Path("outputs")
    check_out_dir("out" if args.out else "outputs_dir", out)  # before the work, not after
    try:
        model = _model_arg(manager, args.model)
        limit = manager.settings.max_image_pixels
        images = {key: open_image(key, getattr(args, key), None, limit)
                  for key in ("image", "end_image") if getattr(args, key) is not None}  # fmt: skip
        req = VideoRequest(
            prompt=args.prompt, negative_prompt=args.negative_prompt, model=model,
            scheduler=args.scheduler, num_frames=args.frames, fps=args.fps, width=args.width,
            height=args.height, num_inference_steps=args.steps, guidance_scale=args.cfg,
            guidance_scale_2=args.cfg2, flow_shift=args.flow_shift, seed=args.seed,
            loras=_lora_pairs(args.lora), lora_experts=args.lora_experts,
        )  # fmt: skip
    except AtelierError as e:
        manager.refused(args.task_id, e, kind="video")
        return _print_error(e)
    try:
        job = manager.submit(VideoJob(req, **images), task_id=args.task_id)
        result = job.result()
        path, sidecar = save_video(result.frames, out, result.request.fps, result.parameters,
                                   fmt=args.format, stem=f"video-{result.seed}")  # fmt: skip
        meta = {"seed": result.seed, "model": result.request.model}
        urls = manager.store_files(job, [path, sidecar], meta)  # S3 and Redis, when set
    except AtelierError as e:
        return _print_error(e)
    for warning in result.warnings:  # e.g. LoRA layers that did not load
        print(f"warning: {warning}", file=sys.stderr)
    if args.json:
        report = {"paths": [str(path), str(sidecar)], "seed": result.seed,
                  "request": result.request.to_dict(),
                  "seconds": round(result.timings["total"], 3)}  # fmt: skip
        if manager.reporter is not None or manager.store is not None:
            report["task_id"] = manager.task_name(job)
        if manager.store is not None:
            report["urls"] = urls
        if result.warnings:
            report["warnings"] = list(result.warnings)
        print(json.dumps(report))
    else:
        print(f"{path}\n{sidecar}")
    return 0


def build_manager(args: argparse.Namespace, server: dict[str, Any] | None = None) -> Any:
    """The engine from the engine settings (and a server's admission limits, if any)."""
    from pipelines.manager import PipelineManager
    from pipelines.settings import ENGINE_SETTINGS, engine_settings, resolve
    from ui.settings import engine_limits

    values = resolve(ENGINE_SETTINGS, args)
    limits = engine_limits(server) if server else {}
    manager = PipelineManager(engine_settings({**values, **limits}))
    from pipelines.remote import apply_engine

    apply_engine(manager, values)  # --engine ray: jobs run on Ray Serve replicas
    attach_integrations(manager, values, saves=values["outputs_dir"] != "off" or bool(
        getattr(args, "out", None)))  # fmt: skip
    return manager, values


def attach_integrations(manager: Any, values: dict[str, Any], saves: bool) -> None:
    """Task status in Redis and outputs to S3 when set (checked now: a wrong bucket stops
    the start with `error: s3_bucket: ...`); the last states are written at exit."""
    import atexit

    from pipelines.status import RedisReporter
    from pipelines.storage import S3Store

    manager.attach(RedisReporter.from_settings(values), S3Store.from_settings(values, saves))
    if manager.reporter is not None:
        atexit.register(manager.close, 10)


def cmd_models(args: argparse.Namespace) -> int:
    manager, _ = build_manager(args)
    entries = [e.to_dict() for e in manager.registry.list()]
    if args.json:
        print(json.dumps(entries, indent=2))
    else:
        for e in entries:
            print(f"{e['name']:<24} {e['family']:<6} {e['path']}")
    return 0


def _model_arg(manager: PipelineManager, model: str | None) -> str | None:
    """--model as given, or, for a local folder (trusted on the command line), the name
    it gets when added to the registry."""
    if model and Path(model).expanduser().exists():
        return manager.registry.add(model)
    return model


def _check_auth(value: str) -> None:
    """--auth without a colon (or an empty auth file): one `error: auth: ...` line."""
    from pipelines.errors import RequestError
    from ui.settings import parse_auth

    try:
        parse_auth(value)
    except (OSError, ValueError) as e:
        raise RequestError("auth", str(e)) from None


def _print_error(e: Exception) -> int:
    """Print an engine error; the exit code: EXIT_BAD_INPUT for a RequestError, else 1."""
    from pipelines.errors import RequestError

    print(f"error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT if isinstance(e, RequestError) else 1


def _lora_pairs(items: list[str]) -> dict[str, float]:
    from pipelines.errors import RequestError

    pairs = {}
    for item in items:
        name, sep, weight = item.rpartition(":")
        if not sep:
            name, weight = item, "1"
        try:
            pairs[name] = float(weight)
        except ValueError:
            raise RequestError("lora", f"must be NAME:WEIGHT with a number, got {item!r}") from None
    return pairs


def _inputs_from_args(args: argparse.Namespace, manager: PipelineManager, model: str | None) -> Any:
    """(units, Inputs) from --init-image/--mask/--control-*; files checked before any work."""
    from pipelines.tasks import Inputs

    limit = manager.settings.max_image_pixels
    inputs = Inputs(open_image("init_image", args.init_image, None, limit),
                    open_image("mask_image", args.mask, None, limit))  # fmt: skip
    units = []
    if args.control_image is not None:
        inputs.control_images.append(open_image("control_image", args.control_image, None,
                                                 limit))  # fmt: skip
        units.append({"model": args.controlnet or default_controlnet(manager, model),
                      "module": args.control_type, "weight": args.control_scale,
                      "guidance_start": args.control_start,
                      "guidance_end": args.control_end})  # fmt: skip
    return units, inputs


def _request_from_args(args: argparse.Namespace, manager: PipelineManager) -> Any:
    """(request, Inputs) from the generate subcommand's flags."""
    from pipelines.errors import RequestError
    from pipelines.request import GenerationRequest

    if not args.prompt and args.prompt != "":
        raise RequestError("prompt", "is required (--prompt TEXT) unless --jobs is given")
    model = _model_arg(manager, args.model)
    units, inputs = _inputs_from_args(args, manager, model)
    image_options = {k: v for k, v in (("strength", args.strength),
                                       ("mask_blur", args.mask_blur),
                                       ("inpaint_area", args.inpaint_area),
                                       ("inpaint_padding", args.inpaint_padding))
                     if v is not None}  # fmt: skip
    request = GenerationRequest(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        model=model,
        scheduler=args.scheduler,
        num_inference_steps=args.steps,
        guidance_scale=args.cfg,
        width=args.width,
        height=args.height,
        seed=args.seed,
        batch_size=args.batch_size,
        batch_count=args.batch_count,
        loras=_lora_pairs(args.lora),
        clip_skip=args.clip_skip,
        vae=args.vae,
        controlnets=units,
        **image_options,
        **cli_xyz.generate_options(args),
    )
    return request, inputs


def _out_dir(args: argparse.Namespace, values: dict) -> Path | None:
    if args.out:
        return args.out
    return None if values["outputs_dir"] == "off" else Path(values["outputs_dir"])


def cmd_generate(args: argparse.Namespace) -> int:
    from pipelines.errors import AtelierError
    from ui.cli_parallel import parallel_state, run_parallel

    state = parallel_state(args) if args.jobs else None  # torchrun / accelerate launch
    manager, values = build_manager(args)
    out = _out_dir(args, values)
    check_out_dir("out" if args.out else "outputs_dir", out)  # before the work, not after
    if args.jobs:
        if state is not None:  # this process's share; rank 0 prints every line
            return run_parallel(state, manager, args.jobs, out)
        return run_jobs(manager, args.jobs, out)
    try:
        try:
            request, inputs = _request_from_args(args, manager)
        except AtelierError as e:  # refused before it reached the engine: a failed task
            manager.refused(args.task_id, e)
            raise
        report = run_one(manager, request, out, args.task_id, inputs)
    except AtelierError as e:
        return _print_error(e)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print("\n".join(report["paths"]))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The studio: settings -> engine (built once) -> UI -> Gradio server (blocks)."""
    from ui import rest
    from ui.runner import on_zerogpu
    from ui.settings import launch_options, server_values, trusted_proxies
    from ui.studio import build_studio

    server = server_values(args)
    _check_auth(server["auth"])
    zerogpu = on_zerogpu()
    if zerogpu:
        try:  # before any device is probed: ZeroGPU makes CUDA visible on import
            import spaces  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            zerogpu = False
    manager, values = build_manager(args, server)
    if zerogpu:
        manager.preload(manager.settings.default_model)  # outside the GPU function
    demo, assets = build_studio(manager, values["outputs_dir"],
                                trusted_proxies=trusted_proxies(server),
                                public=server["public_resolved"])  # fmt: skip
    rest.launch(demo, {**launch_options(server), **assets}, server)  # + REST APIs with --api
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    """Pickle -> .safetensors with torch.load(weights_only=True); refuses what needs more."""
    from pipelines.errors import AtelierError
    from pipelines.singlefile import convert_pickle

    try:
        done = convert_pickle(args.file, args.out)
    except AtelierError as e:
        return _print_error(e)
    if done.dropped:
        print(f"left out (not tensors): {', '.join(done.dropped)}", file=sys.stderr)
    print(done.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from pipelines.errors import RequestError

    try:  # a bad flag or file found before any work: `error: FIELD: RULE`, exit 2
        if args.command == "models":
            return cmd_models(args)
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "video":
            return cmd_video(args)
        if args.command == "convert":
            return cmd_convert(args)
        if args.command in cli_xyz.COMMANDS:
            return cli_xyz.run(args, build_manager, _lora_pairs)
        return cmd_serve(args)  # no subcommand, or "serve"
    except RequestError as e:
        return _print_error(e)


if __name__ == "__main__":
    sys.exit(main())
