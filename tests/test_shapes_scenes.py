"""The `atelier-shapes` training data: renderer determinism, caption grammar, and the
pixel judge's accuracy on rendered scenes (the judge grades the trained model, so it
must itself be ~100% right on ground truth)."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from pipelines.shapes import judge as J
from pipelines.shapes import scenes as S

COLOUR = "(?:" + "|".join(S.COLOURS) + ")"
SHAPE = "(?:" + "|".join(S.SHAPES) + ")"
THING = f"a {COLOUR} {SHAPE}"
FULL = re.compile(f"^{THING}(?: and {THING})? on a {COLOUR} background$")


def test_render_is_a_pure_function_of_the_seed() -> None:
    a = np.asarray(S.render(S.sample_scene(7)))
    b = np.asarray(S.render(S.sample_scene(7)))
    c = np.asarray(S.render(S.sample_scene(8)))
    assert a.shape == (64, 64, 3)
    assert np.array_equal(a, b), "same seed must give the same pixels"
    assert not np.array_equal(a, c), "different seeds must give different scenes"


def test_scenes_cover_palette_shapes_and_two_shape_scenes() -> None:
    scenes = [S.sample_scene(s) for s in range(400)]
    kinds = {sh.kind for sc in scenes for sh in sc.shapes}
    colours = {sh.colour for sc in scenes for sh in sc.shapes} | {sc.background for sc in scenes}
    assert kinds == set(S.SHAPES) and colours == set(S.COLOURS)
    two = [sc for sc in scenes if len(sc.shapes) == 2]
    assert 60 < len(two) < 140, f"~25% two-shape scenes expected, got {len(two)}"
    for sc in scenes:
        assert all(sh.colour != sc.background for sh in sc.shapes), sc
        assert len({sh.colour for sh in sc.shapes}) == len(sc.shapes), sc


def test_full_captions_follow_the_grammar() -> None:
    for seed in range(200):
        scene = S.sample_scene(seed)
        cap = S.full_caption(scene)
        assert FULL.match(cap), cap
        assert cap.endswith(f"on a {scene.background} background")
    one = S.Scene("blue", (S.Shape("circle", "red", 32, 32, 10),))
    assert S.full_caption(one) == "a red circle on a blue background"
    two = S.Scene(
        "white", (S.Shape("circle", "red", 16, 32, 8), S.Shape("square", "blue", 48, 32, 8))
    )
    assert S.full_caption(two) == "a red circle and a blue square on a white background"


def test_sampled_captions_have_dropout_partials_and_known_words() -> None:
    rng = random.Random(0)
    words = set(S.vocabulary())
    caps = [S.sample_caption(S.sample_scene(i), rng) for i in range(2000)]
    empty = sum(c == "" for c in caps) / len(caps)
    assert 0.07 < empty < 0.13, f"caption dropout should be ~10%, got {empty:.3f}"
    assert any(c in S.COLOURS for c in caps), "single colour words (negative prompts) missing"
    assert any(c.endswith("background") and not c.startswith("a ") for c in caps)
    full = sum(bool(FULL.match(c)) for c in caps) / len(caps)
    assert 0.45 < full < 0.65, full
    for c in caps:
        assert set(c.split()) <= words, c


@pytest.mark.parametrize("outline", [False, True])
def test_judge_reads_rendered_scenes(outline: bool) -> None:
    total = right_bg = right_colour = right_kind = 0
    for seed in range(300):
        scene = S.sample_scene(seed)
        verdict = J.judge(S.render(scene, outline=outline))
        right_bg += verdict.background == scene.background
        for shape in scene.shapes:
            total += 1
            found = [t for t in verdict.things if t.colour == shape.colour]
            right_colour += bool(found)
            right_kind += bool(found) and found[0].kind == shape.kind
    assert right_bg == 300
    assert right_colour / total >= 0.99, right_colour / total
    assert right_kind / total >= 0.98, right_kind / total


def test_judge_tells_outlines_from_fills_and_masks_match() -> None:
    for seed in range(100):
        scene = S.sample_scene(seed, p_two=0.0)
        filled = J.judge(S.render(scene)).main
        hollow = J.judge(S.render(scene, outline=True)).main
        assert filled is not None and hollow is not None
        assert filled.hollowness < 0.05 and hollow.hollowness > 0.1, seed
        assert J.iou(filled.mask, S.shape_mask(scene)) > 0.8, seed


def test_judge_is_not_fooled_by_a_plain_picture() -> None:
    from PIL import Image

    verdict = J.judge(Image.new("RGB", (64, 64), S.PALETTE["green"]))
    assert verdict.background == "green" and verdict.things == ()
    assert J.colour_share(Image.new("RGB", (64, 64), S.PALETTE["red"]), "red") == 1.0


def test_edge_maps_trace_the_shape() -> None:
    scene = S.Scene("blue", (S.Shape("square", "red", 32, 32, 12),))
    edges = np.asarray(S.edge_map(scene))[..., 0] > 0
    mask = S.shape_mask(scene)
    assert edges.sum() > 0 and (edges & ~mask).sum() == 0, "1-px edges lie on the mask's rim"
    canny = np.asarray(S.canny_map(S.render(scene)))[..., 0] > 0
    assert canny.sum() > 40 and not canny[:10].any(), "Canny finds the square and nothing else"


def test_tokenizer_has_one_token_per_caption_word() -> None:
    from pipelines.shapes.train import build_tokenizer

    tok = build_tokenizer()
    ids = {w: tok(w, add_special_tokens=False).input_ids for w in S.vocabulary()}
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len({v[0] for v in ids.values()}) == len(ids), "two words share a token"
    full = tok("a red circle on a blue background").input_ids
    assert len(full) == 7 + 2 and full[0] == tok.bos_token_id and full[-1] == tok.eos_token_id


def test_the_decoder_stage_tunes_only_the_decoder(tmp_path) -> None:
    """Run 3's `decoder` stage: the encoder (so every latent the UNet, ControlNet and LoRA
    learned from) stays bit for bit; the decoder changes; a second run is skipped."""
    import shutil
    from dataclasses import replace

    import torch
    from safetensors.torch import load_file

    from pipelines.shapes import train as T

    out = tmp_path / "out"
    shutil.copytree(T.Path("assets") / T.MODEL, out / T.MODEL)
    info = T.json.loads((out / T.MODEL / "atelier.json").read_text())
    info["training"].pop("decoder_steps", None)  # as before run 3
    (out / T.MODEL / "atelier.json").write_text(T.json.dumps(info))
    before = load_file(out / T.MODEL / "vae" / "diffusion_pytorch_model.safetensors")
    assert not T.stage_done(out, "decoder")
    torch.manual_seed(0)
    T.stage_decoder(replace(T.PILOT, decoder_steps=2, warmup=1), tmp_path / "work", out)
    after = load_file(out / T.MODEL / "vae" / "diffusion_pytorch_model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder.", "post_quant_conv.")) for k in changed)
    assert after["encoder.conv_in.weight"].dtype == torch.float16, "exported in fp16"
    assert T.stage_done(out, "decoder"), "atelier.json records the stage"
    assert (tmp_path / "work" / "decoder" / "loss.csv").read_text().count("\n") == 2
