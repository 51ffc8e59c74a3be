"""Placement of big models (pipelines/placement.py): the decision from given memory
figures (pure function), sizes read from the files, the per-model override, and the
staged path on CPU devices making the same pixels as the unstaged one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipelines.placement import GIB, ModelSize, SlotMemory, balanced_map, decide

# SDXL at fp16 (bytes as diffusers' folders hold them, rounded to 0.01 GiB)
SDXL = ModelSize({"text_encoder": int(0.23 * GIB), "text_encoder_2": int(1.29 * GIB)},
                 {"unet": int(4.78 * GIB)}, int(0.16 * GIB))  # fmt: skip
# Flux.1-dev at bf16
FLUX = ModelSize({"text_encoder": int(0.23 * GIB), "text_encoder_2": int(8.87 * GIB)},
                 {"transformer": int(22.17 * GIB)}, int(0.16 * GIB))  # fmt: skip


def gpu(*gib: float) -> SlotMemory:
    return SlotMemory("cuda", tuple(int(g * GIB) for g in gib))


def test_whole_when_everything_and_the_reserve_fit() -> None:
    placed = decide(SDXL, gpu(21.6))  # a 24 GB card's 90% budget
    assert placed.mode == "whole" and placed.chosen_by == "auto"
    assert decide(FLUX, gpu(72.0)).mode == "whole"  # an 80 GB card


def test_a_cpu_slot_keeps_everything_in_ram() -> None:
    assert decide(FLUX, SlotMemory("cpu", (int(4 * GIB),))).mode == "whole"


def test_the_reserve_is_one_gib_and_a_tenth_of_the_denoiser() -> None:
    reserve = GIB + int(4.78 * GIB) // 10
    total = SDXL.total
    assert decide(SDXL, SlotMemory("cuda", (total + reserve,))).mode == "whole"
    assert decide(SDXL, SlotMemory("cuda", (total + reserve - 1,))).mode != "whole"
    assert decide(SDXL, SlotMemory("cuda", (total,)), reserve=0).mode == "whole"


def test_balanced_over_a_slot_s_gpus_when_one_is_too_small() -> None:
    placed = decide(FLUX, gpu(30, 20), reserve=0)  # 31.4 GiB over a 32 GB and a 24 GB card
    assert placed.mode == "balanced"
    assert placed.device_map == {"transformer": 0, "text_encoder_2": 1, "text_encoder": 1,
                                 "vae": 0}  # fmt: skip


def test_balanced_follows_diffusers_own_walk() -> None:
    from diffusers.pipelines.pipeline_loading_utils import _assign_components_to_devices

    parts = dict(sorted(FLUX.parts().items(), key=lambda x: -x[1]))
    devices = (int(30 * GIB), int(20 * GIB), int(20 * GIB))
    ours = balanced_map(parts, devices, 0)
    theirs = _assign_components_to_devices(parts, dict(enumerate(devices)))
    assert ours is not None and "cpu" not in theirs
    assert {name: gpu for gpu, names in theirs.items() for name in names} == ours


def test_no_balanced_when_a_component_fits_no_gpu() -> None:
    assert balanced_map(FLUX.parts(), (int(20 * GIB), int(20 * GIB)), 0) is None
    placed = decide(FLUX, gpu(21.6, 21.6))  # the transformer + reserve > one card
    assert placed.mode == "group_offload"


def test_staged_when_the_encoders_only_fit_one_at_a_time() -> None:
    reserve = GIB + int(4.78 * GIB) // 10
    resident = int(4.78 * GIB) + int(0.16 * GIB)
    memory = SlotMemory("cuda", (resident + int(1.29 * GIB) + reserve,))
    assert SDXL.total + reserve > memory.devices[0]
    placed = decide(SDXL, memory)
    assert placed.mode == "staged", placed.reason
    # a family the engine cannot stage (its pipeline encodes the prompt itself)
    assert decide(SDXL, memory, stageable=False).mode == "model_offload"


def test_model_offload_then_group_offload_as_last_resort() -> None:
    assert decide(SDXL, gpu(6.4)).mode == "model_offload"  # unet + reserve fit, no more
    assert decide(SDXL, gpu(6.2)).mode == "group_offload"
    assert decide(FLUX, gpu(21.6)).mode == "group_offload"  # Flux on a 24 GB card


def test_an_override_wins_and_names_who_chose() -> None:
    placed = decide(SDXL, gpu(80), "staged", chosen_by="model")
    assert (placed.mode, placed.chosen_by, str(placed)) == ("staged", "model", "staged (model)")
    with pytest.raises(ValueError, match="placement must be auto or one of"):
        decide(SDXL, gpu(80), "everywhere")


# -- against real (tiny) models ----------------------------------------------------


@pytest.fixture(scope="module")
def models(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder: tiny-sd's (tiny-sdxl's, tiny-flux's) files as 'staged-sd' ('staged-xl',
    'staged-flux') with atelier.json placement staged."""
    from pipelines.builtin import ensure_model

    folder = tmp_path_factory.mktemp("placement-models")
    shutil.copytree(ensure_model("tiny-sd", cache_root), folder / "staged-sd")
    (folder / "staged-sd" / "atelier.json").write_text(json.dumps({"placement": "staged"}))
    shutil.copytree(ensure_model("tiny-sdxl", cache_root), folder / "staged-xl")
    (folder / "staged-xl" / "atelier.json").write_text(json.dumps({"placement": "staged"}))
    shutil.copytree(ensure_model("tiny-flux", cache_root), folder / "staged-flux")
    (folder / "staged-flux" / "atelier.json").write_text(json.dumps({"placement": "staged"}))
    return folder


