"""Evaluation of a trained `atelier-shapes` export: the accuracy table by meaning
(judge.py) that bench/RESULTS.md records, and the loss-curve PNG.

    python -m pipelines.shapes.train --out assets --stages eval

Runs the exported fp16 files through plain diffusers pipelines (not the engine), so
the table measures the weights; tests/test_shapes_meaning.py measures the engine.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch

from . import scenes as S
from .train import CONTROLNET, DEFAULTS, LORA_FILE, STAGES, load_pipeline, stage_done

log = logging.getLogger("atelier.shapes")


def plot_losses(workdir: Path, png: Path) -> None:
    """Loss curves of every stage (raw in grey, 25-step mean in colour, log y), drawn with PIL."""
    from PIL import Image, ImageDraw

    w, h, pad = 420, 260, 40
    img = Image.new("RGB", (2 * w, (len(STAGES) + 1) // 2 * h), "white")
    draw = ImageDraw.Draw(img)
    for k, stage in enumerate(STAGES):
        ox, oy = (k % 2) * w, (k // 2) * h
        path = workdir / stage / "loss.csv"
        rows = [r for r in csv.reader(path.open())] if path.exists() else []
        by_step = {int(r[0]): float(r[1]) for r in rows}  # a resumed step keeps its last value
        draw.rectangle([ox + pad, oy + 20, ox + w - 10, oy + h - pad], outline="black")
        if len(by_step) < 2:
            draw.text((ox + pad, oy + 4), f"{stage}: no data", fill="black")
            continue
        steps = np.array(sorted(by_step))
        y = np.log10(np.maximum([by_step[s] for s in steps], 1e-6))
        smooth = np.convolve(y, np.ones(25) / 25, mode="valid") if len(y) >= 25 else y
        lo, hi = float(y.min()), float(y.max()) + 1e-9

        def xy(i: float, v: float, box: tuple = (ox, oy, steps[-1], lo, hi)) -> tuple[float, float]:
            bx, by, last, vlo, vhi = box
            fx = bx + pad + (w - pad - 10) * i / max(1, last)
            return fx, by + 20 + (h - pad - 20) * (vhi - v) / (vhi - vlo)

        draw.line([xy(s, v) for s, v in zip(steps, y, strict=True)], fill=(200, 200, 200))
        off = len(y) - len(smooth)
        draw.line(
            [xy(steps[i + off], v) for i, v in enumerate(smooth)], fill=(200, 40, 40), width=2
        )
        draw.text((ox + pad, oy + 4), f"{stage}: loss (log10), {len(steps)} steps", fill="black")
        draw.text((ox + 2, oy + 20), f"{10**hi:.3g}", fill="black")
        draw.text((ox + 2, oy + h - pad - 10), f"{10**lo:.3g}", fill="black")
        draw.text((ox + w - 60, oy + h - pad + 4), f"{steps[-1]}", fill="black")
    png.parent.mkdir(parents=True, exist_ok=True)
    img.save(png)


def _generate(pipe, prompts: list[str], seeds: list[int], **kw) -> list:
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    kw.setdefault("guidance_scale", DEFAULTS["default_cfg"])
    return pipe(
        prompts,
        num_inference_steps=DEFAULTS["default_steps"],
        generator=gens,
        height=S.SIZE,
        width=S.SIZE,
        **kw,
    ).images


def _accuracy(images: list, scenes: list[S.Scene]) -> dict[str, float]:
    from .judge import judge

    bg = colour = kind = 0
    for im, sc in zip(images, scenes, strict=True):
        v, want = judge(im), sc.shapes[0]
        bg += v.background == sc.background
        colour += v.main is not None and v.main.colour == want.colour
        kind += v.main is not None and v.main.kind == want.kind
    n = len(scenes)
    return {"background": bg / n, "shape_colour": colour / n, "shape_kind": kind / n}


def evaluate(out: Path, workdir: Path, seeds: int = 32) -> dict:
    """The accuracy table by meaning (judge.py) over `seeds` seeds per case; writes eval.json."""
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from .judge import colour_share, iou, judge

    results: dict = {}
    if not stage_done(out, "unet"):
        log.info("eval: no model in %s yet", out)
        return results
    pipe = load_pipeline(out)
    pipe.set_progress_bar_config(disable=True)
    scenes = [S.sample_scene(9_000_000 + i, p_two=0.0) for i in range(seeds)]
    prompts = [S.full_caption(sc) for sc in scenes]
    ids = list(range(seeds))
    for cfg in (1.0, DEFAULTS["default_cfg"], 7.0):
        results[f"cfg {cfg:g}"] = _accuracy(
            _generate(pipe, prompts, ids, guidance_scale=cfg), scenes
        )
    red = "a red circle on a blue background"
    plain = _generate(pipe, [red] * seeds, ids)
    negated = _generate(pipe, [red] * seeds, ids, negative_prompt=["red"] * seeds)
    results["negative red"] = {
        "red_share_without": float(np.mean([colour_share(im, "red") for im in plain])),
        "red_share_with": float(np.mean([colour_share(im, "red") for im in negated])),
    }
    if stage_done(out, "controlnet"):
        cn = ControlNetModel.from_pretrained(out / CONTROLNET, dtype=torch.float32)
        cpipe = StableDiffusionControlNetPipeline(**pipe.components, controlnet=cn)
        cpipe.set_progress_bar_config(disable=True)
        maps = [S.edge_map(sc) for sc in scenes]
        for scale in (0.0, 1.0):
            imgs = _generate(cpipe, prompts, ids, image=maps, controlnet_conditioning_scale=scale)
            ious = [
                iou(judge(im).main.mask, S.shape_mask(sc)) if judge(im).main else 0.0
                for im, sc in zip(imgs, scenes, strict=True)
            ]
            results[f"controlnet {scale:g}"] = {
                "mean_iou": float(np.mean(ious)),
                "iou_ge_0.6": float(np.mean(np.array(ious) >= 0.6)),
            }
    if stage_done(out, "lora"):
        pipe.load_lora_weights(str(out), weight_name=LORA_FILE, adapter_name="outline")
        for scale in (0.0, 1.0):
            pipe.set_adapters(["outline"], [scale])
            imgs = _generate(pipe, prompts, ids)
            verdicts = [judge(im).main for im in imgs]
            results[f"lora {scale:g}"] = {
                "hollow_share": float(
                    np.mean([v is not None and v.hollowness > 0.2 for v in verdicts])
                ),
                **_accuracy(imgs, scenes),
            }
    (workdir / "eval.json").write_text(json.dumps(results, indent=2))
    log.info("eval (%d seeds per case): %s", seeds, json.dumps(results, indent=1))
    return results
