"""Settings as a table of (name, default, help): one source for flags, environment
variables and the README (a test checks that every setting is documented).

Each setting `foo_bar` is the flag `--foo-bar` and the environment variable
`ATELIER_FOO_BAR`; a flag wins over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import EngineSettings


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    type: Callable[[str], Any] = str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "ATELIER_" + self.name.upper()


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    hint = ""
    if value in SUBCOMMANDS:  # `app.py --api serve`: the bare flag took the subcommand
        hint = (f" (a bare flag before the subcommand reads {text!r} as its value: put "
                f"the flag after {text!r}, or give it true)")  # fmt: skip
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}{hint}")


SUBCOMMANDS = ("serve", "models", "generate", "convert", "video", "upscale", "xyz")  # app.py


def auto_or_int(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or auto, got {text!r}") from None


def auto_or_bool(text: str) -> bool | str:
    return "auto" if text.strip().lower() == "auto" else parse_bool(text)


def _devices(text: str) -> tuple[str, ...]:
    return tuple(d.strip() for d in text.split(",") if d.strip())


ENGINE_SETTINGS: tuple[Setting, ...] = (
    Setting("default_model", "atelier-shapes", "model used when a request names none (the "
            "built-in trained atelier-shapes; tiny-sd etc. are random-weight test models)"),
    Setting("models_dir", "models", "folder of diffusers model folders (each becomes a model)"),
    Setting("loras_dir", "loras", "folder scanned recursively for LoRA .safetensors files"),
    Setting("controlnets_dir", "controlnets", "folder of diffusers ControlNet folders"),
    Setting("annotators_dir", "annotators", "folder of ControlNet preprocessor weights "
            "(HED, MiDaS, OpenPose, ...); nothing is downloaded"),
    Setting("outputs_dir", "outputs", "where images are saved as PNG; 'off' saves nothing"),
    Setting("cache_dir", "", "where built-in models are built (default ~/.cache/atelier)"),
    Setting("devices", "", "comma-separated device slots, e.g. cuda:0,cuda:1 or cpu,cpu; "
            "cuda:0+cuda:1 is one slot over two GPUs (default: every CUDA GPU, else one CPU "
            "slot)", _devices),
    Setting("dtype", "auto", "auto (fp32 on CPU, fp16/bf16 by family on GPU), float32, "
            "float16 or bfloat16"),
    Setting("cache_budget_mb", 0, "model cache size per device slot in MB (0 = 90%% of GPU "
            "memory, or half the RAM shared by CPU slots)", int),
    Setting("attention", "auto", "auto (xformers when installed on CUDA, else PyTorch SDPA), "
            "sdpa or xformers"),
    Setting("attention_slicing", False, "slice attention to save memory (slower)", parse_bool),
    Setting("vae_tiling", False, "decode large images in tiles to save memory", parse_bool),
    Setting("offload", "none", "none, model (components move to the GPU when used) or group "
            "(layer groups onloaded as they run): for models bigger than the GPU"),
    Setting("allow_hub", True, "old name: false is hub_models=off", parse_bool),
    Setting("hub_models", "auto", "what requests may take from the Hugging Face Hub: off, "
            "cached (only what the local HF cache holds; nothing is downloaded), a "
            "comma-separated allow-list of owner/name patterns (downloaded when asked for), "
            "or any; auto = any, but cached on a public studio"),
    Setting("hub_max_gb", 40.0, "largest Hub model (the files its layout needs) a request "
            "may make the server download, in GB", float),
    Setting("flux_base", "", "diffusers Flux folder or Hub id whose text encoders and VAE "
            "go with Flux transformer-only .safetensors files"),
    Setting("preview_every", 0, "live preview every N steps (0 = off)", int),
    Setting("engine", "local", "where jobs run: local (this process's device slots) or ray "
            "(the replicas of a Ray Serve app; pipelines/remote.py)"),
    Setting("ray_address", "auto", "Ray cluster of --engine ray: auto (a local `ray start "
            "--head`) or ray://host:10001"),
    Setting("ray_app", "atelier", "name of the Serve application (deploy/serve.yaml)"),
    Setting("ray_wait_s", 120.0, "most seconds a job waits for a Ray replica to take it "
            "before it fails", float),
    Setting("ray_lanes", 0, "jobs sent to Ray at once, the rest wait here in line (0 = "
            "running replicas at start)", int),
    Setting("lora_mode", "switch", "switch (resident adapters, set per request), fused (fuse "
            "for runs of requests with one LoRA set) or hotswap (for torch.compile)"),
    Setting("lora_cache_count", 16, "LoRA adapters kept loaded per cached model", int),
    Setting("lora_cache_mb", 2048, "MB of LoRA adapters kept loaded per cached model", int),
    Setting("lora_hotswap_rank", 64, "highest LoRA rank accepted in hotswap mode", int),
    Setting("max_work", "auto", "most work one request may ask for: width x height x steps "
            "x images (x frames for video); 0 = unlimited; auto = unlimited, but on a public "
            "studio the largest default of a documented family (Wan 2.2 TI2V-5B, 1280x704 x "
            "50 steps x 121 frames)", auto_or_int),
    Setting("max_image_pixels", 40_000_000, "largest image (width x height) any entry point "
            "accepts, checked from the file's header before it is decoded", int),
    Setting("sdxl_clip_l_skip", False, "apply clip skip on SDXL to CLIP-L only, as A1111's "
            "option of that name (off: SDXL ignores clip skip, as A1111 by default)",
            parse_bool),
    Setting("embeddings_dir", "embeddings", "folder of textual-inversion embeddings "
            "(A1111 .safetensors; the file name is the prompt word)"),
    Setting("vae_dir", "vae", "folder of VAEs: single .safetensors files and diffusers VAE "
            "folders, chosen per request"),
    Setting("styles_file", "styles.csv", "A1111 styles file (name,prompt,negative_prompt; "
            "{prompt} placeholder); styles saved from the studio go here"),
    Setting("upscalers_dir", "upscalers", "folder of upscaler models (ESRGAN, Real-ESRGAN, "
            "SwinIR, ... as .safetensors) for hires fix and Extras"),
    # -- task status in Redis, outputs to S3 (issue 15; pipelines/status.py, storage.py) --
    Setting("redis_url", "", "Redis URL for task status and progress (redis://host:6379/0, "
            "rediss:// for TLS); empty = off. Jobs go on when Redis is unreachable"),
    Setting("redis_ttl_s", 86400, "seconds a task's status hash is kept after its last "
            "change (0 = kept until deleted)", int),
    Setting("s3_bucket", "", "S3 bucket every saved output (PNG, video, JSON) is uploaded "
            "to; empty = off. Credentials come only from the AWS chain (env, ~/.aws, "
            "instance role). Needs outputs_dir (or --out): uploads are of saved files"),
    Setting("s3_prefix", "", "key prefix of uploaded outputs: <prefix>/<task>/<file>"),
    Setting("s3_endpoint_url", "", "S3-compatible server (MinIO, R2, Ceph), e.g. "
            "http://minio:9000; empty = AWS"),
    Setting("s3_region", "", "S3 region; empty = the AWS chain's (AWS_DEFAULT_REGION, "
            "~/.aws/config)"),
    Setting("s3_presign_seconds", 0, "give presigned GET URLs of uploaded outputs valid this "
            "many seconds (0 = plain object URLs)", int),
)  # fmt: skip


def add_arguments(
    parser: argparse.ArgumentParser, table: tuple[Setting, ...], subcommand: bool = False
) -> None:
    """Add a flag per setting. On a subcommand's parser the flags default to
    SUPPRESS, so `app.py --x 1 generate` and `app.py generate --x 1` both work."""
    default = argparse.SUPPRESS if subcommand else None
    for s in table:
        # A boolean flag alone means true (`--api`, as A1111's); `--api false` still works.
        bare = {"nargs": "?", "const": True} if s.type in (parse_bool, auto_or_bool) else {}
        parser.add_argument(s.flag, dest=s.name, type=s.type, default=default, **bare,
                            help=f"{s.help} [env {s.env}; default {s.default!r}]")  # fmt: skip


def resolve(
    table: tuple[Setting, ...], args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Flag, else environment variable, else default, for every setting of the table."""
    env = os.environ if env is None else env
    values = {}
    for s in table:
        value = getattr(args, s.name, None)
        if value is None and s.env in env:
            value = s.type(env[s.env])
        values[s.name] = s.default if value is None else value
    return values


