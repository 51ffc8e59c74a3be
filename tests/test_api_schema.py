"""The API as a client sees it: `client.view_api()` types the whole-number parameters
`int`, requires `prompt`, labels every parameter so that it explains itself, and
describes each endpoint; a running job reports its steps through `job.status()`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.ui_support import first_progress, launched_studio

INTS = {
    "/generate": ("steps", "seed", "width", "height", "batch_size", "batch_count", "mask_blur",
                  "inpaint_padding"),
    "/video": ("frames", "fps", "width", "height", "steps", "seed"),
}  # fmt: skip


@pytest.fixture(scope="module")
def server(cache_root: Path) -> Iterator[Any]:
    with launched_studio(cache_root, "off", queue_size=8) as demo:
        yield demo


@pytest.fixture(scope="module")
def api(client: Client) -> dict[str, Any]:
    return client.view_api(return_format="dict", print_info=False)["named_endpoints"]


def params(api: dict[str, Any], endpoint: str) -> dict[str, dict[str, Any]]:
    return {p["parameter_name"]: p for p in api[endpoint]["parameters"]}


@pytest.mark.parametrize("endpoint", list(INTS))
def test_whole_numbers_are_int_and_prompt_is_required(api, endpoint):
    got = params(api, endpoint)
    for name in INTS[endpoint]:
        assert got[name]["python_type"]["type"] == "int", (name, got[name]["python_type"])
        assert got[name]["type"] == {"type": "integer"}
    assert got["cfg"]["python_type"]["type"] == "float"
    assert not got["prompt"]["parameter_has_default"], "prompt must be required"
    optional = [n for n, p in got.items() if n != "prompt" and not p["parameter_has_default"]]
    assert optional == [], f"only prompt is required, not {optional}"


@pytest.mark.parametrize("endpoint", [*INTS, "/preprocess"])
def test_labels_explain_themselves_and_each_endpoint_is_described(api, endpoint):
    for name, p in params(api, endpoint).items():
        label = p["label"]
        assert label.startswith(name) and len(label) > len(name) + 8, (name, label)
        assert "parameter_" not in label
    returns = [r["label"] for r in api[endpoint]["returns"]]
    assert all(r.isidentifier() or r == "control map" for r in returns), "printed as names"
    description = api[endpoint]["description"]
    assert len(description) > 80, description
    if endpoint in INTS:
        assert "prompt is required" in description and "progress" in description


def test_defaults_are_named_in_the_labels(api):
    got = params(api, "/generate")
    assert "blank = 0.75" in got["strength"]["label"], "the engine's own default"
    assert "megapixels" in got["init_image"]["label"]
    assert got["seed"]["parameter_default"] == -1 and got["batch_size"]["parameter_default"] == 1


def test_a_fractional_whole_number_is_refused_not_rounded(client):
    """int in the schema, but 2.5 steps is not silently 2: the engine names the field."""
    with pytest.raises(AppError, match=r"num_inference_steps: .*2\.5"):
        client.predict(prompt="x", model="tiny-sd", steps=2.5, width=64, height=64,
                       api_name="/generate")  # fmt: skip


@pytest.mark.parametrize(
    "endpoint, kwargs",
    [("/generate", {"model": "tiny-sd", "steps": 60, "width": 64, "height": 64,
                    "batch_count": 20}),
     ("/video", {"model": "tiny-wan", "frames": 17, "width": 64, "height": 64, "steps": 60})],
)  # fmt: skip
def test_a_running_job_reports_step_k_of_n(server, endpoint, kwargs):
    from gradio_client.utils import Status

    job = Client(server.test_url, verbose=False).submit(prompt="slow", seed=1, **kwargs,
                                                        api_name=endpoint)  # fmt: skip
    try:  # a model's first use reports its hashing in bytes first: wait for the steps
        found = first_progress(job, lambda unit: unit.unit == "steps")
    finally:
        job.cancel()
    assert found is not None, "no progress update in steps arrived"
    seen, unit = found
    assert seen.code == Status.PROGRESS
    assert unit.unit == "steps" and unit.length == 60 * kwargs.get("batch_count", 1)
    assert 1 <= unit.index <= unit.length and unit.desc.startswith(f"Step {unit.index}/")
    assert server.atelier_context.manager.wait_idle(60), "the cancelled job kept its slot"
