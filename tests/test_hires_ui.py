"""The studio's side of hires fix and styles: form extras become request fields, and
PNG Info's "Send to Generate" restores the Hires fix accordion from an infotext."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import GenerationRequest
from ui.hires_panel import apply_extras, extras_fields, split_extras


def test_extras_fields_only_when_hires_is_on():
    extras = {"styles": ["photo"], "enable_hr": False, "hr_scale": 3.0, "denoising_strength": 0.4}
    assert extras_fields(extras) == {"styles": ("photo",)}
    on = {**extras, "enable_hr": True, "hr_upscaler": "Lanczos", "hr_second_pass_steps": 12.0,
          "hr_sampler_name": "Use same sampler", "hr_resize_x": 0.0}  # fmt: skip
    fields = extras_fields(on)
    assert fields["strength"] == 0.4 and fields["hr_second_pass_steps"] == 12
    assert fields["hr_sampler_name"] is None and fields["hr_resize_x"] == 0
    req = apply_extras(GenerationRequest(prompt="a"), on)
    assert req.enable_hr and req.hr_scale == 3.0 and req.hr_upscaler == "Lanczos"
    plain, got = split_extras({"prompt": "a", "extras": on})
    assert plain == {"prompt": "a"} and got == on


@pytest.fixture(scope="module")
def studio(cache_root: Path):
    from pipelines import EngineSettings, PipelineManager
    from ui.context import StudioContext
    from ui.generate_tab import build_generate_tab

    m = PipelineManager(EngineSettings(devices=("cpu",), cache_root=cache_root, loras_dir=None,
                                       models_dir=None, default_model="tiny-sd"))  # fmt: skip
    ctx = StudioContext.create(m, None)
    return ctx, build_generate_tab(ctx)


def restored(studio, text: str) -> dict:
    from ui.studio import send_outputs, send_to_generate

    ctx, gen = studio
    outputs = [*send_outputs(gen), *gen.loras.outputs(), *gen.restore_outputs(),
               *gen.restore_prompt_outputs()]  # fmt: skip
    updates = send_to_generate(ctx, gen, text, "tiny-sd")
    by_component = dict(zip(outputs, updates, strict=False))
    return {name: by_component[c] for name, c in gen.hires.widgets.items()}


def test_send_to_generate_restores_hires(studio):
    text = ("a castle\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, "
            "Model: tiny-sd, Denoising strength: 0.45, Hires upscale: 1.5, Hires steps: 6, "
            "Hires upscaler: Latent (bicubic), Version: atelier-0.1.0")  # fmt: skip
    got = restored(studio, text)
    assert got["enable_hr"] is True and got["hr_scale"] == 1.5
    assert got["hr_upscaler"] == "Latent (bicubic)" and got["hr_second_pass_steps"] == 6
    assert got["denoising_strength"] == 0.45 and got["hr_sampler_name"] == "Use same sampler"
    plain = restored(studio, "a castle\nSteps: 4, Sampler: Euler, Seed: 1, Size: 64x64")
    assert plain["enable_hr"] is False
