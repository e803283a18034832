"""ONNX Runtime backend. Execution providers are tried in order, falling back to CPU with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lldif_edge.errors import BackendError
from lldif_edge.runtimes.base import Backend

log = logging.getLogger(__name__)

# device name -> providers to try, best first
DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    requires = "onnxruntime"

    @classmethod
    def devices(cls) -> list[str]:
        import onnxruntime as ort

        have = set(ort.get_available_providers())
        return [d for d, prov in DEVICE_PROVIDERS.items() if prov[0] in have]

    def __init__(self, model_path: Path, device: str | None = None, threads: int | None = None, **options):
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
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        for key, value in options.items():
            so.add_session_config_entry(key, str(value))
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=so, providers=providers)
        except Exception as e:  # ORT raises its own exception types
            raise BackendError(f"onnxruntime cannot load {model_path}: {str(e).splitlines()[0]}") from e
        self.provider = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs, strict=True))

    def describe(self) -> str:
        return f"onnxruntime {self.provider}"
