"""Single-file checkpoints: detection, key accounting, loading, listing, hashes, pickles.

Single files are made here, offline, from the tiny built-in models with our own
reverse converters (pipelines/ldm_layout.py); a sidecar NAME.atelier.json names
the tiny config folder. The shipped full-size configs are checked on the `meta`
device against the real architectures: parameter counts of the released models,
diffusers' own LDM-yaml -> config mapping, and diffusers' LDM converters taking
every key of the original layout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipelines import EngineSettings, GenerationRequest, PipelineManager, builtin, hashes
from pipelines import ldm_layout as ldm
from pipelines import singlefile as sf
from pipelines.errors import RequestError
from pipelines.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent
REQ = dict(prompt="a lighthouse at dusk", num_inference_steps=2, width=64, height=64, seed=3)


def write_file(path: Path, state: dict, config: str | Path | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    if config is not None:
        path.with_name(path.stem + ".atelier.json").write_text(json.dumps({"config": str(config)}))
    return path


def tiny_pipeline(cache_root: Path, name: str):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(builtin.ensure_model(name, cache_root))


def variant_folder(cache_root: Path, folder: Path, base: str, cls_name: str, **unet_changes):
    """A tiny diffusers folder: a built-in's modules with another UNet (and class)."""
    import diffusers
    from diffusers import UNet2DConditionModel

    pipe = tiny_pipeline(cache_root, base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        unet = UNet2DConditionModel.from_config({**pipe.unet.config, **unet_changes}).eval()
    comps = {**pipe.components, "unet": unet}
    if base == "tiny-sd":
        from transformers import CLIPTextModel

        from pipelines.tiny_tokenizers import clip_text_config

        if unet_changes.get("use_linear_projection"):  # SD 2.x: OpenCLIP-style encoder (gelu)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(6)
                comps["text_encoder"] = CLIPTextModel(clip_text_config(hidden_act="gelu")).eval()
    out = getattr(diffusers, cls_name)(**comps)
    out.save_pretrained(folder)
    return out


@pytest.fixture(scope="module")
def library(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """models/ with a single file of each family (+ the tiny SD 2.x and inpaint folders)."""
    base = tmp_path_factory.mktemp("singlefile")
    models, configs = base / "models", base / "configs"
    for name, arch in (("tiny-sd", "sd1"), ("tiny-sdxl", "sdxl")):
        sd = ldm.pipeline_to_ldm(tiny_pipeline(cache_root, name).components, arch)
        write_file(models / "sub" / f"{name}-file.safetensors", sd, name)
    flux = tiny_pipeline(cache_root, "tiny-flux")
    write_file(
        models / "flux" / "tiny-flux-file.safetensors",
        ldm.flux_to_ldm(flux.transformer.state_dict()),
    )
    sd2 = variant_folder(
        cache_root,
        models / "tiny-sd2",
        "tiny-sd",
        "StableDiffusionPipeline",
        use_linear_projection=True,
        attention_head_dim=[2, 4],
    )
    assert not sf.is_v_prediction(sd2.unet), "precondition: the tiny SD 2.x UNet reads as epsilon"
    write_file(
        models / "tiny-sd2-file.safetensors",
        ldm.pipeline_to_ldm(sd2.components, "sd2"),
        models / "tiny-sd2",
    )
    for base_name, cls, arch in (
        ("tiny-sd", "StableDiffusionInpaintPipeline", "sd1"),
        ("tiny-sdxl", "StableDiffusionXLInpaintPipeline", "sdxl"),
    ):
        folder = configs / f"{base_name}-inpaint"
        pipe = variant_folder(cache_root, folder, base_name, cls, in_channels=9)
        write_file(
            models / f"{base_name}-inpaint-file.safetensors",
            ldm.pipeline_to_ldm(pipe.components, arch),
            folder,
        )
    return {
        "models": models,
        "configs": configs,
        "flux_base": builtin.ensure_model("tiny-flux", cache_root),
    }


@pytest.fixture(scope="module")
def studio(library: dict, cache_root: Path) -> PipelineManager:
    registry = ModelRegistry(library["models"], cache_root, flux_base=library["flux_base"])
    settings = EngineSettings(
        default_model="tiny-sd",
        devices=("cpu",),
        cache_root=cache_root,
        models_dir=library["models"],
    )
    return PipelineManager(settings, registry=registry)


# ---------------------------------------------------------------- detection and listing


def test_each_family_is_detected_from_the_tensors(studio: PipelineManager) -> None:
    entries = {e.name: e for e in studio.registry.list() if e.source == "file"}
    got = {n: (e.family.name, e.checkpoint.arch, e.inpaint) for n, e in entries.items()}
    assert got == {
        "tiny-sd-file": ("sd15", "sd1", False),
        "tiny-sdxl-file": ("sdxl", "sdxl", False),
        "tiny-flux-file": ("flux", "flux", False),
        "tiny-sd2-file": ("sd15", "sd2", False),
        "tiny-sd-inpaint-file": ("sd15", "sd1", True),
        "tiny-sdxl-inpaint-file": ("sdxl", "sdxl", True),
    }
    assert entries["tiny-sd-inpaint-file"].to_dict()["kind"] == "SD 1.x inpainting"
    assert "tiny-sd2" in studio.registry.names()  # the folder next to it is a model too


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sdxl", "tiny-flux"])
def test_single_file_gives_the_pixels_of_its_folder(studio: PipelineManager, name: str) -> None:
    mine = studio.generate(GenerationRequest(model=f"{name}-file", **REQ))
    ref = studio.generate(GenerationRequest(model=name, **REQ))
    assert np.array_equal(np.asarray(mine.images[0]), np.asarray(ref.images[0]))
    assert f"Model: {name}-file" in mine.infotexts[0]
    expected = hashes.model_hash(studio.registry.resolve(f"{name}-file").path)
    assert f"Model hash: {expected}" in mine.infotexts[0]


def test_sd2_file_matches_its_folder_and_tells_v_from_epsilon(
    studio, library, cache_root, tmp_path
) -> None:
    mine = studio.generate(GenerationRequest(model="tiny-sd2-file", **REQ))
    ref = studio.generate(GenerationRequest(model="tiny-sd2", **REQ))
    assert np.array_equal(np.asarray(mine.images[0]), np.asarray(ref.images[0]))
    folder = library["models"] / "tiny-sd2"
    state = load_file(library["models"] / "tiny-sd2-file.safetensors")

    def prediction(name: str, bias: float, yaml: str | None = None) -> str:
        changed = {**state, sf.UNET + "out.2.bias": state[sf.UNET + "out.2.bias"] + bias}
        path = write_file(tmp_path / f"{name}.safetensors", changed, folder)
        if yaml is not None:
            path.with_suffix(".yaml").write_text(
                f"model:\n  params:\n    parameterization: {yaml}\n"
            )
        pipe = sf.load(sf.inspect(path, cache_root=cache_root), torch.float32, name)
        return pipe.scheduler.config.prediction_type

    # A1111's test pass: at t=999 a v model outputs about -x0, so mean(out - x) < -1.
    assert prediction("eps", 0.0) == "epsilon"
    assert prediction("v", -3.0) == "v_prediction"
    # A1111's sidecar NAME.yaml overrides the test pass, both ways.
    assert prediction("v-said-eps", -3.0, "eps") == "epsilon"
    assert prediction("eps-said-v", 0.0, '"v"') == "v_prediction"


@pytest.mark.parametrize(
    "base, cls",
    [
        ("tiny-sd", "StableDiffusionInpaintPipeline"),
        ("tiny-sdxl", "StableDiffusionXLInpaintPipeline"),
    ],
)
def test_inpainting_file_matches_its_folder(library, cache_root, base: str, cls: str) -> None:
    import diffusers
    from PIL import Image

    ckpt = sf.inspect(library["models"] / f"{base}-inpaint-file.safetensors", cache_root=cache_root)
    assert ckpt.inpaint and ckpt.config_source == "sidecar"
    mine = sf.load(ckpt, torch.float32, "x")
    ref = getattr(diffusers, cls).from_pretrained(library["configs"] / f"{base}-inpaint")
    assert type(mine).__name__ == cls and mine.unet.config.in_channels == 9
    image = Image.fromarray((np.indices((64, 64)).sum(0) % 255).astype(np.uint8)).convert("RGB")
    mask = Image.fromarray(
        np.where(np.arange(64)[:, None] > 32, 255, 0).astype(np.uint8).repeat(64, 1)
    )
    outs = [
        p(
            prompt="a cat",
            image=image,
            mask_image=mask,
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(1),
            output_type="np",
        ).images
        for p in (mine, ref)
    ]
    assert np.array_equal(outs[0], outs[1])


def test_names_clashes_and_files_inside_folders(cache_root: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    tiny = builtin.ensure_model("tiny-sd", cache_root)
    (models / "foo").mkdir(parents=True)
    (models / "foo" / "model_index.json").write_text((tiny / "model_index.json").read_text())
    state = ldm.pipeline_to_ldm(tiny_pipeline(cache_root, "tiny-sd").components, "sd1")
    for rel in (
        "foo.safetensors",
        "a/bar.safetensors",
        "b/bar.safetensors",
        "My Model (v2).safetensors",
        "foo/unet/x.safetensors",
    ):
        write_file(models / rel, state, "tiny-sd")
    reg = ModelRegistry(models, cache_root)
    files = {e.name: e for e in reg.list() if e.source == "file"}
    assert set(files) == {"foo.safetensors", "bar", "b-bar", "My_Model_v2"}
    assert reg.resolve("foo").source == "folder"
    assert "is listed as 'foo.safetensors' ('foo' is taken)" in files["foo.safetensors"].note
    assert "listed as 'b-bar'" in files["b-bar"].to_dict()["note"]
    assert files["My_Model_v2"].path.name == "My Model (v2).safetensors"
    # a file given by path (CLI --model PATH), from outside the models folder
    outside = write_file(tmp_path / "elsewhere" / "bar.safetensors", state, "tiny-sd")
    name = reg.add(str(outside))
    assert name == "bar.safetensors" and reg.resolve(name).path == outside.resolve()
    assert reg.add(str(outside)) == name and reg.resolve("bar").path.parent.name == "a"
    torch.save({"w": torch.ones(1)}, tmp_path / "old.ckpt")
    with pytest.raises(RequestError, match="pickled checkpoint"):
        reg.add(str(tmp_path / "old.ckpt"))


# ---------------------------------------------------------------- refusals


def test_missing_left_over_and_misshaped_keys_are_refused_by_name(cache_root, tmp_path) -> None:
    state = ldm.pipeline_to_ldm(tiny_pipeline(cache_root, "tiny-sd").components, "sd1")
    ok = write_file(
        tmp_path / "ok.safetensors",
        {**state, "alphas_cumprod": torch.ones(1000), "model_ema.decay": torch.ones(())},
        "tiny-sd",
    )
    sf.check_keys(sf.inspect(ok, cache_root=cache_root))  # known-unused keys are fine
    gone = "first_stage_model.decoder.conv_in.weight"
    cases = {
        "missing": (
            {k: v for k, v in state.items() if k != gone},
            ["missing 1 weights", "vae.decoder.conv_in.weight"],
        ),
        "extra": (
            {**state, "model.diffusion_model.extra.weight": torch.ones(2)},
            ["1 left-over", "model.diffusion_model.extra.weight"],
        ),
        "shape": (
            {**state, sf.UNET + "out.2.bias": torch.ones(5)},
            ["wrong shapes", "unet.conv_out.bias", "[5]", "[4]"],
        ),
    }
    for label, (bad, words) in cases.items():
        path = write_file(tmp_path / f"{label}.safetensors", bad, "tiny-sd")
        with pytest.raises(RequestError) as err:
            sf.load(sf.inspect(path, cache_root=cache_root), torch.float32, label)
        for word in words:
            assert word in str(err.value), (label, str(err.value))


def test_unknown_file_error_lists_its_key_prefixes(cache_root, tmp_path) -> None:
    lora = {
        f"lora_unet_down_blocks_0_attentions_{i}.lora_down.weight": torch.ones(2, 2)
        for i in range(3)
    }
    models = tmp_path / "models"
    write_file(models / "style.safetensors", {**lora, "lora_te_text_model.alpha": torch.ones(())})
    reg = ModelRegistry(models, cache_root)
    with pytest.raises(RequestError) as err:
        reg.resolve("style")
    assert "not a checkpoint Atelier recognises" in str(err.value)
    assert "lora_unet_down_blocks_0_attentions_0.lora_down (1)" in str(err.value)
    assert "style" not in [e.name for e in reg.list()]
    assert "key prefixes" in reg.refused_files()[str(models / "style.safetensors")]


def test_detection_reads_only_the_header(cache_root, tmp_path) -> None:
    state = ldm.pipeline_to_ldm(tiny_pipeline(cache_root, "tiny-sdxl").components, "sdxl")
    path = write_file(tmp_path / "x.safetensors", state)
    n = int.from_bytes(path.read_bytes()[:8], "little")
    path.write_bytes(path.read_bytes()[: 8 + n])  # header only: no tensor bytes at all
    assert sf.detect(sf.read_header(path), path.name) == ("sdxl", False)
    assert sf.inspect(path).config == sf.CONFIGS_DIR / "sdxl-base"


def test_flux_file_needs_flux_base(library, cache_root) -> None:
    reg = ModelRegistry(library["models"], cache_root)  # no flux_base
    assert reg.family_of("tiny-flux-file").name == "flux"
    with pytest.raises(RequestError, match="set flux_base to a diffusers Flux folder"):
        reg.resolve("tiny-flux-file")


def test_pickles_are_refused_and_convert_round_trips(cache_root, tmp_path) -> None:
    import app

    models = tmp_path / "models"
    models.mkdir()
    weights = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
    torch.save({"state_dict": weights, "global_step": 7}, models / "old.ckpt")
    reg = ModelRegistry(models, cache_root)
    assert "old" not in reg.names()
    with pytest.raises(RequestError, match="pickled checkpoint.*can run any code.*app.py convert"):
        reg.resolve("old")
    assert app.main(["convert", str(models / "old.ckpt")]) == 0
    back = load_file(models / "old.safetensors")
    assert set(back) == {"w", "b"} and torch.equal(back["w"], weights["w"])
    assert sf.convert_pickle(models / "old.ckpt", tmp_path / "again.safetensors").dropped == [
        "global_step"
    ]
    with pytest.raises(RequestError, match="exists"):
        sf.convert_pickle(models / "old.ckpt")


class Payload:  # a class a weights-only load must refuse
    def __init__(self) -> None:
        self.value = 1


def test_convert_refuses_a_pickle_that_needs_code(tmp_path) -> None:
    torch.save({"w": torch.ones(2), "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(RequestError) as err:
        sf.convert_pickle(tmp_path / "evil.pt")
    assert "Unsupported global" in str(err.value) and "Payload" in str(err.value)
    assert not (tmp_path / "evil.safetensors").exists()


# ---------------------------------------------------------------- hashes


def test_model_hash_is_cached_on_disk_reports_progress_and_finds_renamed_files(
    cache_root, tmp_path, monkeypatch
) -> None:
    import hashlib

    models = tmp_path / "models"
    state = ldm.pipeline_to_ldm(tiny_pipeline(cache_root, "tiny-sd").components, "sd1")
    path = write_file(models / "mine.safetensors", state, "tiny-sd")
    reg = ModelRegistry(models, tmp_path / "cache")
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert reg.find_by_hash(expected[:10]) is None  # not hashed yet, and not computed
    seen = []
    assert (
        reg.find_by_hash(expected[:10], compute=True, progress=lambda *a: seen.append(a)) == "mine"
    )
    assert seen[-1] == ("mine", path.stat().st_size, path.stat().st_size)
    hashes.clear_hash_cache()  # a new process: the digest comes from hashes.json
    monkeypatch.setattr(hashes, "_sha256_whole", lambda *a, **k: pytest.fail("hashed again"))
    assert reg.model_hash(reg.resolve("mine")) == expected[:10]
    os.rename(path, models / "renamed.safetensors")
    os.rename(path.with_name("mine.atelier.json"), models / "renamed.atelier.json")
    assert reg.find_by_hash(expected[:10]) == "renamed"
    assert reg.find_by_hash("0123456789") is None and reg.find_by_hash("not-a-hash") is None


# ---------------------------------------------------------------- offline, full size


def test_fresh_offline_process_with_empty_hf_cache_loads_every_family(
    library, cache_root, tmp_path
) -> None:
    script = tmp_path / "offline.py"
    script.write_text(f"""
import socket, sys
from pathlib import Path
def refuse(*a, **k): raise OSError("network used")
socket.socket.connect = refuse
sys.path.insert(0, {str(ROOT)!r})
import torch
from tests.test_singlefile import FULL, full_size_header
from transformers import CLIPTokenizer
from pipelines import singlefile as sf
from pipelines.loading import LoadOptions, load_pipeline
from pipelines.registry import ModelRegistry
reg = ModelRegistry(Path({str(library["models"])!r}), Path({str(cache_root)!r}),
                    flux_base={str(library["flux_base"])!r})
for name in ("tiny-sd-file", "tiny-sd2-file", "tiny-sdxl-file", "tiny-sd-inpaint-file",
             "tiny-sdxl-inpaint-file", "tiny-flux-file"):
    pipe = load_pipeline(reg.resolve(name), torch.device("cpu"), LoadOptions())
    print(name, type(pipe).__name__)
for folder, (arch, inpaint, _) in FULL.items():  # what a real file reads from its config
    config = sf.CONFIGS_DIR / folder
    for sub in ("tokenizer", "tokenizer_2"):
        if (config / sub).is_dir():
            CLIPTokenizer.from_pretrained(config, subfolder=sub, local_files_only=True)
    ckpt = sf.Checkpoint(Path(folder), arch, inpaint, config, "shipped", None)
    sf.check_keys(ckpt, full_size_header(folder, arch))
print("offline ok")
""")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf")}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "offline ok" in out.stdout and "tiny-flux-file FluxPipeline" in out.stdout
    assert "tiny-sdxl-inpaint-file StableDiffusionXLInpaintPipeline" in out.stdout


# Parameter counts of the released models (SD 1.5, SD 2.1, SDXL base 1.0; the inpainting
# UNets add 5 input channels x 320 x 3 x 3) and their original LDM configs
# (A1111 configs/v1-inference.yaml; Stability-AI generative-models configs/inference/
# sd_2_1_768.yaml and sd_xl_base.yaml).
VAE_N, CLIP_L_N = 83_653_863, 123_060_480
FULL = {
    "sd15": ("sd1", False, {"unet": 859_520_964, "vae": VAE_N, "text_encoder": CLIP_L_N}),
    "sd15-inpaint": ("sd1", True, {"unet": 859_535_364, "vae": VAE_N, "text_encoder": CLIP_L_N}),
    "sd2": ("sd2", False, {"unet": 865_910_724, "vae": VAE_N, "text_encoder": 340_387_840}),
    "sdxl-base": (
        "sdxl",
        False,
        {
            "unet": 2_567_463_684,
            "vae": VAE_N,
            "text_encoder": CLIP_L_N,
            "text_encoder_2": 694_659_840,
        },
    ),
    "sdxl-inpaint": (
        "sdxl",
        True,
        {
            "unet": 2_567_478_084,
            "vae": VAE_N,
            "text_encoder": CLIP_L_N,
            "text_encoder_2": 694_659_840,
        },
    ),
}
_UNET = {"out_channels": 4, "model_channels": 320, "num_res_blocks": 2}
LDM = {  # folder -> (unet_config params, image size, scale_factor)
    "sd15": (
        {
            **_UNET,
            "attention_resolutions": [4, 2, 1],
            "channel_mult": [1, 2, 4, 4],
            "num_heads": 8,
            "transformer_depth": 1,
            "context_dim": 768,
        },
        512,
        0.18215,
    ),
    "sd2": (
        {
            **_UNET,
            "attention_resolutions": [4, 2, 1],
            "channel_mult": [1, 2, 4, 4],
            "num_head_channels": 64,
            "use_linear_in_transformer": True,
            "transformer_depth": 1,
            "context_dim": 1024,
        },
        768,
        0.18215,
    ),
    "sdxl-base": (
        {
            **_UNET,
            "adm_in_channels": 2816,
            "num_classes": "sequential",
            "attention_resolutions": [4, 2],
            "channel_mult": [1, 2, 4],
            "num_head_channels": 64,
            "use_linear_in_transformer": True,
            "transformer_depth": [1, 2, 10],
            "context_dim": 2048,
        },
        1024,
        0.13025,
    ),
}
DDCONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
}
# What released files carry besides the weights (inference never reads them), with their
# real shapes (diffusers splits SD 2.x's fused q/k/v by text_projection's width).
EXTRAS = {
    "sd1": {
        "cond_stage_model.transformer.text_model.embeddings.position_ids": [1, 77],
        "alphas_cumprod": [1000],
        "model_ema.decay": [],
    },
    "sd2": {
        "cond_stage_model.model.logit_scale": [],
        "betas": [1000],
        "cond_stage_model.model.text_projection": [1024, 1024],
        "cond_stage_model.model.transformer.resblocks.23.mlp.c_fc.weight": [4096, 1024],
    },
    "sdxl": {
        "conditioner.embedders.0.transformer.text_model.embeddings.position_ids": [1, 77],
        "conditioner.embedders.1.model.logit_scale": [],
    },
}


def meta_components(folder: Path) -> dict:
    import diffusers
    import transformers

    index = json.loads((folder / "model_index.json").read_text())
    out = {}
    with torch.device("meta"):
        for comp in ("unet", "vae", "text_encoder", "text_encoder_2"):
            if comp in index:
                lib, name = index[comp]
                cls = getattr(diffusers if lib == "diffusers" else transformers, name)
                if lib == "diffusers":
                    out[comp] = cls.from_config(cls.load_config(folder, subfolder=comp))
                else:
                    out[comp] = cls(cls.config_class.from_pretrained(folder, subfolder=comp))
    return out


def full_size_header(folder: str, arch: str) -> dict[str, list[int]]:
    state = ldm.pipeline_to_ldm(meta_components(sf.CONFIGS_DIR / folder), arch)
    return {k: list(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("folder", list(FULL))
def test_shipped_config_matches_the_real_architecture(folder: str) -> None:
    from diffusers.loaders import single_file_utils as sfu

    arch, inpaint, counts = FULL[folder]
    comps = meta_components(sf.CONFIGS_DIR / folder)
    assert {c: sum(p.numel() for p in m.parameters()) for c, m in comps.items()} == counts
    unet_params, size, scale = LDM[folder.replace("-inpaint", "-base" if "xl" in folder else "")]
    original = {
        "model": {
            "params": {
                "scale_factor": scale,
                "first_stage_config": {"params": {"ddconfig": DDCONFIG}},
                "unet_config": {"params": {**unet_params, "in_channels": 9 if inpaint else 4}},
            }
        }
    }
    for comp, mapped in (
        ("unet", sfu.create_unet_diffusers_config_from_ldm(original, {}, size)),
        ("vae", sfu.create_vae_diffusers_config_from_ldm(original, {}, size)),
    ):
        shipped = comps[comp].config
        wrong = {
            k: (shipped[k], v) for k, v in mapped.items() if json.dumps(shipped[k]) != json.dumps(v)
        }
        assert not wrong, f"{folder}/{comp} differs from the original config: {wrong}"
    # diffusers' own LDM converters take every key of the original layout, each shape right
    state = ldm.pipeline_to_ldm(comps, arch)
    for comp, convert in (
        ("unet", sfu.convert_ldm_unet_checkpoint),
        ("vae", sfu.convert_ldm_vae_checkpoint),
    ):
        got = {k: tuple(v.shape) for k, v in convert(dict(state), comps[comp].config).items()}
        assert got == {k: tuple(v.shape) for k, v in comps[comp].state_dict().items()}
    header = {k: list(v.shape) for k, v in state.items()}
    assert sf.detect(header, folder) == (arch, inpaint)
    ckpt = sf.Checkpoint(
        Path(f"{folder}.safetensors"), arch, inpaint, sf.CONFIGS_DIR / folder, "shipped", None
    )
    sf.check_keys(ckpt, header)  # every text-encoder key too, none left over
    sf.check_keys(ckpt, {**header, **EXTRAS[arch]})
    with pytest.raises(RequestError, match="1 left-over tensors: model.diffusion_model.lora"):
        sf.check_keys(ckpt, {**header, "model.diffusion_model.lora.weight": [1]})


def test_flux_dev_layout_at_full_size(tmp_path: Path) -> None:
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders import single_file_utils as sfu

    dev = {
        "attention_head_dim": 128,
        "axes_dims_rope": [16, 56, 56],
        "guidance_embeds": True,
        "in_channels": 64,
        "joint_attention_dim": 4096,
        "num_attention_heads": 24,
        "num_layers": 19,
        "num_single_layers": 38,
        "patch_size": 1,
        "pooled_projection_dim": 768,
    }  # FLUX.1-dev's transformer/config.json
    for name, cfg in (("dev", dev), ("schnell", {**dev, "guidance_embeds": False})):
        (tmp_path / name / "transformer").mkdir(parents=True)
        (tmp_path / name / "transformer" / "config.json").write_text(json.dumps(cfg))
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(dev)
    assert sum(p.numel() for p in model.parameters()) == 11_901_408_320
    state = ldm.flux_to_ldm(model.state_dict())
    header = {k: list(v.shape) for k, v in state.items()}
    assert sf.detect(header, "f") == ("flux", False)
    ckpt = sf.Checkpoint(
        Path("flux1-dev.safetensors"), "flux", False, tmp_path / "dev", "flux_base", None
    )
    sf.check_keys(ckpt, header)
    sf.check_keys(ckpt, {sf.UNET + k: v for k, v in header.items()})  # ComfyUI's prefixed keys
    schnell = sf.Checkpoint(ckpt.path, "flux", False, tmp_path / "schnell", "flux_base", None)
    with pytest.raises(RequestError, match="left-over tensors: guidance_in"):
        sf.check_keys(schnell, header)
    # our split of the fused single-block layers = diffusers' at FLUX.1's width
    fused = {k: v for k, v in state.items() if ".linear1." in k}
    theirs = sfu.convert_flux_transformer_checkpoint_to_diffusers(dict(state))
    ours = sf.flux_split_singles(fused, 3072)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(theirs[k].shape) for k in ours}


def test_shipped_tokenizer_gives_open_clip_ids() -> None:
    from transformers import CLIPTokenizer

    # ids from open_clip 3.3.0's own tokenizer (open_clip.tokenize) for the same text
    known = {
        "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
        "emoji 🐱🔥 and 日本語 text": [
            49406,
            16327,
            35710,
            3016,
            537,
            39121,
            44353,
            34002,
            508,
            4160,
            49407,
        ],
        "Café naïve résumé": [49406, 15304, 1097, 35689, 563, 29106, 7054, 4166, 49407],
    }
    for folder, sub, pad in (
        ("sd15", "tokenizer", 49407),
        ("sd2", "tokenizer", 0),
        ("sdxl-base", "tokenizer_2", 0),
    ):
        tok = CLIPTokenizer.from_pretrained(sf.CONFIGS_DIR / folder, subfolder=sub)
        assert tok.pad_token_id == pad and len(tok) == 49408
        for text, ids in known.items():
            assert tok(text)["input_ids"] == ids, (folder, text)
    try:
        import open_clip
    except ImportError:
        return
    tok = CLIPTokenizer.from_pretrained(sf.CONFIGS_DIR / "sd2", subfolder="tokenizer")
    for text in (*known, "Masterpiece, (best quality:1.2), 1girl", "word " * 90):
        mine = tok(text, padding="max_length", max_length=77, truncation=True)["input_ids"]
        assert mine == open_clip.tokenize([text])[0].tolist()
