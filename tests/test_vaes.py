"""VAEs of the VAE folder: pixel parity with a direct diffusers call using that VAE,
the cached model keeps its own VAE, A1111's infotext pair, family checks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines import EngineSettings, GenerationRequest, PipelineManager, RequestError, builtin
from pipelines.ldm_layout import vae_to_ldm
from pipelines.parameters import request_from_infotext

BASE = dict(prompt="a lighthouse", negative_prompt="blurry", num_inference_steps=3,
            guidance_scale=5.0, width=64, height=64, seed=4, scheduler="Euler")  # fmt: skip
FILE, FOLDER, XL = "moody.safetensors", "moody-folder", "moody-xl.safetensors"


def px(result: Any) -> np.ndarray:
    return np.asarray(result.images[0])


def other_vae(cache_root: Path) -> Any:
    """tiny-sd's VAE with a changed decoder (so its pixels differ)."""
    vae = diffusers.AutoencoderKL.from_pretrained(
        str(builtin.ensure_model("tiny-sd", cache_root) / "vae")
    )
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(-0.7)
        vae.decoder.conv_out.bias.add_(0.2)
    return vae


@pytest.fixture(scope="module")
def folder(cache_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vae")
    vae = other_vae(cache_root)
    ldm = {k: v.contiguous().clone() for k, v in vae_to_ldm(vae.state_dict(), prefix="").items()}
    save_file(ldm, d / FILE)
    save_file(ldm, d / XL)  # "xl" in the name: an SDXL VAE
    vae.save_pretrained(d / FOLDER)
    return d


@pytest.fixture(scope="module")
def vm(cache_root: Path, folder: Path) -> PipelineManager:
    return PipelineManager(EngineSettings(default_model="tiny-sd",
                                          devices=("cpu",), cache_root=cache_root,
                                          vae_dir=folder))  # fmt: skip


def direct(cache_root: Path, vae: Any | None) -> np.ndarray:
    path = str(builtin.ensure_model("tiny-sd", cache_root))
    extra = {"vae": vae} if vae is not None else {}
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        path, safety_checker=None, requires_safety_checker=False, **extra
    )
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(
        pipe.scheduler.config, use_karras_sigmas=False
    )
    return np.asarray(pipe(prompt="a lighthouse", negative_prompt="blurry", num_inference_steps=3,
                           guidance_scale=5.0, width=64, height=64,
                           generator=torch.Generator("cpu").manual_seed(4)).images[0])  # fmt: skip


@pytest.mark.parametrize("name", [FILE, FOLDER])
def test_swapped_vae_equals_diffusers_with_that_vae(vm, cache_root, folder, name):
    own_before = vm.generate(GenerationRequest(**BASE))
    ours = vm.generate(GenerationRequest(**BASE, vae=name))
    if name == FILE:
        vae = diffusers.AutoencoderKL.from_single_file(
            str(folder / FILE), config=str(builtin.ensure_model("tiny-sd", cache_root)),
            subfolder="vae", local_files_only=True,
        )  # fmt: skip
    else:
        vae = diffusers.AutoencoderKL.from_pretrained(str(folder / FOLDER))
    assert np.array_equal(px(ours), direct(cache_root, vae))
    assert not np.array_equal(px(ours), px(own_before)), "the VAE was not used"
    own_after = vm.generate(GenerationRequest(**BASE, vae="Automatic"))
    assert np.array_equal(px(own_after), px(own_before)), "the cached model's VAE changed"
    assert np.array_equal(px(own_before), direct(cache_root, None))
    assert f"vae:{folder / name}" in vm.slots[0].cache


def test_infotext_has_a1111_vae_pair_and_round_trips(vm, folder):
    result = vm.generate(GenerationRequest(**BASE, vae=FILE))
    digest = hashlib.sha256((folder / FILE).read_bytes()).hexdigest()[:10]
    assert f"VAE hash: {digest}, VAE: {FILE}" in result.infotexts[0]
    assert request_from_infotext(result.infotexts[0]).vae == FILE
    plain = vm.generate(GenerationRequest(**BASE))
    assert "VAE" not in plain.infotexts[0]
    assert request_from_infotext(plain.infotexts[0]).vae is None


@pytest.mark.parametrize(
    ("model", "vae", "fragment"),
    [
        ("tiny-sd", XL, f"'{XL}' is a SDXL VAE; model 'tiny-sd' is SD 1.x/2.x"),
        ("tiny-sdxl", FILE, f"'{FILE}' is a SD 1.x/2.x VAE; model 'tiny-sdxl' is SDXL"),
        ("tiny-sd", "nope.safetensors", "known: Automatic, moody-folder"),
        ("tiny-sd", "../x", "not a valid VAE name"),
    ],
)
def test_refusals_name_the_vae_field(vm, model, vae, fragment):
    with pytest.raises(RequestError) as e:
        vm.generate(GenerationRequest(**{**BASE, "model": model}, vae=vae))
    assert e.value.field == "vae" and fragment in str(e.value), str(e.value)


def test_library_lists_by_family(vm):
    assert vm.vaes.names("sd15") == [FOLDER, FILE]
    assert vm.vaes.names("sdxl") == [XL]


def test_form_cli_and_json():
    import app
    from ui.form import request_from_widgets, widgets_from_request

    assert request_from_widgets({"prompt": "x", "vae": "Automatic"}).vae is None
    req = request_from_widgets({"prompt": "x", "vae": FILE})
    assert req.vae == FILE and widgets_from_request(req)["vae"] == FILE
    assert GenerationRequest.from_json(f'{{"prompt": "x", "vae": "{FILE}"}}').vae == FILE
    args = app.build_parser().parse_args(["generate", "--prompt", "x", "--vae", FILE])
    assert args.vae == FILE


def test_refresh_finds_a_vae_added_later(cache_root, tmp_path):
    from types import SimpleNamespace

    from ui.generate_handlers import libraries_refreshed

    manager = PipelineManager(EngineSettings(default_model="tiny-sd", devices=("cpu",),
                                             cache_root=cache_root, vae_dir=tmp_path))  # fmt: skip
    assert manager.vaes.names() == []
    other_vae(cache_root).save_pretrained(tmp_path / "late-vae")
    vae_update, _ = libraries_refreshed(SimpleNamespace(manager=manager), "late-vae")
    assert "late-vae" in [c[0] if isinstance(c, tuple) else c for c in vae_update.choices]
    assert vae_update.value == "late-vae"
