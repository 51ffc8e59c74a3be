"""The Generate tab's image-to-image, inpainting and ControlNet inputs as pure
functions: widget values -> (request, images). No server, no model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines import GenerationRequest, RequestError
from pipelines.request import ControlUnit
from ui.form import (
    FIELDS,
    api_images,
    error_markdown,
    images_from_area,
    painted_mask,
    parse_controlnets,
    request_from_widgets,
    studio_form,
    units_from_panel,
    widgets_from_request,
)

BASE = {"prompt": "a fox", "model": "tiny-sd", "steps": 3.0, "width": 64.0, "height": 64.0,
        "seed": 1.0}  # fmt: skip


def picture(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)):
    return Image.new("RGB", size, color)


def stroke(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """An editor layer: transparent, with an opaque painted rectangle."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    layer.paste((255, 255, 255, 255), box)
    return layer


def unit(**values):
    return {"enabled": True, "image": picture(), "module": "canny", "model": "tiny-sd-controlnet",
            "weight": 0.8, "guidance_start": 0.1, "guidance_end": 0.9, "low_threshold": 50.0,
            "high_threshold": 150.0, **values}  # fmt: skip


def test_everything_at_once_becomes_one_request_and_its_images():
    init = picture()
    editor = {"background": init.convert("RGBA"), "layers": [stroke(init.size, (0, 0, 8, 8))],
              "composite": init}  # fmt: skip
    off = unit(enabled=False, model="")
    form = studio_form({**BASE, "strength": 0.5, "mask_blur": 2.0, "image_mode": "inpaint",
                        "init_editor": editor, "mask_upload": None,
                        "units": [off, unit(), unit(module="none", weight=1.0)]})  # fmt: skip
    assert form.request == GenerationRequest(
        prompt="a fox", model="tiny-sd", num_inference_steps=3, width=64, height=64, seed=1,
        strength=0.5, mask_blur=2,
        controlnets=[ControlUnit("tiny-sd-controlnet", "canny", 0.8, 0.1, 0.9, 50, 150),
                     ControlUnit("tiny-sd-controlnet", "none", 1.0, 0.1, 0.9, 50, 150)],
    )  # fmt: skip
    assert type(form.request.mask_blur) is int
    assert type(form.request.controlnets[0].low_threshold) is int
    assert form.unit_numbers == [2, 3], "request unit k -> the UI's unit number"
    assert form.images.init_image.mode == "RGB" and form.images.init_image.size == (64, 48)
    mask = np.asarray(form.images.mask_image)
    assert mask[:8, :8].min() == 255 and mask[8:, :].max() == 0 and mask[:, 8:].max() == 0
    assert len(form.images.control_images) == 2
    inputs = form.images.inputs()
    assert inputs.init_image is form.images.init_image and len(inputs.control_images) == 2


def test_mode_off_ignores_an_image_left_in_the_editor():
    form = studio_form({**BASE, "image_mode": "off", "init_editor": {"background": picture()}})
    assert form.images.init_image is None and form.images.mask_image is None
    assert form.request.controlnets == () and form.unit_numbers == []


def test_img2img_takes_the_background_and_no_mask():
    init, mask = images_from_area("img2img", {"background": picture(), "layers": [
        stroke((64, 48), (0, 0, 4, 4))]}, None)  # fmt: skip
    assert init.size == (64, 48) and mask is None
    init, _ = images_from_area("img2img", picture(), None)  # a plain image works too
    assert init.getpixel((0, 0)) == (200, 30, 30)


def test_an_uploaded_mask_wins_over_paint_and_is_not_resized():
    upload = Image.new("L", (32, 32), 255)
    init, mask = images_from_area("inpaint", {"background": picture(),
                                              "layers": [stroke((64, 48), (0, 0, 4, 4))]},
                                  upload)  # fmt: skip
    assert mask is upload, "a wrong size is the engine's error (mask_image), not silently fixed"


def test_paint_on_a_scaled_canvas_maps_onto_the_image():
    mask = painted_mask([stroke((128, 96), (0, 0, 64, 96))], (64, 48))
    values = np.asarray(mask)
    assert mask.size == (64, 48) and values[:, :32].min() == 255 and values[:, 32:].max() == 0
    assert painted_mask([Image.new("RGBA", (64, 48))], (64, 48)) is None, "nothing painted"


