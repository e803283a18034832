"""OpenVINO backend: compiles the package's ONNX (FP32 or INT8 QDQ) for CPU, GPU, NPU or AUTO.

The CPU plugin was measured 5x slower per call on a dynamic batch axis (3.9 ms vs 0.7 ms for the tiny
LLformer), so each batch size seen gets its own statically shaped compiled model, compiled on first use.
OpenVINO may run an FP32 model in bf16 on CPUs with native bf16 (its default INFERENCE_PRECISION_HINT);
`precision` pins it, and `describe()` reports what the compiled model really uses.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from lldif_edge.errors import BackendError
from lldif_edge.runtimes.base import Backend, reject_unknown_options

PRECISIONS = {"f32", "bf16", "f16"}
# OpenVINO 2026.4's CPU plugin gave wrong INT8 (QDQ) results above batch 32 for our LLformer (agreement with
# ONNX Runtime fell to 14 % at batch 256, 100 % up to 24): larger batches run in chunks of this size.
MAX_BATCH = 16


class OpenVinoBackend(Backend):
    name = "openvino"

    requires = "openvino"
    install_hint = " (pip install lldif-edge[openvino])"

    @classmethod
    def devices(cls) -> list[str]:
        import openvino as ov

        return list(ov.Core().available_devices)

    @classmethod
    def bench_variants(cls, name: str, precision: str) -> list[tuple[str, dict]]:
        """An FP32 package twice: pinned to f32, and in the CPU default (bf16 where the CPU has it), so the
        table says which precision really ran."""
        if precision != "fp32":
            return super().bench_variants(name, precision)
        return [(f"{name} fp32 (f32)", {"precision": "f32"}), (f"{name} fp32 (CPU default)", {})]

    def __init__(self, model_path: Path, device: str | None = None, threads: int | None = None,
                 precision: str | None = None, hint: str = "LATENCY", cache_dir: str | None = None,
                 profile: bool = False, **options):
        reject_unknown_options("openvino", options, ["precision", "hint", "cache_dir", "profile"])
        import openvino as ov

        core = ov.Core()
        device = (device or "CPU").upper()
        if device.split(".")[0] not in {d.split(".")[0] for d in core.available_devices} | {"AUTO", "MULTI"}:
            raise BackendError(f"openvino: device '{device}' is not present here "
                               f"(available: {', '.join(core.available_devices)})")
        if precision is not None and precision not in PRECISIONS:
            raise BackendError(f"openvino: precision must be one of {', '.join(sorted(PRECISIONS))}")
        config: dict[str, str] = {"PERFORMANCE_HINT": hint.upper()}
        if threads and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = str(threads)
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if cache_dir:
            config["CACHE_DIR"] = str(cache_dir)
        if profile:  # per-layer timings and the precision each layer really ran in, for `op_profile`
            config["PERF_COUNT"] = "YES"
        self._profile: dict[tuple[str, str], dict] | None = {} if profile else None
        self.core, self.device, self.config = core, device, config
        self.model = core.read_model(str(model_path))
        self.input_names = [p.get_any_name() for p in self.model.inputs]
        self.output_names = [p.get_any_name() for p in self.model.outputs]
        self._compiled: dict[int, object] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # infer requests are not thread-safe: one per thread and batch size
        self._compile(1)

    def _compile(self, batch: int):
        with self._lock:
            if batch not in self._compiled:
                model = self.model.clone()
                model.reshape({p.get_any_name(): [batch if i == 0 and d.is_dynamic else d.get_length()
                                                  for i, d in enumerate(p.get_partial_shape())]
                               for p in model.inputs})
                try:
                    self._compiled[batch] = self.core.compile_model(model, self.device, self.config)
                except Exception as e:
                    raise BackendError(f"openvino cannot compile {self.model.friendly_name} for {self.device}: "
                                       f"{str(e).splitlines()[0]}") from e
            return self._compiled[batch]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = max(v.shape[0] for v in feeds.values())
        if batch > MAX_BATCH:
            # Inputs with a batch of 1 (the sampler's start noise) are broadcast, not split.
            parts = [self._run({k: v[i:i + MAX_BATCH] if v.shape[0] == batch else v for k, v in feeds.items()})
                     for i in range(0, batch, MAX_BATCH)]
            return {k: np.concatenate([p[k] for p in parts]) for k in self.output_names}
        return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = max(v.shape[0] for v in feeds.values())
        requests = self._local.__dict__.setdefault("requests", {})
        if batch not in requests:
            requests[batch] = self._compile(batch).create_infer_request()
        result = requests[batch].infer(feeds)
        if self._profile is not None:
            with self._lock:
                for info in requests[batch].profiling_info:
                    if info.status == info.Status.EXECUTED:
                        row = self._profile.setdefault((info.node_type, info.exec_type), {"us": 0.0, "calls": 0})
                        row["us"] += info.real_time.total_seconds() * 1e6
                        row["calls"] += 1
        return {name: np.array(result[name]) for name in self.output_names}

    def op_profile(self) -> dict[tuple[str, str], dict]:
        """(layer type, kernel e.g. jit_avx2_I8) -> {"us", "calls"} since load (needs `profile=True`)."""
        if self._profile is None:
            raise BackendError("openvino: load the backend with profile=True to get an op profile")
        return dict(self._profile)

    def inference_precision(self) -> str:
        try:
            value = self._compile(1).get_property("INFERENCE_PRECISION_HINT")
            return value.to_string() if hasattr(value, "to_string") else str(value)
        except Exception:  # not every device reports it
            return "unknown"

    def describe(self) -> str:
        return f"openvino {self.device} {self.inference_precision()}"
