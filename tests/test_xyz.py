"""X/Y/Z plot: A1111's value syntax, cells in A1111's order, errors before anything
runs, one job over every cell (progress, cancel, work), cells equal to the same
request run alone, and the labelled grid with the plot's parameters."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import GenerationRequest
from pipelines.errors import Cancelled, LimitError, RequestError
from pipelines.progress import CancelToken
from pipelines.xyz import make_axis, parse_axis, plot_cells, split_values
from pipelines.xyz_job import XyzJob

BASE = dict(prompt="a red fox", model="tiny-sd", width=64, height=64, seed=7,
            scheduler="Euler", num_inference_steps=2)  # fmt: skip


@pytest.mark.parametrize(("spec", "values"), [
    ("steps: 1-5", (1, 2, 3, 4, 5)),
    ("steps: 1-10 (+2)", (1, 3, 5, 7, 9)),
    ("steps: 10-20 [3]", (10, 15, 20)),
    ("steps: 5, 8-9", (5, 8, 9)),
    ("seed: 10-7 (-1)", (10, 9)),  # A1111's range(start, end + 1, step), quirk included
    ("cfg: 0.5-1.5 (+0.25)", (0.5, 0.75, 1.0, 1.25, 1.5)),
    ("CFG Scale: 1-2 [3]", (1.0, 1.5, 2.0)),
    ("cfg: 3, 7.5", (3.0, 7.5)),
    ("sampler: Euler a, DPM++ 2M", ("Euler a", "DPM++ 2M")),
    ("size: 64x64, 96x64", ((64, 64), (96, 64))),
    ('prompt s/r: fox, "cat, small", dog',
     (("fox", "fox"), ("fox", "cat, small"), ("fox", "dog"))),
])  # fmt: skip
def test_a1111_value_syntax(spec, values):
    assert parse_axis("x", spec).values == values


def test_bad_values_name_the_axis():
    for field, spec in (("x", "steps: ten"), ("y", "cfg: 1-2 (+0)"), ("z", "bogus: 1"),
                        ("x", "size: 64"), ("y", "steps"), ("x", "steps: 1-1000")):  # fmt: skip
        with pytest.raises(RequestError) as e:
            parse_axis(field, spec)
        assert e.value.field == field, spec
    assert split_values(' a, "b, c" ,d ') == ["a", "b, c", "d"]
    assert make_axis("x", "Nothing", "") is None


def test_cells_run_z_then_y_then_x():
    base = GenerationRequest(**BASE)
    cells = plot_cells(base, [parse_axis("x", "steps: 1,2"), parse_axis("y", "cfg: 3,4"),
                              parse_axis("z", "prompt s/r: fox, cat")])  # fmt: skip
    got = [(c.request.num_inference_steps, c.request.guidance_scale, c.request.prompt)
           for c in cells]  # fmt: skip
    assert got[:3] == [(1, 3.0, "a red fox"), (2, 3.0, "a red fox"), (1, 4.0, "a red fox")]
    assert got[4] == (1, 3.0, "a red cat") and len(got) == 8


def test_invalid_cell_fails_before_anything_runs(engine):
    events = []
    engine.jobs.add_listener(lambda job, event: events.append(event))
    axes = (parse_axis("x", "steps: 2, 500"), None, None)
    with pytest.raises(RequestError) as e:
        engine.submit(XyzJob(GenerationRequest(**BASE), axes))
    assert e.value.field == "x" and "Steps: 500" in e.value.rule
    with pytest.raises(RequestError) as e:
        engine.submit(XyzJob(GenerationRequest(**BASE), (None, parse_axis("y", "sampler: Nope"))))
    assert e.value.field == "y"
    assert events == []  # nothing was queued


def test_work_budget_covers_the_whole_plot(cache_root):
    from pipelines import EngineSettings, PipelineManager

    m = PipelineManager(EngineSettings(default_model="tiny-sd",
                                       devices=("cpu",), cache_root=cache_root, loras_dir=None,
                                       models_dir=None, max_work=64 * 64 * 2 * 3))  # fmt: skip
    m.submit(XyzJob(GenerationRequest(**BASE), (parse_axis("x", "seed: 1,2,3"),))).cancel()
    with pytest.raises(LimitError):
        m.submit(XyzJob(GenerationRequest(**BASE), (parse_axis("x", "seed: 1,2,3,4"),)))


def test_plot_cells_equal_single_runs_and_grid_is_labelled(engine, tmp_path):
    from pipelines.outputs import read_png_parameters

    axes = (parse_axis("x", "steps: 1,2"), parse_axis("y", "sampler: Euler, Euler a"))
    events = []
    job = engine.submit(XyzJob(GenerationRequest(**BASE), axes, save_to=tmp_path, task_id="p"),
                        on_event=events.append)  # fmt: skip
    result = job.result(timeout=300)
    # one bar over every cell: 1 + 2 + 1 + 2 steps
    steps = [(e.step, e.total) for e in events if e.kind == "progress"]
    assert [s for s, _ in steps] == list(range(1, 7)) and {t for _, t in steps} == {6}
    assert sum(e.kind == "started" for e in events) == 1
    assert result.labels == {
        "x": ["Steps: 1", "Steps: 2"],
        "y": ["Sampler: Euler", "Sampler: Euler a"],
        "z": [],
    }
    alone = engine.generate(GenerationRequest(**{**BASE, "num_inference_steps": 2,
                                                 "scheduler": "Euler a"}))  # fmt: skip
    cell = result.cells[3]  # x = 2 steps, y = Euler a
    assert np.array_equal(np.asarray(cell.images[0]), np.asarray(alone.images[0]))
    grid = result.grids[0]
    assert len(result.grids) == 1
    assert grid.width > 2 * 64 and grid.height > 2 * 64
    # the cells sit at the bottom right, labels in the bands on the top and the left
    left, top = grid.width - 2 * 64, grid.height - 2 * 64
    assert np.array_equal(np.asarray(grid.crop((left + 64, top + 64, left + 128, top + 128))),
                          np.asarray(cell.images[0]))  # fmt: skip
    band = np.asarray(grid.crop((left, 0, grid.width, top)).convert("L"))
    assert (band < 128).any() and (np.asarray(grid.crop((0, top, left, grid.height))
                                              .convert("L")) < 128).any()  # fmt: skip
    assert "Script: X/Y/Z plot, X Type: Steps, X Values: \"1,2\", Y Type: Sampler" in (
        result.grid_infotexts[0])  # fmt: skip
    assert read_png_parameters(tmp_path / "p-grid-0.png") == result.grid_infotexts[0]
    assert (tmp_path / "p-3-0.png").exists() and result.paths[0] == tmp_path / "p-grid-0.png"
    assert len(result.images) == 1 + 4


def test_z_axis_makes_a_grid_per_value_and_one_of_all(engine):
    axes = (parse_axis("x", "seed: 1,2"), None, parse_axis("z", "cfg: 3, 5"))
    result = engine.submit(XyzJob(GenerationRequest(**{**BASE, "num_inference_steps": 1}),
                                  axes)).result(timeout=300)  # fmt: skip
    assert len(result.grids) == 3 and result.labels["z"] == ["CFG Scale: 3", "CFG Scale: 5"]
    assert result.grids[2].width == result.grids[0].width * 2 + 16


def test_cancel_stops_the_plot(engine):
    token = CancelToken()

    def on_event(event):
        if event.kind == "progress" and event.step == 3:
            token.cancel()

    job = engine.submit(XyzJob(GenerationRequest(**BASE), (parse_axis("x", "seed: 1,2,3"),)),
                        cancel=token, on_event=on_event)  # fmt: skip
    with pytest.raises(Cancelled):
        job.result(timeout=300)


def test_cells_of_a_model_reuse_it(engine):
    """Checkpoint axis: each model is loaded once (at most), not once per cell."""
    slot = engine.slots[0]
    before = slot.loads
    axes = (parse_axis("x", "seed: 1, 2, 3"), parse_axis("y", "model: tiny-sd, tiny-sdxl"))
    base = GenerationRequest(**{**BASE, "num_inference_steps": 1, "scheduler": None})
    result = engine.submit(XyzJob(base, axes)).result(timeout=300)
    assert len(result.cells) == 6 and slot.loads - before <= 2
    assert result.labels["y"] == ["Checkpoint name: tiny-sd", "Checkpoint name: tiny-sdxl"]
    assert [c.request.model for c in result.cells] == ["tiny-sd"] * 3 + ["tiny-sdxl"] * 3
