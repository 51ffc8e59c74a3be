"""Single-file checkpoints: what a `.safetensors` file is, whether it is whole, and loading it.

Policy
- The family comes from the tensors, never the name, and only from the header
  (key names and shapes; nothing is loaded to decide): SD 1.x (CLIP-L under
  `cond_stage_model.transformer.`), SD 2.x (OpenCLIP under `cond_stage_model.model.`),
  SDXL base (`conditioner.embedders.0/1`), each optionally inpainting (9-channel
  UNet input), and Flux transformer-only files (`double_blocks`/`single_blocks`).
  Anything else is refused with the key prefixes that were found.
- Configs never come from the network: SD/SDXL use the config-only folders in
  `assets/configs/` (tokenizers included), Flux uses the diffusers Flux folder of
  the `flux_base` setting for its transformer config, text encoders and VAE. A
  sidecar `NAME.atelier.json` = `{"config": FOLDER}` names another config folder
  (a path relative to the file's folder, an absolute path, or a built-in model name
  such as "tiny-sd"): how the tiny test models are loaded, and the way out for an
  architecture variant we do not ship. A sidecar `NAME.yaml` (A1111's original
  config) sets the prediction type through `model.params.parameterization: "v"`.
- Every key is accounted for before loading (diffusers only warns about unused
  keys and leaves missing ones unset): diffusers' own LDM->diffusers converters run
  over the file's header as `meta` tensors that remember which file keys they came
  from; a model weight nobody produced, a file key nobody used, or a wrong shape
  refuses the file with the names. Known-unused keys (schedule buffers, EMA copies,
  CLIP position ids, OpenCLIP's logit scale, SD 2.x's unused last text layer) are
  listed in IGNORED and are the only exceptions.
- SD 2.x epsilon or v-prediction is told apart as A1111 does: one UNet pass at
  t=999 on constant inputs; a mean of (output - input) below -1 means v.
- Pickles (`.ckpt`, `.pt`, `.bin`, `.pth`) are never opened: unpickling can run
  code. `convert_pickle` (CLI `app.py convert`) rewrites one as `.safetensors`
  with `torch.load(weights_only=True)`, which refuses anything but plain data.
"""

from __future__ import annotations

import json
import re
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import RequestError

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "assets" / "configs"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".bin", ".pth")
UNET = "model.diffusion_model."
CLIP_L, OPENCLIP = "clip", "openclip"  # text encoder layouts (ldm_layout.py describes both)

# arch -> (engine family, label, {text encoder: (layout, key prefix)}, {inpaint: shipped config})
ARCHES: dict[str, tuple[str, str, dict[str, tuple[str, str]], dict[bool, str]]] = {
    "sd1": ("sd15", "SD 1.x", {"text_encoder": (CLIP_L, "cond_stage_model.transformer.")},
            {False: "sd15", True: "sd15-inpaint"}),
    "sd2": ("sd15", "SD 2.x", {"text_encoder": (OPENCLIP, "cond_stage_model.model.")},
            {False: "sd2"}),
    "sdxl": ("sdxl", "SDXL", {"text_encoder": (CLIP_L, "conditioner.embedders.0.transformer."),
                              "text_encoder_2": (OPENCLIP, "conditioner.embedders.1.model.")},
             {False: "sdxl-base", True: "sdxl-inpaint"}),
    "flux": ("flux", "Flux transformer", {}, {}),
}  # fmt: skip
PIPELINES = {("sd15", False): "StableDiffusionPipeline",
             ("sd15", True): "StableDiffusionInpaintPipeline",
             ("sdxl", False): "StableDiffusionXLPipeline",
             ("sdxl", True): "StableDiffusionXLInpaintPipeline"}  # fmt: skip
