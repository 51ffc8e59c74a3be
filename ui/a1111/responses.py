"""A1111 response bodies: generated images, `info`, progress, and the lists clients read.

`info` is what A1111's `Processed.js()` returns: a JSON *string* (clients call
json.loads on it) with the prompt, seeds, size, sampler, model name and hash and the
per-image infotexts. Images are base64 PNGs carrying their infotext in the
`parameters` chunk, as A1111 sends them.
"""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

from PIL import Image, PngImagePlugin

from pipelines.infotext import parse_infotext


def png_base64(image: Image.Image, infotext: str | None = None) -> str:
    """A PNG with the A1111 `parameters` text (iTXt when it is not Latin-1), as base64."""
    info = None
    if infotext:
        info = PngImagePlugin.PngInfo()
        try:
            infotext.encode("latin-1")
            info.add_text("parameters", infotext)
        except UnicodeEncodeError:
            info.add_itxt("parameters", infotext)
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def info_json(result: Any, started: float, warnings: list[str] | None = None) -> str:
    """A1111's `info` string for a GenerationResult."""
    req = result.request
    first = result.infotexts[0] if result.infotexts else ""
    params = parse_infotext(first)[2] if first else {}
    n = len(result.images)
    sampler = params.get("Sampler", req.scheduler)
    return json.dumps({
        "prompt": req.prompt, "all_prompts": [req.prompt] * n,
        "negative_prompt": req.negative_prompt, "all_negative_prompts": [req.negative_prompt] * n,
        "seed": result.seeds[0] if result.seeds else req.seed, "all_seeds": list(result.seeds),
        "subseed": -1, "all_subseeds": [-1] * n, "subseed_strength": 0,
        "width": req.width, "height": req.height, "sampler_name": sampler,
        "scheduler": params.get("Schedule type", "Automatic"),
        "cfg_scale": req.guidance_scale, "steps": req.num_inference_steps,
        "batch_size": req.batch_size, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": req.model, "sd_model_hash": params.get("Model hash"),
        "sd_vae_name": req.vae, "sd_vae_hash": params.get("VAE hash"),
        "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": float(params["Denoising strength"])
        if "Denoising strength" in params else None,
        "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": list(result.infotexts), "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.localtime(started)),
        "clip_skip": req.clip_skip, "is_using_inpainting_conditioning": False,
        "version": params.get("Version", ""),
        "warnings": [*(getattr(result, "warnings", None) or []), *(warnings or [])],
    }, ensure_ascii=False)  # fmt: skip


def generated(result: Any, payload: Any, started: float) -> dict:
    """The txt2img/img2img response for a result and the Payload it came from."""
    made = zip(result.images, result.infotexts, strict=True)
    images = [png_base64(im, text) for im, text in made] if payload.send_images else []
    info = info_json(result, started, payload.ignored)
    return {"images": images, "parameters": payload.echo, "info": info}


def extras(result: Any, crop: tuple[int, int] | None) -> dict:
    """A1111's ExtrasSingleImageResponse: the upscaled (and, with `crop`, centre-cropped)
    image as base64 PNG carrying its parameters, and those parameters as `html_info`."""
    import html

    image, info = result.images[0], result.infotexts[0]
    if crop is not None:
        w, h = crop
        left, top = (image.width - w) // 2, (image.height - h) // 2
        image = image.crop((left, top, left + w, top + h))
        info = f"{info}, Postprocess crop to: {w}x{h}"
    return {"html_info": f"<p>{html.escape(info)}</p>", "image": png_base64(image, info)}


def interrupted(echo: dict[str, Any]) -> dict:
    """A request whose job was interrupted: A1111 answers 200 with what it made; the
    engine keeps no half-made images, so the list is empty and `info` says why."""
    info = json.dumps({"interrupted": True, "infotexts": [], "all_seeds": []})
    return {"images": [], "parameters": echo, "info": info}


# -- lists ---------------------------------------------------------------------------
def sd_models(manager: Any) -> list[dict[str, Any]]:
    """Image models, as A1111 lists checkpoints (title = model name: paths stay private)."""
    return [{"title": name, "model_name": name, "hash": None, "sha256": None,
             "filename": name, "config": None}
            for name in manager.models("image")]  # fmt: skip


