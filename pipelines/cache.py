"""A per-device-slot LRU of loaded models, bounded by bytes.

Policy
- Entries are (key, value, nbytes, locks, last_used). `locks` counts the
  requests using the entry right now; a locked entry is never evicted.
- Eviction order is one sort key: least recently used first, among unlocked
  entries. Room is made *before* a load (from an estimate) and checked again
  after it (with the real size), so the peak stays near the budget.
- If everything left is locked the cache goes over budget and says so in the
  log rather than failing a request that is already running.
- Evicting drops the cache's reference, runs the garbage collector and, on
  CUDA, empties the allocator cache, so the memory is really returned.

Threads: each DeviceSlot runs one request at a time and is the only writer of
its cache; the internal lock only makes reads from other threads (listing,
slot choice) safe. Lock order: manager condition -> slot lock -> cache lock.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class CacheEntry:
    key: str
    value: Any
    nbytes: int
    locks: int = 0
    last_used: float = field(default_factory=time.monotonic)


def module_bytes(pipeline: Any) -> int:
    """Bytes of all parameters and buffers of a pipeline's torch modules (shared ones once),
    or of a single module (a ControlNet)."""
    seen: set[int] = set()
    total = 0
    parts = [pipeline] if isinstance(pipeline, torch.nn.Module) else []
    for component in parts or getattr(pipeline, "components", {}).values():
        if not isinstance(component, torch.nn.Module):
            continue
        for t in list(component.parameters()) + list(component.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


class ModelCache:
    def __init__(self, budget_bytes: int | None, device: torch.device) -> None:
        self.budget_bytes = budget_bytes  # None = unbounded
        self.device = device
        self._entries: dict[str, CacheEntry] = {}
        self._lock = threading.Lock()

    # -- reading ------------------------------------------------------------
    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def get(self, key: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry.last_used = time.monotonic()
            return entry.value

    # -- writing ------------------------------------------------------------
    def put(self, key: str, value: Any, nbytes: int) -> None:
        with self._lock:
            self._entries[key] = CacheEntry(key, value, nbytes)
        self.make_room(0)

    @contextmanager
    def locked(self, key: str) -> Iterator[Any]:
        """Use an entry: it cannot be evicted until the block ends."""
        with self._lock:
            entry = self._entries[key]
            entry.locks += 1
            entry.last_used = time.monotonic()
        try:
            yield entry.value
        finally:
            with self._lock:
                entry.locks -= 1

    def make_room(self, incoming_bytes: int) -> list[str]:
        """Evict unlocked LRU entries until `incoming_bytes` more would fit the budget."""
        if self.budget_bytes is None:
            return []
        evicted: list[CacheEntry] = []
        with self._lock:
            used = sum(e.nbytes for e in self._entries.values())
            for entry in sorted(self._entries.values(), key=lambda e: e.last_used):
                if used + incoming_bytes <= self.budget_bytes:
                    break
                if entry.locks:
                    continue
                del self._entries[entry.key]
                used -= entry.nbytes
                evicted.append(entry)
            if used + incoming_bytes > self.budget_bytes:
                log.warning(
                    "cache on %s over budget: %.1f MB used + %.1f MB incoming > %.1f MB "
                    "(the rest is in use)",
                    self.device, used / 1e6, incoming_bytes / 1e6, self.budget_bytes / 1e6,
                )  # fmt: skip
        names = [e.key for e in evicted]
        if evicted:
            log.info("evicted %s from %s", names, self.device)
            self._free(evicted)
        return names

    def evict(self, key: str) -> bool:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.locks:
                return False
            del self._entries[key]
        self._free([entry])
        return True

    def _free(self, entries: list[CacheEntry]) -> None:
        for entry in entries:
            entry.value = None
        entries.clear()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
