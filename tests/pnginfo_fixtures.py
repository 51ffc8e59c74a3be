"""Images as other studios write them, made here (no downloaded samples): each writer
puts the metadata where that studio's own saving code does, in its shape.

Every image describes the same generation (EXPECTED), so the tests can check each
format against one table. Sources of the shapes: A1111 `images.save_image_with_geninfo`
(PNG text `parameters`; JPEG/WebP EXIF UserComment via piexif, "UNICODE" + UTF-16BE),
ComfyUI `SaveImage` (PNG text `prompt` and `workflow`, JSON), InvokeAI
(`invokeai_metadata` JSON; 2.x `sd-metadata` JSON; 1.x `Dream` command line), NovelAI
(`Description`, `Software`, `Source`, `Comment` JSON), Fooocus `meta_parser`
(`parameters` JSON + `fooocus_scheme`; JPEG: EXIF IFD0 UserComment without charset
prefix, Software, MakerNote = scheme), Civitai's generator (A1111 text with bare JSON
`Civitai resources`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PIL import Image, PngImagePlugin

EXPECTED = {"prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "seed": 1234,
            "steps": 20, "cfg_scale": 6.5, "width": 512, "height": 768,
            "model": "dreamshaper_8"}  # fmt: skip
A1111 = (
    "a lighthouse at dusk\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234, "
    "Size: 512x768, Model hash: 879db523c3, Model: dreamshaper_8, Clip skip: 2, "
    'Hires upscale: 2, Hires steps: 10, ADetailer model: face_yolov8n.pt, Lora hashes: "detail: '
    '1a2b3c4d5e6f", TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1'
)
FORGE = A1111.replace("Version: v1.10.1", "Version: f2.0.1v1.10.1-previous-313-g7cbe5e13")
SDNEXT = A1111.replace("Version: v1.10.1", "App: SD.Next, Version: 2f0e3c1")
CIVITAI = (
    "a lighthouse at dusk\nNegative prompt: blurry\n"
    "Steps: 20, CFG scale: 6.5, Sampler: DPM++ 2M Karras, Seed: 1234, Size: 512x768, "
    'Clip skip: 2, Created Date: 2024-05-01T10:00:00.000Z, Civitai resources: [{"type":'
    '"checkpoint","modelVersionId":128713,"modelName":"DreamShaper","modelVersionName":"8"},'
    '{"type":"lora","weight":0.8,"modelVersionId":1,"modelName":"detail"}], '
    'Civitai metadata: {"remixOfId":1}, Model: dreamshaper_8'
)


def _png(path: Path, texts: dict[str, str], size: tuple[int, int] = (16, 24)) -> Path:
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_itxt(key, value) if any(ord(c) > 255 for c in value) else info.add_text(key, value)
    Image.new("RGB", size, (40, 60, 90)).save(path, format="PNG", pnginfo=info)
    return path


def a1111_png(folder: Path, text: str = A1111, name: str = "a1111.png") -> Path:
    return _png(folder / name, {"parameters": text})


def a1111_exif(folder: Path, fmt: str = "JPEG", text: str = A1111) -> Path:
    """As A1111 (piexif): Exif IFD UserComment = b"UNICODE\\0" + UTF-16 big-endian."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    path = folder / f"a1111.{fmt.lower()}"
    Image.new("RGB", (16, 24), (40, 60, 90)).save(path, format=fmt, exif=exif, quality=90)
    return path


def forge_png(folder: Path) -> Path:
    return a1111_png(folder, FORGE, "forge.png")


def sdnext_png(folder: Path) -> Path:
    return a1111_png(folder, SDNEXT, "sdnext.png")


def civitai_png(folder: Path) -> Path:
    return a1111_png(folder, CIVITAI, "civitai.png")


COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 1234, "steps": 20, "cfg": 6.5, "sampler_name": "dpmpp_2m",
        "scheduler": "karras", "denoise": 1.0, "model": ["10", 0], "positive": ["6", 0],
        "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple",
          "inputs": {"ckpt_name": "sd15/dreamshaper_8.safetensors"}},
    "5": {"class_type": "EmptyLatentImage",
          "inputs": {"width": 512, "height": 768, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode",
          "inputs": {"text": "a lighthouse at dusk", "clip": ["10", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["10", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI",
                                                "images": ["8", 0]}},
    "10": {"class_type": "LoraLoader", "inputs": {
        "lora_name": "detail.safetensors", "strength_model": 0.8, "strength_clip": 0.8,
        "model": ["4", 0], "clip": ["4", 1]}},
}  # fmt: skip


# The same generation through SamplerCustomAdvanced (as Flux workflows are built).
COMFY_CUSTOM = {
    **{k: v for k, v in COMFY_PROMPT.items() if k != "3"},
    "3": {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["11", 0], "guider": ["12", 0], "sampler": ["13", 0], "sigmas": ["14", 0],
        "latent_image": ["5", 0]}},
    "11": {"class_type": "RandomNoise", "inputs": {"noise_seed": 1234}},
    "12": {"class_type": "CFGGuider", "inputs": {"model": ["10", 0], "positive": ["6", 0],
                                                 "negative": ["7", 0], "cfg": 6.5}},
    "13": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
    "14": {"class_type": "BasicScheduler", "inputs": {"model": ["10", 0], "scheduler": "karras",
                                                      "steps": 20, "denoise": 1.0}},
}  # fmt: skip


def comfyui_custom_png(folder: Path) -> Path:
    return _png(folder / "comfyui-custom.png", {"prompt": json.dumps(COMFY_CUSTOM)})


def _comfy_workflow(prompt: dict) -> dict:
    """The UI workflow: nodes and links [id, from, slot, to, slot, type] (what sd-parsers
    walks); built from the API prompt above."""
    links, n = [], 0
    for to, node in prompt.items():
        for value in node["inputs"].values():
            if isinstance(value, list):
                n += 1
                links.append([n, int(value[0]), value[1], int(to), 0, "LINK"])
    nodes = [{"id": int(k), "type": v["class_type"]} for k, v in prompt.items()]
    return {"last_node_id": 10, "nodes": nodes, "links": links, "version": 0.4}


def comfyui_png(folder: Path, workflow: bool = True) -> Path:
    texts = {"prompt": json.dumps(COMFY_PROMPT)}
    if workflow:
        texts["workflow"] = json.dumps(_comfy_workflow(COMFY_PROMPT))
    return _png(folder / f"comfyui{'' if workflow else '-api'}.png", texts)


def invokeai_png(folder: Path) -> Path:
    meta = {"generation_mode": "txt2img", "positive_prompt": "a lighthouse at dusk",
            "negative_prompt": "blurry", "width": 512, "height": 768, "seed": 1234,
            "rand_device": "cpu", "cfg_scale": 6.5, "cfg_rescale_multiplier": 0,
            "steps": 20, "scheduler": "dpmpp_2m_k", "clip_skip": 0,
            "model": {"key": "abc", "hash": "blake3:00ff", "name": "dreamshaper_8",
                      "base": "sd-1", "type": "main"},
            "loras": [{"model": {"key": "l1", "name": "detail", "base": "sd-1"},
                       "weight": 0.8}], "app_version": "5.6.0"}  # fmt: skip
    return _png(folder / "invokeai.png", {"invokeai_metadata": json.dumps(meta)})


def invokeai_sd_metadata_png(folder: Path) -> Path:
    meta = {"model": "stable diffusion", "model_weights": "dreamshaper_8",
            "model_hash": "879db523c3", "app_id": "invoke-ai/InvokeAI", "app_version": "2.2.5",
            "image": {"prompt": [{"prompt": "a lighthouse at dusk [blurry]", "weight": 1.0}],
                      "steps": 20, "cfg_scale": 6.5, "threshold": 0, "perlin": 0,
                      "height": 768, "width": 512, "seed": 1234, "seamless": False,
                      "hires_fix": False, "type": "txt2img", "postprocessing": None,
                      "sampler": "k_dpmpp_2", "variations": []}}  # fmt: skip
    return _png(folder / "invokeai-2.png", {"sd-metadata": json.dumps(meta)})


def invokeai_dream_png(folder: Path) -> Path:
    dream = '"a lighthouse at dusk [blurry]" -s 20 -S 1234 -W 512 -H 768 -C 6.5 -A k_euler_a'
    return _png(folder / "invokeai-dream.png", {"Dream": dream})


def novelai_png(folder: Path) -> Path:
    comment = {"prompt": "a lighthouse at dusk", "steps": 20, "height": 768, "width": 512,
               "scale": 6.5, "uncond_scale": 1.0, "cfg_rescale": 0.0, "seed": 1234,
               "n_samples": 1, "noise_schedule": "karras", "sampler": "k_dpmpp_2m",
               "sm": True, "sm_dyn": False, "uc": "blurry"}  # fmt: skip
    return _png(folder / "novelai.png", {
        "Title": "AI generated image", "Description": "a lighthouse at dusk",
        "Software": "NovelAI", "Source": "Stable Diffusion XL C1E1DE52",
        "Generation time": "3.1", "Comment": json.dumps(comment)})  # fmt: skip


FOOOCUS = {"adm_guidance": "(1.5, 0.8, 0.3)", "base_model": "dreamshaper_8.safetensors",
           "base_model_hash": "879db523c3", "full_negative_prompt": ["blurry"],
           "full_prompt": ["a lighthouse at dusk, cinematic"], "guidance_scale": 6.5,
           "lora_combined_1": "detail.safetensors : 0.8",
           "loras": [["detail.safetensors", 0.8, "1a2b3c4d5e"]], "metadata_scheme": "fooocus",
           "negative_prompt": "blurry", "performance": "Speed", "prompt": "a lighthouse at dusk",
           "prompt_expansion": "", "refiner_model": "None", "refiner_switch": 0.5,
           "resolution": "(512, 768)", "sampler": "dpmpp_2m_sde_gpu", "scheduler": "karras",
           "seed": "1234", "sharpness": 2.0, "steps": 20,
           "styles": "['Fooocus V2', 'Fooocus Sharp']", "vae": "Default (model)",
           "version": "Fooocus v2.5.5"}  # fmt: skip


def fooocus_png(folder: Path) -> Path:
    texts = {"parameters": json.dumps(dict(sorted(FOOOCUS.items()))), "fooocus_scheme": "fooocus"}
    return _png(folder / "fooocus.png", texts)


def fooocus_jpeg(folder: Path) -> Path:
    """As Fooocus's get_exif: tags in IFD0, UserComment as a plain string."""
    exif = Image.Exif()
    exif[0x9286] = json.dumps(dict(sorted(FOOOCUS.items())))
    exif[0x0131] = "Fooocus v2.5.5"
    exif[0x927C] = "fooocus"
    path = folder / "fooocus.jpg"
    Image.new("RGB", (16, 24), (40, 60, 90)).save(path, format="JPEG", exif=exif)
    return path


def fooocus_a1111_png(folder: Path) -> Path:
    text = ("a lighthouse at dusk\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M SDE, "
            "Schedule type: Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, "
            "Model hash: 879db523c3, Model: dreamshaper_8, Sharpness: 2, "
            "Performance: Speed, Version: Fooocus v2.5.5")  # fmt: skip
    return _png(folder / "fooocus-a1111.png", {"parameters": text, "fooocus_scheme": "a1111"})


# name -> (writer, source format, A1111 sampler, schedule type)
FORMATS: dict[str, tuple[Callable[[Path], Path], str, str, str | None]] = {
    "a1111-png": (a1111_png, "A1111", "DPM++ 2M", "Karras"),
    "a1111-jpeg": (lambda f: a1111_exif(f, "JPEG"), "A1111", "DPM++ 2M", "Karras"),
    "a1111-webp": (lambda f: a1111_exif(f, "WEBP"), "A1111", "DPM++ 2M", "Karras"),
    "forge": (forge_png, "Forge", "DPM++ 2M", "Karras"),
    "sdnext": (sdnext_png, "SD.Next", "DPM++ 2M", "Karras"),
    "civitai": (civitai_png, "Civitai", "DPM++ 2M Karras", None),
    "comfyui": (comfyui_png, "ComfyUI", "DPM++ 2M", "Karras"),
    "comfyui-api": (lambda f: comfyui_png(f, workflow=False), "ComfyUI", "DPM++ 2M", "Karras"),
    "comfyui-custom": (comfyui_custom_png, "ComfyUI", "DPM++ 2M", "Karras"),
    "invokeai": (invokeai_png, "InvokeAI", "DPM++ 2M", "Karras"),
    "invokeai-2": (invokeai_sd_metadata_png, "InvokeAI", "DPM++ 2M", None),
    "invokeai-dream": (invokeai_dream_png, "InvokeAI", "Euler a", None),
    "novelai": (novelai_png, "NovelAI", "DPM++ 2M", "Karras"),
    "fooocus": (fooocus_png, "Fooocus", "DPM++ 2M SDE", "Karras"),
    "fooocus-jpeg": (fooocus_jpeg, "Fooocus", "DPM++ 2M SDE", "Karras"),
    "fooocus-a1111": (fooocus_a1111_png, "Fooocus", "DPM++ 2M SDE", "Karras"),
}
