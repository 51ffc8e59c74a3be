"""Upscalers: spandrel models from the upscalers folder (tiny random ones built here),
tiling with overlap, A1111's pixel resizers, and the Extras job (sizes, progress,
infotext, saving, the slot cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import EngineSettings, PipelineManager
from pipelines.errors import RequestError
from pipelines.upscale import UpscalerLibrary, load_upscaler, run_model, target_size, upscale
from pipelines.upscale_job import UpscaleJob, UpscaleRequest
from tests.test_upscale_files import tiny_upscaler


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("upscalers")
    tiny_upscaler(folder / "tiny-2x.safetensors", scale=2)
    tiny_upscaler(folder / "sub" / "esrgan-2x.safetensors", scale=2, arch="esrgan")
    (folder / "old.pth").write_bytes(b"not loaded")
    return folder


@pytest.fixture(scope="module")
def engine(cache_root: Path, folder: Path) -> PipelineManager:
    return PipelineManager(EngineSettings(default_model="tiny-sd",
                                          devices=("cpu",), cache_root=cache_root,
                                          loras_dir=None, models_dir=None,
                                          upscalers_dir=folder))  # fmt: skip


def picture(w: int = 40, h: int = 30, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def direct(model, image: Image.Image) -> np.ndarray:
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    with torch.inference_mode():
        y = model(x).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return (y * 255).round().astype(np.uint8)


def test_library_lists_safetensors_and_refuses_pickles(folder):
    lib = UpscalerLibrary(folder)
    assert sorted(lib.names()) == ["esrgan-2x", "tiny-2x"]
    with pytest.raises(RequestError) as e:
        lib.get("old")
    assert "convert" in e.value.rule
    with pytest.raises(RequestError) as e:
        lib.get("nope")
    assert "Lanczos" in e.value.rule and "tiny-2x" in e.value.rule


def test_spandrel_detects_both_architectures(folder):
    lib = UpscalerLibrary(folder)
    for name, arch in (("tiny-2x", "RealESRGAN Compact"), ("esrgan-2x", "ESRGAN")):
        model = load_upscaler(lib.get(name), "cpu")
        assert model.scale == 2 and model.architecture.name == arch


def test_one_tile_equals_spandrel_and_tiles_blend_close(folder):
    model = load_upscaler(UpscalerLibrary(folder).get("tiny-2x"), "cpu")
    image = picture(40, 30)
    whole = np.asarray(run_model(model, image))
    assert whole.shape == (60, 80, 3)
    assert np.array_equal(whole, direct(model, image))
    tiles = []
    tiled = np.asarray(run_model(model, image, tile=16, overlap=4,
                                 on_tile=lambda d, t: tiles.append((d, t))))  # fmt: skip
    assert tiled.shape == whole.shape and len(tiles) == tiles[-1][1] > 1
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    assert diff.mean() < 2.0, diff.mean()  # a small receptive field: seams blend away
    no_overlap = np.asarray(run_model(model, image, tile=16, overlap=0))
    assert np.abs(no_overlap.astype(int) - whole.astype(int)).mean() >= diff.mean()


def test_resamplers_and_sizes():
    image = picture(40, 30)
    assert upscale(image, "Nearest", 80, 60).getpixel((1, 1)) == image.getpixel((0, 0))
    assert upscale(image, "Lanczos", 100, 75).size == (100, 75)
    assert target_size((40, 30), 2.5, 0, 0) == (100, 75)
    assert target_size((40, 30), None, 80, 0) == (80, 60)
    assert target_size((40, 30), None, 0, 90) == (120, 90)
    with pytest.raises(RequestError):
        target_size((40, 30), 0, 0, 0)


def test_model_runs_until_big_enough_then_lanczos(folder):
    model = load_upscaler(UpscalerLibrary(folder).get("tiny-2x"), "cpu")
    image = picture(20, 20)
    out = upscale(image, "tiny-2x", 70, 70, model)  # 2x twice (80), then down to 70
    once = run_model(model, run_model(model, image))
    assert out.size == (70, 70)
    assert np.array_equal(np.asarray(out), np.asarray(once.resize((70, 70), Image.LANCZOS)))


def test_extras_job_model_upscaler(engine, tmp_path):
    from pipelines.outputs import read_png_parameters

    source = picture(40, 30)
    source.info["parameters"] = "a fox\nSteps: 4, Sampler: Euler, Seed: 1, Size: 40x30"
    events = []
    job = engine.submit(UpscaleJob(UpscaleRequest("tiny-2x", scale=2), source, tmp_path, "up"),
                        on_event=events.append)  # fmt: skip
    result = job.result(timeout=120)
    model = load_upscaler(engine.upscalers.get("tiny-2x"), "cpu")
    assert np.array_equal(np.asarray(result.images[0]), direct(model, source))
    assert result.infotexts[0] == (
        "a fox\nSteps: 4, Sampler: Euler, Seed: 1, Size: 40x30, "
        "Postprocess upscale by: 2, Postprocess upscaler: tiny-2x"
    )
    assert result.paths == [tmp_path / "up-0.png"]
    assert read_png_parameters(result.paths[0]) == result.infotexts[0]
    assert [e.kind for e in events if e.kind in ("started", "progress")][:2] == [
        "started",
        "progress",
    ]
    slot = engine.slots[0]
    assert engine.upscalers.get("tiny-2x").key in slot.cache  # kept for the next job


def test_extras_job_rules(engine):
    image = picture()
    for req, field in ((UpscaleRequest("Bogus"), "upscaler"),
                       (UpscaleRequest("Lanczos", scale=99), "scale"),
                       (UpscaleRequest("Lanczos", width=-1), "width"),
                       (UpscaleRequest("old"), "upscaler")):  # fmt: skip
        with pytest.raises(RequestError) as e:
            engine.submit(UpscaleJob(req, image))
        assert e.value.field == field
    out = engine.submit(UpscaleJob(UpscaleRequest("Lanczos", width=100), image)).result(60)
    assert out.images[0].size == (100, 75)
    assert out.infotexts[0] == "Postprocess upscale to: 100x75, Postprocess upscaler: Lanczos"
