"""PipelineManager contracts: caching, swapping, slots, concurrency, cancel, LoRA hygiene."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from pipelines import Cancelled, CancelToken, EngineSettings, GenerationRequest, PipelineManager
from pipelines.families import FAMILIES
from pipelines.schedulers import available_schedulers

ROOT = Path(__file__).resolve().parents[1]


def req(**kw):
    base = dict(prompt="a small house", num_inference_steps=2, width=64, height=64, seed=3)
    return GenerationRequest(**{**base, **kw})


def pixels(result, k=0):
    return np.asarray(result.images[k])


def new_manager(cache_root, **kw):
    return PipelineManager(
        EngineSettings(
            default_model="tiny-sd", cache_root=cache_root, **{"devices": ("cpu",), **kw}
        )
    )


def loaded(manager, name):
    slot = manager.slots[0]
    key = next(k for k in slot.cache.names() if k.startswith(name + "@"))
    return slot.cache.get(key)


def test_scheduler_swaps_never_reload_weights(cache_root):
    m = new_manager(cache_root)
    names = available_schedulers(FAMILIES["sd15"])
    first = m.generate(req(scheduler="DPM++ 2M Karras"))
    unet = loaded(m, "tiny-sd").pipeline.unet
    for i in range(50):
        m.generate(req(scheduler=names[i % len(names)], num_inference_steps=1))
    assert m.slots[0].loads == 1
    assert loaded(m, "tiny-sd").pipeline.unet is unet
    # No sticky config: after 50 swaps the first sampler gives the first image again.
    again = m.generate(req(scheduler="DPM++ 2M Karras"))
    assert np.array_equal(pixels(first), pixels(again))


def test_karras_does_not_leak_into_plain_sampler(cache_root):
    m = new_manager(cache_root)
    plain_first = m.generate(req(scheduler="DPM++ 2M", num_inference_steps=4))
    m.generate(req(scheduler="DPM++ 2M Karras", num_inference_steps=4))
    plain_after = m.generate(req(scheduler="DPM++ 2M", num_inference_steps=4))
    karras = m.generate(req(scheduler="DPM++ 2M Karras", num_inference_steps=4))
    assert np.array_equal(pixels(plain_first), pixels(plain_after))
    assert not np.array_equal(pixels(plain_first), pixels(karras))


def test_cache_evicts_least_recently_used_and_frees_it(cache_root):
    m = new_manager(cache_root)
    m.generate(req(model="tiny-sd"))
    m.generate(req(model="tiny-sdxl"))
    slot = m.slots[0]
    sizes = {k.split("@")[0]: slot.cache._entries[k].nbytes for k in slot.cache.names()}
    slot.cache.budget_bytes = sizes["tiny-sd"] + sizes["tiny-sdxl"] + 1024
    sdxl_unet = weakref.ref(loaded(m, "tiny-sdxl").pipeline.unet)
    m.generate(req(model="tiny-sd"))  # tiny-sd is now the most recently used
    m.generate(req(model="tiny-flux"))  # third model: evicts the LRU one, tiny-sdxl
    names = {k.split("@")[0] for k in slot.cache.names()}
    assert names == {"tiny-sd", "tiny-flux"}
    gc.collect()
    assert sdxl_unet() is None, "evicted modules are still referenced somewhere"
    m.generate(req(model="tiny-sdxl"))  # loads again
    assert slot.loads == 4


def test_model_in_use_is_not_evicted(cache_root):
    m = new_manager(cache_root)
    slot = m.slots[0]
    evicted = []

    def during_run(event):
        evicted.extend(slot.cache.make_room(10**15))  # ask for more than any budget

    m.generate(req(num_inference_steps=2), on_progress=during_run)
    assert evicted == [] and any(k.startswith("tiny-sd@") for k in slot.cache.names())
    assert slot.cache.make_room(10**15) != []  # once idle, it can go


def test_cancel_stops_early_skips_decode_and_slot_keeps_serving(cache_root):
    m = new_manager(cache_root)
    m.generate(req())  # load first
    vae = loaded(m, "tiny-sd").pipeline.vae
    decodes = []
    hook = vae.decoder.register_forward_hook(lambda *a: decodes.append(1))
    token, steps = CancelToken(), []

    def progress(event):
        steps.append(event.step)
        if event.step == 2:
            token.cancel()

    try:
        with pytest.raises(Cancelled):
            m.generate(req(num_inference_steps=20), on_progress=progress, cancel=token)
        assert steps == [1, 2] and decodes == []
        ok = m.generate(req())
        assert len(ok.images) == 1 and decodes == [1]
    finally:
        hook.remove()


def test_progress_counts_steps_and_sends_previews(cache_root):
    m = new_manager(cache_root, preview_every=2)
    events = []
    m.generate(req(num_inference_steps=6, batch_count=2), on_progress=events.append)
    assert [e.step for e in events] == list(range(1, 13))
    assert {e.total for e in events} == {12}
    previews = [e for e in events if e.preview is not None]
    assert len(previews) == 4 and previews[0].preview.size == (8, 8)


def test_lora_applies_for_one_request_only(cache_root):
    m = new_manager(cache_root)
    before = m.generate(req())
    with_lora = m.generate(req(loras={"tiny-sd-lora": 1.0}))
    after = m.generate(req())
    zero = m.generate(req(loras={"tiny-sd-lora": 0.0}))
    tagged = m.generate(req(prompt="a small house <lora:tiny-sd-lora:1>"))
    assert not np.array_equal(pixels(before), pixels(with_lora))
    assert np.array_equal(pixels(before), pixels(after))
    assert np.array_equal(pixels(before), pixels(zero))
    assert np.array_equal(pixels(with_lora), pixels(tagged))
    assert "<lora:tiny-sd-lora:1>" in with_lora.infotexts[0]
    assert "Lora hashes: " in with_lora.infotexts[0]


MIXED = [
    dict(model="tiny-sd", scheduler="Euler a", seed=1),
    dict(model="tiny-sdxl", scheduler="DPM++ 2M Karras", seed=2),
    dict(model="tiny-sd", scheduler="DDIM", seed=3, loras={"tiny-sd-lora": 0.7}),
    dict(model="tiny-flux", scheduler="Flow Euler", seed=4),
    dict(model="tiny-sd", scheduler="DPM++ SDE Karras", seed=5, batch_size=2),
    dict(model="tiny-sdxl", scheduler="Euler", seed=6),
    dict(model="tiny-sd", scheduler="UniPC", seed=7, loras={"tiny-sd-lora": -1.0}),
    dict(model="tiny-flux", scheduler="DPM++ 2M", seed=8),
]


def test_concurrent_requests_on_two_slots_equal_serial_results(cache_root):
    serial = new_manager(cache_root)
    expected = [serial.generate(req(**kw)) for kw in MIXED]
    parallel = new_manager(cache_root, devices=("cpu", "cpu"))
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(MIXED))

    def run(i, kw):
        try:
            start.wait()
            results[i] = parallel.generate(req(**kw))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, kw)) for i, kw in enumerate(MIXED)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert {r.slot for r in results.values()} == {s.name for s in parallel.slots}
    for i, want in enumerate(expected):
        got = results[i]
        assert got.seeds == want.seeds
        for k in range(len(want.images)):
            assert np.array_equal(pixels(got, k), pixels(want, k)), MIXED[i]


def test_engine_never_imports_gradio():
    code = (
        "import pkgutil, importlib, sys, pipelines\n"
        "for m in pkgutil.iter_modules(pipelines.__path__):\n"
        "    importlib.import_module('pipelines.' + m.name)\n"
        "bad = [m for m in sys.modules if m == 'gradio' or m.startswith('gradio.')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_request_prefers_the_free_slot_that_holds_its_model(cache_root):
    m = new_manager(cache_root, devices=("cpu", "cpu"))
    first = m.generate(req(model="tiny-sd"))
    other = m.generate(req(model="tiny-sdxl"))  # goes to the empty slot
    assert other.slot != first.slot
    for model, slot in [("tiny-sd", first.slot), ("tiny-sdxl", other.slot)] * 2:
        assert m.generate(req(model=model)).slot == slot
    assert [s.loads for s in m.slots] == [1, 1]
    assert m.wait_idle(timeout=5)
