"""The Hub policy against a fake Hub on loopback: what may be downloaded, what is
checked first, which files are fetched, progress and cancel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.errors import Cancelled, RequestError
from pipelines.hub import HubPolicy, fetch_weights, resolve
from tests.fake_hub import FakeHub, running_hub


@pytest.fixture
def hub(monkeypatch, tmp_path, cache_root) -> Iterator[FakeHub]:
    """A fake Hub serving `acme/tiny-sd` (the built-in tiny SD plus files a careless
    downloader would fetch too) and `acme/not-diffusers`; an empty HF cache."""
    import huggingface_hub.constants as hf

    from pipelines.builtin import ensure_model

    with running_hub() as fake:
        junk = {"v1-5-pruned-emaonly.safetensors": b"x" * 5000,
                "unet/diffusion_pytorch_model.fp16.safetensors": b"y" * 3000,
                "unet/diffusion_pytorch_model.bin": b"z" * 3000}  # fmt: skip
        fake.add_folder("acme/tiny-sd", ensure_model("tiny-sd", cache_root), junk)
        fake.repos["acme/not-diffusers"] = {"model.safetensors": b"w" * 100, "README.md": b"hi"}
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield fake


def test_policy_parsing():
    assert HubPolicy.parse("cached").mode == "cached"
    listed = HubPolicy.parse("stabilityai/*, acme/tiny-sd")
    assert listed.may_download("stabilityai/sdxl") and listed.may_download("acme/tiny-sd")
    assert not listed.may_download("acme/other") and not HubPolicy.parse("off").may_download("a/b")
    with pytest.raises(ValueError, match="hub_models"):
        HubPolicy.parse("no-slash-pattern")


@pytest.mark.parametrize(
    ("policy", "rule"),
    [
        ("off", "Hub models are off on this server"),
        ("cached", "not in this server's Hugging Face cache, and this server downloads nothing"),
        ("stabilityai/*", "not allowed on this server (hub_models: stabilityai/*)"),
    ],
)
def test_refused_repos_contact_nothing(hub, policy, rule):
    with pytest.raises(RequestError) as e:
        resolve("acme/tiny-sd", HubPolicy.parse(policy), "model")
    assert e.value.field == "model" and rule in e.value.rule
    assert hub.requests == [], "nothing may be asked of the Hub"


def test_unknown_layout_and_oversize_are_refused_before_any_weight_file(hub):
    with pytest.raises(RequestError, match="not a diffusers model folder"):
        resolve("acme/not-diffusers", HubPolicy.parse("acme/*"), "model")
    with pytest.raises(RequestError, match=r"needs 0\.0 GB of files; this server downloads"):
        resolve("acme/tiny-sd", HubPolicy.parse("any", max_gb=1e-6), "controlnets[0].model")
    assert not [f for f in hub.fetched("acme/tiny-sd") if f.endswith(".safetensors")]
    assert hub.fetched("acme/not-diffusers") == []


def test_only_the_layouts_files_are_fetched_with_byte_progress(hub):
    from diffusers import DiffusionPipeline

    plan = resolve("acme/tiny-sd", HubPolicy.parse("acme/*"), "model")
    assert all(not f.endswith(".safetensors") for f in hub.fetched("acme/tiny-sd"))
    wanted = sorted(w for w, _ in plan.weights)
    assert wanted == ["text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                      "vae/diffusion_pytorch_model.safetensors"], wanted  # fmt: skip
    seen: list[tuple[int, int]] = []
    fetch_weights(plan, lambda done, total: seen.append((done, total)), lambda: False)
    assert seen[-1] == (plan.pending_bytes, plan.pending_bytes)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen), "progress only grows"
    fetched = set(hub.fetched("acme/tiny-sd"))
    assert not {"v1-5-pruned-emaonly.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
                "unet/diffusion_pytorch_model.bin"} & fetched  # fmt: skip
    DiffusionPipeline.from_pretrained(str(plan.folder))  # a complete diffusers folder
    # Now cached: even a "cached" policy resolves it, asking the Hub nothing.
    before = len(hub.requests)
    assert resolve("acme/tiny-sd", HubPolicy.parse("cached"), "model").weights == ()
    assert len(hub.requests) == before


def test_a_download_stops_at_the_next_chunk_when_cancelled_and_resumes_later(hub):
    """huggingface_hub reads 10 MB chunks: a tiny file is one chunk, so here the cancel
    lands at the next file's first chunk; on a real model it lands within 10 MB."""
    plan = resolve("acme/tiny-sd", HubPolicy.parse("any"), "model")
    seen: list[int] = []
    with pytest.raises(Cancelled):
        fetch_weights(plan, lambda done, total: seen.append(done), lambda: bool(seen))
    assert 0 < seen[-1] < plan.pending_bytes
    present = [w for w, _ in plan.weights if Path(plan.folder, w).is_file()]
    assert len(present) == 1, present
    with pytest.raises(RequestError, match="not in this server's Hugging Face cache"):
        resolve("acme/tiny-sd", HubPolicy.parse("cached"), "model")  # incomplete: not cached
    fetch_weights(resolve("acme/tiny-sd", HubPolicy.parse("any"), "model"), None, lambda: False)
    assert all(Path(plan.folder, w).is_file() for w, _ in plan.weights)


