"""Load on the studio: the local backend (2 CPU slots) against the Ray backend (2 Serve
replicas), in the same run.

    python bench/load_bench.py                          # 1,000 requests, 20 clients
    python bench/load_bench.py --requests 200 --clients 20 --backends local,ray

Each of `--clients` gradio_client Clients sends its share of the requests one after
the other to the studio's `/generate` endpoint (tiny-sd, 64x64, 2 steps; request n
has prompt "load n" and seed n). Per backend: p50/p95 latency (submit to result),
throughput (results per second of wall time), and crossed or lost results: a result
whose seed, infotext or saved PNG names another request, or a request with no result.
Both must be 0. Torch runs 1 thread per slot/replica on both sides (OMP_NUM_THREADS=1),
so the two backends have the same compute; Ray adds its hops and a process per replica.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REQUEST = {"steps": 2, "width": 64, "height": 64, "model": "tiny-sd"}


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    crossed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _check(n: int, out: Any) -> bool:
    """True if the result is request n's own: seed, infotext and the PNG's infotext."""
    from pipelines.outputs import read_png_parameters

    paths, infotext, seed = out
    first = paths[0] if isinstance(paths, list) else paths
    path = first.get("image", first) if isinstance(first, dict) else first
    path = path.get("path", path) if isinstance(path, dict) else path
    png_text = read_png_parameters(path) or ""
    mine = f"load {n}\n"
    return int(seed) == n and infotext.startswith(mine) and png_text.startswith(mine)


def _client(url: str, numbers: list[int], tally: Tally) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    for n in numbers:
        t0 = time.perf_counter()
        try:
            out = client.predict(prompt=f"load {n}", seed=n, **REQUEST, api_name="/generate")
        except Exception as e:  # counted as lost, with the reason
            with tally.lock:
                tally.errors.append(f"{n}: {type(e).__name__}: {e}")
            continue
        dt = time.perf_counter() - t0
        ok = _check(n, out)
        with tally.lock:
            tally.latencies.append(dt)
            tally.done.add(n)
            if not ok:
                tally.crossed.append(n)


def run_load(url: str, requests: int, clients: int) -> dict[str, Any]:
    """The load from a separate process (`--drive`): 20 client threads in the studio's
    own process would take its GIL from the local engine, not from Ray's replicas."""
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--drive", url, "--requests", str(requests),
           "--clients", str(clients)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def drive(url: str, requests: int, clients: int) -> dict[str, Any]:
    tally = Tally()
    shares = [list(range(i, requests, clients)) for i in range(clients)]
    threads = [threading.Thread(target=_client, args=(url, s, tally)) for s in shares]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(tally.latencies)
    q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else [float("nan")] * 19
    return {
        "requests": requests,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p95": q[18],
        "throughput": len(tally.done) / wall,
        "wall": wall,
        "crossed": len(tally.crossed),
        "lost": requests - len(tally.done),
        "errors": tally.errors[:3],
    }


@contextmanager
def studio(manager: Any, outputs: Path) -> Iterator[str]:
    from tests.ui_support import free_port
    from ui.studio import build_studio

    demo, assets = build_studio(manager, outputs)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1",
                            server_port=free_port(), quiet=True, **assets)  # fmt: skip
    try:
        yield url
    finally:
        demo.close()


def local_manager(cache_root: Path) -> Any:
    from pipelines import EngineSettings, PipelineManager

    return PipelineManager(EngineSettings(devices=("cpu", "cpu"), cache_root=cache_root,
                                          models_dir=None, loras_dir=None))  # fmt: skip


@contextmanager
def ray_manager(cache_root: Path) -> Iterator[Any]:
    """An in-process cluster (2 CPUs), the Serve app with 2 replicas, a front end on it."""
    import ray
    from ray import serve

    from pipelines.remote import RayOptions, use_ray
    from pipelines.serve import APP_NAME, build_app

    repo = str(Path(__file__).resolve().parents[1])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": repo, "OMP_NUM_THREADS": "1"}})  # fmt: skip
    try:
        serve.start(proxy_location="Disabled")
        off = {k: "" for k in ("models_dir", "loras_dir", "controlnets_dir", "embeddings_dir",
                               "vae_dir", "annotators_dir")}  # fmt: skip
        settings = {**off, "cache_dir": str(cache_root), "devices": ["cpu"]}
        serve.run(build_app({"settings": settings, "num_replicas": 2, "num_cpus": 1,
                             "torch_threads": 1}), name=APP_NAME, route_prefix=None)  # fmt: skip
        manager = local_manager(cache_root)
        use_ray(manager, RayOptions(wait_s=300.0))
        yield manager
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--backends", default="local,ray")
    p.add_argument("--cache-root", type=Path, default=None, help="built-in models (default: temp)")
    p.add_argument("--drive", metavar="URL", help="(internal) be the load generator for URL")
    args = p.parse_args(argv)
    if args.drive:
        import json

        print(json.dumps(drive(args.drive, args.requests, args.clients)))
        return 0
    from pipelines.builtin import ensure_model

    cache_root = args.cache_root or Path(tempfile.mkdtemp(prefix="atelier-load-"))
    ensure_model("tiny-sd", cache_root)
    rows = []
    for backend in args.backends.split(","):
        outputs = Path(tempfile.mkdtemp(prefix=f"atelier-load-{backend}-"))
        if backend == "local":
            ctx: Any = _nullcontext(local_manager(cache_root))
        elif backend == "ray":
            ctx = ray_manager(cache_root)
        else:
            raise SystemExit(f"unknown backend {backend!r}: local or ray")
        with ctx as manager, studio(manager, outputs) as url:
            run_load(url, args.clients, args.clients)  # warm-up: models loaded, clients made
            rows.append((backend, run_load(url, args.requests, args.clients)))
    print(f"\n{args.requests} requests (tiny-sd 64x64, 2 steps), {args.clients} clients")
    print(f"{'backend':<8} {'p50 s':>7} {'p95 s':>7} {'req/s':>7} {'wall s':>7} "
          f"{'crossed':>8} {'lost':>5}")  # fmt: skip
    for backend, r in rows:
        print(f"{backend:<8} {r['p50']:>7.2f} {r['p95']:>7.2f} {r['throughput']:>7.2f} "
              f"{r['wall']:>7.1f} {r['crossed']:>8} {r['lost']:>5}")  # fmt: skip
        for err in r["errors"]:
            print(f"  e.g. {err}")
    if len(rows) == 2:
        print(f"ray/local throughput: {rows[1][1]['throughput'] / rows[0][1]['throughput']:.2f}")
    return 0 if all(r["crossed"] == 0 and r["lost"] == 0 for _, r in rows) else 1


@contextmanager
def _nullcontext(value: Any) -> Iterator[Any]:
    yield value


if __name__ == "__main__":
    sys.exit(main())
