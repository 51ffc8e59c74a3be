"""The Ray backend's pieces that need no cluster: the wire format (jobs, results and
errors as plain data), the multiplexing count, and the `engine` setting's checks."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import AtelierError, LimitError, RequestError
from pipelines.image_job import GenerationResult, ImageJob
from pipelines.outputs import read_png_parameters
from pipelines.remote import apply_engine
from pipelines.remote_wire import (
    decode_error,
    decode_job,
    decode_result,
    encode_error,
    encode_job,
    encode_result,
    png_image,
)
from pipelines.request import GenerationRequest
from pipelines.serve import models_per_replica
from pipelines.tasks import Inputs
from pipelines.video import VideoJob, VideoRequest, VideoResult


def _noise(seed: int, size: int = 16) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_an_image_job_crosses_the_wire_with_its_images_exact():
    req = GenerationRequest(prompt="a fox", seed=5, width=64, height=64, loras={"x": 0.5},
                            controlnets=[{"model": "cn", "weight": 0.7}])  # fmt: skip
    inputs = Inputs(_noise(1), _noise(2).convert("L"), [_noise(3)])
    wire = encode_job(ImageJob(req, inputs), "ann")
    assert wire["caller"] == "ann" and wire["kind"] == "image"
    back = decode_job(wire)
    assert back.request == req and back.save_to is None  # files are written by the sender
    for a, b in ((inputs.init_image, back.inputs.init_image),
                 (inputs.mask_image, back.inputs.mask_image),
                 (inputs.control_images[0], back.inputs.control_images[0])):  # fmt: skip
        assert a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b))


def test_a_video_job_and_result_cross_the_wire():
    req = VideoRequest(prompt="waves", model="tiny-wan", num_frames=5, seed=3)
    back = decode_job(encode_job(VideoJob(req, _noise(4)), "bob"))
    assert back.request == req and np.array_equal(np.asarray(back.image), np.asarray(_noise(4)))
    frames = np.random.default_rng(0).random((5, 8, 8, 3), dtype=np.float32)
    result = VideoResult(req, frames, 3, {"seed": 3}, "cpu#0", {"total": 1.0})
    got = decode_result(encode_result(result), "ray:abc")
    assert np.array_equal(got.frames, frames) and got.frames.dtype == np.float32
    assert got.slot == "ray:abc/cpu#0" and got.parameters == {"seed": 3}


def test_an_image_result_keeps_pixels_and_infotext():
    images = [_noise(7), _noise(8)]
    infos = ["a fox\nSteps: 2, Seed: 1", "a fox\nSteps: 2, Seed: 2"]
    result = GenerationResult(GenerationRequest(prompt="a fox", seed=1), images, [1, 2], infos,
                              "cpu#0", {"total": 0.5}, warnings=["w"])  # fmt: skip
    wire = encode_result(result)
    assert read_png_parameters(png_image(wire["images"][1])) == infos[1]  # PNG with infotext
    got = decode_result(wire, "ray:r1")
    assert [np.asarray(i).tolist() for i in got.images] == [np.asarray(i).tolist() for i in images]
    assert got.seeds == [1, 2] and got.infotexts == infos and got.warnings == ["w"]
    for f in fields(result):  # every other field travels as it is (fields added later too)
        if f.name not in ("images", "slot", "paths", "urls"):
            assert getattr(got, f.name) == getattr(result, f.name), f.name


def test_errors_cross_the_wire_as_the_same_kinds():
    got = decode_error(encode_error(RequestError("model", "unknown model 'x'")), "replica r")
    assert type(got) is RequestError and (got.field, got.rule) == ("model", "unknown model 'x'")
    got = decode_error(encode_error(LimitError("max_work", "too much")), "replica r")
    assert type(got) is LimitError and got.field == "max_work"
    got = decode_error(encode_error(ZeroDivisionError("boom")), "replica r")
    assert type(got) is AtelierError and "ZeroDivisionError on replica r: boom" in str(got)


@pytest.mark.parametrize(("budget", "model", "count"), [(24_000, 7_000, 3), (8_000, 9_000, 1),
                                                        (80_000, 2_500, 32)])  # fmt: skip
def test_models_per_replica_follows_the_cache_budget(budget, model, count):
    assert models_per_replica(budget, model) == count


def test_the_engine_setting_is_checked():
    assert apply_engine(object(), {"engine": "local"}) is None  # type: ignore[arg-type]
    with pytest.raises(RequestError) as e:
        apply_engine(object(), {"engine": "spark"})  # type: ignore[arg-type]
    assert e.value.field == "engine" and "local, ray" in e.value.rule
