"""Benchmark: the ``openai`` backend's concurrency against a loopback server with injected latency.

Every request takes ``latency`` seconds at the server, so ``requests`` requests at ``concurrency``
at a time cannot finish faster than ``ideal = requests * latency / concurrency``. The figure is
``wall / ideal`` (1.0 = no client overhead; the target is < 1.3).

The server runs in a child process by default (as a real server would: its threads do not share
the client's interpreter lock); ``--in-process`` runs it in a thread of this process instead.

    uv run python packages/core/bench/generation.py --requests 200 --concurrency 16 --latency 0.1

Writes ``results.json`` (key ``generation``, other keys kept) and a ``generation`` section of
``results.md`` in ``bench/results/<label>/`` (``--label``, default ``cpu``; ``--out`` names another folder).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from leanlm.core.bench_report import save_section
from leanlm.core.generation import GenerationRequest, SamplingParams, generate, get_backend
from leanlm.core.testing.fake_servers import FakeServer

HERE = Path(__file__).resolve().parent


def _serve(latency: float, conn: Any) -> None:
    with FakeServer(latency=latency) as server:
        conn.send(server.url)
        while conn.recv() == "cpu":  # anything else: stop
            conn.send(time.process_time())


class ChildServer:
    """A FakeServer in a child process; ``url`` once started, ``cpu()`` its CPU seconds so far."""

    def __init__(self, latency: float):
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(latency, child), daemon=True)

    def __enter__(self) -> str:
        self._proc.start()
        if not self._conn.poll(60):
            raise RuntimeError("the benchmark server did not start")
        return self._conn.recv()

    def cpu(self) -> float:
        self._conn.send("cpu")
        return self._conn.recv()

    def __exit__(self, *exc: object) -> None:
        self._conn.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()


def one_run(url: str, n: int, concurrency: int) -> dict[str, Any]:
    backend = get_backend("openai", base_url=url, api_key="bench", model="bench", concurrency=concurrency)
    requests = [GenerationRequest(id=str(i), prompt=f"request {i}") for i in range(n)]
    t0 = time.perf_counter()
    results = generate(requests, backend, SamplingParams(max_new_tokens=16), progress=False)
    wall = time.perf_counter() - t0
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return {"wall_s": wall, "requests_sent": backend.stats.requests, "retries": backend.stats.retries}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.1, help="seconds the server waits before each answer")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs after the first (cold) one")
    ap.add_argument("--in-process", action="store_true", help="server in a thread of this process")
    ap.add_argument("--label", default="cpu", help="results go to bench/results/<label>/")
    ap.add_argument("--out", type=Path, default=None, help="folder instead of bench/results/<label>/")
    args = ap.parse_args()
    args.out = args.out or HERE / "results" / args.label

    ideal = args.requests * args.latency / args.concurrency
    load_before = os.getloadavg()[0]
    child: ChildServer | None = None
    if args.in_process:
        server = FakeServer(latency=args.latency).start()
        url, stop = server.url, server.stop
    else:
        child = ChildServer(args.latency)
        url, stop = child.__enter__(), lambda: child.__exit__(None, None, None)
    try:
        runs = [one_run(url, args.requests, args.concurrency)]  # cold: first connections
        client0, server0 = time.process_time(), child.cpu() if child else 0.0
        runs += [one_run(url, args.requests, args.concurrency) for _ in range(args.repeats)]
        client_cpu = time.process_time() - client0  # with --in-process this includes the server's threads
        server_cpu = child.cpu() - server0 if child else float("nan")
    finally:
        stop()
    cold, warm = runs[0], runs[1:] or runs[:1]
    walls = [r["wall_s"] for r in warm]
    n_warm = args.requests * max(1, args.repeats)
    result = {
        "backend": "openai",
        "server": "in-process thread" if args.in_process else "child process",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "ideal_s": ideal,
        "cold_wall_s": round(cold["wall_s"], 4),
        "cold_ratio": round(cold["wall_s"] / ideal, 3),
        "median_wall_s": round(statistics.median(walls), 4),
        "ratio": round(statistics.median(walls) / ideal, 3),
        "worst_ratio": round(max(walls) / ideal, 3),
        "target_ratio": 1.3,
        "requests_per_s": round(args.requests / statistics.median(walls), 1),
        "retries": sum(r["retries"] for r in runs),
        "client_cpu_ms_per_request": round(client_cpu / n_warm * 1000, 3),
        "server_cpu_ms_per_request": round(server_cpu / n_warm * 1000, 3),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores (shared)",
    }
    print(json.dumps(result, indent=2))
    save(args.out, result)


def save(folder: Path, result: dict[str, Any]) -> None:
    """Merge into results.json (key ``generation``) and replace this bench's section of results.md."""
    r = result
    section = "\n".join(
        [
            "## generation: openai backend vs a loopback server with injected latency",
            "",
            f"{r['requests']} requests, concurrency {r['concurrency']}, {r['latency_s'] * 1000:g} ms per request "
            f"at the server ({r['server']}); ideal = {r['requests']} x {r['latency_s']:g} / {r['concurrency']} "
            f"= {r['ideal_s']:.3f} s. CPU: {r['cpu']}.",
            "",
            "| run | wall (s) | wall / ideal | target |",
            "|---|---|---|---|",
            f"| first (cold: client set-up, connections) | {r['cold_wall_s']:.3f} | {r['cold_ratio']:.3f} | < 1.3 |",
            f"| median of the next runs | {r['median_wall_s']:.3f} | {r['ratio']:.3f} | < 1.3 |",
            f"| worst of the next runs | - | {r['worst_ratio']:.3f} | < 1.3 |",
            "",
            f"Throughput {r['requests_per_s']} requests/s; retries {r['retries']}. CPU per request: client "
            f"{r['client_cpu_ms_per_request']} ms, server {r['server_cpu_ms_per_request']} ms. 1-minute load "
            f"average {r['load_average_before']} before, {r['load_average_after']} after.",
            "",
            "Where the rest goes: 200 / 16 = 12.5 rounds, and the half-full last round still takes a full "
            "latency (13 x 0.1 s = 1.04 x ideal); the remainder is client and server CPU per request. The "
            "loopback server sets TCP_NODELAY as real servers do: without it every answer waited about 40 ms "
            "for a delayed ACK (Nagle), which had this figure at 1.55.",
        ]
    )
    save_section(folder, "generation", result, section)


if __name__ == "__main__":
    main()
