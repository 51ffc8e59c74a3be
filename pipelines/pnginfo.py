"""Generation parameters of any studio's image, turned into A1111 infotext.

People come with images from AUTOMATIC1111, Forge, SD.Next, Civitai, ComfyUI,
InvokeAI, NovelAI and Fooocus. Each keeps its parameters somewhere else (see
pipelines.outputs.read_image_texts for where we look). `read_image_parameters`
finds them and returns one `ImageParameters`: the A1111 text (what PNG Info shows
and "Send to Generate" applies through parameters.request_from_infotext), the
source format's name, and the fields.

- A1111 text (A1111, Forge, SD.Next, Fooocus's "a1111" scheme, Civitai) is kept
  exactly as written, so our own infotext round-trips byte for byte. Civitai's
  generator writes JSON values unquoted (`Civitai resources: [{...}]`): those
  values alone are re-quoted the A1111 way so they survive the A1111 reader.
- NovelAI, InvokeAI (all three of its formats) and Fooocus JSON are read with the
  maintained `sd-parsers` package (prompts, sampler, seed, steps, CFG, model);
  what it leaves out (size, LoRAs, some models) is taken from the same JSON here.
- ComfyUI is read here from the `prompt` graph: sd-parsers 0.6 needs the
  `workflow` chunk (API-saved images have none), takes a LoraLoader's link for
  the model name, and has no size.
Settings another studio has and we do not are written as extra keys, so
`unapplied` lists them instead of dropping them.

`unapplied(found, manager)` is what "Send to Generate" and the API report: each
setting of the image that Atelier will not apply as written, and why.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from PIL import Image

from .infotext import format_infotext, parse_infotext, quote
from .outputs import read_image_texts

__all__ = [
    "ImageParameters",
    "from_infotext",
    "model_to_use",
    "parameters_from_texts",
    "read_image_parameters",
    "unapplied",
]

log = logging.getLogger(__name__)

# Other studios' sampler names (ComfyUI/Fooocus, InvokeAI, NovelAI), normalised by
# _sampler (lower case; "k_" prefix, "_gpu" suffix and a Karras "_k" suffix removed),
# to A1111's names.
SAMPLERS = {
    "euler": "Euler", "euler_a": "Euler a", "euler_ancestral": "Euler a", "heun": "Heun",
    "dpm_2": "DPM2", "kdpm_2": "DPM2", "dpm_2_ancestral": "DPM2 a", "dpm_2_a": "DPM2 a",
    "kdpm_2_a": "DPM2 a", "lms": "LMS", "dpm_fast": "DPM fast", "dpm_adaptive": "DPM adaptive",
    "dpmpp_2s_ancestral": "DPM++ 2S a", "dpmpp_2s_a": "DPM++ 2S a", "dpmpp_sde": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_sde": "DPM++ 2M SDE", "dpmpp_3m_sde": "DPM++ 3M SDE",
    "dpmpp_2": "DPM++ 2M", "dpmpp_2_a": "DPM++ 2S a", "ddim": "DDIM", "ddim_v3": "DDIM",
    "ddpm": "DDPM", "plms": "PNDM", "pndm": "PNDM",
    "uni_pc": "UniPC", "uni_pc_bh2": "UniPC", "unipc": "UniPC", "deis": "DEIS", "lcm": "LCM",
    "tcd": "TCD", "restart": "Restart",
}  # fmt: skip
# Noise schedules (ComfyUI "scheduler", NovelAI "noise_schedule") -> A1111 "Schedule type".
SCHEDULES = {"karras": "Karras", "exponential": "Exponential", "sgm_uniform": "SGM Uniform",
             "beta": "Beta", "simple": "Simple", "ddim_uniform": "DDIM", "polyexponential":
             "Polyexponential", "align_your_steps": "Align Your Steps"}  # fmt: skip
# Keys whose value Civitai writes as bare JSON.
_BARE_JSON = re.compile(r"(?:^|, )(Civitai resources|Civitai metadata|Hashes): (?=[\[{])")


@dataclass(frozen=True)
class ImageParameters:
    """An image's parameters: `infotext` (A1111 format), `source` (the studio whose
    format it was: "A1111", "Forge", "SD.Next", "Civitai", "ComfyUI", "InvokeAI",
    "NovelAI", "Fooocus"), and the infotext's prompt, negative prompt and
    `params` (A1111 key -> raw value)."""

    infotext: str
    source: str
    prompt: str
    negative_prompt: str
    params: dict[str, str]

    def fields(self) -> dict[str, Any]:
        """The common fields, typed: prompt, negative_prompt, seed, steps, cfg_scale,
        width, height, sampler, schedule_type, model, model_hash (None when absent)."""
        p = self.params
        width = height = None
        if found := re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", p.get("Size", "")):
            width, height = int(found[1]), int(found[2])
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt,
                "seed": _number(p.get("Seed"), int), "steps": _number(p.get("Steps"), int),
                "cfg_scale": _number(p.get("CFG scale"), float), "width": width,
                "height": height, "sampler": p.get("Sampler"),
                "schedule_type": p.get("Schedule type"), "model": p.get("Model"),
                "model_hash": p.get("Model hash")}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """What the /png_info_parsed API returns for the image."""
        return {"source": self.source, **self.fields(), "parameters": dict(self.params)}


def _number(value: Any, kind: type) -> Any:
    """`value` as an int or float, or None. Whole numbers are read as such first: a
    float would round a 64-bit seed ("9007199254740993")."""
    if kind is int and isinstance(value, str | int) and not isinstance(value, bool):
        try:
            return int(value)
        except ValueError:
            pass
    try:
        number = float(value)
        return int(number) if kind is int else number
    except (TypeError, ValueError, OverflowError):
        return None


def read_image_parameters(
    source: str | os.PathLike[str] | Image.Image,
) -> ImageParameters | None:
    """The parameters of an image file or PIL image, or None if it carries none."""
    return parameters_from_texts(read_image_texts(source))


def parameters_from_texts(texts: dict[str, str]) -> ImageParameters | None:
    """The parameters in an image's texts (pipelines.outputs.read_image_texts), or None.
    A format that is recognised but unreadable is logged and skipped, never raised:
    one broken chunk must not hide another studio's readable one."""
    from sd_parsers.exceptions import ParserError

    readers = (_comfyui, _invokeai, _novelai, _parameters_chunk)
    for reader in readers:
        try:
            found = reader(texts)
        except (ParserError, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            log.info("image metadata not readable by %s: %s", reader.__name__, e)
            continue
        if found is not None:
            return found
    return None


# -- A1111 text --------------------------------------------------------------------
def from_infotext(text: str, source: str | None = None) -> ImageParameters:
    """An A1111-format text as ImageParameters; `source` guessed from its keys."""
    text = _quote_bare_json(text)
    prompt, negative, params = parse_infotext(text)
    return ImageParameters(text, source or _a1111_source(params), prompt, negative, params)


def _a1111_source(params: dict[str, str]) -> str:
    version = params.get("Version", "")
    if "Civitai resources" in params or "Civitai metadata" in params:
        return "Civitai"
    for studio in ("Fooocus", "ComfyUI", "InvokeAI", "NovelAI"):  # ours, converted (_build)
        if version.startswith(studio):
            return studio
    if params.get("App") == "SD.Next" or "SD.Next" in version:
        return "SD.Next"
    if re.match(r"f\d", version):  # Forge: "f2.0.1v1.10.1-previous-..."
        return "Forge"
    return "A1111"


def _quote_bare_json(text: str) -> str:
    """Quote bare JSON values on the params line the A1111 way (json.dumps), so the
    A1111 reader keeps them whole. Text without any comes back unchanged."""
    head, sep, last = text.rpartition("\n")
    found = list(_BARE_JSON.finditer(last))
    if not found:
        return text
    decoder = json.JSONDecoder()
    out, pos = [], 0
    for match in found:
        if match.end() < pos:
            continue
        try:
            _, end = decoder.raw_decode(last, match.end())
        except ValueError:
            continue
        out += [last[pos : match.end()], quote(last[match.end() : end])]
        pos = end
    return f"{head}{sep}{''.join(out)}{last[pos:]}"


def _parameters_chunk(texts: dict[str, str]) -> ImageParameters | None:
    text = texts.get("parameters", "").strip()
    if not text:
        return None
    if text.startswith("{"):
        return _fooocus(texts)
    found = from_infotext(text)
    if found.params or "Negative prompt:" in text:
        scheme = texts.get("fooocus_scheme") or texts.get("MakerNote")
        return found if scheme != "a1111" else from_infotext(text, "Fooocus")
    return None  # a comment, not generation parameters


# -- building A1111 text from another studio's fields ------------------------------
def _stem(name: Any) -> str:
    return PurePath(str(name).replace("\\", "/")).stem if name else ""


def _sampler(name: Any, schedule: Any = None) -> tuple[str | None, str | None]:
    """(A1111 Sampler, Schedule type) of another studio's sampler and noise schedule."""
    if not name:
        return None, None
    key = str(name).lower().strip()
    key = key.removeprefix("k_").removesuffix("_gpu")
    karras = key.endswith("_k") or key.endswith("_karras")
    key = key.removesuffix("_k").removesuffix("_karras")
    sched = SCHEDULES.get(str(schedule).lower()) if schedule else None
    return SAMPLERS.get(key, str(name)), sched or ("Karras" if karras else None)


def _build(source: str, prompt: str, negative: str, fields: dict[str, Any],
           loras: list[tuple[str, float]], extra: dict[str, Any]) -> ImageParameters:  # fmt: skip
    """ImageParameters whose infotext is A1111's text of `fields` (our keys: seed,
    steps, cfg, width, height, sampler, schedule, model, model_hash, strength),
    LoRAs as `<lora:name:weight>` prompt tags, then `extra` (A1111 key -> value)."""
    sampler, schedule = _sampler(fields.get("sampler"), fields.get("schedule"))
    w, h = fields.get("width"), fields.get("height")
    params: dict[str, object] = {
        "Steps": _number(fields.get("steps"), int),
        "Sampler": sampler,
        "Schedule type": schedule,
        "CFG scale": _number(fields.get("cfg"), float),
        "Seed": _number(fields.get("seed"), int),
        "Size": f"{int(w)}x{int(h)}" if w and h else None,
        "Model hash": fields.get("model_hash") or None,
        "Model": _stem(fields.get("model")) or None,
        "Denoising strength": fields.get("strength"),
    }
    for key, value in extra.items():
        if value not in (None, "", [], {}):
            params[key] = value if isinstance(value, str | int | float) else json.dumps(value)
    tags = " ".join(f"<lora:{n}:{_num(w)}>" for n, w in loras if n)
    prompt = f"{prompt} {tags}".strip() if tags else prompt
    # Values with a newline would break the params line; quote() handles the rest.
    params = {k: (str(v).replace("\n", " ") if isinstance(v, str) else v)
              for k, v in params.items()}  # fmt: skip
    return from_infotext(format_infotext(prompt.strip(), negative.strip(), params), source)


def _num(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number == int(number) else f"{number:g}"


def _first(info: Any) -> Any:
    if not info.samplers:
        raise ValueError("no sampler in the metadata")
    return info.samplers[0]


# -- NovelAI, InvokeAI, Fooocus: sd-parsers, plus what it leaves out ----------------
def _novelai(texts: dict[str, str]) -> ImageParameters | None:
    if "Comment" not in texts or "Description" not in texts and "prompt" not in texts:
        return None
    raw = json.loads(texts["Comment"])
    if "NovelAI" not in texts.get("Software", "") and "uc" not in raw:
        return None
    from sd_parsers.parsers import NovelAIParser

    info = NovelAIParser().parse({"Source": "", "Description": raw.get("prompt", ""), **texts})
    sampler = _first(info)
    p = {**info.metadata, **sampler.parameters}
    model = sampler.model.name if sampler.model else texts.get("Source")
    extra = {"Version": texts.get("Software") or "NovelAI",
             "NovelAI SMEA": "dyn" if p.get("sm_dyn") else ("on" if p.get("sm") else None),
             "CFG rescale": p.get("cfg_rescale") or None}  # fmt: skip
    fields = {"seed": p.get("seed"), "steps": p.get("steps"), "cfg": p.get("cfg_scale"),
              "width": p.get("width"), "height": p.get("height"), "sampler": sampler.name,
              "schedule": p.get("noise_schedule"), "model": model,
              "model_hash": sampler.model.hash if sampler.model else None}  # fmt: skip
    negative = info.full_negative_prompt or raw.get("uc", "")
    return _build("NovelAI", info.full_prompt, negative, fields, [], extra)


def _invokeai(texts: dict[str, str]) -> ImageParameters | None:
    if not {"invokeai_metadata", "sd-metadata", "Dream"} & texts.keys():
        return None
    from sd_parsers.parsers import InvokeAIParser

    info = InvokeAIParser().parse(dict(texts))
    sampler = _first(info)
    p = {**info.metadata, **sampler.parameters}
    raw = json.loads(texts["invokeai_metadata"]) if "invokeai_metadata" in texts else {}
    model = sampler.model.name if sampler.model else None
    if model is None and isinstance(raw.get("model"), dict):  # InvokeAI 4+: "name"
        model = raw["model"].get("name") or raw["model"].get("model_name")
    loras = []
    for item in raw.get("loras") or []:
        ref = item.get("model") or item.get("lora") or {}
        loras.append((_stem(ref.get("name") or ref.get("model_name")), item.get("weight", 1.0)))
    clip_skip = _number(raw.get("clip_skip"), int)
    vae = raw.get("vae")
    extra = {"Clip skip": clip_skip + 1 if clip_skip else None,
             "VAE": (vae.get("name") or vae.get("model_name")) if isinstance(vae, dict) else vae,
             "CFG rescale": raw.get("cfg_rescale_multiplier") or None,
             "Style prompt": raw.get("positive_style_prompt"),
             "Negative style prompt": raw.get("negative_style_prompt"),
             "Refiner": (raw.get("refiner_model") or {}).get("name"),
             "Hires upscale": "on" if raw.get("hrf_enabled") else None,
             "Version": f"InvokeAI {raw.get('app_version', '')}".strip()}  # fmt: skip
    fields = {"seed": p.get("seed"), "steps": p.get("steps"), "cfg": p.get("cfg_scale"),
              "width": p.get("width"), "height": p.get("height"), "sampler": sampler.name,
              "model": model, "model_hash": sampler.model.hash if sampler.model else None,
              "strength": raw.get("strength")}  # fmt: skip
    negative = " ".join(str(n) for n in info.negative_prompts)
    prompt = " ".join(str(n) for n in info.prompts)
    return _build("InvokeAI", prompt, negative, fields, loras, extra)


def _fooocus(texts: dict[str, str]) -> ImageParameters | None:
    """Fooocus's own scheme: JSON in `parameters` (PNG text or JPEG UserComment)."""
    raw = json.loads(texts["parameters"])
    if not isinstance(raw, dict) or "prompt" not in raw:
        return None
    from sd_parsers.parsers import FooocusParser

    info = FooocusParser().parse({"parameters": texts["parameters"]})
    sampler = _first(info)
    p = {**info.metadata, **sampler.parameters}
    width = height = None
    if size := re.findall(r"\d+", str(raw.get("resolution", ""))):
        width, height = (int(v) for v in size[:2])
    loras = [(_stem(item[0]), item[1]) for item in raw.get("loras") or [] if len(item) >= 2]
    styles = raw.get("styles")
    if isinstance(styles, str) and styles.startswith("["):
        styles = ", ".join(ast.literal_eval(styles))
    refiner = raw.get("refiner_model")
    extra = {"Styles": styles or None, "Performance": raw.get("performance"),
             "Sharpness": raw.get("sharpness"), "ADM guidance": raw.get("adm_guidance"),
             "Refiner": refiner if refiner not in (None, "None") else None,
             "VAE": raw.get("vae") if raw.get("vae") not in (None, "Default (model)") else None,
             "Version": raw.get("version") or "Fooocus"}  # fmt: skip
    model = sampler.model
    fields = {"seed": p.get("seed"), "steps": p.get("steps"), "cfg": p.get("cfg_scale"),
              "width": width, "height": height, "sampler": sampler.name,
              "schedule": p.get("scheduler"), "model": model.name if model else None,
              "model_hash": model.hash if model else None}  # fmt: skip
    negative = str(info.negative_prompts[0]) if info.negative_prompts else ""
    return _build("Fooocus", str(info.prompts[0]), negative, fields, loras, extra)


# -- ComfyUI: the `prompt` graph (node id -> {class_type, inputs}) -------------------
def _comfyui(texts: dict[str, str]) -> ImageParameters | None:
    if "prompt" not in texts or not texts["prompt"].lstrip().startswith("{"):
        return None
    graph = {str(k): v for k, v in json.loads(texts["prompt"]).items() if isinstance(v, dict)}
    samplers = [(k, n) for k, n in graph.items() if _is_sampler(n)]
    if not samplers:
        return None
    # The first pass: the sampler whose latent is not another sampler's output.
    base = [n for _, n in samplers if not _reaches_sampler(graph, n["inputs"].get("latent_image"))]
    node = (base or [samplers[0][1]])[0]
    inputs = _sampler_inputs(graph, node)
    model, loras = _model(graph, inputs.get("model"))
    width, height, from_image = _size(graph, inputs.get("latent_image"))
    denoise = _value(graph, inputs.get("denoise"))
    partial = denoise not in (None, 1, 1.0)
    fields = {"seed": _value(graph, inputs.get("seed", inputs.get("noise_seed"))),
              "steps": _value(graph, inputs.get("steps")), "cfg": _value(graph, inputs.get("cfg")),
              "sampler": _value(graph, inputs.get("sampler_name")),
              "schedule": _value(graph, inputs.get("scheduler")), "width": width,
              "height": height, "model": model,
              "strength": denoise if from_image and partial else None}  # fmt: skip
    extra = {"Denoise": denoise if not from_image and partial else None,
             "Sampler passes": len(samplers) if len(samplers) > 1 else None,
             "Version": "ComfyUI"}  # fmt: skip
    prompt = _text(graph, inputs.get("positive"))
    negative = _text(graph, inputs.get("negative"))
    return _build("ComfyUI", prompt, negative, fields, loras, extra)


def _is_sampler(node: dict[str, Any]) -> bool:
    """KSampler and its kin (all settings on the node), or SamplerCustom(Advanced) (the
    settings on the nodes linked as noise, guider, sampler and sigmas)."""
    inputs = node.get("inputs")
    if not isinstance(inputs, dict):
        return False
    return {"steps", "cfg", "sampler_name"} <= inputs.keys() or {
        "sampler",
        "sigmas",
    } <= inputs.keys()


def _sampler_inputs(graph: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """A sampler node's inputs in KSampler's shape: SamplerCustom(Advanced)'s settings are
    gathered from RandomNoise (noise_seed), CFGGuider/BasicGuider (cfg, positive,
    negative or conditioning, model), KSamplerSelect (sampler_name) and BasicScheduler
    (scheduler, steps, denoise, model)."""
    inputs = dict(node["inputs"])
    for key in ("noise", "guider", "sampler", "sigmas"):
        linked = _linked(graph, inputs.get(key))
        for name, value in (linked or {}).get("inputs", {}).items():
            inputs.setdefault(name, value)
    inputs.setdefault("seed", inputs.get("noise_seed"))
    inputs.setdefault("positive", inputs.get("conditioning"))
    return inputs


def _linked(graph: dict[str, Any], ref: Any) -> dict[str, Any] | None:
    if isinstance(ref, list) and ref and str(ref[0]) in graph:
        node = graph[str(ref[0])]
        return node if isinstance(node.get("inputs"), dict) else None
    return None


def _value(graph: dict[str, Any], ref: Any, depth: int = 0) -> Any:
    """A widget value, following a link to a primitive node if it is one."""
    node = _linked(graph, ref)
    if node is None:
        return ref
    if depth > 8:
        return None
    for key in ("value", "seed", "noise_seed", "int", "float", "string", "text"):
        if key in node["inputs"]:
            return _value(graph, node["inputs"][key], depth + 1)
    return None


def _text(graph: dict[str, Any], ref: Any, depth: int = 0) -> str:
    """The prompt text behind a conditioning link (CLIPTextEncode and its kin)."""
    node = _linked(graph, ref)
    if node is None or depth > 16:
        return ""
    inputs = node["inputs"]
    for key in ("text", "text_g", "prompt", "text_l", "string", "value"):
        value = _value(graph, inputs.get(key)) if key in inputs else None
        if isinstance(value, str):
            return value
    # Conditioning combiners, ControlNet appliers, ...: the first link that has text.
    for key, value in inputs.items():
        skip = key in ("clip", "model", "vae", "image", "control_net")
        if not skip and _linked(graph, value) and (found := _text(graph, value, depth + 1)):
            return found
    return ""


def _model(graph: dict[str, Any], ref: Any) -> tuple[str | None, list[tuple[str, float]]]:
    """The checkpoint behind a MODEL link, and the LoRAs loaded on the way, in order."""
    loras: list[tuple[str, float]] = []
    for _ in range(64):
        node = _linked(graph, ref)
        if node is None:
            break
        inputs = node["inputs"]
        for key in ("ckpt_name", "unet_name", "model_name"):
            if isinstance(inputs.get(key), str):
                return inputs[key], loras[::-1]
        if isinstance(inputs.get("lora_name"), str):
            loras.append((_stem(inputs["lora_name"]), float(inputs.get("strength_model", 1.0))))
        ref = inputs.get("model")
    return None, loras[::-1]


def _size(graph: dict[str, Any], ref: Any) -> tuple[int | None, int | None, bool]:
    """(width, height, from an image) of a latent link: EmptyLatentImage's size, or
    True for a latent encoded from an image (img2img)."""
    for _ in range(32):
        node = _linked(graph, ref)
        if node is None:
            break
        inputs = node["inputs"]
        if "width" in inputs and "height" in inputs:
            return _value(graph, inputs["width"]), _value(graph, inputs["height"]), False
        if "pixels" in inputs:
            return None, None, True
        ref = inputs.get("samples", inputs.get("latent", inputs.get("latent_image")))
    return None, None, False


def _reaches_sampler(graph: dict[str, Any], ref: Any) -> bool:
    for _ in range(32):
        node = _linked(graph, ref)
        if node is None:
            return False
        if _is_sampler(node):
            return True
        ref = node["inputs"].get("samples", node["inputs"].get("latent_image"))
    return False


# -- what "Send to Generate" does not apply, and why ------------------------------------
# Keys parameters.request_from_infotext applies (checked further below where they name
# something that must be installed), and keys that describe the image (nothing to set).
APPLIED = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model",
           "Denoising strength", "Mask blur", "Inpaint area", "Masked area padding"}  # fmt: skip
DESCRIPTIVE = {"Model hash", "Lora hashes", "Version", "App", "Hashes", "VAE hash",
               "Civitai resources", "Civitai metadata", "Created Date", "TI hashes"}  # fmt: skip
REASONS = {
    "Styles": "Fooocus styles add their own words to the prompt: only the typed prompt is used",
    "Refiner": "Atelier does not run a refiner model",
    "CFG rescale": "Atelier has no CFG rescale",
    "Style prompt": "SDXL's second prompt is not supported: the prompt goes to both encoders",
    "Negative style prompt": "SDXL's second prompt is not supported",
    "Sampler passes": "the graph samples more than once (e.g. a hires pass): only the first "
    "pass is applied",
    "Denoise": "denoising an empty latent partially is not supported: it is denoised fully",
    "ENSD": "Atelier has no eta noise seed delta",
}
_PREFIX_REASONS = {
    # Listed only when not read: A1111's paste rule turns the hires fix on only when the
    # text also has "Denoising strength" (then every Hires key is applied).
    "Hires": "the hires fix is applied only with a 'Denoising strength' (A1111's rule)",
    "ADetailer": "Atelier has no ADetailer (a detect-and-inpaint pass)",
}


def model_to_use(
    found: ImageParameters, manager: Any, current_model: str | None = None
) -> tuple[str | None, str | None]:
    """(model name to use, why it is not the image's own or None). The image's model
    if installed, else the installed model with its `Model hash` (a renamed file),
    else `current_model` (what the form has)."""
    models = manager.models("image")
    current = current_model if current_model in models else next(iter(models), None)
    name, short = found.params.get("Model"), found.params.get("Model hash")
    if name and name in models:
        return name, None
    by_hash = manager.registry.find_by_hash(short) if short else None
    if by_hash:
        why = f"'{name}' is installed as '{by_hash}' (same hash {short}): '{by_hash}' is used"
        return by_hash, why if name else None
    if not name:
        return current, None
    hashed = f" (hash {short})" if short else ""
    return current, f"'{name}'{hashed} is not installed: '{current}' is kept"


def unapplied(
    found: ImageParameters | str, manager: Any, current_model: str | None = None
) -> list[tuple[str, str]]:
    """(setting, why) for each setting of the image that "Send to Generate" will not
    apply as written: settings Atelier does not have, a sampler or schedule the model's
    family lacks (naming the one used instead), a model, LoRA, ControlNet model, VAE or
    embedding that is not installed. `current_model`: the form's model, kept when the
    image's is missing. Engine only (no gradio)."""
    from .errors import RequestError
    from .hires import request_from_infotext  # parameters' + the hires fix fields
    from .parameters import parse_controlnet_value

    if isinstance(found, str):
        found = from_infotext(found)
    try:
        req = request_from_infotext(found.infotext)
    except RequestError as e:
        return [(e.field, f"cannot be read: {e.rule}")]
    out: list[tuple[str, str]] = []
    model, why = model_to_use(found, manager, current_model)
    if why:
        out.append(("Model", why))
    family = manager.models("image").get(model) if model else None
    if family is not None:
        out += _sampler_notes(req.scheduler, found.params.get("Schedule type"), family)
    loras = set(manager.loras.names())
    out += [(f"LoRA {n}", f"'{n}' is not installed: left out") for n, _ in req.loras
            if n not in loras]  # fmt: skip
    controlnets = set(manager.controlnets.names())
    for key, value in found.params.items():
        if re.fullmatch(r"ControlNet \d+", key):
            try:
                unit = parse_controlnet_value(value)
            except RequestError as e:
                out.append((key, e.rule))
                continue
            if unit.model not in controlnets:
                out.append((key, f"model '{unit.model}' is not installed"))
            out.append((key, "its control image is not stored in the parameters: add one"))
        elif key not in APPLIED | DESCRIPTIVE and not _read_by_request(found, key):
            out.append((key, _reason(key)))
    out += _resource_notes(found, manager)
    return out


def _sampler_notes(scheduler: str | None, schedule: str | None, family: Any) -> list[Any]:
    from .schedulers import available_schedulers, specs_for, unavailable_schedulers

    if scheduler is None:
        return []
    names = available_schedulers(family)
    if scheduler not in names:
        missing = unavailable_schedulers(family).get(scheduler)
        why = f"it {missing}" if missing else f"{family.label} models have no such sampler here"
        used = family.default_scheduler
        return [("Sampler", f"'{scheduler}' is not available ({why}): '{used}' is used instead")]
    spec = next(s for s in specs_for(family) if s.name == scheduler)
    if schedule and schedule != "Automatic" and spec.schedule_type != schedule:
        return [("Schedule type", f"'{schedule}' is not available with {scheduler}: "
                 "its default schedule is used")]  # fmt: skip
    return []


def _read_by_request(found: ImageParameters, key: str) -> bool:
    """Whether request_from_infotext reads `key`: the request changes (or the text is
    refused) when the key is left out or its value altered. So a setting the engine
    learns later (clip skip, VAE) stops being listed without a change here."""
    from .errors import RequestError
    from .hires import request_from_infotext

    def request(params: dict[str, str]) -> Any:
        return request_from_infotext(
            format_infotext(found.prompt, found.negative_prompt, params)
        )  # fmt: skip

    base = request(found.params)
    without = {k: v for k, v in found.params.items() if k != key}
    altered = {**found.params, key: found.params[key] + "1"}
    try:
        return request(without) != base or request(altered) != base
    except RequestError:
        return True


def _reason(key: str) -> str:
    if key in REASONS:
        return REASONS[key]
    for prefix, why in _PREFIX_REASONS.items():
        if key.startswith(prefix):
            return why
    return f"Atelier has no '{key}' setting"


def _resource_notes(found: ImageParameters, manager: Any) -> list[tuple[str, str]]:
    """VAE and embeddings, when the engine knows them (duck-typed `manager.vaes` and
    `manager.embeddings`, each with `names()`): not installed ones are named."""
    out = []
    vae = found.params.get("VAE")
    vaes = getattr(manager, "vaes", None)
    if vae and vaes is not None and _read_by_request(found, "VAE") and vae not in vaes.names():
        out.append(("VAE", f"'{vae}' is not installed: the model's own VAE is used"))
    names = set(re.findall(r"([^,:]+):\s*[0-9a-fA-F]+", found.params.get("TI hashes", "")))
    embeddings = getattr(manager, "embeddings", None)
    installed = set(embeddings.names()) if embeddings is not None else set()
    for name in sorted(n.strip() for n in names):
        if name not in installed:
            why = "is not installed" if embeddings is not None else "cannot be loaded yet"
            out.append((f"Embedding {name}", f"'{name}' {why}: the word stays in the prompt "
                        "as plain text"))  # fmt: skip
    return out
