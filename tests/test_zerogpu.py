"""ZeroGPU (Hugging Face Spaces): what can be checked without its hardware. The
`spaces` package is replaced by a stand-in that records what `spaces.GPU` is given."""

from __future__ import annotations

import sys
import types

from pipelines import GenerationRequest, ImageJob, VideoJob, VideoRequest
from ui.context import StudioContext
from ui.runner import ZEROGPU_SECONDS, gpu, gpu_seconds


def fake_spaces(calls: list) -> types.ModuleType:
    module = types.ModuleType("spaces")

    def GPU(fn, duration=None):  # noqa: N802 (the package's name)
        calls.append((fn, duration))
        return fn

    module.GPU = GPU
    return module


def test_off_spaces_the_handler_is_unchanged_and_spaces_is_not_needed():
    def handler():
        return 1

    assert gpu(handler, env={}) is handler


def test_on_zerogpu_the_handler_is_wrapped_with_a_duration(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "spaces", fake_spaces(calls))

    def handler(x):
        return x

    def seconds(x):
        return 120

    wrapped = gpu(handler, seconds, env={"SPACES_ZERO_GPU": "true"})
    assert wrapped(3) == 3 and calls == [(handler, seconds)]


def test_gpu_seconds_grow_with_the_work_within_zerogpus_bounds(manager):
    ctx = StudioContext(manager, store=None)  # type: ignore[arg-type]
    small = gpu_seconds(ctx, lambda: ImageJob(GenerationRequest(prompt="x", width=64,
                                                                height=64)))  # fmt: skip
    assert small == ZEROGPU_SECONDS[0]
    video = VideoRequest(prompt="v", num_frames=81, width=832, height=480, num_inference_steps=30)
    big = gpu_seconds(ctx, lambda: VideoJob(video))
    assert ZEROGPU_SECONDS[0] < big <= ZEROGPU_SECONDS[1]
    bad = gpu_seconds(ctx, lambda: ImageJob(GenerationRequest(prompt="x", width=100)))
    assert bad == ZEROGPU_SECONDS[0], "a bad request asks for the least; it fails at once"
