"""Device slots and their model caches: the core every kind of job runs on.

Knows nothing of images or video: a job asks for a model entry (anything the
registry resolves) on a free slot, gets the cached pipeline locked against
eviction, and gives the slot back when it is done.

Policy
- One DeviceSlot per device (default: every CUDA GPU, else one CPU slot). A slot
  runs one job at a time under its own lock, with its own model cache and an
  explicit torch.device; nothing is global or thread-local.
- Jobs wait in arrival order (FIFO): the first n waiting jobs may take the n free
  slots, each preferring a free slot that already holds its model, else the
  emptiest one. A waiter learns its place in the line whenever it changes.
- LoRAs are activated on the cached model for one job only and deactivated before
  the slot is released (`lora_scope`).

Threads: any number of job threads call `model_on_slot`. Lock order: `cond`
(slot choice, the waiting line) -> slot.lock -> slot.cache's lock. `cond` is
never held while a model loads or runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from .adapters import AdapterSet
from .cache import ModelCache, module_bytes
from .errors import Cancelled
from .hashes import folder_model_hash
from .loading import LoadOptions, load_pipeline
from .loras import LoraEntry
from .registry import ModelEntry


@dataclass
class LoadedModel:
    entry: ModelEntry
    pipeline: Any
    pristine_scheduler: dict[str, Any]  # as shipped; every scheduler is built from it
    model_hash: str
    adapters: AdapterSet


@dataclass(frozen=True)
class AdapterOptions:
    mode: str = "switch"
    count: int = 16
    bytes: int = 2048 * 2**20
    hotswap_rank: int = 64


class DeviceSlot:
    def __init__(
        self, name: str, device: torch.device, budget_bytes: int | None, span: list[str]
    ) -> None:
        self.name = name
        self.device = device  # where inputs go; a slot may span several GPUs (device_map)
        self.span = span
        self.cache = ModelCache(budget_bytes, device)
        self.lock = threading.Lock()
        self.busy = False  # guarded by the pool's condition
        self.loads = 0  # base models loaded from disk (tests count them)
        self.running: str | None = None  # what runs now (a job's description), for status

    def __repr__(self) -> str:
        return f"DeviceSlot({self.name}, models={self.cache.names()})"


class Waiter(Protocol):
    """What waits for a slot: a job. `cancelled` is polled; `placed` hears its position."""

    @property
    def cancelled(self) -> bool: ...

    def placed(self, position: int) -> None: ...


def gpu_count() -> int:
    """CUDA GPUs this process sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_devices() -> tuple[str, ...]:
    return tuple(f"cuda:{i}" for i in range(gpu_count())) or ("cpu",)


def default_budget(device: torch.device, n_slots_on_device: int) -> int:
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.9)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(ram * 0.5 / max(1, n_slots_on_device))


