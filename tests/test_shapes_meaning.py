"""The built-in trained model `atelier-shapes`, tested by what its pictures show (a pixel
judge reads them back into words), through the engine: prompt, negative prompt, CFG,
ControlNet, LoRA, image-to-image and inpainting. 32 images per case (8 scenes x 4 seeds).

Thresholds are the issue's targets: a model that does not draw what it is told, a
ControlNet unit that does not read its control image or a LoRA that does nothing fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines import builtin
from pipelines.shapes import scenes as S
from pipelines.shapes.judge import colour_share, iou, judge

# The targets (bench/SHAPES_TRAINING.md has the run that met them).
FLOOR = {"background": 0.9, "colour": 0.85, "kind": 0.7}
FLOOR_IOU = 0.6  # mean IoU of the drawn shape with the control map's shape, weight 1
FLOOR_HOLLOW = 0.8  # share of outline pictures with the outline LoRA at weight 1
pytestmark = pytest.mark.skipif(
    builtin.shipped_model() is None, reason="atelier-shapes weights are not in assets/ yet"
)
SCENES = [S.sample_scene(9_100_000 + i, p_two=0.0) for i in range(8)]
PER_SCENE = 4  # seeds per scene: 32 images per case


@pytest.fixture(scope="module")
def shapes(cache_root):
    from pipelines import EngineSettings, PipelineManager

    return PipelineManager(EngineSettings(devices=("cpu",), cache_root=cache_root,
                                          default_model=builtin.SHIPPED_MODEL))  # fmt: skip


def images(manager, prompts, **kw):
    """PER_SCENE images for each prompt (seeds 0.. of the scene's index), in order."""
    from pipelines import GenerationRequest

    out = []
    for i, prompt in enumerate(prompts):
        req = GenerationRequest(prompt=prompt, seed=1000 * i, batch_size=PER_SCENE, **kw)
        out += manager.generate(req).images
    return out


def accuracy(pictures, scenes) -> dict[str, float]:
    truth = [sc for sc in scenes for _ in range(PER_SCENE)]
    verdicts = [judge(p) for p in pictures]
    main = [v.main for v in verdicts]
    return {
        "background": np.mean(
            [v.background == sc.background for v, sc in zip(verdicts, truth, strict=True)]
        ),
        "colour": np.mean(
            [
                m is not None and m.colour == sc.shapes[0].colour
                for m, sc in zip(main, truth, strict=True)
            ]
        ),  # fmt: skip
        "kind": np.mean(
            [
                m is not None and m.kind == sc.shapes[0].kind
                for m, sc in zip(main, truth, strict=True)
            ]
        ),  # fmt: skip
    }


def test_atelier_shapes_draws_what_the_prompt_says(shapes):
    family = shapes.registry.family_of("atelier-shapes")
    assert family.default_size == 64, "its own default size, from its folder"
    got = accuracy(images(shapes, [S.full_caption(sc) for sc in SCENES]), SCENES)
    assert all(got[k] >= FLOOR[k] for k in FLOOR), got


def test_a_negative_prompt_removes_its_colour(shapes):
    # Where the prompt leaves the colour open, negative "red" removes red shapes.
    prompt = ["a circle on a blue background"] * 8
    reds = sum(v.main is not None and v.main.colour == "red"
               for v in map(judge, images(shapes, prompt)))  # fmt: skip
    negated_pictures = images(shapes, prompt, negative_prompt="red")
    reds_negated = sum(v.main is not None and v.main.colour == "red"
                       for v in map(judge, negated_pictures))  # fmt: skip
    assert reds >= 3 and reds_negated <= reds // 4, (reds, reds_negated)
    # Where the prompt asks for red, negative "red" fights it: less red, not none
    # (measured: 21% less red over these 32 images; the shape shrinks, stays red).
    prompt = ["a red circle on a blue background"] * 8
    plain = np.mean([colour_share(p, "red") for p in images(shapes, prompt)])
    negated = np.mean([colour_share(p, "red") for p in images(shapes, prompt,
                                                               negative_prompt="red")])  # fmt: skip
    assert negated < 0.85 * plain, (plain, negated)


def test_cfg_1_follows_the_prompt_less_than_cfg_7(shapes):
    prompts = [S.full_caption(sc) for sc in SCENES]
    low = accuracy(images(shapes, prompts, guidance_scale=1.0), SCENES)
    high = accuracy(images(shapes, prompts, guidance_scale=7.0), SCENES)
    assert sum(low.values()) < sum(high.values()), (low, high)


@pytest.mark.skipif(builtin.shipped_controlnet() is None, reason="ControlNet not trained yet")
def test_the_controlnet_puts_the_shape_on_the_control_maps_edges(shapes):
    from pipelines import GenerationRequest
    from pipelines.tasks import Inputs

    means = {}
    for weight in (1.0, 0.0):
        ious = []
        for i, sc in enumerate(SCENES):
            unit = {"model": builtin.SHIPPED_CONTROLNET, "module": "none", "weight": weight}
            req = GenerationRequest(prompt=S.full_caption(sc), seed=1000 * i,
                                    batch_size=PER_SCENE, controlnets=[unit])  # fmt: skip
            out = shapes.generate(req, inputs=Inputs(control_images=[S.edge_map(sc)]))
            mask = S.shape_mask(sc)
            ious += [iou(judge(p).main.mask, mask) if judge(p).main else 0.0 for p in out.images]
        means[weight] = float(np.mean(ious))
    # The unit reads its control map: the shape follows the map's edges at weight 1, not 0.
    assert means[1.0] >= FLOOR_IOU > means[0.0], means


def hollow_share(pictures) -> float:
    return float(np.mean([(m := judge(p).main) is not None and m.hollowness > 0.2
                          for p in pictures]))  # fmt: skip


@pytest.fixture(scope="module")
def outlines(shapes):
    """The same prompts and seeds without the LoRA, at weight 0 and at weight 1."""
    prompts = [S.full_caption(sc) for sc in SCENES]
    return {
        "plain": images(shapes, prompts),
        0.0: images(shapes, prompts[:2], loras={builtin.SHIPPED_LORA: 0.0}),
        1.0: images(shapes, prompts, loras={builtin.SHIPPED_LORA: 1.0}),
    }


@pytest.mark.skipif(builtin.shipped_lora() is None, reason="LoRA not trained yet")
def test_the_outline_lora_hollows_the_shapes_and_weight_0_is_no_lora(outlines):
    plain, outlined = hollow_share(outlines["plain"]), hollow_share(outlines[1.0])
    # The target on these 32 images (0.84 measured; 0.79 over 192 images of
    # other scenes, bench/SHAPES_TRAINING.md run 3). Run 2's LoRA, whose attention layers
    # never loaded, hollowed 0.06. Without the LoRA, shapes are filled.
    assert plain <= 0.1 and outlined >= FLOOR_HOLLOW, (plain, outlined)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(outlines["plain"][: len(outlines[0.0])], outlines[0.0], strict=True)
    )


