"""ONNX Runtime backend. Execution providers are tried in order, falling back to CPU with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lldif_edge.errors import BackendError
from lldif_edge.runtimes.base import Backend, reject_unknown_options

log = logging.getLogger(__name__)

# device name -> providers to try, best first
DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
# Prefixes of ONNX Runtime's session config keys ("session.intra_op.allow_spinning"): options that start with
# one are passed to the session as config entries; any other unknown option is an error.
SESSION_CONFIG_PREFIXES = ("session.", "optimization.", "mlas.", "ep.")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    requires = "onnxruntime"

    @classmethod
    def devices(cls) -> list[str]:
        import onnxruntime as ort

        have = set(ort.get_available_providers())
        return [d for d, prov in DEVICE_PROVIDERS.items() if prov[0] in have]

    def __init__(self, model_path: Path, device: str | None = None, threads: int | None = None,
                 io_binding: bool | None = None, profile: bool = False, optimization: str = "all", **options):
        """`io_binding`: run through ORT IO binding, outputs allocated on the execution device, so the pipeline
        hands one sub-graph's output to the next without a host round trip (default: on for CUDA/TensorRT).
        `optimization`: ORT's graph optimisation level, "all" (fused int8 kernels: what runs) or "none" (the
        reference Q/DQ arithmetic INT8 calibration measures a TensorRT package with)."""
        import onnxruntime as ort

        device = device or "cpu"
        if device not in DEVICE_PROVIDERS:
            raise BackendError(f"onnxruntime: unknown device '{device}' (choose from {', '.join(DEVICE_PROVIDERS)})")
        wanted = DEVICE_PROVIDERS[device]
        have = set(ort.get_available_providers())
        providers = [p for p in wanted if p in have]
        if providers[0] != wanted[0]:
            log.warning("onnxruntime: %s is not available here, running %s on %s", wanted[0], Path(model_path).name,
                        providers[0])
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        if optimization not in levels:
            raise BackendError(f"onnxruntime: optimization must be one of {', '.join(levels)}, got '{optimization}'")
        so.graph_optimization_level = levels[optimization]
        if profile:  # per-node timings for `op_profile` (bench --profile)
            import tempfile

            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="lldif-edge-ort-")) / "profile")
        config = {k: v for k, v in options.items() if k.startswith(SESSION_CONFIG_PREFIXES)}
        reject_unknown_options("onnxruntime", {k: v for k, v in options.items() if k not in config},
                               ["io_binding", "profile", "optimization"], ", or a session config key starting with "
                               + " ".join(SESSION_CONFIG_PREFIXES))
        for key, value in config.items():
            so.add_session_config_entry(key, str(value))
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=so, providers=providers)
        except Exception as e:  # ORT raises its own exception types
            raise BackendError(f"onnxruntime cannot load {model_path}: {str(e).splitlines()[0]}") from e
        self.provider = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # TensorRT EP runs on the CUDA device too: its outputs live where CUDA EP's do.
        self.output_device = "cpu" if self.provider == "CPUExecutionProvider" else "cuda"
        self.device_tensors = self.output_device != "cpu" if io_binding is None else bool(io_binding)
        self._ortvalue = ort.OrtValue  # kept: run() is on the per-frame path

    def run(self, feeds: dict, keep_on_device: bool = False) -> dict:
        """numpy in, numpy out; with IO binding, inputs may also be OrtValues from an earlier stage, and
        `keep_on_device` returns OrtValues that stay on the execution device."""
        if not self.device_tensors:
            outs = self.session.run(self.output_names, feeds)
            return dict(zip(self.output_names, outs, strict=True))
        binding = self.session.io_binding()  # one per call: thread-safe
        for name in self.input_names:
            value = feeds[name]
            if isinstance(value, self._ortvalue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self.output_names:
            binding.bind_output(name, self.output_device)
        self.session.run_with_iobinding(binding)
        outs = binding.get_outputs()
        if not keep_on_device:
            outs = [o.numpy() for o in outs]
        return dict(zip(self.output_names, outs, strict=True))

    def op_profile(self) -> dict[tuple[str, str], dict]:
        """(op type, provider) -> {"us": total microseconds, "calls": n} since load (needs `profile=True`)."""
        import json
        import shutil

        path = Path(self.session.end_profiling())
        if not path.is_file():
            raise BackendError("onnxruntime: load the backend with profile=True to get an op profile")
        rows: dict[tuple[str, str], dict] = {}
        for ev in json.loads(path.read_text()):
            args = ev.get("args") or {}
            if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
                continue
            row = rows.setdefault((args.get("op_name", "?"), args.get("provider", "?")), {"us": 0.0, "calls": 0})
            row["us"] += float(ev.get("dur", 0))
            row["calls"] += 1
        shutil.rmtree(path.parent, ignore_errors=True)
        return rows

    def describe(self) -> str:
        return f"onnxruntime {self.provider}" + (" (IO binding)" if self.device_tensors else "")
