"""Latency and throughput measurement over runners (a package pipeline, or the torch reference).

Latency: batch 1, per face, after warm-up, p50/p90/p99 per stage and end to end.
Throughput: faces per second at a larger batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lldif_edge.hardware import CPU_FEATURES, cpu_features  # noqa: F401  (CPU_FEATURES: the old import path)
from lldif_edge.opkinds import op_kind


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    a = np.asarray(samples_ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def latency_samples(run: Callable[[dict], None], warmup: int, runs: int) -> dict[str, list[float]]:
    """`run(timings)` does one batch-1 inference and adds per-stage ms to `timings`; raw ms per run."""
    for _ in range(warmup):
        run({})
    samples: dict[str, list[float]] = {"end_to_end": []}
    for _ in range(runs):
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        run(timings)
        samples["end_to_end"].append((time.perf_counter() - t0) * 1e3)
        for k, v in timings.items():
            samples.setdefault(k, []).append(v)
    return samples


def measure_throughput(run_batch: Callable[[], None], batch: int, seconds: float = 2.0) -> float:
    run_batch()  # warm-up at this batch size
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run_batch()
        n += batch
    return n / (time.perf_counter() - t0)


def interleaved_latency(pipes: dict, x1: np.ndarray, runs: int, rounds: int,
                        warmup: int = 20) -> dict[str, dict[str, list[float]]]:
    """Raw batch-1 ms per pipeline and stage (and end to end). The timed runs are split into `rounds` that
    visit every pipeline in turn, so a slow phase of a shared machine hits all of them alike."""
    rounds = max(1, min(rounds, runs))
    pooled: dict[str, dict[str, list[float]]] = {k: {} for k in pipes}
    for r in range(rounds):
        n = runs // rounds + (1 if r < runs % rounds else 0)
        for key, pipe in pipes.items():
            got = latency_samples(lambda t, p=pipe: p.logits(x1, t), warmup if r == 0 else 0, n)
            for stage, v in got.items():
                pooled[key].setdefault(stage, []).extend(v)
    return pooled


def bench_pipelines(pipes: dict, faces: np.ndarray, batch: int, warmup: int = 20, runs: int = 200,
                    rounds: int = 5, seconds: float = 2.0) -> dict[str, dict]:
    """Latency (`interleaved_latency`) and throughput of several runners: runtimes.Pipelines, and anything with
    their `preprocess`, `logits(x, timings)` and `describe` (the torch reference, `lldif.reference`).
    Preprocessing is excluded (the first runner's, the same for every one)."""
    x1 = next(iter(pipes.values())).preprocess(faces[:1])
    xb = next(iter(pipes.values())).preprocess(np.resize(faces, (batch, *faces.shape[1:])))
    pooled = interleaved_latency(pipes, x1, runs, rounds, warmup)
    return {key: {"latency_ms": {k: percentiles(v) for k, v in pooled[key].items()},
                  "throughput_fps": measure_throughput(lambda p=pipe: p.logits(xb), batch, seconds),
                  "batch": batch, "describe": pipe.describe(), "rounds": rounds}
            for key, pipe in pipes.items()}


def profile_ops(pipe, faces: np.ndarray, runs: int = 200, warmup: int = 20) -> list[dict]:
    """Where batch-1 time goes: per sub-graph, op type and kernel (ORT provider / OpenVINO exec type).

    `pipe` must be loaded with `profile=True`; `ms_per_face` is the mean over warm-up and timed runs (the
    profilers cannot be reset in between). Rows are sorted by time.
    """
    x1 = pipe.preprocess(faces[:1])
    for _ in range(warmup + runs):
        pipe.logits(x1)
    rows = []
    for graph, stage in pipe.stages:
        if not hasattr(stage, "op_profile"):
            from lldif_edge.errors import BackendError

            raise BackendError(f"{stage.name} cannot profile ops (onnxruntime and openvino can)")
        for (op, kernel), r in stage.op_profile().items():
            n = warmup + runs
            rows.append({"graph": graph, "op": op, "kernel": kernel, "kind": op_kind(op, kernel),
                         "ms_per_face": r["us"] / 1000.0 / n, "calls_per_face": r["calls"] / n})
    total = sum(r["ms_per_face"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["ms_per_face"] / total
    return sorted(rows, key=lambda r: -r["ms_per_face"])


def runner_variants(backend: str, precision: str) -> list[tuple[str, str, dict | None]]:
    """(runner name, backend name, options) to benchmark a package of `precision`; options None means skipped,
    with the reason in place of the backend name.

    Runner names say what the user chose: backend and package precision ("onnxruntime int8"); each backend
    says which runners it wants (`Backend.bench_variants`). 'all' expands to every registered backend but the
    reference (`Backend.timed_as_reference`), which joins as its own runner.
    """
    from lldif_edge.runtimes.registry import backend_names, backend_status

    names = backend_names() if backend == "all" else [backend]
    out: list[tuple[str, str, dict | None]] = []
    for name in names:
        cls, why = backend_status(name)
        if cls is None:
            out.append((name, why, None))
        elif backend == "all" and cls.timed_as_reference:
            continue
        else:
            out += [(label, name, options) for label, options in cls.bench_variants(name, precision)]
    return out


def int8_fp32_ratios(runners: dict) -> dict[str, float]:
    """Per backend, INT8 p50 / FP32 p50 (end to end, batch 1) where both precisions ran."""
    p50 = {}
    for key, r in runners.items():
        words = key.split()
        if len(words) >= 2 and words[1] in ("fp32", "int8") and "(CPU default)" not in key:
            p50.setdefault(words[0], {}).setdefault(words[1], r["latency_ms"]["end_to_end"]["p50"])
    return {b: v["int8"] / v["fp32"] for b, v in p50.items() if {"int8", "fp32"} <= v.keys()}


def run_bench(packages: list, backend: str = "onnxruntime", device: str | None = None, threads: int = 1,
              batch: int = 32, runs: int = 200, rounds: int = 5, reference: bool | None = None, model=None,
              teacher_steps: int | None = None, profile: bool = False) -> dict:
    """`lldif-edge bench`: every runner of every package (None: the embedded default) on `backend` ('all':
    each available one), plus the torch reference when asked (None: when torch and the checkpoint are here),
    timed in turn (`bench_pipelines`); with `profile`, the op profiles of the ONNX Runtime and OpenVINO runners."""
    import importlib.util

    from lldif_edge.lowlight import darken_many
    from lldif_edge.package import checkpoint_path, load_manifest
    from lldif_edge.runtimes import load_pipeline
    from lldif_edge.synthetic import synthetic_faces

    results: dict = {"threads": threads, "cpu": cpu_features(), "runners": {}, "skipped": {}}
    first_manifest = None
    pipes: dict = {}
    roots: dict[str, str] = {}
    in_float: dict[str, list[str]] = {}
    for pkg in packages:
        root, manifest = load_manifest(pkg)
        first_manifest = first_manifest or manifest
        graphs = manifest["graphs"]
        precisions = {g["precision"] for g in graphs.values()}
        # An INT8 package may keep sub-graphs in float; it is still the INT8 package the user chose.
        precision = "int8" if "int8" in precisions else "+".join(sorted(precisions))
        faces = darken_many(synthetic_faces(64, manifest["input"]["size"], seed=1)[0], seed=1)
        for label, name, options in runner_variants(backend, precision):
            if options is None:
                results["skipped"][label] = name
                continue
            key = f"{label} ({root.name})" if label in pipes else label  # one precision twice: tell them apart
            pipes[key] = load_pipeline(root, backend=name, device=device, threads=threads, **options)
            roots[key] = str(root)
            in_float[key] = [g for g, v in graphs.items() if v["precision"] != "int8"] if precision == "int8" else []
            if profile and name in ("onnxruntime", "openvino"):
                # A separate load: profiling slows the runs it records, so it never touches the latencies above.
                profiled = load_pipeline(root, backend=name, device=device, threads=threads, profile=True, **options)
                results.setdefault("profiles", {})[key] = profile_ops(profiled, faces, runs=runs)
    ckpt = model or checkpoint_path(first_manifest)
    if reference is None:
        reference = importlib.util.find_spec("torch") is not None and Path(ckpt).with_suffix(".json").is_file()
    torch_key = None
    if reference:  # one more runner, timed in turn with the packages
        from lldif_edge.lldif.reference import TorchReference

        steps = teacher_steps or (first_manifest.get("sampler") or {}).get("teacher_steps")
        # The checkpoint with the undistilled S-step sampler: what the packages' K-step sampler was distilled from.
        torch_key = f"torch teacher ({steps}-step sampler)" if steps else "torch fp32"
        pipes[torch_key] = TorchReference(ckpt, steps, threads)
    results["runners"] = bench_pipelines(pipes, faces, batch, runs=runs, rounds=rounds)
    for key, r in results["runners"].items():
        if key in roots:
            r.update(package=roots[key], float_subgraphs=in_float[key])
    if torch_key:
        first = next(iter(results["runners"].values()))
        results["speedup_vs_torch_p50"] = (results["runners"][torch_key]["latency_ms"]["end_to_end"]["p50"]
                                           / first["latency_ms"]["end_to_end"]["p50"])
    results["int8_vs_fp32_p50"] = int8_fp32_ratios(results["runners"])
    return results


def write_bench_chart(results: dict, path) -> None:
    """Horizontal bars: p50 and p90 latency per runner, and throughput; OpenCV only, written atomically."""
    import os

    import cv2

    runners = results["runners"]
    names = list(runners)
    row, left, width = 34, 260, 360
    img = np.full((80 + row * len(names) * 2 + 40, left + 2 * width + 60, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    max_lat = max(r["latency_ms"]["end_to_end"]["p90"] for r in runners.values())
    max_fps = max(r["throughput_fps"] for r in runners.values())
    batch = next(iter(runners.values()))["batch"]
    title = (f"lldif-edge bench on {results['cpu']['model']}, {results['threads']} thread(s): latency at batch 1, "
             f"throughput at batch {batch}")
    cv2.putText(img, title[:110], (8, 22), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "latency per face, batch 1 (ms): p50 dark, p90 light", (left, 50), font, 0.45, (0, 0, 0), 1)
    cv2.putText(img, f"throughput at batch {batch} (faces/s)", (left + width + 40, 50), font, 0.45, (0, 0, 0), 1)
    for i, name in enumerate(names):
        r = runners[name]
        y = 70 + i * row * 2
        cv2.putText(img, name[:34], (8, y + 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        lat = r["latency_ms"]["end_to_end"]
        for j, (key, colour) in enumerate((("p90", (230, 190, 150)), ("p50", (160, 90, 30)))):
            w = int(width * lat[key] / max_lat)
            cv2.rectangle(img, (left, y + 4 + j * 4), (left + max(w, 1), y + 28 - j * 4), colour, -1)
        cv2.putText(img, f"{lat['p50']:.2f} / {lat['p90']:.2f}", (left + 4, y + 46), font, 0.4, (0, 0, 0), 1)
        w = int(width * r["throughput_fps"] / max_fps)
        x0 = left + width + 40
        cv2.rectangle(img, (x0, y + 4), (x0 + max(w, 1), y + 28), (60, 150, 60), -1)
        cv2.putText(img, f"{r['throughput_fps']:.0f}", (x0 + 4, y + 46), font, 0.4, (0, 0, 0), 1)
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    if not cv2.imwrite(str(tmp), img):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)
