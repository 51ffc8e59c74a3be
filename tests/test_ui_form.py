"""The studio's pure parts: widget values -> request, widget specs, server settings,
LoRA rows, ZeroGPU wrapping, and the Dockerfile's pins. No server, no model."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from pipelines import GenerationRequest, RequestError
from pipelines.families import FAMILIES
from pipelines.request import MAX_STEPS
from ui.form import (
    FIELDS,
    loras_from_slots,
    parse_loras,
    request_from_widgets,
    widget_specs,
    widgets_from_request,
)

ROOT = Path(__file__).resolve().parents[1]


def test_widget_values_become_a_request():
    values = {
        "prompt": "a fox", "negative_prompt": "blurry", "model": "tiny-sd",
        "scheduler": "Euler a", "steps": 20.0, "cfg": 6.5, "width": 512.0, "height": 768,
        "seed": 7.0, "batch_size": 2.0, "batch_count": 3, "loras": {"detail": 0.8},
    }  # fmt: skip
    assert request_from_widgets(values) == GenerationRequest(
        prompt="a fox", negative_prompt="blurry", model="tiny-sd", scheduler="Euler a",
        num_inference_steps=20, guidance_scale=6.5, width=512, height=768, seed=7,
        batch_size=2, batch_count=3, loras={"detail": 0.8},
    )  # fmt: skip
    req = request_from_widgets(values)
    assert type(req.num_inference_steps) is int and type(req.seed) is int


def test_blank_values_mean_family_defaults_and_a_random_seed():
    req = request_from_widgets({"prompt": "x", "model": "", "scheduler": " ", "steps": None,
                                "seed": None, "loras": ""})  # fmt: skip
    assert req == GenerationRequest(prompt="x")
    assert req.seed == -1 and req.model is None and req.loras == ()


def test_nothing_is_rounded_or_repaired():
    req = request_from_widgets({"prompt": "x", "steps": 20.5, "width": 100})
    assert req.num_inference_steps == 20.5 and req.width == 100  # the engine says no, not us
    with pytest.raises(RequestError) as e:
        request_from_widgets({"prompt": "x", "colour": "red"})
    assert e.value.field == "colour"


@pytest.mark.parametrize(
    "value, expected",
    [({"a": 0.5}, {"a": 0.5}), ('{"a": 0.5, "b": -1}', {"a": 0.5, "b": -1}),
     ([["a", 0.5]], {"a": 0.5}), ("", {}), (None, {})],
)  # fmt: skip
def test_loras_as_dict_json_or_rows(value, expected):
    assert parse_loras(value) == expected


@pytest.mark.parametrize("value", ["{oops", "[1, 2, 3]", "42"])
def test_bad_loras_name_the_field(value):
    with pytest.raises(RequestError) as e:
        parse_loras(value)
    assert e.value.field == "loras"


def test_lora_rows_skip_empty_ones():
    assert loras_from_slots(["a", "", None, "b"], [0.5, 1, 1, -0.25]) == {"a": 0.5, "b": -0.25}


def test_request_round_trips_through_the_widgets():
    req = GenerationRequest(prompt="p", negative_prompt="n", model="tiny-sd", scheduler="DDIM",
                            num_inference_steps=9, guidance_scale=3.5, width=64, height=128,
                            seed=5, batch_size=2, batch_count=2, loras={"l": 0.3})  # fmt: skip
    values = widgets_from_request(req)
    assert set(values) == set(FIELDS)
    assert request_from_widgets(values) == req


@pytest.mark.parametrize("family", [f for f in FAMILIES.values() if f.kind == "image"])
def test_widget_specs_come_from_the_family(family):
    specs = widget_specs(family)
    for name in ("width", "height"):
        assert specs[name]["step"] == family.size_multiple
        assert specs[name]["value"] == family.default_size
        limits = (specs[name]["minimum"], specs[name]["maximum"])
        assert limits == (family.min_size, family.max_size)
        assert specs[name]["minimum"] % family.size_multiple == 0, "slider steps start at minimum"
    assert specs["steps"]["value"] == family.default_steps
    assert specs["steps"]["maximum"] == MAX_STEPS
    assert specs["cfg"]["value"] == family.default_cfg


def test_trigger_words_are_appended_once():
    from ui.lora_panel import insert_triggers

    assert insert_triggers("a castle", "detailed, hdr") == "a castle, detailed, hdr"
    assert insert_triggers("a castle, hdr", "detailed, hdr") == "a castle, hdr, detailed"
    assert insert_triggers("", "hdr") == "hdr"
    assert insert_triggers("x", "") == "x"


def test_server_settings_flag_env_default_and_spaces_fallback():
    from pipelines.settings import add_arguments
    from ui.settings import SERVER_SETTINGS, launch_options, server_values

    parser = argparse.ArgumentParser()
    add_arguments(parser, SERVER_SETTINGS)
    values = server_values(parser.parse_args(["--port", "9000"]), {"ATELIER_QUEUE_SIZE": "3"})
    assert (values["host"], values["port"], values["queue_size"]) == ("127.0.0.1", 9000, 3)
    spaces = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"}
    assert server_values(parser.parse_args([]), spaces)["host"] == "0.0.0.0"
    assert server_values(parser.parse_args([]), spaces)["port"] == 7861
    own = server_values(parser.parse_args([]), {**spaces, "ATELIER_HOST": "10.0.0.1"})
    assert own["host"] == "10.0.0.1", "an Atelier setting wins over Gradio's variable"
    opts = launch_options({**values, "auth": "ann:pw:with:colons,bob:x", "root_path": ""})
    assert opts["auth"] == [("ann", "pw:with:colons"), ("bob", "x")] and opts["root_path"] is None


def test_auth_from_a_file_and_bad_entries(tmp_path):
    from ui.settings import parse_auth

    users = tmp_path / "users.txt"
    users.write_text("# studio users\nann:secret\n\nbob:hunter2\n")
    assert parse_auth(str(users)) == [("ann", "secret"), ("bob", "hunter2")]
    assert parse_auth("") is None
    with pytest.raises(ValueError, match="user:password"):
        parse_auth("ann")


def test_zerogpu_wrapping_is_effect_free_off_spaces():
    from ui.runner import gpu

    def fn() -> int:
        return 1

    assert gpu(fn, env={}) is fn
    try:
        import spaces  # noqa: F401
    except ImportError:  # on "Spaces" without the package: still the plain function
        assert gpu(fn, env={"SPACES_ZERO_GPU": "true"}) is fn


def _pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        for name, version in re.findall(r"([A-Za-z0-9_.\[\]-]+)==([0-9][^\s\"'\\]*)", line):
            found[re.sub(r"\[.*\]", "", name).lower().replace("_", "-")] = version
    return found


def test_dockerfile_pins_equal_requirements():
    requirements = _pins((ROOT / "requirements.txt").read_text().splitlines())
    docker = _pins([ln for ln in (ROOT / "Dockerfile").read_text().splitlines()
                    if "pip" in ln or "uv" in ln or "ARG" in ln])  # fmt: skip
    assert docker, "the Dockerfile pins nothing"
    # Not runtime requirements: xformers (GPU images only) and uv (the installer itself).
    gpu_only = {"xformers", "uv"}
    for name, version in docker.items():
        if name in gpu_only:
            continue
        assert name in requirements, f"Dockerfile pins {name}, which requirements.txt lacks"
        pinned = requirements[name]
        assert pinned == version, f"{name}: Dockerfile {version}, requirements.txt {pinned}"
    assert "-r requirements.txt" in (ROOT / "Dockerfile").read_text()
