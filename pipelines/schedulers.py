"""Schedulers as data: A1111 sampler names -> diffusers classes and overrides.

Policy (see ENGINE_NOTES "Per-request state"):
- A scheduler is stateful, so every request gets a fresh one.
- It is always built from the model's *pristine* scheduler config (the one the
  model shipped with), never from a scheduler that was swapped before: diffusers'
  `from_config` keeps keys of other classes as hidden config, so a detour through
  another sampler would leak settings such as Karras sigmas.
- Every knob that the name implies is set explicitly (Karras on *and* off), so a
  model that ships e.g. `use_karras_sigmas=True` still gets plain "DPM++ 2M".
- Flow-matching families (Flux, Wan) get the flow overrides explicitly; the shift
  is read from the pristine config whatever it is called there (`shift` for
  FlowMatchEuler, `flow_shift` for UniPC/DPM++/DEIS).
- Which family may use which entry is a table, not a try: a family never offers a
  scheduler it cannot run.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import diffusers

from .errors import RequestError
from .families import Family

EPS = ("sd15", "sdxl")
WAN = ("wan21", "wan21-i2v", "wan22", "wan22-i2v", "wan22-5b")
FLOW_ALL = ("flux", *WAN)

# The three noise-schedule switches that classes share; each entry sets all of them.
_SIGMAS_OFF = {
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
}
_KARRAS = {**_SIGMAS_OFF, "use_karras_sigmas": True}


@dataclass(frozen=True)
class SchedulerSpec:
    name: str  # our name, as users and the CLI write it ("DPM++ 2M Karras")
    class_name: str  # diffusers class
    families: tuple[str, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    sampler: str = ""  # A1111 "Sampler" (defaults to name)
    schedule_type: str | None = None  # A1111 "Schedule type" ("Karras") or None
    requires: str | None = None  # python package this class needs
    flow: bool = False  # add the flow-matching overrides with the model's shift

    @property
    def a1111_sampler(self) -> str:
        return self.sampler or self.name


def _dpm(algorithm: str, sigmas: Mapping[str, Any]) -> dict[str, Any]:
    return {"algorithm_type": algorithm, "solver_order": 2, **sigmas}


SCHEDULERS: tuple[SchedulerSpec, ...] = (
    # Noise-prediction families (SD 1.x/2.x, SDXL).
    SchedulerSpec("Euler", "EulerDiscreteScheduler", EPS, _SIGMAS_OFF),
    SchedulerSpec("Euler a", "EulerAncestralDiscreteScheduler", EPS),
    SchedulerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", EPS, _dpm("dpmsolver++", _SIGMAS_OFF)),
    SchedulerSpec("DPM++ 2M Karras", "DPMSolverMultistepScheduler", EPS,
                  _dpm("dpmsolver++", _KARRAS), "DPM++ 2M", "Karras"),
    SchedulerSpec("DPM++ 2M SDE", "DPMSolverMultistepScheduler", EPS,
                  _dpm("sde-dpmsolver++", _SIGMAS_OFF)),
    SchedulerSpec("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", EPS,
                  _dpm("sde-dpmsolver++", _KARRAS), "DPM++ 2M SDE", "Karras"),
    SchedulerSpec("DPM++ SDE Karras", "DPMSolverSDEScheduler", EPS, _KARRAS, "DPM++ SDE",
                  "Karras", requires="torchsde"),
    SchedulerSpec("DPM2", "KDPM2DiscreteScheduler", EPS, _SIGMAS_OFF),
    SchedulerSpec("DPM2 a", "KDPM2AncestralDiscreteScheduler", EPS, _SIGMAS_OFF),
    SchedulerSpec("Heun", "HeunDiscreteScheduler", EPS, _SIGMAS_OFF),
    SchedulerSpec("LMS", "LMSDiscreteScheduler", EPS, _SIGMAS_OFF),
    SchedulerSpec("LMS Karras", "LMSDiscreteScheduler", EPS, _KARRAS, "LMS", "Karras"),
    SchedulerSpec("DDIM", "DDIMScheduler", EPS),
    SchedulerSpec("DDPM", "DDPMScheduler", EPS),
    SchedulerSpec("PNDM", "PNDMScheduler", EPS, {"skip_prk_steps": True}),
    SchedulerSpec("UniPC", "UniPCMultistepScheduler", EPS,
                  {**_SIGMAS_OFF, "use_flow_sigmas": False}),
    SchedulerSpec("DEIS", "DEISMultistepScheduler", EPS, {**_SIGMAS_OFF, "use_flow_sigmas": False}),
    SchedulerSpec("LCM", "LCMScheduler", EPS),
    SchedulerSpec("TCD", "TCDScheduler", EPS),
    # Flow-matching families (Flux, Wan). Flux computes its own sigmas with
    # dynamic shifting and passes them to set_timesteps, which Heun rejects.
    SchedulerSpec("Flow Euler", "FlowMatchEulerDiscreteScheduler", FLOW_ALL, flow=True),
    SchedulerSpec("Flow Heun", "FlowMatchHeunDiscreteScheduler", WAN, flow=True),
    SchedulerSpec("UniPC", "UniPCMultistepScheduler", FLOW_ALL, _SIGMAS_OFF, flow=True),
    SchedulerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", FLOW_ALL,
                  _dpm("dpmsolver++", _SIGMAS_OFF), flow=True),
    SchedulerSpec("DEIS", "DEISMultistepScheduler", FLOW_ALL, _SIGMAS_OFF, flow=True),
)  # fmt: skip


def _missing_requirement(spec: SchedulerSpec) -> str | None:
    if spec.requires and importlib.util.find_spec(spec.requires) is None:
        return f"needs the '{spec.requires}' package (pip install {spec.requires})"
    return None


def specs_for(family: Family) -> list[SchedulerSpec]:
    """Every entry the family may run, available or not, in table order."""
    return [s for s in SCHEDULERS if family.name in s.families]


def available_schedulers(family: Family) -> list[str]:
    return [s.name for s in specs_for(family) if _missing_requirement(s) is None]


def unavailable_schedulers(family: Family) -> dict[str, str]:
    """Entries this family could run but this install cannot, with the reason."""
    out = {}
    for s in specs_for(family):
        reason = _missing_requirement(s)
        if reason:
            out[s.name] = reason
    return out


def get_spec(name: str, family: Family) -> SchedulerSpec:
    """The family's entry called `name`, or a RequestError listing the valid ones."""
    for s in specs_for(family):
        if s.name == name:
            reason = _missing_requirement(s)
            if reason:
                raise RequestError("scheduler", f"'{name}' is unavailable here: {reason}")
            return s
    valid = ", ".join(available_schedulers(family))
    rule = f"'{name}' is not a scheduler for {family.label} models; choose one of: {valid}"
    raise RequestError("scheduler", rule)


