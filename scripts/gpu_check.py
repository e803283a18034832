"""Everything that needs an NVIDIA GPU, in one run and one JSON report (run it through scripts/gpu_check.sh).

Items: `lldif-edge info`; the torch backend on CUDA; ONNX Runtime's CUDA and TensorRT execution providers;
the `tensorrt` backend building FP32 engines and, from an INT8 package exported for the tensorrt target
(symmetric Q/DQ), INT8 engines, each loaded a second time in a fresh process to show the engine cache is
reused; `bench --backend all`; and each GPU runner's top-1 agreement with ONNX Runtime on the CPU, on a few
hundred darkened faces. Each item runs in its own process with its own time limit, so a crash or a hang is
reported and the next item still runs; what is missing here is reported "not available" with the reason.
The whole run stays under `--budget` seconds (default 540): items that would start too late are "skipped".
Exit status 0 whenever the report was written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FP32 = REPO / "lldif_edge" / "weights" / "default_fp32"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "fer2013" / "val"
NOT_AVAILABLE = "not available"


class NotAvailable(Exception):
    """This item cannot run on this machine; the message says why."""


# ------------------------------------------------------------------------------------------- the items
def _faces(work: Path, data: Path | None, n: int):
    """n darkened uint8 faces: a seeded sample of `data` (class folders), else synthetic ones; cached."""
    import numpy as np

    cache = work / "faces.npz"
    if cache.is_file():
        return np.load(cache)["images"]
    from lldif_edge.lowlight import darken_many

    m = json.loads((FP32 / "manifest.json").read_text())
    size, channels = int(m["input"]["size"]), int(m["input"]["channels"])
    if data is not None and data.is_dir():
        from lldif_edge.data import read_image, scan_folder

        items = scan_folder(data, list(m["classes"]))
        pick = np.random.default_rng(0).permutation(len(items))[:n]
        images = np.stack([img for i in pick if (img := read_image(items[i][0], size, channels)) is not None])
    else:
        from lldif_edge.synthetic import synthetic_faces

        images = synthetic_faces(n, size, seed=0)[0]
    images = darken_many(images, seed=0)
    np.savez(cache, images=images)
    return images


def _runner(work: Path, args, package: Path, backend: str, device: str | None, key: str) -> dict:
    """Load a pipeline, run the faces, save the logits for the agreement item."""
    import numpy as np

    from lldif_edge.runtimes import load_pipeline

    images = _faces(work, args.data, args.faces)
    t0 = time.perf_counter()
    pipe = load_pipeline(package, backend=backend, device=device)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits = pipe.batched_logits(images, batch=32)
    np.save(work / f"logits-{key}.npy", logits)
    return {"backend": pipe.describe(), "load_s": round(load_s, 2), "faces": len(images),
            "run_s": round(time.perf_counter() - t0, 2)}


def item_torch_cuda(work, args):
    try:
        import torch
    except ImportError as e:
        raise NotAvailable("torch is not installed (pip install lldif-edge[train])") from e
    if not torch.cuda.is_available():
        raise NotAvailable("torch sees no CUDA GPU (torch.cuda.is_available() is False)")
    return _runner(work, args, FP32, "torch", "cuda", "torch_cuda")


def _ort_provider(work, args, device: str, provider: str):
    import onnxruntime as ort

    have = ort.get_available_providers()
    if provider not in have:
        raise NotAvailable(f"onnxruntime {ort.__version__} has no {provider} (it has {', '.join(have)})")
    out = _runner(work, args, FP32, "onnxruntime", device, f"ort_{device}")
    if provider not in out["backend"]:
        raise RuntimeError(f"{provider} is listed but a sub-graph fell back: {out['backend']}")
    return out


def item_ort_cuda(work, args):
    return _ort_provider(work, args, "cuda", "CUDAExecutionProvider")


def item_ort_tensorrt(work, args):
    return _ort_provider(work, args, "tensorrt", "TensorrtExecutionProvider")


def _trt_available():
    from lldif_edge.runtimes.tensorrt_backend import TensorRTBackend

    ok, why = TensorRTBackend.availability()
    if not ok:
        raise NotAvailable(why)


def _trt(work, args, package: Path, key: str, cached: bool):
    _trt_available()
    if not package.is_dir():
        raise NotAvailable(f"no package {package} (its export item did not succeed)")
    os.environ["LLDIF_EDGE_CACHE"] = str(work / "cache")
    out = _runner(work, args, package, "tensorrt", None, key)
    sources = [part for part in out["backend"].split(", ") if part.startswith("engine ")]
    if not sources:
        raise RuntimeError(f"no engine in the pipeline's description: {out['backend']}")
    if cached and not all("engine cached" in s for s in sources):
        raise RuntimeError(f"the second load rebuilt an engine: {out['backend']}")
    if not cached and not all("engine built" in s for s in sources):
        raise RuntimeError(f"the first load found an engine in a fresh cache: {out['backend']}")
    return out


def item_tensorrt_fp32(work, args):
    return _trt(work, args, FP32, "tensorrt_fp32", cached=False)


def item_tensorrt_fp32_cached(work, args):
    return _trt(work, args, FP32, "tensorrt_fp32_cached", cached=True)


def item_int8_export(work, args):
    """An INT8 package for TensorRT: symmetric int8 Q/DQ (the shipped INT8 package targets the CPU)."""
    _trt_available()
    try:
        import torch  # noqa: F401 - export needs the [train] extra
    except ImportError as e:
        raise NotAvailable("exporting needs torch (pip install lldif-edge[train])") from e
    cmd = ["export", "--int8", "--int8-target", "tensorrt", "--out", str(work / "int8_trt"), "--force"]
    if args.data is not None and args.data.is_dir():
        cmd += ["--calib", str(args.data), "--calib-count", "256"]
    out = _cli(cmd, timeout=args.step_timeout)
    return {"command": "lldif-edge " + " ".join(cmd), "tail": out[-400:]}


def item_tensorrt_int8(work, args):
    return _trt(work, args, work / "int8_trt", "tensorrt_int8", cached=False)


def item_tensorrt_int8_cached(work, args):
    return _trt(work, args, work / "int8_trt", "tensorrt_int8_cached", cached=True)


def item_ort_cpu_int8(work, args):
    if not (work / "int8_trt").is_dir():
        raise NotAvailable("no INT8 tensorrt-target package (its export item did not succeed)")
    return _runner(work, args, work / "int8_trt", "onnxruntime", "cpu", "ort_cpu_int8")


def item_ort_cpu(work, args):
    return _runner(work, args, FP32, "onnxruntime", "cpu", "ort_cpu")


def _cli(argv: list[str], timeout: float, cache: Path | None = None) -> str:
    """Run `lldif-edge ARGV`; `cache`: the engine cache to use (the items' own, so bench reuses their engines)."""
    env = {**os.environ, "LLDIF_EDGE_CACHE": str(cache)} if cache is not None else None
    proc = subprocess.run([sys.executable, "-m", "lldif_edge.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
        raise RuntimeError(f"lldif-edge {argv[0]} exited {proc.returncode}: {last}")
    return proc.stdout


ITEMS = {name[len("item_"):]: fn for name, fn in globals().items() if name.startswith("item_")}


# -------------------------------------------------------------------------------------------- the driver
def run_item(name: str, work: Path, args, timeout: float) -> dict:
    """One item in its own process: a crash or hang of one runtime cannot take the report with it."""
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--item", name, "--work", str(work), "--faces", str(args.faces),
           "--step-timeout", str(max(timeout - 10, 1))]  # the item's own subprocesses end before it is killed
    if args.data is not None:
        cmd += ["--data", str(args.data)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "why": f"timed out after {timeout:.0f} s", "seconds": round(timeout, 1)}
    seconds = round(time.perf_counter() - t0, 1)
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (proc.stderr.strip() or "no output").splitlines()[-1]
        result = {"status": "failed", "why": f"exit {proc.returncode}: {tail}"}
    result["seconds"] = seconds
    return result


def item_process(name: str, work: Path, args) -> None:
    """Inside the item's process: run it, print one JSON line."""
    try:
        detail = ITEMS[name](work, args)
        result = {"status": "ok", **(detail or {})}
    except NotAvailable as e:
        result = {"status": NOT_AVAILABLE, "why": str(e)}
    except Exception as e:  # reported, never raised: the report must be written
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        result = {"status": "failed", "why": f"{type(e).__name__}: {first}"}
    print(json.dumps(result))


def agreement(work: Path) -> dict:
    """Top-1 agreement and largest logit difference of each GPU runner against ONNX Runtime on the CPU."""
    import numpy as np

    pairs = {"torch_cuda": "ort_cpu", "ort_cuda": "ort_cpu", "ort_tensorrt": "ort_cpu",
             "tensorrt_fp32": "ort_cpu", "tensorrt_int8": "ort_cpu_int8"}
    out = {}
    for runner, base in pairs.items():
        a, b = work / f"logits-{runner}.npy", work / f"logits-{base}.npy"
        if a.is_file() and b.is_file():
            x, y = np.load(a), np.load(b)
            same = float((x.argmax(1) == y.argmax(1)).mean())
            out[runner] = {"against": base, "faces": len(x), "top1_agreement": round(same, 4),
                           "max_abs_logit_diff": round(float(np.abs(x - y).max()), 4)}
    if not out:
        return {"status": NOT_AVAILABLE, "why": "no GPU runner produced logits"}
    return {"status": "ok", "runners": out}


def gpu_name() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        proc = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "build" / "gpu_check", help="report folder")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                    help="class-folder tree of faces for the agreement (default: ../shared fer2013 val)")
    ap.add_argument("--faces", type=int, default=300, help="faces for the agreement")
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole run")
    ap.add_argument("--step-timeout", type=float, default=240, help="seconds for one item")
    ap.add_argument("--item", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.item:
        item_process(args.item, args.work, args)
        return 0

    t_start = time.perf_counter()
    deadline = t_start + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)  # a fresh engine cache: the first TensorRT load must build
    work.mkdir()
    report = {"report": "lldif-edge gpu_check", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "host": {"python": platform.python_version(), "machine": platform.machine(),
                       "cpu_threads": os.cpu_count()},
              "gpu": gpu_name() or NOT_AVAILABLE, "items": {}}
    items = report["items"]
    try:
        info = json.loads(_cli(["info", "--json"], timeout=120))
        items["info"] = {"status": "ok", "backends": {r["backend"]: r["devices"] if r["available"] else
                                                      f"{NOT_AVAILABLE}: {r['why_not']}" for r in info["backends"]}}
    except Exception as e:
        items["info"] = {"status": "failed", "why": str(e)}

    order = ["torch_cuda", "ort_cuda", "ort_tensorrt", "tensorrt_fp32", "tensorrt_fp32_cached", "int8_export",
             "tensorrt_int8", "tensorrt_int8_cached"]
    for name in order:
        left = deadline - time.perf_counter()
        if left < 20:
            items[name] = {"status": "skipped", "why": f"the {args.budget:.0f} s budget is spent"}
            continue
        items[name] = run_item(name, work, args, timeout=min(args.step_timeout, left))
        print(f"{name}: {items[name]['status']} ({items[name]['seconds']} s)", file=sys.stderr, flush=True)

    gpu_ran = [n for n in order if items[n]["status"] == "ok"]
    if gpu_ran:  # the CPU baselines only when there is something to compare with them
        for name in ("ort_cpu", "ort_cpu_int8"):
            left = deadline - time.perf_counter()
            items[name] = (run_item(name, work, args, timeout=min(args.step_timeout, left)) if left > 20 else
                           {"status": "skipped", "why": "budget spent"})
        left = deadline - time.perf_counter()
        packages = ["--package", str(FP32)] + (["--package", str(work / "int8_trt")]
                                               if (work / "int8_trt").is_dir() else [])
        t0 = time.perf_counter()
        try:
            if left < 40:
                raise TimeoutError("budget spent")
            out = _cli(["bench", "--backend", "all", *packages, "--runs", "50", "--rounds", "2", "--json"],
                       timeout=left - 20, cache=work / "cache")
            items["bench_all"] = {"status": "ok", "results": json.loads(out.strip().splitlines()[-1])}
        except Exception as e:
            items["bench_all"] = {"status": "failed", "why": f"{type(e).__name__}: {e}"}
        items["bench_all"]["seconds"] = round(time.perf_counter() - t0, 1)
        items["agreement"] = agreement(work)
    else:
        why = "no GPU runner is available here (see the items above)"
        items["bench_all"] = {"status": NOT_AVAILABLE, "why": why}
        items["agreement"] = {"status": NOT_AVAILABLE, "why": why}

    report["seconds"] = round(time.perf_counter() - t_start, 1)
    path = args.out / "report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)
    print(json.dumps(report, indent=1))
    print(f"report: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