# What original trainers saved but inference never reads (diffusers skips them too): the
# noise schedule's buffers, EMA copies, CLIP position ids, OpenCLIP's logit scale, and
# SD 2.x's last text layer and projection (it conditions on the penultimate layer).
_SCHEDULE = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
             "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
             "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
             "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
             "logvar", "lvlb_weights", "denoiser.sigmas"]  # fmt: skip
IGNORED = re.compile("|".join([
    *(re.escape(k) + "$" for k in _SCHEDULE), r"model_ema\.", r".*\.position_ids$",
    r".*\.logit_scale$", r"cond_stage_model\.model\.text_projection$",
    r"cond_stage_model\.model\.transformer\.resblocks\.23\.",
]))  # fmt: skip


@dataclass(frozen=True)
class Checkpoint:
    """What a single file is. `config` is None only for Flux without `flux_base`."""

    path: Path
    arch: str  # "sd1" | "sd2" | "sdxl" | "flux"
    inpaint: bool  # 9-channel UNet input: only the inpaint task can run it
    config: Path | None
    config_source: str  # "shipped" | "sidecar" | "flux_base" | "none"
    prediction: str | None  # from NAME.yaml; None: the config's (SD 2.x: the A1111 test)

    @property
    def family(self) -> str:
        return ARCHES[self.arch][0]

    @property
    def label(self) -> str:
        return ARCHES[self.arch][1] + (" inpainting" if self.inpaint else "")


def read_header(path: Path) -> dict[str, list[int]]:
    """Key -> shape, from the JSON header of a .safetensors file (the tensors are not read)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 2**20 or n > path.stat().st_size:
                raise ValueError(f"header length {n} is impossible")
            header = json.loads(f.read(n))
        return {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    except (OSError, ValueError, struct.error, KeyError, TypeError) as e:
        raise RequestError("model", f"{path.name} is not a readable .safetensors file ({e})") from e


def prefixes(keys: Any, top: int = 8) -> str:
    """'model.diffusion_model (686), first_stage_model.decoder (124), ...': what a file holds."""
    counts = Counter(".".join(k.split(".")[:2]) for k in keys)
    return ", ".join(f"{p} ({n})" for p, n in counts.most_common(top)) or "no tensors"


def detect(header: dict[str, list[int]], name: str) -> tuple[str, bool]:
    """(arch, inpaint) from key names and shapes; RequestError naming what was found."""
    keys = {k.removeprefix(UNET) for k in header}
    has = lambda prefix: any(k.startswith(prefix) for k in header)  # noqa: E731
    if {k.split(".")[0] for k in keys} >= {"double_blocks", "single_blocks"}:
        return "flux", False
    conv_in = header.get(UNET + "input_blocks.0.0.weight") or [0, 0]
    arch = None
    if has(UNET) and has("conditioner.embedders.1.model.") and has("conditioner.embedders.0.t"):
        arch = "sdxl"
    elif has(UNET) and has("conditioner.embedders.0.model."):
        raise RequestError("model", f"{name} is an SDXL refiner, which Atelier does not run")
    elif has(UNET) and has("cond_stage_model.model."):
        arch = "sd2"
    elif has(UNET) and has("cond_stage_model.transformer."):
        arch = "sd1"
    if arch is None or len(conv_in) != 4 or conv_in[1] not in (4, 9):
        rule = (f"{name} is not a checkpoint Atelier recognises (SD 1.x, SD 2.x, SDXL, their "
                "inpainting variants, or a Flux transformer); found "
                f"{len(header)} tensors; key prefixes: {prefixes(header)}")  # fmt: skip
        raise RequestError("model", rule)
    return arch, conv_in[1] == 9


def _sidecar_config(path: Path, cache_root: Path | None) -> Path | None:
    side = path.with_name(path.stem + ".atelier.json")
    if not side.is_file():
        return None
    try:
        value = json.loads(side.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RequestError(
            "model", f'{side.name} must be JSON like {{"config": FOLDER}} ({e})'
        ) from e
    from . import builtin

    if value in builtin.BUILTIN_MODELS:
        return builtin.ensure_model(value, cache_root)
    folder = (path.parent / Path(value).expanduser()).resolve()
    if not (folder / "model_index.json").is_file():
        raise RequestError("model", f"{side.name} names {value!r}, which is no diffusers folder")
    return folder


def _sidecar_prediction(path: Path) -> str | None:
    """A1111's NAME.yaml: `parameterization: "v"` under model.params means v-prediction."""
    side = path.with_suffix(".yaml")
    if not side.is_file():
        return None
    import yaml

    try:
        params = (yaml.safe_load(side.read_text()) or {}).get("model", {}).get("params", {})
    except (OSError, yaml.YAMLError, AttributeError) as e:
        raise RequestError("model", f"{side.name} is not a readable config ({e})") from e
    return "v_prediction" if params.get("parameterization") == "v" else "epsilon"


