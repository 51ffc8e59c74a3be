"""Image-to-image, inpainting and ControlNet through the studio's API, end to end:
the app on 127.0.0.1, called with gradio_client, compared with the engine itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image, ImageDraw

from tests.ui_support import launched_studio

SMALL = {"model": "tiny-sd", "steps": 3, "width": 64, "height": 64, "seed": 7}


def shapes(size: tuple[int, int] = (80, 72)) -> Image.Image:
    """A black picture with a white rectangle and a grey disc: clear canny edges."""
    image = Image.new("RGB", size, "black")
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 12, 40, 50), fill="white")
    draw.ellipse((45, 20, 70, 60), fill=(128, 128, 128))
    return image


@pytest.fixture(scope="module")
def server(cache_root: Path) -> Iterator[Any]:
    with launched_studio(cache_root, "off", queue_size=8) as demo:
        yield demo


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("control-inputs")
    paths = {"shapes": folder / "shapes.png", "init": folder / "init.png"}
    shapes().save(paths["shapes"])
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(paths["init"])
    return paths


def pixels(path_or_image: Any) -> np.ndarray:
    image = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    return np.asarray(image.convert("RGB"))


def test_controlnet_generation_equals_the_engine_pixel_for_pixel(client, manager, files):
    from pipelines import GenerationRequest
    from pipelines.tasks import Inputs

    units = [{"model": "tiny-sd-controlnet", "module": "canny", "weight": 0.9,
              "guidance_start": 0.0, "guidance_end": 0.8, "low_threshold": 50,
              "high_threshold": 150}]  # fmt: skip
    got, infotext, seed = client.predict(
        prompt="a house", controlnets=json.dumps(units),
        control_images=[handle_file(str(files["shapes"]))], **SMALL, api_name="/generate",
    )  # fmt: skip
    assert seed == 7 and 'ControlNet 0: "Module: canny, Model: tiny-sd-controlnet' in infotext
    request = GenerationRequest(prompt="a house", model="tiny-sd", num_inference_steps=3,
                                width=64, height=64, seed=7, controlnets=units)  # fmt: skip
    expected = manager.generate(
        request, inputs=Inputs(control_images=[Image.open(files["shapes"])])
    )
    assert np.array_equal(pixels(got[0]), pixels(expected.images[0]))
    assert infotext == expected.infotexts[0]
    plain = manager.generate(GenerationRequest(prompt="a house", model="tiny-sd",
                                               num_inference_steps=3, width=64, height=64,
                                               seed=7))  # fmt: skip
    assert not np.array_equal(pixels(got[0]), pixels(plain.images[0])), "ControlNet had no effect"


def test_img2img_equals_the_engine_and_old_calls_still_work(client, manager, files):
    from pipelines import GenerationRequest
    from pipelines.tasks import Inputs

    got, infotext, _ = client.predict(prompt="a house", init_image=handle_file(str(files["init"])),
                                      strength=0.6, **SMALL, api_name="/generate")  # fmt: skip
    assert "Denoising strength: 0.6" in infotext
    request = GenerationRequest(prompt="a house", model="tiny-sd", num_inference_steps=3,
                                width=64, height=64, seed=7, strength=0.6)  # fmt: skip
    expected = manager.generate(request, inputs=Inputs(init_image=Image.open(files["init"])))
    assert np.array_equal(pixels(got[0]), pixels(expected.images[0]))
    # A text-to-image call without any new argument is text-to-image, as before.
    plain, infotext, _ = client.predict(prompt="a house", **SMALL, api_name="/generate")
    assert "Denoising strength" not in infotext and "ControlNet" not in infotext


def test_inpaint_mask_of_another_size_names_the_field(client, files, tmp_path):
    from gradio_client.exceptions import AppError

    mask = tmp_path / "mask.png"
    Image.new("L", (32, 32), 255).save(mask)
    with pytest.raises(AppError, match=r"mask_image: must be the same size as init_image"):
        client.predict(prompt="x", init_image=handle_file(str(files["init"])),
                       mask_image=handle_file(str(mask)), **SMALL,
                       api_name="/generate")  # fmt: skip
    with pytest.raises(AppError, match=r"controlnets\[0\]: needs a control image"):
        client.predict(prompt="x", controlnets=[{"model": "tiny-sd-controlnet"}], **SMALL,
                       api_name="/generate")  # fmt: skip


def test_preprocess_returns_a_canny_map_of_the_requested_size(client, files):
    from pipelines.preprocess import run

    path = client.predict(handle_file(str(files["shapes"])), "canny", 96, 64, 50, 150,
                          api_name="/preprocess")  # fmt: skip
    got = Image.open(path)
    assert got.size == (96, 64)
    edges = pixels(got)
    # Edges only: bright along the shapes' outlines, black inside the rectangle.
    assert (edges > 0).sum() > 100 and edges[27, 30].max() == 0 and edges[27, 12].max() > 0
    assert np.array_equal(edges, pixels(run("canny", shapes(), 96, 64, None, 50, 150)))
    blank = client.predict(handle_file(str(files["shapes"])), "none", 64, 64,
                           api_name="/preprocess")  # fmt: skip
    assert np.array_equal(pixels(blank), pixels(shapes().resize((64, 64), Image.BICUBIC)))


def test_preprocess_errors_name_the_field(client, files):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"module: unknown preprocessor 'blur'"):
        client.predict(handle_file(str(files["shapes"])), "blur", 64, 64, api_name="/preprocess")
    with pytest.raises(AppError, match=r"width: must be a multiple of 8"):
        client.predict(handle_file(str(files["shapes"])), "canny", 100, 64, api_name="/preprocess")
    with pytest.raises(AppError, match=r"module: preprocessor 'depth_midas' needs weights: put"):
        client.predict(handle_file(str(files["shapes"])), "depth_midas", 64, 64,
                       api_name="/preprocess")  # fmt: skip


def test_png_info_restores_strength_mask_blur_and_units(client, manager, files):
    """PNG Info's "Send to Generate" (the endpoint its button calls) fills the new controls."""
    from pipelines import GenerationRequest
    from pipelines.tasks import Inputs
    from ui.control_panel import CONTROL_UNITS
    from ui.lora_panel import LORA_ROWS

    units = [{"model": "tiny-sd-controlnet", "module": "canny", "weight": 0.5,
              "guidance_start": 0.2, "guidance_end": 0.7, "low_threshold": 40,
              "high_threshold": 90}]  # fmt: skip
    request = GenerationRequest(prompt="restore me", model="tiny-sd", num_inference_steps=3,
                                width=64, height=64, seed=3, strength=0.35, mask_blur=6,
                                controlnets=units)  # fmt: skip
    image = Image.open(files["init"])
    inputs = Inputs(image, Image.new("L", image.size, 255), [Image.open(files["shapes"])])
    infotext = manager.generate(request, inputs=inputs).infotexts[0]
    out = client.predict(infotext, "tiny-sd", api_name="/send_to_generate")
    # The client returns the components' values (no Row, no Tabs): the form, 3 per LoRA row,
    # then strength, mask blur, inpaint area and padding, and 8 per unit (every unit
    # widget but its image) (the sections it opens are layout: not in the client's values),
    # then clip skip and VAE (restored since issue 11) and the hires fix fields.
    from ui.hires_panel import HIRES_FIELDS

    per_unit, image_fields = 8, 4
    units_end = 11 + 3 * LORA_ROWS + image_fields + per_unit * CONTROL_UNITS
    assert len(out) == units_end + 2 + len(HIRES_FIELDS)
    clip_skip, vae = out[units_end : units_end + 2]
    assert (clip_skip, vae["value"]) == (1, "Automatic"), "clip skip 1, the model's own VAE"
    restored = out[11 + 3 * LORA_ROWS :]
    assert list(restored[:image_fields]) == [0.35, 6, "whole", 32]
    units = restored[image_fields:]
    first, second = units[:per_unit], units[per_unit : 2 * per_unit]
    assert first[2]["value"] == "tiny-sd-controlnet"
    assert [first[i] for i in (0, 1, 3, 4, 5, 6, 7)] == [True, "canny", 0.5, 0.2, 0.7, 40, 90]
    assert second[0] is False, "units beyond the infotext's are switched off"
