"""Settings: every one is documented in the README, and flag > environment > default."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipelines.settings import ENGINE_SETTINGS, add_arguments, engine_settings, resolve
from ui.settings import SERVER_SETTINGS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.mark.parametrize("table", [ENGINE_SETTINGS, SERVER_SETTINGS], ids=["engine", "server"])
def test_every_setting_is_documented_in_the_readme(table):
    for s in table:
        row = next((ln for ln in README.splitlines() if ln.startswith(f"| {s.name} |")), None)
        assert row is not None, f"README has no settings row for {s.name}"
        assert f"`{s.flag}`" in row and f"`{s.env}`" in row, row


def test_flag_beats_environment_beats_default():
    parser = argparse.ArgumentParser()
    add_arguments(parser, ENGINE_SETTINGS)
    env = {"ATELIER_DEVICES": "cpu,cpu", "ATELIER_PREVIEW_EVERY": "3", "ATELIER_DTYPE": "float16"}
    values = resolve(ENGINE_SETTINGS, parser.parse_args(["--dtype", "bfloat16"]), env)
    assert values["devices"] == ("cpu", "cpu") and values["preview_every"] == 3
    assert values["dtype"] == "bfloat16" and values["default_model"] == "atelier-shapes"
    settings = engine_settings(values)
    assert settings.devices == ("cpu", "cpu") and settings.load.dtype == "bfloat16"


def test_the_default_model_is_the_trained_one_for_app_and_engine():
    from pipelines import EngineSettings, builtin

    assert builtin.shipped_model() is not None, "assets/atelier-shapes is committed"
    default = next(s.default for s in ENGINE_SETTINGS if s.name == "default_model")
    assert default == EngineSettings().default_model == builtin.SHIPPED_MODEL


def test_settings_flags_work_before_and_after_the_subcommand():
    from app import build_parser

    parser = build_parser()
    before = parser.parse_args(["--loras-dir", "a", "generate", "--prompt", "x"])
    after = parser.parse_args(["generate", "--prompt", "x", "--loras-dir", "b"])
    assert (before.loras_dir, after.loras_dir) == ("a", "b")
    assert parser.parse_args(["generate", "--prompt", "x"]).loras_dir is None


def test_a_boolean_flag_alone_means_true():
    from app import build_parser

    parser = build_parser()
    assert parser.parse_args(["serve", "--api"]).api is True, "A1111's bare --api"
    assert parser.parse_args(["serve", "--api", "--share", "false"]).share is False
    assert parser.parse_args(["serve", "--api", "false"]).api is False
    assert parser.parse_args(["serve", "--public"]).public is True  # auto_or_bool too
    assert parser.parse_args(["serve"]).api is None, "unset: the environment or the default"
    with pytest.raises(argparse.ArgumentTypeError, match="put the flag after 'serve'"):
        next(s for s in SERVER_SETTINGS if s.name == "api").type("serve")