def inspect(
    path: Path, flux_base: Path | None = None, cache_root: Path | None = None
) -> Checkpoint:
    """Identify a .safetensors file and choose its config folder (header and sidecars only)."""
    path = Path(path)
    arch, inpaint = detect(read_header(path), path.name)
    config, source = _sidecar_config(path, cache_root), "sidecar"
    if config is None and arch == "flux":
        config, source = (flux_base, "flux_base") if flux_base else (None, "none")
    elif config is None:
        shipped = ARCHES[arch][3].get(inpaint)
        if shipped is None:
            label = ARCHES[arch][1] + (" inpainting" if inpaint else "")
            rule = (
                f"{path.name} is an {label} checkpoint; Atelier ships no config for it "
                f"(name a diffusers folder of that architecture in {path.stem}.atelier.json)"
            )
            raise RequestError("model", rule)
        config, source = CONFIGS_DIR / shipped, "shipped"
    prediction = None if arch == "flux" else _sidecar_prediction(path)
    return Checkpoint(path, arch, inpaint, config, source, prediction)


def require_config(ckpt: Checkpoint, name: str) -> Path:
    if ckpt.config is None:
        rule = (
            f"'{name}' is a Flux transformer-only file; set flux_base to a diffusers Flux "
            "folder or Hub id (its text encoders and VAE are used with this transformer)"
        )
        raise RequestError("model", rule)
    return ckpt.config


# ---------------------------------------------------------------- key accounting


class _Traced(torch.Tensor):
    """A meta tensor that remembers which file keys it was computed from."""

    sources: frozenset[str] = frozenset()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[override]
        found: set[str] = set()

        def visit(x: Any, tag: frozenset[str] | None) -> None:
            if isinstance(x, _Traced):
                if tag is None:
                    found.update(x.sources)
                else:
                    x.sources = x.sources | tag
            elif isinstance(x, (list, tuple)):
                for y in x:
                    visit(y, tag)

        visit((args, list((kwargs or {}).values())), None)
        out = super().__torch_function__(func, types, args, kwargs or {})
        visit(out, frozenset(found))
        return out