def test_img2img_at_low_strength_keeps_the_init_images_background(shapes):
    from pipelines import GenerationRequest
    from pipelines.tasks import Inputs

    kept = []
    for i, sc in enumerate(SCENES):
        init = S.render(sc)
        other = next(c for c in S.COLOURS if c not in (sc.background, sc.shapes[0].colour))
        req = GenerationRequest(prompt=f"a {other} background", seed=1000 * i,
                                batch_size=PER_SCENE, strength=0.3)  # fmt: skip
        out = shapes.generate(req, inputs=Inputs(init_image=init))
        kept += [judge(p).background == sc.background for p in out.images]
    assert np.mean(kept) >= 0.9, np.mean(kept)


def test_inpainting_changes_only_the_masked_shape(shapes):
    from scipy import ndimage

    from pipelines import GenerationRequest
    from pipelines.tasks import Inputs

    sc = SCENES[0]
    init = S.render(sc)
    area = ndimage.binary_dilation(S.shape_mask(sc), iterations=3)
    mask = Image.fromarray((area * 255).astype(np.uint8))
    colour = next(c for c in S.COLOURS if c not in (sc.background, sc.shapes[0].colour))
    req = GenerationRequest(prompt=f"a {colour} {sc.shapes[0].kind} on a {sc.background} "
                            "background", seed=5, batch_size=PER_SCENE, mask_blur=0)  # fmt: skip
    out = shapes.generate(req, inputs=Inputs(init_image=init, mask_image=mask))
    before = np.asarray(init.convert("RGB")).astype(int)
    outside = ~ndimage.binary_dilation(area, iterations=2)
    for picture in out.images:
        after = np.asarray(picture.convert("RGB")).astype(int)
        assert np.abs(after - before)[outside].mean() < 8, "only the masked area may change"
        assert np.abs(after - before)[area].mean() > 20, "the masked shape must change"
