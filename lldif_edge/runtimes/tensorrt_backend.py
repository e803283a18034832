"""TensorRT backend: an engine built from the package's ONNX, cached per GPU, TensorRT version and ONNX file.
This module is the runner (device, buffers, execution); `tensorrt_engine` builds and caches the engines.

Written against the TensorRT 10 Python API (name-based I/O tensors, `set_input_shape`, `set_tensor_address`,
`execute_async_v3`), which TensorRT 11 keeps; TensorRT 8 and 9 are refused. Every TensorRT name used here is
listed in `TRT_API`: a module that lacks one is refused with a one-line error naming it, and
tests/test_tensorrt_api.py checks the list against the real 10.3 (JetPack 6) and 11.x bindings. Where the two
lines differ (11 removed weak typing: BuilderFlag.FP16/INT8), the backend checks for the feature, never the
version string. Nothing here imports torch.

Choices, and why:

* Device memory comes from **cuda-python** (`cuda.bindings.runtime`, or `cuda.cudart` in cuda-python before
  12.6), not from torch tensors' `data_ptr`: the runtime path must never import torch (house rule: robots
  install numpy, opencv and one runtime), and cuda-python is a small wheel that NVIDIA's own TensorRT samples
  use. Inputs are copied host-to-device and outputs device-to-host with `cudaMemcpyAsync` on the backend's
  own stream, then the stream is synchronised. The host side is plain (pageable) numpy memory: the tensors
  are tiny (48x48 faces), and on Jetson the CPU and GPU share DRAM, so pinned staging buffers would add a
  host copy for no measurable gain.
* Device buffers are allocated per I/O tensor, sized for the first input shape seen, reused for every later
  call and grown (freed and reallocated) only when a larger shape arrives, so memory stays bounded by the
  largest batch actually run (at most `max_batch`).
* Thread safety: **one execution context and one stream, guarded by a lock around `run`**. One GPU executes
  these small graphs one after another anyway, a context per thread would multiply activation memory (Jetson
  shares it with the CPU), and execution contexts sharing one optimisation profile concurrently is a
  version-dependent corner of TensorRT. `cudaSetDevice` is called inside `run`, so any thread may call it.
* One optimisation profile covers the dynamic batch axis (axis 0; the only dynamic axis the exporter writes):
  min 1, opt `opt_batch` (default 1: robots run one face at a time), max `max_batch` (default 32, the bench
  batch). Larger batches are split into chunks of `max_batch` and the outputs concatenated.
* Precision (`precision=` option, or env LLDIF_EDGE_TRT_PRECISION, default `auto`): `fp32`; `fp16` sets
  BuilderFlag.FP16; `int8` only from an explicitly quantised (Q/DQ) ONNX, built with BuilderFlag.INT8 plus
  FP16 as the fallback for layers the Q/DQ nodes leave in float. No implicit calibrators (deprecated in
  TensorRT 10). `auto` is int8 for a Q/DQ graph and fp32 otherwise, i.e. the precision the package was
  verified at. Q/DQ is detected from QuantizeLinear/DequantizeLinear nodes with `onnx` when importable,
  else from the manifest's precision for the graph (option `manifest_precision`, or the package `Pipeline`
  passes), else by scanning the file for those op names. TensorRT accepts only symmetric int8 Q/DQ, so a
  graph quantised for ONNX Runtime's CPU target (uint8, asymmetric) is refused before building, with a
  one-line error naming the fix. Where the FP16/INT8 builder flags are gone (TensorRT 11: networks are
  strongly typed), a Q/DQ graph still builds int8 (the Q/DQ nodes set the types; layers outside them stay
  fp32, with no fp16 fallback) and `fp16` is refused.
* Cache (`$LLDIF_EDGE_CACHE/tensorrt`, default `~/.cache/lldif-edge/tensorrt`, or option `cache_dir`):
  `<onnx stem>-<key>.engine` plus a `.json` sidecar, where the key hashes the ONNX file's sha256, the GPU
  name, its compute capability, the TensorRT version, the effective precision and the batch profile. Any
  change gives a new key, hence a rebuild. The sidecar records the engine file's size and sha256; a missing,
  truncated, mismatched or undeserialisable engine is rebuilt with a warning. Files are written atomically
  (temporary file in the same folder, then rename). The timing cache is shared by every graph built on the
  same GPU, compute capability, TensorRT version and precision (layer timings do not depend on the ONNX
  file; sharing them is what makes the second and third sub-graph build faster).

Options: precision, max_batch, opt_batch, workspace_mb, cache_dir, manifest_precision, rebuild.
`threads` is accepted and ignored (the work runs on the GPU).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lldif_edge.errors import BackendError
from lldif_edge.package import Package
from lldif_edge.runtimes.base import Backend
from lldif_edge.runtimes.tensorrt_engine import (
    DEFAULT_OPT_BATCH,
    PRECISIONS,
    EngineBuilder,
    cache_dir,
    create_trt_object,
    onnx_has_qdq,
    qdq_incompatibility,
    resolve_precision,
    weakly_typed,
)

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install lldif-edge[tensorrt], or on Jetson use JetPack's TensorRT: see docs/jetson.md"
MIN_TRT_MAJOR = 10
PRECISION_ENV = "LLDIF_EDGE_TRT_PRECISION"
DEFAULT_MAX_BATCH = 32
OPTIONS = ("precision", "max_batch", "opt_batch", "workspace_mb", "cache_dir", "manifest_precision",
           "rebuild")

# Every TensorRT name this backend uses, as "Class.member", present in both 10.3 and 11.x. Methods are called
# with the arguments the 10.3 and 11.x signatures share (tests/test_tensorrt_api.py compares them).
TRT_API = (
    "Logger", "Logger.WARNING", "Runtime", "Runtime.deserialize_cuda_engine",
    "Builder", "Builder.create_network", "Builder.create_builder_config", "Builder.create_optimization_profile",
    "Builder.build_serialized_network",
    "INetworkDefinition.num_inputs", "INetworkDefinition.get_input", "ITensor.name", "ITensor.shape",
    "OnnxParser", "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error",
    "ParserError.desc",
    "IBuilderConfig.set_flag", "IBuilderConfig.set_memory_pool_limit", "IBuilderConfig.add_optimization_profile",
    "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache",
    "IOptimizationProfile.set_shape", "ITimingCache.serialize", "MemoryPoolType.WORKSPACE",
    "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
    "ICudaEngine.get_tensor_dtype", "ICudaEngine.get_tensor_shape", "ICudaEngine.create_execution_context",
    "TensorIOMode.INPUT", "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3",
)

# TensorRT DataType member names -> numpy dtypes (by name, so it is testable without TensorRT).
_TRT_TO_NUMPY = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


# ------------------------------------------------------------------------------------------ pure helpers
def numpy_dtype(trt_dtype: object) -> np.dtype:
    """numpy dtype for a TensorRT DataType: the enum member, its name ("HALF") or str ("DataType.HALF")."""
    name = trt_dtype if isinstance(trt_dtype, str) else getattr(trt_dtype, "name", None) or str(trt_dtype)
    name = str(name).rsplit(".", 1)[-1].upper()
    if name not in _TRT_TO_NUMPY:
        raise BackendError(f"tensorrt: tensor type {name} has no numpy equivalent "
                           f"(supported: {', '.join(_TRT_TO_NUMPY)})")
    return np.dtype(_TRT_TO_NUMPY[name])


def parse_device(device: str | None) -> int:
    """CUDA device index for None, 'cuda', 'gpu', 'cuda:N' or 'gpu:N'."""
    if device is None:
        return 0
    d = str(device).strip().lower()
    kind, _, index = d.partition(":")
    if kind in ("cuda", "gpu") and (not index or index.isdigit()):
        return int(index or 0)
    raise BackendError(f"tensorrt: unknown device '{device}' (use cuda or cuda:N)")


def parse_options(options: Mapping[str, object]) -> dict:
    """Validated backend options with defaults filled in; unknown keys are an error."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise BackendError(f"tensorrt: unknown option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
    precision = str(options.get("precision") or os.environ.get(PRECISION_ENV) or "auto").strip().lower()
    if precision not in PRECISIONS:
        raise BackendError(f"tensorrt: precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    try:
        max_batch = int(options.get("max_batch", DEFAULT_MAX_BATCH))
        opt_batch = int(options.get("opt_batch", min(DEFAULT_OPT_BATCH, max_batch)))
        workspace = options.get("workspace_mb")
        workspace_mb = None if workspace is None else int(workspace)
    except (TypeError, ValueError) as e:
        raise BackendError(f"tensorrt: max_batch, opt_batch and workspace_mb must be integers ({e})") from e
    if not 1 <= opt_batch <= max_batch:
        raise BackendError(f"tensorrt: need 1 <= opt_batch <= max_batch, got opt_batch={opt_batch}, "
                           f"max_batch={max_batch}")
    if workspace_mb is not None and workspace_mb <= 0:
        raise BackendError(f"tensorrt: workspace_mb must be positive, got {workspace_mb}")
    mp = options.get("manifest_precision")
    return {
        "precision": precision,
        "max_batch": max_batch,
        "opt_batch": opt_batch,
        "workspace_mb": workspace_mb,
        "cache_dir": None if options.get("cache_dir") is None else Path(str(options["cache_dir"])),
        "manifest_precision": None if mp is None else str(mp),
        "rebuild": bool(options.get("rebuild", False)),
    }


def missing_trt_api(trt) -> list[str]:
    """The names in TRT_API that the `tensorrt` module lacks (empty for 10.x and 11.x)."""
    missing = []
    for dotted in TRT_API:
        obj = trt
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                missing.append(dotted)
                break
    return missing


def batch_chunks(n: int, max_batch: int) -> list[slice]:
    """Slices covering 0..n in steps of at most max_batch."""
    if n < 1 or max_batch < 1:
        raise BackendError(f"tensorrt: cannot split a batch of {n} into chunks of {max_batch}")
    return [slice(i, min(i + max_batch, n)) for i in range(0, n, max_batch)]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 marks the dynamic batch axis

    @property
    def dynamic_batch(self) -> bool:
        return len(self.shape) > 0 and self.shape[0] < 0


def validate_feeds(feeds: Mapping[str, np.ndarray], specs: list[TensorSpec]) -> int | None:
    """Check names, dtypes and shapes of `feeds` against the engine's inputs; returns the batch size (None
    when no input has a dynamic batch axis). Raises BackendError with a one-line message."""
    if not isinstance(feeds, Mapping):
        raise BackendError(f"tensorrt: feeds must be a dict of numpy arrays, got {type(feeds).__name__}")
    want = [s.name for s in specs]
    missing = [n for n in want if n not in feeds]
    extra = sorted(set(feeds) - set(want))
    if missing or extra:
        raise BackendError(f"tensorrt: inputs must be exactly {want}"
                           + (f"; missing {missing}" if missing else "")
                           + (f"; unexpected {extra}" if extra else ""))
    batch = None
    for s in specs:
        a = feeds[s.name]
        if not isinstance(a, np.ndarray):
            raise BackendError(f"tensorrt: input '{s.name}' must be a numpy array, got {type(a).__name__}")
        if a.dtype != s.dtype:
            raise BackendError(f"tensorrt: input '{s.name}' must be {s.dtype}, got {a.dtype}")
        if a.ndim != len(s.shape) or any(w >= 0 and w != d for w, d in zip(s.shape, a.shape, strict=True)):
            want_shape = "(" + ", ".join("N" if d < 0 else str(d) for d in s.shape) + ")"
            raise BackendError(f"tensorrt: input '{s.name}' must have shape {want_shape}, got {a.shape}")
        if s.dynamic_batch:
            if a.shape[0] < 1:
                raise BackendError(f"tensorrt: input '{s.name}' is an empty batch")
            if batch is not None and a.shape[0] != batch:
                raise BackendError(f"tensorrt: inputs disagree on the batch size ({batch} vs {a.shape[0]} "
                                   f"for '{s.name}')")
            batch = a.shape[0]
    return batch


# ------------------------------------------------------------------------------- libraries and the GPU
def _import_trt():
    import tensorrt

    return tensorrt


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 (and 13)
    except ImportError:
        from cuda import cudart  # older cuda-python 12.x
    return cudart


def _check(cudart, result, what: str):
    """cuda-python returns (error, *values): raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        try:
            msg = cudart.cudaGetErrorString(err)[1]
            msg = msg.decode() if isinstance(msg, bytes) else str(msg)
        except Exception:
            msg = str(err)
        raise BackendError(f"tensorrt: {what} failed: {msg}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: str
    total_memory: int


def _gpu_name(props) -> str:
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return str(name).strip("\0 ").strip()


@functools.lru_cache(maxsize=1)
def _probe() -> tuple[bool, str, tuple[GpuInfo, ...], str]:
    """(available, why not, GPUs, TensorRT version); cached: CUDA initialisation takes a moment."""
    try:
        trt = _import_trt()
    except ImportError:
        return False, f"package tensorrt is not installed: {INSTALL_HINT}", (), ""
    except Exception as e:  # a broken install (missing libnvinfer.so...) raises OSError and friends
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return False, f"package tensorrt cannot be imported ({first}): {INSTALL_HINT}", (), ""
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_TRT_MAJOR:
        why = f"TensorRT {version} is installed; this backend needs TensorRT >= {MIN_TRT_MAJOR}"
        return False, why, (), version
    missing = missing_trt_api(trt)
    if missing:
        why = (f"TensorRT {version} lacks {', '.join(missing[:3])}" + (f" and {len(missing) - 3} more" if
               len(missing) > 3 else "") + " (this backend supports the TensorRT 10 and 11 Python API)")
        return False, why, (), version
    try:
        cudart = _import_cudart()
    except ImportError:
        return (False, "package cuda-python is not installed (the TensorRT backend needs it for GPU memory): "
                       "pip install lldif-edge[tensorrt]; see docs/jetson.md", (), version)
    except Exception as e:
        return False, f"package cuda-python cannot be imported ({str(e).splitlines()[0]})", (), version
    try:
        count = _check(cudart, cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        gpus = []
        for i in range(int(count)):
            props = _check(cudart, cudart.cudaGetDeviceProperties(i), "cudaGetDeviceProperties")
            gpus.append(GpuInfo(i, _gpu_name(props), f"{props.major}.{props.minor}",
                                int(getattr(props, "totalGlobalMem", 0))))
    except Exception as e:  # BackendError from _check; cuda-python raises RuntimeError when libcuda is absent
        first = str(e).removeprefix("tensorrt: ").splitlines()[0] if str(e) else type(e).__name__
        return False, f"no usable CUDA GPU ({first})", (), version
    if not gpus:
        return False, "no CUDA GPU found", (), version
    return True, "", tuple(gpus), version


# ----------------------------------------------------------------------------------------- the backend
class TensorRTBackend(Backend):
    name = "tensorrt"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        ok, why, _, _ = _probe()
        return ok, why

    @classmethod
    def devices(cls) -> list[str]:
        ok, _, gpus, _ = _probe()
        return [f"cuda:{g.index}" for g in gpus] if ok else []

    takes_package = True

    def __init__(self, model_path: Path, device: str | None = None, threads: int | None = None,
                 package: Package | None = None, graph: str | None = None, **options):
        """`package`, `graph`: the manifest and the graph this file is (from `Pipeline`): its recorded
        precision and calibration tell Q/DQ and its encoding apart where `onnx` is not installed."""
        self._closed = True  # until the stream exists; makes close()/__del__ safe after a failed __init__
        ok, why, gpus, trt_version = _probe()
        if not ok:
            raise BackendError(f"tensorrt: {why}")
        opts = parse_options(options)
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"tensorrt: model file {self.model_path} does not exist")
        index = parse_device(device)
        found = [g for g in gpus if g.index == index]
        if not found:
            raise BackendError(f"tensorrt: no CUDA device {index} (found: "
                               + ", ".join(f"cuda:{g.index} {g.name}" for g in gpus) + ")")
        self.gpu = found[0]
        self.trt_version = trt_version
        self._trt = trt = _import_trt()
        self._cudart = cudart = _import_cudart()
        self.max_batch, self.opt_batch = opts["max_batch"], opts["opt_batch"]
        self.requested_precision = opts["precision"]
        self._weak_typing = weakly_typed(trt)
        recorded = package.graphs[graph].precision if package is not None and graph in package.graphs else None
        calibration = package.calibration if package is not None else None
        qdq = onnx_has_qdq(self.model_path, opts["manifest_precision"] or recorded)
        self.precision, warning = resolve_precision(opts["precision"], qdq, self._weak_typing)
        if warning:
            log.warning("tensorrt: %s: %s", self.model_path.name, warning)
        if self.precision == "int8":
            problem = qdq_incompatibility(self.model_path, calibration)
            if problem:
                raise BackendError(f"tensorrt cannot build {self.model_path.name}: {problem}")
        if self.precision == "fp16" and not self._weak_typing:
            raise BackendError(f"tensorrt: TensorRT {trt_version} has no FP16 builder flag (strongly typed "
                               "networks only); use precision fp32, or a Q/DQ int8 package")

        _check(cudart, cudart.cudaSetDevice(self.gpu.index), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = create_trt_object("runtime", trt.Runtime, self._logger)
        builder = EngineBuilder(trt, self._logger, self._runtime, self.model_path, self.gpu, trt_version,
                                self.precision, self._weak_typing, self.max_batch, self.opt_batch,
                                opts["workspace_mb"], cache_dir(opts["cache_dir"]))
        self.fields, self.engine_path = builder.fields, builder.engine_path
        self.engine, self.engine_source = builder.load_or_build(opts["rebuild"])
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendError(f"tensorrt: cannot create an execution context for {self.model_path.name} "
                               "(out of GPU memory?)")
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        for i in range(self.engine.num_io_tensors):
            tname = self.engine.get_tensor_name(i)
            spec = TensorSpec(tname, numpy_dtype(self.engine.get_tensor_dtype(tname)),
                              tuple(int(d) for d in self.engine.get_tensor_shape(tname)))
            is_input = self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            (self._inputs if is_input else self._outputs).append(spec)
        self._buffers: dict[str, list[int]] = {}  # tensor name -> [device pointer, capacity in bytes]
        self._lock = threading.Lock()
        self._stream = _check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._closed = False



    # --- running ---------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self._outputs]

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """Device pointer of at least `nbytes` for tensor `name`: reused, grown only when too small."""
        cudart = self._cudart
        ptr, capacity = self._buffers.get(name, (0, -1))
        need = max(int(nbytes), 256)
        if capacity < need:
            if ptr:
                _check(cudart, cudart.cudaFree(ptr), "cudaFree")
                self._buffers.pop(name, None)
            ptr = int(_check(cudart, cudart.cudaMalloc(need), f"cudaMalloc({need}) for '{name}'"))
            self._buffers[name] = [ptr, need]
        return int(ptr)

    def _run_one(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One engine execution; the caller holds the lock and has validated `arrays`."""
        cudart, ctx = self._cudart, self.context
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart, cudart.cudaSetDevice(self.gpu.index), "cudaSetDevice")
        for s in self._inputs:
            if not ctx.set_input_shape(s.name, tuple(arrays[s.name].shape)):
                raise BackendError(f"tensorrt: the engine rejects shape {arrays[s.name].shape} for input "
                                   f"'{s.name}' (batch profile 1..{self.max_batch})")
        outs: dict[str, np.ndarray] = {}
        for s in self._outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(s.name))
            if any(d < 0 for d in shape):
                raise BackendError(f"tensorrt: output '{s.name}' has an unresolved shape {list(shape)} "
                                   "(data-dependent shapes are not supported)")
            outs[s.name] = np.empty(shape, s.dtype)
        for tname, arr in (*arrays.items(), *outs.items()):
            if not ctx.set_tensor_address(tname, self._device_buffer(tname, arr.nbytes)):
                raise BackendError(f"tensorrt: set_tensor_address failed for '{tname}'")
        stream = self._stream
        for tname, arr in arrays.items():
            if arr.nbytes:
                _check(cudart, cudart.cudaMemcpyAsync(self._buffers[tname][0], arr.ctypes.data, arr.nbytes,
                                                      h2d, stream), f"copying '{tname}' to the GPU")
        if not ctx.execute_async_v3(int(stream)):
            raise BackendError(f"tensorrt: execute_async_v3 failed for {self.model_path.name} "
                               "(see TensorRT's log above)")
        for tname, arr in outs.items():
            if arr.nbytes:
                _check(cudart, cudart.cudaMemcpyAsync(arr.ctypes.data, self._buffers[tname][0], arr.nbytes,
                                                      d2h, stream), f"copying '{tname}' from the GPU")
        _check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return outs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise BackendError("tensorrt: this backend has been closed")
        batch = validate_feeds(feeds, self._inputs)
        arrays = {s.name: np.ascontiguousarray(feeds[s.name]) for s in self._inputs}
        with self._lock:
            if batch is None or batch <= self.max_batch:
                return self._run_one(arrays)
            dynamic = {s.name for s in self._inputs if s.dynamic_batch}
            parts = [self._run_one({k: (a[sl] if k in dynamic else a) for k, a in arrays.items()})
                     for sl in batch_chunks(batch, self.max_batch)]
        return {s.name: (np.concatenate([p[s.name] for p in parts]) if s.dynamic_batch else parts[-1][s.name])
                for s in self._outputs}

    def describe(self) -> str:
        return (f"tensorrt {self.trt_version} {self.precision} on {self.gpu.name} "
                f"(sm {self.gpu.compute_capability}), batch 1-{self.max_batch}, engine {self.engine_source}")

    # --- cleanup ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the device buffers and the stream; the backend cannot run afterwards."""
        if getattr(self, "_closed", True):
            return
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.acquire()
        try:
            self._closed = True
            cudart = self._cudart
            for ptr, _ in self._buffers.values():
                try:
                    cudart.cudaFree(ptr)
                except Exception:
                    pass
            self._buffers.clear()
            try:
                cudart.cudaStreamDestroy(self._stream)
            except Exception:
                pass
        finally:
            if lock is not None:
                lock.release()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