def flow_shift_of(pristine: Mapping[str, Any]) -> float:
    """The model's flow shift, whatever the shipped scheduler class calls it."""
    if pristine.get("_class_name") == "FlowMatchEulerDiscreteScheduler":
        return float(pristine.get("shift", 1.0))
    if pristine.get("use_flow_sigmas") or pristine.get("prediction_type") == "flow_prediction":
        return float(pristine.get("flow_shift", 1.0))
    return float(pristine.get("shift", pristine.get("flow_shift", 1.0)))


def build_scheduler(
    name: str,
    family: Family,
    pristine: Mapping[str, Any],
    seeds: Sequence[int] = (),
    flow_shift: float | None = None,
) -> Any:
    """A fresh scheduler for one request, from the model's pristine config.

    `seeds` are the per-image seeds of the call: DPM++ SDE draws its Brownian
    noise from them (it would pick a random seed otherwise, and the image would
    not reproduce).
    """
    spec = get_spec(name, family)
    cls = getattr(diffusers, spec.class_name)
    overrides = dict(spec.overrides)
    if spec.flow:
        shift = flow_shift if flow_shift is not None else flow_shift_of(pristine)
        if spec.class_name.startswith("FlowMatch"):
            overrides["shift"] = shift
        else:
            overrides.update(prediction_type="flow_prediction", use_flow_sigmas=True)
            overrides["flow_shift"] = shift
    # Keep only the keys this class takes: the rest (another class's knobs,
    # "_class_name") would become hidden config and a warning.
    accepted = inspect.signature(cls.__init__).parameters
    base = {k: v for k, v in pristine.items() if k in accepted}
    scheduler = cls.from_config({**base, **overrides})
    if spec.class_name == "DPMSolverSDEScheduler" and seeds:
        # A list (even of one) makes the noise per image, so image k of a batch
        # equals a single-image run with seed k.
        scheduler.noise_sampler_seed = list(seeds)
    return scheduler