@pytest.fixture(scope="module")
def engine(cache_root: Path, models: Path):
    from pipelines import EngineSettings, PipelineManager

    return PipelineManager(EngineSettings(default_model="tiny-sd", devices=("cpu",),
                                          cache_root=cache_root, models_dir=models,
                                          loras_dir=None))  # fmt: skip


def test_sizes_from_the_file_headers_are_the_loaded_bytes(engine) -> None:
    from pipelines.cache import module_bytes
    from pipelines.placement import model_size

    entry = engine.registry.resolve("tiny-sdxl")
    size = model_size(entry, 4)
    engine.preload("tiny-sdxl")
    loaded = engine.slots[0].cache.get(f"{entry.name}@{entry.path}")
    parts = {k: module_bytes(v) for k, v in loaded.pipeline.components.items()
             if hasattr(v, "parameters")}  # fmt: skip
    assert size.parts().keys() == parts.keys()
    for name, nbytes in parts.items():  # files lack non-persistent buffers (position ids)
        assert abs(size.parts()[name] - nbytes) <= nbytes // 100, name
    assert model_size(entry, 2).total * 2 == size.total  # fp16 halves every float


def test_a_bad_override_is_a_clear_error(models: Path, tmp_path: Path) -> None:
    from pipelines.errors import ModelUnavailableError
    from pipelines.placement import model_override
    from pipelines.registry import ModelEntry

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "atelier.json").write_text(json.dumps({"placement": "sideways"}))
    entry = ModelEntry("m", None, folder, "folder")  # type: ignore[arg-type]
    with pytest.raises(ModelUnavailableError, match="m: atelier.json placement must be"):
        model_override(entry)
    (folder / "atelier.json").write_text(json.dumps({"placement": "auto"}))
    assert model_override(entry) is None


def test_staged_makes_the_same_pixels_and_records_the_placement(engine) -> None:
    from pipelines import GenerationRequest

    def make(model: str):
        return engine.generate(GenerationRequest(prompt="a (red:1.2) fox", model=model, seed=7,
                                                 num_inference_steps=2, width=64, height=64,
                                                 batch_size=2))  # fmt: skip

    staged, plain = make("staged-sd"), make("tiny-sd")
    assert (staged.placement, plain.placement) == ("staged (model)", "whole")
    for a, b in zip(staged.images, plain.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert staged.infotexts[0].endswith(", Placement: staged (model)")
    assert "Placement" not in plain.infotexts[0]
    slot = engine.slots[0]
    entry = engine.registry.resolve("staged-sd")
    assert engine.pool.placement_of(slot, entry).mode == "staged"
    loaded = slot.cache.get(f"{entry.name}@{entry.path}")
    assert loaded.pipeline.text_encoder is not None, "the cached model keeps its encoder"
    assert str(loaded.pipeline.text_encoder.device) == "cpu"


@pytest.mark.parametrize("case", ["lora+hires", "img2img", "sdxl"])
def test_staged_with_loras_hires_fix_and_img2img_gives_the_same_pixels(engine, case) -> None:
    from PIL import Image

    from pipelines import GenerationRequest
    from pipelines.tasks import Inputs

    extra = ({"loras": {"tiny-sd-lora": 0.8}, "enable_hr": True, "hr_scale": 1.5,
              "hr_prompt": "a [red:blue:0.5] fox"} if case == "lora+hires" else {})  # fmt: skip
    inputs = Inputs(Image.new("RGB", (64, 64), (200, 40, 40))) if case == "img2img" else None

    def make(model: str):
        return engine.generate(GenerationRequest(prompt="a fox", model=model, seed=3, width=64,
                                                 height=64, num_inference_steps=2, **extra),
                               inputs=inputs)  # fmt: skip

    pair = ("staged-xl", "tiny-sdxl") if case == "sdxl" else ("staged-sd", "tiny-sd")
    staged, plain = make(pair[0]), make(pair[1])
    assert staged.placement == "staged (model)"
    for a, b in zip(staged.images, plain.images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_staged_is_refused_for_a_family_the_engine_cannot_stage(engine) -> None:
    from pipelines import GenerationRequest
    from pipelines.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="staged needs an SD 1.x or SDXL model"):
        engine.generate(GenerationRequest(prompt="x", model="staged-flux", seed=1,
                                          num_inference_steps=2, width=64, height=64))  # fmt: skip
