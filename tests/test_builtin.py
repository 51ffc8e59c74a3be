"""Built-in tiny models: real pipelines that load offline, deterministic, safely shared."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import hashlib  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipelines import builtin  # noqa: E402
from pipelines.families import family_from_model_index  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core box stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(folder: Path):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **extra) -> np.ndarray:
    """Two steps at 64x64 with a fixed CPU generator; images or frames as numpy."""
    kwargs = {
        "prompt": "a cat",
        "num_inference_steps": 2,
        "height": 64,
        "width": 64,
        "generator": torch.Generator("cpu").manual_seed(0),
        "output_type": "np",
        **extra,
    }
    out = pipe(**kwargs)
    return out.frames if hasattr(out, "frames") else out.images


def safetensors_digests(folder: Path) -> dict[str, str]:
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*.safetensors"))
    }


@pytest.mark.parametrize("name", list(builtin.BUILTIN_MODELS))
def test_builtin_loads_and_generates(cache_root: Path, name: str) -> None:
    folder = builtin.ensure_model(name, cache_root)
    assert folder == cache_root / "builtin" / name
    assert (folder / builtin.MARKER).read_text().strip() == builtin.BUILDER_VERSION
    index = json.loads((folder / "model_index.json").read_text())
    assert family_from_model_index(index).name == builtin.BUILTIN_MODELS[name]

    pipe = load(folder)
    if name.startswith("tiny-wan"):
        extra = {"image": Image.new("RGB", (64, 64), "red")} if name.endswith("i2v") else {}
        out = run(pipe, num_frames=5, **extra)
        assert out.shape == (1, 5, 64, 64, 3)
        assert (pipe.transformer_2 is not None) == (name == "tiny-wan22")
        assert pipe.vae_scale_factor_spatial == 8
    else:
        out = run(pipe)
        assert out.shape == (1, 64, 64, 3)
        assert pipe.vae_scale_factor == 8
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", list(builtin.BUILTIN_MODELS))
def test_tokenizers_match_text_encoders(cache_root: Path, name: str) -> None:
    pipe = load(builtin.ensure_model(name, cache_root))
    for suffix in ("", "_2"):
        tok = getattr(pipe, f"tokenizer{suffix}", None)
        enc = getattr(pipe, f"text_encoder{suffix}", None)
        if tok is None:
            continue
        cfg = enc.config
        assert len(tok) <= cfg.vocab_size
        assert tok.pad_token_id == cfg.pad_token_id
        assert tok.eos_token_id == cfg.eos_token_id
        if "CLIP" in type(tok).__name__:
            assert tok.model_max_length == 77 == cfg.max_position_embeddings
            assert tok.bos_token_id == cfg.bos_token_id
        else:
            assert tok.model_max_length == 512
        ids = tok("a cat, 42!").input_ids
        assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids[:-1]


def test_build_is_deterministic_and_keeps_caller_rng(tmp_path: Path) -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    first = builtin.ensure_model("tiny-sd", tmp_path / "a")
    assert torch.equal(torch.get_rng_state(), before)
    second = builtin.ensure_model("tiny-sd", tmp_path / "b")
    digests = safetensors_digests(first)
    assert len(digests) == 3  # unet, vae, text encoder
    assert digests == safetensors_digests(second)
    lora_a = builtin.ensure_lora(tmp_path / "a").read_bytes()
    assert lora_a == builtin.ensure_lora(tmp_path / "b").read_bytes()


def test_concurrent_ensure_builds_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = builtin._BUILDERS["tiny-sd"]
    calls: list[int] = []

    def slow_build(folder: Path) -> None:
        calls.append(threading.get_ident())
        time.sleep(0.3)  # make sure the other thread arrives while this build runs
        original(folder)

    monkeypatch.setitem(builtin._BUILDERS, "tiny-sd", slow_build)
    barrier = threading.Barrier(2)
    results: list[Path] = []

    def worker() -> None:
        barrier.wait()
        results.append(builtin.ensure_model("tiny-sd", tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [tmp_path / "builtin" / "tiny-sd"] * 2
    assert sorted(p.name for p in (tmp_path / "builtin").iterdir()) == [".lock", "tiny-sd"]
    assert load(results[0]).unet is not None


def test_complete_folder_is_reused_and_version_bump_rebuilds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = builtin._BUILDERS["tiny-wan"]
    calls: list[Path] = []

    def counting(folder: Path) -> None:
        calls.append(folder)
        original(folder)

    monkeypatch.setitem(builtin._BUILDERS, "tiny-wan", counting)
    folder = builtin.ensure_model("tiny-wan", tmp_path)
    assert builtin.ensure_model("tiny-wan", tmp_path) == folder
    assert len(calls) == 1

    (folder / builtin.MARKER).unlink()  # an interrupted or foreign folder is rebuilt
    (folder / "junk.txt").write_text("x")
    builtin.ensure_model("tiny-wan", tmp_path)
    assert len(calls) == 2 and not (folder / "junk.txt").exists()

    monkeypatch.setattr(builtin, "BUILDER_VERSION", "atelier-builtin-test")
    builtin.ensure_model("tiny-wan", tmp_path)
    assert len(calls) == 3
    assert (folder / builtin.MARKER).read_text().strip() == "atelier-builtin-test"


def test_unknown_name_and_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny-sd"):
        builtin.ensure_model("tiny-nothing", tmp_path)
    monkeypatch.setenv("ATELIER_CACHE_DIR", str(tmp_path / "c"))
    assert builtin.default_root() == tmp_path / "c"
    monkeypatch.delenv("ATELIER_CACHE_DIR")
    assert builtin.default_root() == Path.home() / ".cache" / "atelier"


def test_controlnet_works_with_tiny_sd(cache_root: Path) -> None:
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    controlnet = ControlNetModel.from_pretrained(builtin.ensure_controlnet(cache_root))
    assert len(controlnet.config.conditioning_embedding_out_channels) == 4  # 8x downsampling
    sd = load(builtin.ensure_model("tiny-sd", cache_root))
    pipe = StableDiffusionControlNetPipeline(
        **sd.components, controlnet=controlnet, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    hint = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8)[:, None] * 4, (1, 64, 3)))
    guided = run(pipe, image=hint)
    assert guided.shape == (1, 64, 64, 3)
    unguided = run(pipe, image=hint, controlnet_conditioning_scale=0.0)
    assert not np.array_equal(guided, unguided)  # its zero convs were given weights: it acts


def test_lora_changes_output_and_zero_weight_restores_it(cache_root: Path) -> None:
    path = builtin.ensure_lora(cache_root)
    assert path.name == "tiny-sd-lora.safetensors" and path.is_file()
    pipe = load(builtin.ensure_model("tiny-sd", cache_root))
    base = run(pipe)
    pipe.load_lora_weights(path, adapter_name="t")
    pipe.set_adapters(["t"], [1.0])
    with_lora = run(pipe)
    assert np.abs(with_lora - base).max() > 0.05
    pipe.set_adapters(["t"], [0.0])
    assert np.array_equal(run(pipe), base)
