"""What every part of the studio shares: the engine, where images go, who is
asking, and the one concurrency group of every event that runs on a device."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ui.runner import ImageStore

if TYPE_CHECKING:
    import gradio as gr

    from pipelines.manager import PipelineManager

# Every event that submits engine jobs uses this id, with no Gradio limit: each such
# event reaches the engine at once, where admission refuses it (queue_size,
# max_jobs_per_user, max_work) or it waits in the engine's line, which places and
# counts the jobs of every front end alike. (A Gradio limit would hold events in
# Gradio's own queue, where they are neither refused nor counted.)
GPU_GROUP = "atelier-gpu"
THREADS = 40  # Gradio's own default worker threads, for everything else
# CPU-heavy light events (preprocessor previews, /preprocess) share one small limit, so
# that they cannot eat the server's memory, without waiting behind generations.
PREPROCESS_GROUP = {"concurrency_id": "atelier-preprocess", "concurrency_limit": 2}
HISTORY_LIMIT = 200  # images kept in a session's history gallery


@dataclass
class StudioContext:
    manager: PipelineManager  # not imported at run time: no torch at import
    store: ImageStore
    trusted_proxies: frozenset[str] = frozenset()  # whose X-Forwarded-For is believed
    public: bool = False  # a public studio: each visitor sees only their own outputs

    @classmethod
    def create(
        cls,
        manager: PipelineManager,
        outputs_dir: str | Path | None,
        trusted_proxies: frozenset[str] = frozenset(),
        public: bool = False,
    ) -> StudioContext:
        folder = None if outputs_dir in (None, "", "off") else Path(str(outputs_dir)).expanduser()
        return cls(manager, ImageStore(folder), trusted_proxies, public)

    @property
    def slots(self) -> int:
        return len(self.manager.slots)

    @property
    def cpu_only(self) -> bool:
        """Every device slot is a CPU: the studio offers small, quick defaults."""
        slots = self.manager.slots
        return bool(slots) and all(s.device.type == "cpu" for s in slots)

    @property
    def default_model(self) -> str:
        return self.manager.settings.default_model

    def gpu_event(self) -> dict[str, Any]:
        """Keyword arguments of every event that runs the engine."""
        return {"concurrency_id": GPU_GROUP, "concurrency_limit": None}

    def max_threads(self) -> int:
        """Gradio's worker threads: a job's handler holds one while its job waits or
        runs, so there are enough for every slot busy and the engine's line full."""
        queue_size = self.manager.jobs.limits.queue_size or 64
        return THREADS + self.slots + queue_size

    def caller(self, request: gr.Request | None) -> str:
        """Who submits a job, for the engine's per-user limit: the logged-in user, else
        the client's address. (A Gradio session id is no identity: every new client
        gets a new one.) Behind a reverse proxy named in `trusted_proxies`, the address
        is the last one X-Forwarded-For names that is not itself a trusted proxy."""
        if request is None:
            return "local"
        if getattr(request, "username", None):
            return f"user:{request.username}"
        client = getattr(request, "client", None)
        peer = getattr(client, "host", None) or "unknown"
        forwarded = request.headers.get("x-forwarded-for", "")
        return "addr:" + client_address(peer, forwarded, self.trusted_proxies)

    def outputs_viewer(self, request: gr.Request | None) -> str | None:
        """Whose outputs the Outputs tab lists: None (every file in the folder) on a
        private studio without logins; else only the caller's own (a logged-in user,
        or on a public studio the caller's address)."""
        logged_in = request is not None and getattr(request, "username", None)
        return self.caller(request) if (logged_in or self.public) else None


def client_address(peer: str, forwarded_for: str, trusted: frozenset[str]) -> str:
    """The caller's address: `peer`, unless `peer` is a trusted proxy, then the nearest
    address in X-Forwarded-For (right to left) that is not a trusted proxy. A client can
    put anything in the header, so only what trusted proxies appended is believed."""
    if peer not in trusted:
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if hop not in trusted:
            return hop
    return peer
