"""The studio's API for issue 14 through gradio_client: /upscale, /xyz, /generate with
styles and hires fix, and the Generate tab's handlers for styles and plots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.outputs import read_png_parameters
from tests.test_upscale_files import tiny_upscaler
from tests.ui_support import launched_studio


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("api14")
    tiny_upscaler(d / "up" / "tiny-2x.safetensors")
    (d / "styles.csv").write_text('name,prompt,negative_prompt\nphoto,"{prompt}, photo",toy\n')
    return d


@pytest.fixture(scope="module")
def server(cache_root: Path, folder: Path) -> Iterator[Any]:
    engine = {"upscalers_dir": folder / "up", "styles_file": folder / "styles.csv"}
    with launched_studio(cache_root, folder / "outputs", engine=engine) as demo:
        yield demo


def test_upscale_endpoint(client, server, tmp_path):
    from gradio_client import handle_file

    source = tmp_path / "in.png"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(source)
    path, info = client.predict(handle_file(str(source)), "tiny-2x", 2, 0, 0,
                                api_name="/upscale")  # fmt: skip
    assert Image.open(path).size == (80, 60)
    assert info == "Postprocess upscale by: 2, Postprocess upscaler: tiny-2x"
    assert read_png_parameters(path) == info
    with pytest.raises(Exception, match="upscaler: unknown upscaler 'nope'"):
        client.predict(handle_file(str(source)), "nope", 2, 0, 0, api_name="/upscale")


def test_generate_with_styles_and_hires(client):
    paths, info, _seed = client.predict(
        prompt="a fox", width=64, height=64, steps=2, seed=4, styles=["photo"],
        enable_hr=True, hr_scale=1.5, hr_upscaler="Nearest", denoising_strength=0.5,
        api_name="/generate",
    )  # fmt: skip
    assert Image.open(paths[0]).size == (96, 96)
    assert info.startswith("a fox, photo\nNegative prompt: toy\n")
    assert "Denoising strength: 0.5, Hires upscale: 1.5, Hires upscaler: Nearest" in info


def test_xyz_endpoint(client):
    job = client.submit(x_type="Steps", x_values="1-2", y_type="Prompt S/R",
                        y_values="fox, cat", prompt="a fox", width=64, height=64, seed=2,
                        api_name="/xyz")  # fmt: skip
    grids, cells, info = job.result(timeout=300)
    assert len(grids) == 1 and len(cells) == 4
    grid = np.asarray(Image.open(grids[0]))
    assert grid.shape[0] > 128 and grid.shape[1] > 128
    assert "Script: X/Y/Z plot, X Type: Steps" in info
    assert read_png_parameters(cells[2]).startswith("a cat\n")
    with pytest.raises(Exception, match="x: 'lots' is not a whole number"):
        client.predict(x_type="Steps", x_values="lots", prompt="a fox", api_name="/xyz")


@pytest.fixture(scope="module")
def local(folder: Path, cache_root: Path) -> Any:
    """An engine over the same folders as the server's (for the handlers)."""
    from pipelines import EngineSettings, PipelineManager

    d = folder
    return PipelineManager(EngineSettings(default_model="tiny-sd", devices=("cpu",),
                                          loras_dir=None, models_dir=None,
                                          cache_root=cache_root, upscalers_dir=d / "up",
                                          styles_file=d / "styles.csv"))  # fmt: skip


def test_studio_plot_handler_fills_the_gallery(local):
    """The Generate tab's Scripts accordion: its handler over the form's values."""
    from ui.context import StudioContext
    from ui.xyz_panel import generate_plot

    ctx = StudioContext.create(local, None)
    values = {"prompt": "a fox", "width": 64, "height": 64, "steps": 1, "seed": 1,
              "extras": {"styles": ["photo"], "enable_hr": False}}  # fmt: skip
    updates = list(generate_plot(ctx, values, {"x_type": "Seed", "x_values": "1, 2"}, [],
                                 "test"))  # fmt: skip
    final = updates[-1]
    assert "gallery" in final, final
    assert final["info"].startswith("a fox, photo\n")  # the grid's infotext: first cell's
    assert len(final["shown"]) == 3  # grid + 2 cells


def test_save_style_handler(local, folder):
    from pipelines.styles import StyleLibrary
    from ui.styles_panel import save_style

    _, message = save_style(local, "mine", "{prompt}, oil", "blur", ["photo"])
    assert "Saved" in message
    assert StyleLibrary(folder / "styles.csv").get("mine").prompt == "{prompt}, oil"
    _, message = save_style(local, "", "x", "", [])
    assert message.startswith("**style_name**")