def engine_settings(values: Mapping[str, Any]) -> EngineSettings:
    """EngineSettings from resolved values (imports the engine, hence torch, only here).
    A server adds its admission limits and `public` (ui.settings.engine_limits); the
    engine's `auto` defaults are the private ones unless `public` is true."""
    from .core import EngineSettings
    from .loading import LoadOptions

    def path(name: str) -> Path | None:
        return Path(values[name]).expanduser() if values[name] else None

    return EngineSettings(
        devices=tuple(values["devices"] or ()),
        default_model=values["default_model"],
        models_dir=path("models_dir"),
        loras_dir=path("loras_dir"),
        controlnets_dir=path("controlnets_dir"),
        annotators_dir=path("annotators_dir"),
        cache_root=path("cache_dir"),
        cache_budget_mb=values["cache_budget_mb"] or None,
        allow_hub=values["allow_hub"],
        hub_models=auto_hub(values["hub_models"], values["allow_hub"], values.get("public", False)),
        hub_max_gb=values["hub_max_gb"],
        flux_base=values["flux_base"] or None,
        preview_every=values["preview_every"],
        lora_mode=values["lora_mode"],
        lora_cache_count=values["lora_cache_count"],
        lora_cache_mb=values["lora_cache_mb"],
        lora_hotswap_rank=values["lora_hotswap_rank"],
        # the server's admission limits, when a server resolved them (ui/settings.py)
        queue_size=values.get("queue_size", 0),
        max_jobs_per_user=values.get("max_jobs_per_user", 0),
        max_work=auto_work(values["max_work"], values.get("public", False)),
        max_image_pixels=values["max_image_pixels"],
        sdxl_clip_l_skip=values["sdxl_clip_l_skip"],
        embeddings_dir=path("embeddings_dir"),
        vae_dir=path("vae_dir"),
        styles_file=path("styles_file"),
        upscalers_dir=path("upscalers_dir"),
        load=LoadOptions(
            dtype=values["dtype"],
            attention=values["attention"],
            attention_slicing=values["attention_slicing"],
            vae_tiling=values["vae_tiling"],
            offload=values["offload"],
        ),
    )


def auto_work(value: int | str, public: bool) -> int:
    """max_work: as set, or (auto) unlimited, or on a public studio the largest default
    request of a documented family (so every family's defaults run)."""
    if value != "auto":
        return int(value)
    if not public:
        return 0
    from .families import FAMILIES

    return max(f.default_size * (f.default_height or f.default_size) * f.default_steps
               * (f.default_frames if f.kind == "video" else 4)
               for f in FAMILIES.values())  # fmt: skip


def auto_hub(value: str, allow_hub: bool, public: bool) -> str:
    """hub_models: off when the old allow_hub is false; auto = cached on a public studio
    (nothing downloaded on a stranger's request), else any."""
    if not allow_hub:
        return "off"
    if value.strip().lower() == "auto":
        return "cached" if public else "any"
    return value
