"""Files the server writes: saved as each image is decoded, with normal permissions;
the studio's scratch folder is capped while serving and removed at shutdown."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from pipelines import Cancelled, GenerationRequest, ImageJob
from pipelines.outputs import read_png_parameters
from ui.runner import ImageStore

SMALL = dict(num_inference_steps=2, width=64, height=64)


def umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_each_call_is_saved_when_decoded_so_a_cancel_keeps_finished_images(manager, tmp_path):
    req = GenerationRequest(prompt="kept", seed=10, batch_size=2, batch_count=5, **SMALL)
    job = manager.submit(ImageJob(req, save_to=tmp_path, task_id="t1"))
    for event in job.events(timeout=60):
        if event.kind == "progress" and event.step == 2:  # the first call's last step
            job.cancel()
    with pytest.raises(Cancelled):
        job.result()
    saved = sorted(p.name for p in tmp_path.glob("*.png"))
    assert saved == ["t1-0.png", "t1-1.png"], saved
    assert read_png_parameters(tmp_path / "t1-1.png").startswith("kept\n")
    assert "Seed: 11" in read_png_parameters(tmp_path / "t1-1.png")


def test_saved_files_have_normal_permissions(manager, tmp_path):
    from pipelines.export import save_video

    result = manager.submit(ImageJob(GenerationRequest(prompt="p", seed=1, **SMALL),
                                     save_to=tmp_path)).result(timeout=60)  # fmt: skip
    expected = 0o644 & ~umask()
    assert [stat.S_IMODE(p.stat().st_mode) for p in result.paths] == [expected]
    frames = np.zeros((5, 16, 16, 3), dtype=np.float32)
    video, sidecar = save_video(frames, tmp_path, 8, {"seed": 1})
    assert stat.S_IMODE(video.stat().st_mode) == expected
    assert stat.S_IMODE(sidecar.stat().st_mode) == expected


def test_scratch_folder_keeps_under_its_cap_oldest_first_and_goes_at_close(manager):
    store = ImageStore(None, max_bytes=50_000)
    try:
        result = manager.generate(GenerationRequest(prompt="p", seed=1, batch_size=2, **SMALL))
        size = sum(p.stat().st_size for p in result_copies(store, result))
        assert size < 50_000
        folders = [result_copies(store, result)[0].parent for _ in range(6)]
        total = sum(p.stat().st_size for p in store.scratch.rglob("*") if p.is_file())
        assert total <= 50_000 + size, "trimmed before each new folder"
        assert folders[-1].exists() and not folders[0].exists(), "the oldest went first"
    finally:
        store.close()
    assert not store.scratch.exists()


def result_copies(store: ImageStore, result) -> list[Path]:
    return store.publish(result)