def test_errors_do_not_show_server_paths(hub, tmp_path):
    with pytest.raises(RequestError) as e:
        resolve("acme/missing", HubPolicy.parse("cached"), "model")
    assert str(tmp_path) not in str(e.value) and "/root" not in str(e.value)


def new_manager(cache_root, policy):
    from pipelines import EngineSettings, PipelineManager

    return PipelineManager(EngineSettings(default_model="tiny-sd",
                                          devices=("cpu",), cache_root=cache_root,
                                          hub_models=policy))  # fmt: skip


def test_a_job_downloads_its_hub_model_with_progress_then_equals_the_local_model(hub, cache_root):
    import numpy as np

    from pipelines import GenerationRequest, ImageJob

    m = new_manager(cache_root, "acme/*")
    req = GenerationRequest(prompt="a fox", model="acme/tiny-sd", seed=3,
                            num_inference_steps=2, width=64, height=64)  # fmt: skip
    job = m.submit(ImageJob(req))
    events = list(job.events(timeout=120))
    kinds = [e.kind for e in events]
    first_start = kinds.index("started")
    assert "download" in kinds[:first_start] and kinds[-1] == "result", kinds
    assert set(kinds[:first_start]) <= {"download", "hashing"}, "all before taking a device"
    downloads = [(e.step, e.total) for e in events if e.kind == "download"]
    assert downloads[-1][0] == downloads[-1][1] > 0
    local = m.generate(GenerationRequest(prompt="a fox", model="tiny-sd", seed=3,
                                         num_inference_steps=2, width=64, height=64))  # fmt: skip
    assert np.array_equal(np.asarray(job.result().images[0]), np.asarray(local.images[0]))


def test_a_download_holds_no_device_and_its_job_can_be_cancelled(hub, cache_root):
    from pipelines import GenerationRequest, ImageJob

    hub.bytes_per_s = 100_000  # the model's weights take many seconds to arrive
    m = new_manager(cache_root, "any")
    small = dict(num_inference_steps=2, width=64, height=64)
    downloading = m.submit(ImageJob(GenerationRequest(prompt="slow", model="acme/tiny-sd",
                                                      **small)), caller="ann")  # fmt: skip
    events = downloading.events(timeout=120)
    assert next(events).kind == "download"
    other = m.generate(GenerationRequest(prompt="meanwhile", seed=1, **small), caller="bob")
    assert other.images and not downloading.done, "bob's job ran while ann's model downloads"
    downloading.cancel()
    assert [e.kind for e in events][-1] == "cancelled"


def test_public_default_downloads_nothing(hub, cache_root):
    from pipelines import GenerationRequest, ImageJob
    from pipelines.settings import auto_hub

    m = new_manager(cache_root, auto_hub("auto", True, public=True))
    with pytest.raises(RequestError, match="downloads nothing"):
        m.submit(ImageJob(GenerationRequest(prompt="x", model="acme/tiny-sd")))
    from PIL import Image

    from pipelines.tasks import Inputs

    unit = GenerationRequest(prompt="x", controlnets=[{"model": "acme/cn"}])
    with pytest.raises(RequestError, match=r"controlnets\[0\].model: 'acme/cn'"):
        m.submit(ImageJob(unit, Inputs(control_images=[Image.new("RGB", (64, 64))])))
    assert hub.requests == []