def _traced(header: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, shape in header.items():
        t = torch.empty(shape, device="meta").as_subclass(_Traced)
        t.sources = frozenset([key])
        out[key] = t
    return out


def _meta_models(ckpt: Checkpoint) -> dict[str, Any]:
    """The components a checkpoint must fill, built from its config on the meta device."""
    import diffusers
    import transformers

    config = require_config(ckpt, ckpt.path.name)
    if ckpt.arch == "flux":
        specs = {"transformer": diffusers.FluxTransformer2DModel}
    else:
        specs = {"unet": diffusers.UNet2DConditionModel, "vae": diffusers.AutoencoderKL}
        index = json.loads((config / "model_index.json").read_text())
        for comp in ARCHES[ckpt.arch][2]:
            specs[comp] = getattr(transformers, index[comp][1])
    models = {}
    with torch.device("meta"):
        for comp, cls in specs.items():
            if issubclass(cls, diffusers.ModelMixin):
                models[comp] = cls.from_config(cls.load_config(config, subfolder=comp))
            else:
                models[comp] = cls(cls.config_class.from_pretrained(config, subfolder=comp))
    return models


def _convert(comp: str, model: Any, ckpt: Checkpoint, sd: dict[str, torch.Tensor]) -> dict:
    """diffusers' own LDM->diffusers conversion of one component."""
    from diffusers.loaders import single_file_utils as sfu

    if comp == "unet":
        return sfu.convert_ldm_unet_checkpoint(sd, model.config)
    if comp == "vae":
        return sfu.convert_ldm_vae_checkpoint(sd, model.config)
    if comp == "transformer":
        return flux_to_diffusers(dict(sd), model.config)
    layout, prefix = ARCHES[ckpt.arch][2][comp]
    if layout == OPENCLIP:
        out = sfu.convert_open_clip_checkpoint(model, sd, prefix=prefix)
    else:
        out = sfu.convert_ldm_clip_checkpoint({k: v for k, v in sd.items() if k.startswith(prefix)})
    flat = not hasattr(model, "text_model")  # transformers >= 5.6 CLIPTextModel has no wrapper
    return {k.removeprefix("text_model.") if flat else k: v for k, v in out.items()}


def _names(items: list[str], limit: int = 8) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_keys(ckpt: Checkpoint, header: dict[str, list[int]] | None = None) -> None:
    """Refuse a checkpoint with missing, left-over or mis-shaped weights, naming them."""
    header = header if header is not None else read_header(ckpt.path)
    sd = _traced({k.removeprefix(UNET) if ckpt.arch == "flux" else k: v for k, v in header.items()})
    used: set[str] = set()
    missing, shapes = [], []
    for comp, model in _meta_models(ckpt).items():
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        try:
            converted = _convert(comp, model, ckpt, dict(sd))
        except (KeyError, IndexError, RuntimeError, ValueError) as e:
            raise RequestError(
                "model",
                f"{ckpt.path.name}: its {comp} does not fit the "
                f"{ckpt.label} layout ({type(e).__name__}: {e})",
            ) from e
        for key, value in converted.items():
            if key in expected and value is not None:
                used |= getattr(value, "sources", frozenset())
                if tuple(value.shape) != expected[key]:
                    src = "/".join(sorted(getattr(value, "sources", ())))
                    shapes.append(
                        f"{comp}.{key} ({src}) is {list(value.shape)}, "
                        f"the config wants {list(expected[key])}"
                    )
        missing += [f"{comp}.{k}" for k in expected if converted.get(k) is None]
    leftover = sorted(k for k in sd if k not in used and not IGNORED.match(k))
    problems = [f"missing {len(missing)} weights: {_names(missing)}"] if missing else []
    problems += [f"{len(leftover)} left-over tensors: {_names(leftover)}"] if leftover else []
    problems += [f"wrong shapes: {_names(shapes, 4)}"] if shapes else []
    if problems:
        where = f"{ckpt.config_source} config {ckpt.config.name if ckpt.config else ''}"
        raise RequestError(
            "model",
            f"{ckpt.path.name} is not a complete {ckpt.label} "
            f"checkpoint for the {where}: " + "; ".join(problems),
        )


def flux_to_diffusers(sd: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """BFL Flux keys -> diffusers, by diffusers' converter. It hard-codes FLUX.1's width
    (3072) when it splits the single blocks' fused q/k/v/mlp; at other widths (the tiny
    test model) `flux_split_singles` does that split and diffusers the rest."""
    from diffusers.loaders import single_file_utils as sfu

    width = config["num_attention_heads"] * config["attention_head_dim"]
    if width == 3072:
        return sfu.convert_flux_transformer_checkpoint_to_diffusers(sd)
    fused = {k: sd.pop(k) for k in list(sd) if re.match(r"single_blocks\.\d+\.linear1\.", k)}
    for key, w in fused.items():  # placeholders of the shape diffusers splits, replaced below
        sd[key] = torch.empty((3 * 3072 + 4 * 3072, *w.shape[1:]), device="meta")
    out = sfu.convert_flux_transformer_checkpoint_to_diffusers(sd)
    out.update(flux_split_singles(fused, width))
    return out


def flux_split_singles(fused: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """`single_blocks.N.linear1.*` (q, k, v and the 4x-wide MLP input, stacked) -> diffusers."""
    out = {}
    for key, w in fused.items():
        i, part = key.split(".")[1], key.split(".")[-1]
        q, k, v, mlp = torch.split(w, (width, width, width, 4 * width), dim=0)
        names = ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")
        for name, t in zip(names, (q, k, v, mlp), strict=True):
            out[f"single_transformer_blocks.{i}.{name}.{part}"] = t
    return out


# ---------------------------------------------------------------- loading


def is_v_prediction(unet: Any) -> bool:
    """A1111's `is_using_v_parameterization_for_sd2`: one pass at t=999 on constant 0.5
    inputs; an epsilon model returns about the noise, a v model about -x0 (mean < -1)."""
    p = next(unet.parameters())
    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=p.dtype, device=p.device)
    ctx = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, dtype=p.dtype, device=p.device)
    with torch.no_grad():
        out = unet(x, torch.tensor([999], device=p.device), encoder_hidden_states=ctx).sample
    return (out.float() - x.float()).mean().item() < -1


def _second_text_encoder(ckpt: Checkpoint, config: Path, dtype: torch.dtype) -> Any:
    """SDXL's OpenCLIP encoder, converted by diffusers from its own keys only: diffusers picks
    the layout by width and mistakes CLIP-L for it when both are equally wide (tiny models)."""
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from safetensors import safe_open
    from transformers import CLIPTextModelWithProjection

    prefix = ARCHES["sdxl"][2]["text_encoder_2"][1]
    with safe_open(ckpt.path, "pt") as f:
        names = [k for k in f.keys() if k.startswith(prefix)]  # noqa: SIM118 - not a dict
        sd = {k: f.get_tensor(k) for k in names}
    return create_diffusers_clip_model_from_ldm(
        CLIPTextModelWithProjection,
        sd,
        subfolder="text_encoder_2",
        config=str(config),
        torch_dtype=dtype,
        local_files_only=True,
    )


def load(ckpt: Checkpoint, dtype: torch.dtype, name: str) -> Any:
    """A base pipeline (on the CPU) from a checkpoint, after its keys are accounted for.

    SD/SDXL: `<Pipeline>.from_single_file(file, config=<folder>, local_files_only=True)`,
    the inpaint pipeline class for a 9-channel UNet. Flux: the transformer by
    `FluxTransformer2DModel.from_single_file`, everything else from `flux_base`.
    Callers hold loading.LOAD_LOCK (diffusers builds models under init_empty_weights).
    """
    import diffusers

    config = require_config(ckpt, name)
    check_keys(ckpt)
    common = {"config": str(config), "local_files_only": True, "dtype": dtype}
    if ckpt.arch == "flux":
        return _load_flux(ckpt, config, dtype)
    cls = getattr(diffusers, PIPELINES[(ckpt.family, ckpt.inpaint)])
    extra: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if ckpt.family == "sdxl":
        extra = {
            "add_watermarker": False,
            "text_encoder_2": _second_text_encoder(ckpt, config, dtype),
        }
    pipe = cls.from_single_file(str(ckpt.path), **common, **extra)
    prediction = ckpt.prediction
    if prediction is None and ckpt.arch == "sd2":
        prediction = "v_prediction" if is_v_prediction(pipe.unet) else "epsilon"
    if prediction and prediction != pipe.scheduler.config.get("prediction_type", "epsilon"):
        variant = config / "scheduler_v" / "scheduler_config.json"
        if prediction == "v_prediction" and variant.is_file():
            cfg = json.loads(variant.read_text())
            scheduler = getattr(diffusers, cfg["_class_name"]).from_config(cfg)
        else:
            scheduler = type(pipe.scheduler).from_config(
                pipe.scheduler.config, prediction_type=prediction
            )
        pipe.register_modules(scheduler=scheduler)
    return pipe


def _load_flux(ckpt: Checkpoint, base: Path, dtype: torch.dtype) -> Any:
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from safetensors.torch import load_file

    cfg = FluxTransformer2DModel.load_config(base, subfolder="transformer")
    source: Any = str(ckpt.path)
    if cfg["num_attention_heads"] * cfg["attention_head_dim"] != 3072:  # see flux_to_diffusers
        sd = {k.removeprefix(UNET): v for k, v in load_file(ckpt.path).items()}
        source = flux_to_diffusers(sd, cfg)  # already diffusers keys: from_single_file keeps them
    transformer = FluxTransformer2DModel.from_single_file(
        source, config=str(base), subfolder="transformer", local_files_only=True, dtype=dtype
    )
    return FluxPipeline.from_pretrained(
        base, transformer=transformer, dtype=dtype, local_files_only=True
    )


# ---------------------------------------------------------------- pickles


def pickle_refusal(path: Path) -> str:
    return (
        f"{path.name} is a pickled checkpoint; Atelier does not open pickles, because "
        "loading one can run any code it contains. Convert it once to .safetensors with "
        f"`python app.py convert {path}` (weights only: anything else is refused)"
    )


@dataclass(frozen=True)
class Converted:
    out: Path
    tensors: int
    dropped: list[str]  # non-tensor entries left out (training step, epoch, ...)


def convert_pickle(src: Path, out: Path | None = None) -> Converted:
    """Rewrite a pickled checkpoint as .safetensors, loading it with weights_only=True.

    A Lightning-style {"state_dict": ...} is unwrapped; an A1111 textual-inversion
    .pt ({"string_to_param": {"*": T}}) becomes A1111's `emb_params` layout.
    """
    from safetensors.torch import save_file

    src, out = Path(src), Path(out) if out else Path(src).with_suffix(".safetensors")
    if not src.is_file():
        raise RequestError("file", f"no such file: {src}")
    if out.exists():
        raise RequestError("out", f"{out} exists; remove it or pass another --out")
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(src))
    except Exception as e:  # noqa: BLE001 - torch raises many types; every one means "refused"
        lines = [s for s in str(e).splitlines() if "Unsupported global" in s] or [str(e)[:300]]
        rule = (
            f"{src.name} cannot be loaded as plain weights (torch.load weights_only=True): "
            f"{lines[0].strip()}. A file that needs more than that can run code, so it is refused"
        )
        raise RequestError("file", rule) from e
    dropped: list[str] = []
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        dropped += [k for k in obj if k != "state_dict"]  # training step, optimizer, ...
        obj = obj["state_dict"]
    if isinstance(obj, dict) and isinstance(obj.get("string_to_param"), dict):
        dropped += [k for k in obj if k != "string_to_param"]
        obj = {"emb_params": obj["string_to_param"].get("*")}
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, torch.Tensor):
            t = value.contiguous()
            ptr = t.untyped_storage().data_ptr() if t.numel() else -1
            tensors[prefix[:-1]] = (
                t.clone() if ptr in seen else t
            )  # safetensors refuses shared memory
            seen.add(ptr)
        else:
            dropped.append(prefix[:-1])

    walk("", obj)
    if not tensors:
        raise RequestError("file", f"{src.name} holds no tensors (found: {_names(dropped)})")
    tmp = out.with_name(out.name + ".partial")
    save_file(tensors, tmp, metadata={"format": "pt", "converted_from": src.name})
    tmp.replace(out)
    return Converted(out, len(tensors), dropped)