@pytest.mark.parametrize(
    "mode, editor, mask, field",
    [("img2img", None, None, "init_image"), ("inpaint", {"background": None}, None, "init_image"),
     ("inpaint", {"background": picture(), "layers": []}, None, "mask_image"),
     ("sketch", picture(), None, "image_mode")],
)  # fmt: skip
def test_missing_images_name_their_field(mode, editor, mask, field):
    with pytest.raises(RequestError) as e:
        images_from_area(mode, editor, mask)
    assert e.value.field == field


def test_enabled_unit_without_a_model_names_the_unit():
    with pytest.raises(RequestError) as e:
        units_from_panel([unit(enabled=False), unit(model=None)])
    assert e.value.field == "controlnets[0].model" and "unit 2" in e.value.rule


def test_unit_image_may_be_missing_and_the_engine_says_so():
    units, images, numbers = units_from_panel([unit(image=None)])
    assert images == [None] and numbers == [1] and units[0]["module"] == "canny"


def test_error_box_names_the_ui_unit():
    err = RequestError("controlnets[1].guidance_start", "must be less than guidance_end")
    assert error_markdown(err, [1, 3]).startswith("**ControlNet unit 3.guidance_start**")
    assert error_markdown(RequestError("strength", "x")) == "**strength**: x"


@pytest.mark.parametrize(
    "value",
    ['[{"model": "cn", "module": "canny", "low_threshold": 50.0}]',
     [{"model": "cn", "module": "canny", "low_threshold": 50}],
     {"model": "cn", "module": "canny", "low_threshold": 50}],
)  # fmt: skip
def test_api_controlnets_as_json_list_or_one_dict(value):
    assert parse_controlnets(value) == (ControlUnit("cn", "canny", low_threshold=50),)


@pytest.mark.parametrize(
    "value, field",
    [("[{oops", "controlnets"), ("42", "controlnets"),
     ('[{"module": "canny"}]', "controlnets[0].model"),
     ('[{"model": "a", "x": 1}]', "controlnets[0]")],
)  # fmt: skip
def test_bad_controlnets_name_the_field(value, field):
    with pytest.raises(RequestError) as e:
        parse_controlnets(value)
    assert e.value.field == field


def test_whole_weights_become_floats_for_diffusers():
    units = [{"model": "cn", "weight": 1, "guidance_end": 1, "low_threshold": 7.0}]
    (u,) = parse_controlnets(units)
    assert (type(u.weight), type(u.guidance_end), type(u.low_threshold)) == (float, float, int)
    assert parse_controlnets([{"model": "cn", "weight": True}])[0].weight is True, "not repaired"


def test_old_api_calls_keep_the_engine_defaults():
    req = request_from_widgets({"prompt": "x", "strength": None, "mask_blur": "",
                                "controlnets": None})  # fmt: skip
    assert req == GenerationRequest(prompt="x")


def test_request_with_units_round_trips_through_the_widgets():
    req = GenerationRequest(prompt="p", model="tiny-sd", strength=0.4, mask_blur=9,
                            controlnets=[ControlUnit("tiny-sd-controlnet", "canny", 0.5, 0.2,
                                                     0.7, 10, 20)])  # fmt: skip
    values = widgets_from_request(req)
    assert set(values) == set(FIELDS)
    assert request_from_widgets(values) == req


def test_api_images_from_paths(tmp_path):
    path = tmp_path / "a.png"
    picture().save(path)
    images = api_images(str(path), None, [str(path), None])
    assert images.init_image.size == (64, 48) and images.mask_image is None
    assert len(images.control_images) == 2 and images.control_images[1] is None
    assert api_images(None, None, str(path)).control_images[0].size == (64, 48)
    assert api_images(None, None, None).control_images == []


def test_inpaint_area_and_padding_reach_the_request_and_come_back():
    from ui.form import request_from_widgets, widgets_from_request

    req = request_from_widgets({"prompt": "a", "inpaint_area": "masked", "inpaint_padding": 16.0})
    assert (req.inpaint_area, req.inpaint_padding) == ("masked", 16)
    values = widgets_from_request(req)
    assert (values["inpaint_area"], values["inpaint_padding"]) == ("masked", 16)
