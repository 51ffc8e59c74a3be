"""LoRA library and adapters: scanning, metadata, effect, parity, hygiene, modes."""

from __future__ import annotations

import shutil
import threading

import diffusers
import numpy as np
import pytest
import torch

from pipelines import EngineSettings, GenerationRequest, PipelineManager, RequestError, builtin
from pipelines.loras import LoraLibrary
from tests.lora_files import make_lora, to_kohya, write_sidecar

REQ = dict(prompt="a small house", num_inference_steps=3, width=64, height=64, seed=11,
           scheduler="Euler")  # fmt: skip


@pytest.fixture(scope="module")
def lora_dir(cache_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    sd = builtin.ensure_model("tiny-sd", cache_root)
    make_lora(sd, d / "alpha.safetensors", seed=1)
    make_lora(sd, d / "styles" / "beta.safetensors", seed=2,
              metadata={"ss_tag_frequency": '{"set": {"beta style": 9, "blue": 3}}'})  # fmt: skip
    make_lora(sd, d / "gamma.safetensors", seed=3)
    to_kohya(d / "alpha.safetensors", d / "alpha-kohya.safetensors")
    make_lora(builtin.ensure_model("tiny-sdxl", cache_root), d / "xl.safetensors", seed=4,
              metadata={"ss_base_model_version": "sdxl_base_v1-0"})  # fmt: skip
    write_sidecar(d / "gamma.safetensors", **{"activation text": "gamma look",
                                              "preferred weight": 0.7, "notes": "n"})  # fmt: skip
    (d / "gamma.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (d / "old.ckpt").write_bytes(b"pickle")
    (d / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    good = (d / "alpha.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    return d


def manager_for(cache_root, lora_dir, **kw):
    s = EngineSettings(default_model="tiny-sd",
                       devices=kw.pop("devices", ("cpu",)), cache_root=cache_root,
                       loras_dir=lora_dir, **kw)  # fmt: skip
    return PipelineManager(s)


def px(result, k=0):
    return np.asarray(result.images[k])


def test_scan_reads_headers_sidecars_and_refuses_pickles(cache_root, lora_dir):
    lib = LoraLibrary(lora_dir, cache_root)
    by_name = {e.name: e for e in lib.entries()}
    assert {"alpha", "beta", "gamma", "alpha-kohya", "xl", "tiny-sd-lora"} <= set(by_name)
    assert by_name["beta"].triggers == ("beta style", "blue") and by_name["beta"].rank == 4
    assert by_name["xl"].family == "sdxl" and by_name["alpha-kohya"].family == "sd15"
    assert by_name["tiny-sd-lora"].triggers == ("tinystyle",)
    g = by_name["gamma"]
    assert (g.activation_text, g.preferred_weight, g.preview.name) == (
        "gamma look",
        0.7,
        "gamma.png",
    )
    assert "pickle format" in lib.refused["old"] and "unreadable" in lib.refused["broken"]
    assert "xl" not in {e.name for e in lib.entries(family="sd15")}
    with pytest.raises(RequestError, match="'old' cannot be used: .ckpt is a pickle format"):
        lib.get("old")


def test_rescan_sees_added_removed_and_replaced_files(cache_root, lora_dir, tmp_path):
    d = tmp_path / "l"
    d.mkdir()
    shutil.copy(lora_dir / "alpha.safetensors", d / "one.safetensors")
    lib = LoraLibrary(d, cache_root)
    first = lib.get("one").sha256
    shutil.copy(lora_dir / "gamma.safetensors", d / "two.safetensors")
    (d / "one.safetensors").unlink()
    shutil.copy(lora_dir / "beta" if False else lora_dir / "styles" / "beta.safetensors",
                d / "two-b.safetensors")  # fmt: skip
    lib.rescan()
    assert {"two", "two-b"} <= set(lib.names()) and "one" not in lib.names()
    shutil.copy(lora_dir / "gamma.safetensors", d / "one.safetensors")  # same name, new content
    assert lib.get("one").sha256 != first


def test_weight_effect_zero_and_composition(cache_root, lora_dir):
    m = manager_for(cache_root, lora_dir)
    base = px(m.generate(GenerationRequest(**REQ)))
    a = px(m.generate(GenerationRequest(**REQ, loras={"alpha": 1.0})))
    zero = px(m.generate(GenerationRequest(**REQ, loras={"alpha": 0.0, "beta": 0.0})))
    both = px(m.generate(GenerationRequest(**REQ, loras={"alpha": 1.0, "beta": 1.0})))
    b = px(m.generate(GenerationRequest(**REQ, loras={"beta": 1.0})))
    assert not np.array_equal(base, a) and np.array_equal(base, zero)
    assert not np.array_equal(both, a) and not np.array_equal(both, b)
    # parity with a direct diffusers load_lora_weights + set_adapters call
    pipe = diffusers.DiffusionPipeline.from_pretrained(
        str(builtin.ensure_model("tiny-sd", cache_root)), safety_checker=None
    )
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(lora_dir / "alpha.safetensors"), adapter_name="a")
    pipe.load_lora_weights(str(lora_dir / "styles" / "beta.safetensors"), adapter_name="b")
    pipe.set_adapters(["a", "b"], [1.0, 1.0])
    direct = pipe("a small house", num_inference_steps=3, width=64, height=64, guidance_scale=7.0,
                  generator=torch.Generator("cpu").manual_seed(11)).images[0]  # fmt: skip
    assert np.array_equal(both, np.asarray(direct))


def test_kohya_format_gives_the_same_image(cache_root, lora_dir):
    m = manager_for(cache_root, lora_dir)
    ours = px(m.generate(GenerationRequest(**REQ, loras={"alpha": 0.8})))
    kohya = px(m.generate(GenerationRequest(**REQ, loras={"alpha-kohya": 0.8})))
    assert np.array_equal(ours, kohya)


def test_failures_leave_the_model_clean_and_serving(cache_root, lora_dir):
    m = manager_for(cache_root, lora_dir)
    base = px(m.generate(GenerationRequest(**REQ)))
    good = px(m.generate(GenerationRequest(**REQ, loras={"alpha": 1.0})))
    for bad, fragment in [
        ({"truncated": 1.0}, "'truncated'"),
        ({"broken": 1.0}, "unreadable safetensors"),
        ({"xl": 1.0}, "'xl' is a SDXL LoRA; model 'tiny-sd' is SD 1.x/2.x"),
        ({"alpha": 1.0, "truncated": 1.0}, "'truncated'"),
    ]:
        with pytest.raises(RequestError, match=fragment):
            m.generate(GenerationRequest(**REQ, loras=bad))
        assert np.array_equal(px(m.generate(GenerationRequest(**REQ))), base)
        assert np.array_equal(px(m.generate(GenerationRequest(**REQ, loras={"alpha": 1.0}))), good)


def test_switching_resident_adapters_loads_nothing_and_lru_evicts(cache_root, lora_dir):
    m = manager_for(cache_root, lora_dir, lora_cache_count=2)
    for name in ["alpha", "beta", "alpha", "beta", "alpha"]:
        m.generate(GenerationRequest(**REQ, loras={name: 1.0}))
    slot = m.slots[0]
    adapters = slot.cache.get(slot.cache.names()[0]).adapters
    assert adapters.loads == 2
    m.generate(GenerationRequest(**REQ, loras={"gamma": 1.0}))  # evicts beta (LRU)
    present = {r.adapter for r in adapters.resident.values()}
    assert len(present) == 2 and adapters.loads == 3
    listed = {a for v in adapters.pipe.get_list_adapters().values() for a in v}
    assert listed == present


def test_different_lora_sets_concurrently_equal_serial(cache_root, lora_dir):
    sets = [{"alpha": 1.0}, {"beta": 0.5}, {}, {"alpha": -1.0, "gamma": 1.0}, {"beta": 2.0}, {}]
    serial = manager_for(cache_root, lora_dir)
    want = [px(serial.generate(GenerationRequest(**REQ, loras=s))) for s in sets]
    for devices in [("cpu",), ("cpu", "cpu")]:
        m = manager_for(cache_root, lora_dir, devices=devices)
        got: dict[int, np.ndarray] = {}

        def run(i, s, m=m, got=got):
            got[i] = px(m.generate(GenerationRequest(**REQ, loras=s)))

        threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(sets)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(np.array_equal(got[i], want[i]) for i in range(len(sets))), devices


def base_weights(module, clone=False):
    """The base model's weights by their plain names (peft wraps layers in base_layer)."""
    return {
        k.replace(".base_layer", ""): v.clone() if clone else v
        for k, v in module.state_dict().items()
        if "lora_" not in k
    }


def test_fused_mode_matches_unfused_and_restores_weights_exactly(cache_root, lora_dir):
    m = manager_for(cache_root, lora_dir, lora_mode="fused")
    plain = manager_for(cache_root, lora_dir)
    base = px(m.generate(GenerationRequest(**REQ)))
    slot = m.slots[0]
    pipe = slot.cache.get(slot.cache.names()[0]).pipeline
    before = base_weights(pipe.unet, clone=True)
    fused = [px(m.generate(GenerationRequest(**REQ, loras={"alpha": 0.7}))) for _ in range(2)]
    unfused = px(plain.generate(GenerationRequest(**REQ, loras={"alpha": 0.7})))
    assert np.abs(fused[0].astype(int) - unfused.astype(int)).max() <= 1
    assert np.array_equal(fused[0], fused[1])
    assert np.array_equal(px(m.generate(GenerationRequest(**REQ))), base)  # unfused again
    after = base_weights(pipe.unet)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_hotswap_keeps_modules_and_equals_a_fresh_load(cache_root, lora_dir):
    m = manager_for(cache_root, lora_dir, lora_mode="hotswap", lora_hotswap_rank=8)
    m.generate(GenerationRequest(**REQ, loras={"alpha": 1.0}))
    slot = m.slots[0]
    pipe = slot.cache.get(slot.cache.names()[0]).pipeline
    q = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    a_module = q.lora_A["hot0"]
    swapped = px(m.generate(GenerationRequest(**REQ, loras={"gamma": 1.0})))
    assert q.lora_A["hot0"] is a_module
    fresh = manager_for(cache_root, lora_dir)
    assert np.array_equal(
        swapped, px(fresh.generate(GenerationRequest(**REQ, loras={"gamma": 1.0})))
    )
    with pytest.raises(RequestError, match="'truncated'"):
        m.generate(GenerationRequest(**REQ, loras={"truncated": 1.0}))
    again = px(m.generate(GenerationRequest(**REQ, loras={"beta": 1.0})))
    assert np.array_equal(again, px(fresh.generate(GenerationRequest(**REQ, loras={"beta": 1.0}))))


def test_a_lora_that_only_partly_fits_loads_what_fits_and_says_so(cache_root, tmp_path):
    """The mix convert_state_dict_to_diffusers wrote for atelier-shapes' first LoRAs
    (attention layers as `to_k.lora.down`, projections and convs as `lora_A`): diffusers
    reads the file as PEFT format and leaves every attention layer out without a word.
    The result names the LoRA and how many of its layers were not loaded."""
    from safetensors.torch import load_file, save_file

    from pipelines.adapters import file_layers
    from tests.lora_files import ATTN

    d = tmp_path / "loras"
    sd = builtin.ensure_model("tiny-sd", cache_root)
    make_lora(sd, d / "whole.safetensors", seed=5,
              targets=[*ATTN, "proj_in", "proj_out", "conv1", "conv2"])  # fmt: skip
    state = load_file(str(d / "whole.safetensors"))
    attention = tuple(f".{t}.lora_" for t in ATTN)
    mixed = {(k.replace(".lora_A.", ".lora.down.").replace(".lora_B.", ".lora.up.")
              if any(a in k for a in attention) else k): v for k, v in state.items()}  # fmt: skip
    save_file(mixed, str(d / "mixed.safetensors"))
    held = file_layers(d / "mixed.safetensors")
    renamed = sum(1 for k in mixed if k.endswith(".lora.down.weight"))
    assert held == file_layers(d / "whole.safetensors") and 0 < renamed < held
    lib = LoraLibrary(d, cache_root)
    # the same tensors: one A1111 hash; other key names: another adapter (loaded anew)
    assert lib.get("mixed").sha256 == lib.get("whole").sha256
    assert lib.get("mixed").identity != lib.get("whole").identity
    m = manager_for(cache_root, d)
    whole = m.generate(GenerationRequest(**REQ, loras={"whole": 1.0}))
    assert not whole.warnings, whole.warnings
    part = m.generate(GenerationRequest(**REQ, loras={"mixed": 1.0}))
    said = " ".join(part.warnings)
    assert f"loras: 'mixed': {renamed} of its {held} layers were not loaded" in said, said
    assert not np.array_equal(px(part), px(whole)), "the attention layers were left out"
    again = m.generate(GenerationRequest(**REQ, loras={"mixed": 1.0}))  # resident: no reload
    assert any("'mixed'" in w for w in again.warnings)