def samplers(manager: Any) -> list[dict[str, Any]]:
    """Every A1111 sampler some image family here can run (with its Karras alias)."""
    from pipelines.schedulers import SCHEDULERS, available_schedulers

    usable: set[str] = set()
    for family in {f.name: f for f in manager.models("image").values()}.values():
        usable.update(available_schedulers(family))
    out: dict[str, dict[str, Any]] = {}
    for spec in SCHEDULERS:
        if spec.name not in usable:
            continue
        item = out.setdefault(spec.a1111_sampler, {"name": spec.a1111_sampler, "aliases": [],
                                                   "options": {}})  # fmt: skip
        if spec.name != spec.a1111_sampler and spec.name not in item["aliases"]:
            item["aliases"].append(spec.name)
        if spec.schedule_type:
            item["options"]["scheduler"] = spec.schedule_type.lower()
    return list(out.values())


def schedulers() -> list[dict[str, Any]]:
    return [{"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1,
             "need_inner_model": False},
            {"name": "karras", "label": "Karras", "aliases": ["Karras"], "default_rho": 7.0,
             "need_inner_model": False}]  # fmt: skip


def loras(manager: Any) -> list[dict[str, Any]]:
    return [{"name": e.name, "alias": e.name, "path": e.name,
             "metadata": {"ss_base_model_version": e.family, "rank": e.rank,
                          "triggers": list(e.triggers)}}
            for e in manager.loras.entries()]  # fmt: skip


def embeddings(manager: Any) -> dict[str, Any]:
    """Textual inversions by word (the library states no shape without loading them)."""
    lib = manager.embeddings
    blank = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None,
             "vectors": None}  # fmt: skip
    return {"loaded": {name: dict(blank) for name in lib.names()},
            "skipped": {name: dict(blank) for name in getattr(lib, "refused", {})}}  # fmt: skip


def vaes(manager: Any) -> list[dict[str, str]]:
    return [{"model_name": n, "filename": n} for n in manager.vaes.names()]


def controlnet_models(manager: Any) -> list[str]:
    return list(manager.controlnets.names())


def controlnet_modules() -> list[str]:
    from pipelines.preprocess import PREPROCESSORS

    return list(PREPROCESSORS)


def upscalers(manager: Any) -> list[dict[str, Any]]:
    """A1111's "None", the pixel resamplers, then the models of the upscalers folder."""
    try:
        from pipelines.upscale import RESAMPLERS  # where the engine has upscaling
    except ImportError:
        RESAMPLERS = ()  # noqa: N806
    library = getattr(manager, "upscalers", None)
    models = library.names() if library is not None else []
    return [{"name": name, "model_name": name if name in models else None, "model_path": None,
             "model_url": None, "scale": 4 if name == "None" else None}
            for name in dict.fromkeys(["None", *RESAMPLERS, *models])]  # fmt: skip


def latent_upscale_modes() -> list[dict[str, str]]:
    try:
        from pipelines.hires import LATENT_MODES  # the hires fix, where the engine has it
    except ImportError:
        return []
    return [{"name": name} for name in LATENT_MODES]


def prompt_styles(manager: Any) -> list[dict[str, Any]]:
    library = getattr(manager, "styles", None)
    out = []
    for name in library.names() if library is not None else []:
        style = library.get(name)
        out.append({"name": name, "prompt": style.prompt,
                    "negative_prompt": style.negative_prompt})  # fmt: skip
    return out


def progress(job: Any, event: Any, preview: Image.Image | None, skip_image: bool) -> dict:
    """A1111's progress for the caller's current job (None = idle)."""
    state = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
             "job_count": 0, "job_timestamp": "0", "job_no": 0, "sampling_step": 0,
             "sampling_steps": 0}  # fmt: skip
    if job is None:
        return {"progress": 0, "eta_relative": 0, "state": state, "current_image": None,
                "textinfo": None}  # fmt: skip
    step = getattr(event, "step", 0) if event is not None else 0
    total = getattr(event, "total", 0) if event is not None else 0
    eta = getattr(event, "eta", None) if event is not None else None
    state.update(job=f"task({job.id})", job_count=1, sampling_step=step, sampling_steps=total,
                 job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(job.created)),
                 interrupted=job.cancelled)  # fmt: skip
    done = step / total if total else 0.0
    if eta is None and done > 0 and job.started_at:
        elapsed = time.time() - job.started_at
        eta = elapsed / done - elapsed
    image = None if skip_image or preview is None else png_base64(preview)
    text = "Waiting..." if job.state == "queued" else f"Step {step}/{total}"
    return {"progress": round(min(done, 1.0), 4), "eta_relative": round(eta or 0.0, 3),
            "state": state, "current_image": image, "textinfo": text}  # fmt: skip