def check_engine_values(devices: tuple[str, ...], dtype: str) -> None:
    """Device slots and dtype that would otherwise fail later with a traceback (at the
    first job): RequestErrors naming the setting, for every front end (the pool checks
    them when it is built)."""
    from .errors import RequestError
    from .loading import DTYPES

    if dtype != "auto" and dtype not in DTYPES:
        raise RequestError("dtype", f"must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    gpus = gpu_count()
    have = f"this machine has {gpus} CUDA GPU(s)" if gpus else "this machine has no CUDA GPU"
    for slot in devices:
        for spec in slot.split("+"):
            try:
                device = torch.device(spec)
            except (RuntimeError, ValueError):
                rule = f"{spec!r} is not a device: use cpu, cuda or cuda:N ({have})"
                raise RequestError("devices", rule) from None
            if device.type == "cuda" and (device.index or 0) >= gpus:
                raise RequestError("devices", f"{spec!r} does not exist: {have}")
            if device.type == "mps" and not torch.backends.mps.is_available():
                raise RequestError("devices", f"{spec!r} is not available on this machine")
            if device.type not in ("cpu", "cuda", "mps"):
                raise RequestError("devices", f"{spec!r}: use cpu, cuda or cuda:N ({have})")


def model_key(entry: ModelEntry) -> str:
    return f"{entry.name}@{entry.path}"


class SlotPool:
    def __init__(
        self,
        devices: tuple[str, ...],
        budget_mb: int | None,
        load: LoadOptions,
        adapters: AdapterOptions,
        hash_of: Callable[[ModelEntry], str] | None = None,
    ) -> None:
        check_engine_values(devices, load.dtype)  # a bad --devices/--dtype: one clear line
        self.load_options = load
        self.adapter_options = adapters
        # A model's "Model hash" (the registry's: cached across runs, A1111's for files)
        self.hash_of = hash_of or (lambda entry: folder_model_hash(entry.path))
        self.slots: list[DeviceSlot] = []
        for i, spec in enumerate(devices or default_devices()):
            span = spec.split("+")  # "cuda:0+cuda:1": one slot over two GPUs (big models)
            device = torch.device(span[0])
            same = sum(1 for d in devices if torch.device(d.split("+")[0]).type == device.type)
            budget = budget_mb * 2**20 if budget_mb else default_budget(device, same)
            self.slots.append(DeviceSlot(f"{spec}#{i}", device, budget, span))
        self.cond = threading.Condition()
        self._line: list[Waiter] = []  # waiting for a slot, in arrival order

    # -- the waiting line ----------------------------------------------------
    def waiting(self) -> int:
        with self.cond:
            return len(self._line)

    def wake(self) -> None:
        """Make waiters look again (a job was cancelled while waiting)."""
        with self.cond:
            self.cond.notify_all()

    @contextmanager
    def slot_for(self, key: str, waiter: Waiter, label: str = "") -> Iterator[DeviceSlot]:
        """A free slot for the job `waiter`, FIFO, preferring the one that holds `key`."""
        with self.cond:
            self._line.append(waiter)
            self.cond.notify_all()  # observers (status, tests) see the line change
            last = -1
            try:
                while True:
                    if waiter.cancelled:
                        raise Cancelled("cancelled while waiting for a device")
                    position = self._line.index(waiter)
                    free = [s for s in self.slots if not s.busy]
                    if position < len(free):
                        slot = max(free, key=lambda s: (key in s.cache, -s.cache.total_bytes()))
                        slot.busy, slot.running = True, label
                        break
                    if position != last:
                        waiter.placed(position + 1)  # 1 = next in line
                        last = position
                    self.cond.wait(timeout=0.5)  # woken on release or cancel
            finally:
                self._line.remove(waiter)
                self.cond.notify_all()  # the others moved up one place
        try:
            with slot.lock:
                yield slot
        finally:
            with self.cond:
                slot.busy, slot.running = False, None
                self.cond.notify_all()

    # -- models on slots -----------------------------------------------------
    def load(self, slot: DeviceSlot, entry: ModelEntry) -> str:
        """The cache key of `entry` on `slot`, loading it if needed."""
        key = model_key(entry)
        if key in slot.cache:
            return key
        pipe, resident = self.place(slot, entry, key)
        slot.loads += 1
        a = self.adapter_options
        loaded = LoadedModel(
            entry=entry,
            pipeline=pipe,
            pristine_scheduler=dict(pipe.scheduler.config),
            model_hash=self.hash_of(entry),
            adapters=AdapterSet(pipe, a.mode, a.count, a.bytes, a.hotswap_rank),
        )
        slot.cache.put(key, loaded, resident)
        return key

    def place(self, slot: DeviceSlot, entry: ModelEntry, key: str) -> tuple[Any, int]:
        """Make room on `slot` and load `entry` there: (the pipeline, the bytes it holds
        on the device). placement.PlacingPool decides how a model is spread instead."""
        slot.cache.make_room(_disk_bytes(entry.path))
        pipe = load_pipeline(entry, slot.device, self.load_options, slot.span)
        return pipe, module_bytes(pipe)

    @contextmanager
    def model_on_slot(
        self,
        entry: ModelEntry,
        waiter: Waiter,
        timings: dict[str, float],
        on_slot: Callable[[DeviceSlot], None] | None = None,
    ) -> Iterator[tuple[DeviceSlot, LoadedModel]]:
        """A free slot holding `entry`, loaded and locked against eviction, for one run.
        `on_slot` hears the slot as soon as it is taken (before any loading)."""
        t0 = time.perf_counter()
        with self.slot_for(model_key(entry), waiter, entry.name) as slot:
            if on_slot is not None:
                on_slot(slot)
            t1 = time.perf_counter()
            key = self.load(slot, entry)
            t2 = time.perf_counter()
            timings.update(queue=t1 - t0, load=t2 - t1)
            with slot.cache.locked(key) as loaded:
                yield slot, loaded
            timings["run"] = time.perf_counter() - t2

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no slot runs a job; False if `timeout` seconds passed first."""
        with self.cond:
            return self.cond.wait_for(lambda: not any(s.busy for s in self.slots), timeout)


@contextmanager
def lora_scope(
    loaded: LoadedModel, loras: list[tuple[LoraEntry, float]], experts: str = "both"
) -> Iterator[None]:
    """A job's LoRAs on the shared modules; deactivated before the slot frees."""
    try:
        loaded.adapters.activate(loras, experts)
        yield
    except BaseException:
        loaded.adapters.clean()
        raise
    finally:
        loaded.adapters.deactivate()


def _disk_bytes(path: Path) -> int:
    """Bytes of a model's weights on disk: a single file, or a folder's safetensors."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*.safetensors"))
