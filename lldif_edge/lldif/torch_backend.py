"""The torch reference behind the runtime interface. It joins the registry through the
`lldif_edge.runtimes` entry-point group, like any third-party backend, so `runtimes/` never imports torch.

Each sub-graph file of a package maps to the same sub-module of the FP32 checkpoint the package was
exported from (an INT8 package still runs FP32 here: this is the reference).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from lldif_edge.errors import BackendError
from lldif_edge.package import Package
from lldif_edge.runtimes.base import Backend, reject_unknown_options


@functools.lru_cache(maxsize=4)
def _load(ckpt: str):
    from lldif_edge.lldif.checkpoint import load_checkpoint

    return load_checkpoint(ckpt)[0]


class TorchBackend(Backend):
    name = "torch"

    @classmethod
    def devices(cls) -> list[str]:
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    takes_package = True
    timed_as_reference = True  # bench times the checkpoint itself (lldif.reference.TorchReference)

    def __init__(self, model_path: Path, device: str | None = None, threads: int | None = None,
                 package: Package | None = None, graph: str | None = None, steps: int | None = None, **options):
        from lldif_edge.export.onnx_export import graph_specs

        reject_unknown_options("torch", options, ["steps"])
        model_path = Path(model_path)
        if package is None:  # loaded on its own, not by a Pipeline
            package = Package.read(model_path.parent, verify=False)
        self.device = torch.device(device or "cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError("torch: no CUDA GPU is visible here")
        if threads:
            torch.set_num_threads(threads)
        model = _load(str(package.checkpoint))  # cached and shared: never changed here
        k = steps or package.sample_steps
        graph = graph or model_path.stem
        specs = graph_specs(model, k)
        if graph == "fused":
            from lldif_edge.export.onnx_export import FusedGraph

            module, inputs, outputs = FusedGraph(model, k), ["image"], ["logits"]
        elif graph in specs:
            module, ins, outs = specs[graph]
            inputs, outputs = list(ins), list(outs)
        else:
            raise BackendError(f"torch: no sub-module for graph file {model_path.name}")
        self.module = module.to(self.device).eval()
        self.input_names, self.output_names = inputs, outputs

    @torch.inference_mode()
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])).to(self.device) for n in self.input_names]
        out = self.module(*args)
        return {self.output_names[0]: out.float().cpu().numpy()}

    def describe(self) -> str:
        return f"torch {torch.__version__} {self.device.type} FP32"
