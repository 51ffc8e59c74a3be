"""Loading a model onto one device: the single verb that puts weights somewhere.

Chooses the dtype (fp32 on CPU; the family's fp16/bf16 on GPU unless the
settings say otherwise), loads with `from_pretrained` from the local folder
(exactly the same path for built-in, local and Hub models) or, for a single-file
checkpoint, with diffusers' `from_single_file` (pipelines/singlefile.py), moves to
the slot's device and applies the attention/VAE options, which are global on the
shared modules and therefore decided once per cached model.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ModelUnavailableError
from .families import Family
from .registry import ModelEntry

log = logging.getLogger(__name__)

# from_pretrained runs under accelerate's init_empty_weights, which patches
# torch.nn.Module for the whole process while it runs: two loads at once in one
# process hand each other meta tensors ("Cannot copy out of meta tensor").
# Every load of weights (models, LoRAs, ControlNets) takes this lock.
LOAD_LOCK = threading.Lock()

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LoadOptions:
    dtype: str = "auto"  # "auto" | "float32" | "float16" | "bfloat16"
    # "auto": xformers if installed and on CUDA, else SDPA; or "sdpa" / "xformers"
    attention: str = "auto"
    attention_slicing: bool = False
    vae_tiling: bool = False
    # "none"; "model" (whole components move to the GPU when used; needs a GPU);
    # "group" (groups of layers are onloaded as they run: big models on small GPUs)
    offload: str = "none"


OFFLOADS = ("none", "model", "group")


def placement(devices: list[str]) -> dict[str, Any]:
    """from_pretrained arguments for a slot that spans several GPUs ("cuda:0+cuda:1"):
    diffusers' pipeline-level "balanced" map places whole components across them
    (a 14B Wan transformer on one GPU, text encoder and VAE on another)."""
    if len(devices) < 2:
        return {}
    ids = [torch.device(d).index for d in devices]
    if any(torch.device(d).type != "cuda" for d in devices) or None in ids:
        raise ValueError(f"a slot over several devices must list CUDA GPUs, got {devices}")
    return {"device_map": "balanced", "max_memory": {i: _gpu_budget(i) for i in ids}}


def _gpu_budget(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).total_memory * 0.9)


def choose_dtype(option: str, family: Family, device: torch.device) -> torch.dtype:
    if option != "auto":
        if option not in DTYPES:
            raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {option!r}")
        return DTYPES[option]
    if device.type != "cuda":
        return torch.float32  # half precision on CPU is slow or unsupported
    if family.gpu_dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return DTYPES[family.gpu_dtype]


def load_pipeline(
    entry: ModelEntry, device: torch.device, options: LoadOptions, span: list[str] | None = None
) -> Any:
    """A ready base pipeline for `entry` on `device` (or across `span` GPUs).
    Its scheduler is never run."""
    from diffusers import DiffusionPipeline

    if options.offload not in OFFLOADS:
        raise ValueError(f"offload must be one of {', '.join(OFFLOADS)}; got {options.offload!r}")
    if options.offload == "model" and device.type != "cuda":
        raise ModelUnavailableError("offload=model moves components onto a GPU; this slot has none")
    dtype = choose_dtype(options.dtype, entry.family, device)
    extra: dict[str, Any] = {}
    if entry.family.name == "sd15":
        # As in A1111: no safety checker (it blacks out images and costs 1.2 GB).
        extra = {"safety_checker": None, "requires_safety_checker": False}
    if entry.checkpoint is not None and span and len(span) > 1:
        rule = f"model '{entry.name}' is a single file; slots over several GPUs load folders only"
        raise ModelUnavailableError(rule)
    try:
        with LOAD_LOCK:
            if entry.checkpoint is not None:
                from . import singlefile

                pipe = singlefile.load(entry.checkpoint, dtype, entry.name)
            else:
                pipe = DiffusionPipeline.from_pretrained(
                    str(entry.path), dtype=dtype, **extra, **placement(span or [])
                )
    except OSError as e:
        raise ModelUnavailableError(f"model '{entry.name}' could not be loaded: {e}") from e
    if span and len(span) > 1:
        log.info("%s placed over %s by device_map", entry.name, span)  # no .to(), no offload
    elif options.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif options.offload == "group":
        pipe.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=device.type == "cuda",
        )
    else:
        pipe.to(device)
    _apply_options(pipe, device, options)
    log.info("loaded %s (%s) on %s as %s", entry.name, entry.family.name, device, dtype)
    return pipe


def _apply_options(pipe: Any, device: torch.device, options: LoadOptions) -> None:
    use_xformers = options.attention == "xformers" or (
        options.attention == "auto"
        and device.type == "cuda"
        and importlib.util.find_spec("xformers") is not None
    )
    if use_xformers:
        if importlib.util.find_spec("xformers") is None:
            raise ModelUnavailableError("attention=xformers needs the 'xformers' package installed")
        pipe.enable_xformers_memory_efficient_attention()
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    if options.vae_tiling and getattr(pipe, "vae", None) is not None:
        pipe.vae.enable_tiling()


def compose(cls: type, base: Any, scheduler: Any, **overrides: Any) -> Any:
    """A new `cls` pipeline object for one request over every module of `base`.

    Pipelines keep per-call state (`_guidance_scale`, `_interrupt`, ...), so
    concurrent requests must not share one. The constructor form never loads,
    copies or casts the shared modules (unlike `from_pipe` without `dtype`,
    diffusers#12754). Modules `cls` does not take are left out, required ones the
    base lacks are None; non-module config (SDXL's force_zeros_for_empty_prompt,
    Wan's boundary_ratio, ...) is carried over; `overrides` win (e.g. a ControlNet).
    """
    import inspect

    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in base.components.items() if k in params}
    kwargs.update(
        (name, None)
        for name, p in params.items()
        if name not in kwargs and name != "self" and p.default is inspect.Parameter.empty
    )
    kwargs.update(
        (k, v) for k, v in base.config.items() if k in params and k not in kwargs and k[0] != "_"
    )
    kwargs.update(scheduler=scheduler, **overrides)
    pipe = cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def fresh_pipeline(base: Any, scheduler: Any) -> Any:
    """A pipeline object of the base's own class for one request (see `compose`)."""
    return compose(type(base), base, scheduler)
