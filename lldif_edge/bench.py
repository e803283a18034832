"""Latency and throughput measurement over runners (a package pipeline, or the torch reference).

Latency: batch 1, per face, after warm-up, p50/p90/p99 per stage and end to end.
Throughput: faces per second at a larger batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def measure_latency(run: Callable[[dict], None], warmup: int, runs: int) -> dict[str, dict[str, float]]:
    """`run(timings)` does one batch-1 inference and adds per-stage ms to `timings`."""
    for _ in range(warmup):
        run({})
    total, stages = [], {}
    for _ in range(runs):
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        run(timings)
        total.append((time.perf_counter() - t0) * 1e3)
        for k, v in timings.items():
            stages.setdefault(k, []).append(v)
    return {"end_to_end": percentiles(total), **{k: percentiles(v) for k, v in stages.items()}}


def measure_throughput(run_batch: Callable[[], None], batch: int, seconds: float = 2.0) -> float:
    run_batch()  # warm-up at this batch size
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run_batch()
        n += batch
    return n / (time.perf_counter() - t0)


def bench_pipeline(pipe, faces: np.ndarray, batch: int, warmup: int = 20, runs: int = 200,
                   seconds: float = 2.0) -> dict:
    """`pipe` is a runtimes.Pipeline; preprocessing is excluded (the same for every backend)."""
    x1 = pipe.preprocess(faces[:1])
    xb = pipe.preprocess(np.resize(faces, (batch, *faces.shape[1:])))
    latency = measure_latency(lambda t: pipe.logits(x1, t), warmup, runs)
    throughput = measure_throughput(lambda: pipe.logits(xb), batch, seconds)
    return {"latency_ms": latency, "throughput_fps": throughput, "batch": batch, "describe": pipe.describe()}
