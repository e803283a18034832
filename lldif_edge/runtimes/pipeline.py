"""Composes the package's sub-graphs (cond -> denoiser -> llformer) on one backend. No torch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lldif_edge.data import to_model_pixels
from lldif_edge.errors import LldifError
from lldif_edge.hardware import cpu_features
from lldif_edge.metrics import calibrated_probabilities, softmax  # noqa: F401  (lldif_edge.runtimes.softmax)
from lldif_edge.package import ORT_AMX_VARIANT, Package
from lldif_edge.runtimes.registry import get_backend


class Pipeline:
    """A loaded model package. `predict` is thread-safe (backends' `run` are; no mutable state here)."""

    def __init__(self, package: str | Path | None = None, backend: str = "onnxruntime", device: str | None = None,
                 threads: int | None = None, fused: bool = False, variants: bool = True, **backend_options):
        """`variants`: run a graph's variant file where the manifest has one for this backend and machine
        (`graph_path`); False runs the main files everywhere."""
        self.package = pkg = Package.read(package)
        self.root = pkg.root
        self.classes: list[str] = list(pkg.classes)
        spec = pkg.input
        self.input_size: int = spec.size
        self.channels: int = spec.channels
        self.grayscale: bool = spec.color == "gray"
        self.scale = np.float32(spec.scale)
        self.mean = np.asarray(spec.mean or [0.0] * self.channels, np.float32).reshape(1, -1, 1, 1)
        self.std = np.asarray(spec.std or [1.0] * self.channels, np.float32).reshape(1, -1, 1, 1)
        # Logits -> probabilities is here, after every backend: each one gives the same calibrated confidence.
        self.temperature, self.label_smoothing = pkg.confidence_calibration()
        order = pkg.pipeline_fused if fused else pkg.pipeline
        if not order:
            raise LldifError(f"package {self.root} has no fused graph (export it with --fused)")
        backend_cls = get_backend(backend)
        self.backend_name = backend
        self.stages, self.files = [], {}
        for name in order:
            path = self.graph_path(name, backend, device) if variants else pkg.graph_path(name)
            self.files[name] = path.name
            # What a backend needs from the manifest it gets here (backends never read manifest.json).
            facts = {"package": pkg, "graph": name} if backend_cls.takes_package else {}
            self.stages.append((name, backend_cls(path, device=device, threads=threads, **facts, **backend_options)))
        # Constant inputs a graph may take besides the image: the sampler's fixed start noise, an input of the
        # denoiser in packages exported before it was folded into the graph.
        self.constants: dict[str, np.ndarray] = {}
        if pkg.sampler:
            self.constants["start_noise"] = np.asarray(pkg.sampler["start_noise"], np.float32).reshape(1, -1)

    @property
    def manifest(self) -> dict:
        """The manifest as a plain dict (the tools read its reports)."""
        return self.package.to_dict()

    def graph_path(self, name: str, backend: str, device: str | None) -> Path:
        """The file a backend runs for graph `name`: the INT8 export's AMX variant (conv weights re-encoded
        so ONNX Runtime takes its AMX GEMM path, `reencode_conv_weights`) on ONNX Runtime's CPU provider when
        this CPU has AMX-INT8, where it was measured faster; otherwise the main file, whose symmetric weights
        are what OpenVINO, TensorRT and ORT's VNNI/AVX2 convolution kernels want."""
        variant = self.package.graphs[name].variants.get(ORT_AMX_VARIANT)
        if (variant and backend == "onnxruntime" and (device or "cpu") == "cpu"
                and "amx_int8" in cpu_features()["features"]):
            return self.root / variant.file
        return self.package.graph_path(name)

    # --- preprocessing -------------------------------------------------------------------------
    def preprocess(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """uint8 face crops, each (H,W) grey or (H,W,3) RGB, any size -> float32 NCHW model input."""
        # A single array is one face when it is (H,W), (H,W,1) or (H,W,3); (N,H,W) and (N,H,W,C) are batches.
        if isinstance(faces, np.ndarray) and (faces.ndim == 2 or (faces.ndim == 3 and faces.shape[-1] in (1, 3))):
            faces = [faces]
        if len(faces) == 0:
            raise LldifError("predict() got an empty batch of faces")
        c = 1 if self.grayscale else 3
        pix = []
        for i, f in enumerate(faces):
            f = np.asarray(f)
            if f.dtype != np.uint8 or f.ndim not in (2, 3) or (f.ndim == 3 and f.shape[-1] not in (1, 3)):
                raise LldifError(f"face {i}: expected a uint8 (H,W) or (H,W,3) image, got {f.dtype} {f.shape}")
            if f.ndim == 3 and f.shape[-1] == 1:
                f = f[..., 0]
            pix.append(to_model_pixels(f, self.input_size, c))
        x = np.stack(pix).transpose(0, 3, 1, 2).astype(np.float32) * self.scale
        if c != self.channels:
            x = np.repeat(x, self.channels, axis=1)
        return (x - self.mean) / self.std

    # --- inference -----------------------------------------------------------------------------
    def check_input(self, x: np.ndarray) -> None:
        want = (self.channels, self.input_size, self.input_size)
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise LldifError(f"model input must be a float32 numpy array, got {getattr(x, 'dtype', type(x))}")
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise LldifError(f"model input must have shape (N, {want[0]}, {want[1]}, {want[2]}), got {x.shape}")
        if x.shape[0] == 0:
            raise LldifError("model input is an empty batch")

    def logits(self, x: np.ndarray, timings: dict[str, float] | None = None,
               feeds: dict[str, list[dict]] | None = None) -> np.ndarray:
        """Run the sub-graphs on a preprocessed batch; `timings` collects milliseconds per stage, `feeds` each
        stage's input dict (appended to feeds[stage]: what INT8 calibration measures each sub-graph on)."""
        self.check_input(x)
        tensors = {"image": x, **{k: v for k, v in self.constants.items()}}
        last = len(self.stages) - 1
        for i, (name, stage) in enumerate(self.stages):
            t0 = time.perf_counter()
            feed = {k: tensors[k] for k in stage.input_names}
            if feeds is not None:
                feeds.setdefault(name, []).append(feed)
            if stage.device_tensors:  # intermediate results stay on the device until the last stage
                tensors.update(stage.run(feed, keep_on_device=i < last))
            else:
                tensors.update(stage.run(feed))
            if timings is not None:
                timings[name] = timings.get(name, 0.0) + (time.perf_counter() - t0) * 1e3
        return tensors["logits"]

    def batched_logits(self, faces: np.ndarray, batch: int = 256) -> np.ndarray:
        """Logits for many uint8 faces (N,H,W[,C]), preprocessed and run `batch` at a time (bounded memory)."""
        return np.concatenate([self.logits(self.preprocess(faces[i:i + batch]))
                               for i in range(0, len(faces), batch)])

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities from this package's logits (the manifest's confidence calibration)."""
        return calibrated_probabilities(logits, self.temperature, self.label_smoothing)

    def predict(self, faces: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Calibrated class probabilities (N, len(classes)) for uint8 face crops."""
        return self.probabilities(self.logits(self.preprocess(faces)))

    def describe(self) -> str:
        main = {name: g.file for name, g in self.package.graphs.items()}
        return ", ".join(f"{name}: {stage.describe()}" + (f" ({self.files[name]})" if self.files[name] != main[name]
                                                           else "") for name, stage in self.stages)


def load_pipeline(package: str | Path | None = None, backend: str = "onnxruntime", device: str | None = None,
                  **options) -> Pipeline:
    return Pipeline(package, backend=backend, device=device, **options)
