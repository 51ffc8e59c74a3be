"""Deterministic builds of the built-in models: each component is made right after
seeding torch's global CPU RNG, and the caller's RNG state is restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global CPU RNG for one component, then restore the caller's state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
