"""OpenVINO backend: compiles the package's ONNX (FP32 or INT8 QDQ) for CPU, GPU, NPU or AUTO.

OpenVINO may run an FP32 model in bf16 on CPUs with native bf16 (its default INFERENCE_PRECISION_HINT);
`precision` pins it, and `describe()` reports what the compiled model really uses.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from lldif_edge.errors import BackendError
from lldif_edge.runtimes.base import Backend

PRECISIONS = {"f32", "bf16", "f16"}


class OpenVinoBackend(Backend):
    name = "openvino"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return False, "package openvino is not installed (pip install lldif-edge[openvino])"
        return True, ""

    @classmethod
    def devices(cls) -> list[str]:
        import openvino as ov

        return list(ov.Core().available_devices)

    def __init__(self, model_path: Path, device: str | None = None, threads: int | None = None,
                 precision: str | None = None, hint: str = "LATENCY", cache_dir: str | None = None, **options):
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
        try:
            self.compiled = core.compile_model(core.read_model(str(model_path)), device, config)
        except Exception as e:
            raise BackendError(f"openvino cannot compile {model_path} for {device}: {str(e).splitlines()[0]}") from e
        self.device = device
        self._inputs = [p.get_any_name() for p in self.compiled.inputs]
        self._outputs = [p.get_any_name() for p in self.compiled.outputs]
        # Infer requests are not thread-safe: one per calling thread.
        self._local = threading.local()

    @property
    def input_names(self) -> list[str]:
        return self._inputs

    @property
    def output_names(self) -> list[str]:
        return self._outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer(feeds)
        return {name: np.array(result[self.compiled.output(name)]) for name in self._outputs}

    def inference_precision(self) -> str:
        try:
            value = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            return value.to_string() if hasattr(value, "to_string") else str(value)
        except Exception:  # not every device reports it
            return "unknown"

    def describe(self) -> str:
        return f"openvino {self.device} {self.inference_precision()}"
