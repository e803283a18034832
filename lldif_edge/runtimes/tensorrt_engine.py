"""TensorRT engines: built from a package's ONNX file, or loaded from the engine cache (the builder half of the
TensorRT backend; `tensorrt_backend` runs what this builds). The cache key, the precision rules and Q/DQ
detection are plain functions, testable without TensorRT; the module docstring of `tensorrt_backend` says
how precision and the cache behave.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from lldif_edge.errors import BackendError
from lldif_edge.package import CalibrationReport, sha256_file

log = logging.getLogger("lldif_edge.runtimes.tensorrt_backend")  # one logger for the whole backend

PRECISIONS = ("auto", "fp32", "fp16", "int8")
DEFAULT_OPT_BATCH = 1
CACHE_FORMAT = 1  # bump when the engine file layout or the key's meaning changes
CACHE_ENV = "LLDIF_EDGE_CACHE"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Weak typing (precision chosen by builder flags): TensorRT 10 has these, TensorRT 11 removed them.
WEAK_TYPING_FLAGS = ("FP16", "INT8")


def cache_dir(override: str | Path | None = None) -> Path:
    """Cache folder: `override`, else `$LLDIF_EDGE_CACHE/tensorrt`, else `~/.cache/lldif-edge/tensorrt`."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    root = Path(env).expanduser() if env else Path.home() / ".cache" / "lldif-edge"
    return root / "tensorrt"


def _compute_capability(cc: str | tuple[int, int] | list[int]) -> str:
    if isinstance(cc, (tuple, list)):
        return ".".join(str(int(x)) for x in cc)
    return str(cc).strip()


def engine_fields(onnx_sha256: str, gpu_name: str, compute_capability: str | tuple[int, int],
                  trt_version: str, precision: str, max_batch: int,
                  opt_batch: int = DEFAULT_OPT_BATCH) -> dict:
    """Everything an engine depends on, as plain JSON-able values (also written to the cache sidecar)."""
    return {
        "format": CACHE_FORMAT,
        "onnx_sha256": str(onnx_sha256).lower(),
        "gpu_name": str(gpu_name).strip(),
        "compute_capability": _compute_capability(compute_capability),
        "trt_version": str(trt_version).strip(),
        "precision": str(precision).lower(),
        "profile": {"min_batch": 1, "opt_batch": int(opt_batch), "max_batch": int(max_batch)},
    }


def _digest(fields: dict, n: int = 24) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:n]


def engine_cache_key(onnx_sha256: str, gpu_name: str, compute_capability: str | tuple[int, int],
                     trt_version: str, precision: str, max_batch: int,
                     opt_batch: int = DEFAULT_OPT_BATCH) -> str:
    """Hex key naming a cached engine; changes when any component changes."""
    return _digest(engine_fields(onnx_sha256, gpu_name, compute_capability, trt_version, precision, max_batch,
                                 opt_batch))


def timing_cache_key(gpu_name: str, compute_capability: str | tuple[int, int], trt_version: str,
                     precision: str) -> str:
    """Hex key naming a timing cache: per GPU, compute capability, TensorRT version and precision."""
    return _digest({"format": CACHE_FORMAT, "gpu_name": str(gpu_name).strip(),
                    "compute_capability": _compute_capability(compute_capability),
                    "trt_version": str(trt_version).strip(), "precision": str(precision).lower()})


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_engine_is_reusable(engine_path: Path, meta_path: Path, fields: dict) -> tuple[bool, str]:
    """(reusable, why not): the engine exists, its sidecar records exactly `fields`, size and sha256 match."""
    engine_path, meta_path = Path(engine_path), Path(meta_path)
    if not engine_path.is_file():
        return False, "no cached engine"
    if not meta_path.is_file():
        return False, f"{meta_path.name} is missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        return False, f"{meta_path.name} is unreadable ({e})"
    if not isinstance(meta, dict) or meta.get("fields") != fields:
        return False, "it was built for another ONNX file, GPU, TensorRT version, precision or batch profile"
    try:
        data = engine_path.read_bytes()
    except OSError as e:
        return False, f"{engine_path.name} is unreadable ({e})"
    if len(data) != meta.get("engine_bytes") or _sha256_bytes(data) != meta.get("engine_sha256"):
        return False, f"{engine_path.name} is truncated or corrupt (size or sha256 differs from its sidecar)"
    return True, ""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_cached_engine(engine_path: Path, meta_path: Path, data: bytes, fields: dict) -> None:
    """Engine first, sidecar last: a sidecar only ever describes a complete engine file."""
    atomic_write_bytes(engine_path, data)
    meta = {"fields": fields, "engine_bytes": len(data), "engine_sha256": _sha256_bytes(data),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic_write_bytes(meta_path, (json.dumps(meta, indent=2) + "\n").encode())


def precision_implies_qdq(precision: str | None) -> bool:
    """Whether a manifest precision label ("int8", "int8-qdq", "mixed-int8"...) means Q/DQ nodes."""
    return precision is not None and "int8" in str(precision).lower()


def _graph_has_qdq(graph) -> bool:
    return any(node.op_type in QDQ_OPS for node in _nodes(graph))


def qdq_from_onnx(path: Path) -> bool | None:
    """Q/DQ nodes found by `onnx` (sub-graphs and local functions included); None without `onnx`."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends
        raise BackendError(f"tensorrt: {Path(path).name} is not a readable ONNX file ({e})") from e
    if _graph_has_qdq(model.graph):
        return True
    return any(node.op_type in QDQ_OPS for fn in model.functions for node in fn.node)


def qdq_from_bytes(path: Path, chunk: int = 1 << 20) -> bool:
    """Last resort without `onnx`: op types are stored as plain strings in the protobuf."""
    tokens = (b"QuantizeLinear", b"DequantizeLinear")
    keep = max(len(t) for t in tokens) - 1
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            buf = tail + block
            if any(t in buf for t in tokens):
                return True
            tail = buf[-keep:]
    return False


def onnx_has_qdq(path: Path, manifest_precision: str | None = None) -> bool:
    """Whether the ONNX file is explicitly quantised: `onnx` if importable, else the manifest, else bytes."""
    found = qdq_from_onnx(path)
    if found is not None:
        return found
    if manifest_precision is not None:
        return precision_implies_qdq(manifest_precision)
    return qdq_from_bytes(path)


def _nodes(graph):
    """Every node of `graph` and of its sub-graphs (If/Loop/Scan bodies)."""
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _nodes(g)


def qdq_incompatibility(path: Path, calibration: CalibrationReport | None = None) -> str | None:
    """Why TensorRT cannot build this Q/DQ graph, or None. TensorRT's explicit quantisation needs symmetric
    int8: int8 zero points, all 0. Packages quantised for the CPU target use uint8 asymmetric activations.
    Without `onnx`, the package's calibration record decides (None: nothing to go on, TensorRT will say)."""
    fix = "re-quantise the package with the 'tensorrt' calibration target (symmetric int8)"
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        if calibration is not None and calibration.asymmetric_activations:
            return f"its manifest says it was quantised with asymmetric uint8 activations; {fix}"
        return None
    model = onnx.load(str(path), load_external_data=False)
    consts = {t.name: t for t in model.graph.initializer}
    nodes = list(_nodes(model.graph))
    for node in nodes:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    consts[node.output[0]] = attr.t
    uint8 = onnx.TensorProto.UINT8
    for node in nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"node '{node.name or node.op_type}'"
        zp = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        x = consts.get(node.input[0]) if node.input else None
        if node.op_type == "QuantizeLinear" and (len(node.input) < 3 or not node.input[2]):
            return f"{where} quantises to uint8 (no zero point given); {fix}"
        if (zp is not None and zp.data_type == uint8) or (x is not None and x.data_type == uint8):
            return f"{where} uses uint8 (asymmetric, as for the CPU target); {fix}"
        if zp is not None and zp.data_type == onnx.TensorProto.INT8 and numpy_helper.to_array(zp).any():
            return f"{where} has a non-zero zero point (asymmetric); {fix}"
    return None


def resolve_precision(requested: str, qdq: bool, weak_typing: bool = True) -> tuple[str, str | None]:
    """(precision to build, warning or None) for the requested precision, whether the graph has Q/DQ and
    whether the TensorRT has weak typing (the FP16 flag that int8 on an unquantised graph falls back to)."""
    if requested not in PRECISIONS:
        raise BackendError(f"tensorrt: precision must be one of {', '.join(PRECISIONS)}, got '{requested}'")
    if qdq:
        if requested in ("fp32", "fp16"):
            return "int8", (f"the graph is explicitly quantised (Q/DQ nodes), so it builds as int8, "
                            f"not {requested}; export an unquantised package for {requested}")
        return "int8", None
    if requested == "int8":
        fallback = "fp16" if weak_typing else "fp32"
        return fallback, ("the graph has no Q/DQ nodes and implicit INT8 calibration is not supported; "
                          f"building {fallback} (quantise the package for int8)")
    if requested == "auto":
        return "fp32", None
    return requested, None


def weakly_typed(trt) -> bool:
    """Whether builder flags choose the precision (TensorRT 10); TensorRT 11 builds strongly typed only."""
    flags = getattr(trt, "BuilderFlag", None)
    return all(getattr(flags, name, None) is not None for name in WEAK_TYPING_FLAGS)


def builder_flags(precision: str, weak_typing: bool = True) -> list[str]:
    """BuilderFlag member names a precision needs (INT8 keeps FP16 as the fallback for float layers). Without
    weak typing there are none: Q/DQ nodes alone make a graph int8, and fp16 is refused before building."""
    if not weak_typing:
        return []
    return {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[precision]


def profile_shapes(input_shapes: Mapping[str, tuple[int, ...]], opt_batch: int,
                   max_batch: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """name -> (min, opt, max) shapes for each input with a dynamic (-1) batch axis; static ones need none."""
    if not 1 <= opt_batch <= max_batch:
        raise BackendError(f"tensorrt: need 1 <= opt_batch <= max_batch, got {opt_batch}, {max_batch}")
    out = {}
    for name, shape in input_shapes.items():
        shape = tuple(int(d) for d in shape)
        if not any(d < 0 for d in shape):
            continue
        if len(shape) == 0 or shape[0] >= 0 or any(d < 0 for d in shape[1:]):
            raise BackendError(f"tensorrt: input '{name}' has shape {list(shape)}; only the batch axis (0) "
                               "may be dynamic")
        rest = shape[1:]
        out[name] = ((1, *rest), (opt_batch, *rest), (max_batch, *rest))
    return out


def create_trt_object(what: str, factory, *args):
    """A TensorRT object from its constructor. When libnvinfer cannot create one (no usable GPU, out of
    memory) the bindings raise TypeError "factory function returned nullptr": make that a one-line error."""
    try:
        return factory(*args)
    except (TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(f"tensorrt: cannot create the TensorRT {what} ({first}); see TensorRT's log "
                           "above") from e


def _parser_error(err) -> str:
    """One line from an ONNX parser error (its str() in TensorRT's samples; desc() as the fallback)."""
    text = str(err)
    if "object at 0x" in text and hasattr(err, "desc"):
        text = str(err.desc())
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


class EngineBuilder:
    """One ONNX file's engine for one GPU, precision and batch profile: loaded from the cache when a reusable
    one is there, else built (with the shared timing cache) and cached. `fields` are what the key hashes."""

    def __init__(self, trt, logger, runtime, model_path: Path, gpu, trt_version: str, precision: str,
                 weak_typing: bool, max_batch: int, opt_batch: int, workspace_mb: int | None, folder: Path):
        self._trt, self._logger, self._runtime = trt, logger, runtime
        self.model_path, self.gpu_name, self.precision = Path(model_path), gpu.name, precision
        self._weak_typing, self.max_batch, self.opt_batch = weak_typing, max_batch, opt_batch
        self._workspace_mb = workspace_mb
        self.fields = engine_fields(sha256_file(self.model_path), gpu.name, gpu.compute_capability, trt_version,
                                    precision, max_batch, opt_batch)
        key = engine_cache_key(self.fields["onnx_sha256"], gpu.name, gpu.compute_capability, trt_version,
                               precision, max_batch, opt_batch)
        self.engine_path = Path(folder) / f"{self.model_path.stem}-{key}.engine"
        self._meta_path = self.engine_path.with_suffix(".json")
        tkey = timing_cache_key(gpu.name, gpu.compute_capability, trt_version, precision)
        self._timing_path = Path(folder) / f"timing-{tkey}.cache"

    def _deserialize(self, data: bytes):
        try:
            return self._runtime.deserialize_cuda_engine(data)
        except Exception as e:  # TensorRT mostly returns None, some versions raise
            log.debug("tensorrt: deserialize_cuda_engine raised %s", e)
            return None

    def load_or_build(self, rebuild: bool):
        if not rebuild:
            ok, why = cached_engine_is_reusable(self.engine_path, self._meta_path, self.fields)
            if ok:
                engine = self._deserialize(self.engine_path.read_bytes())
                if engine is not None:
                    return engine, "cached"
                log.warning("tensorrt: cached engine %s cannot be loaded; rebuilding it", self.engine_path)
            elif self.engine_path.exists():
                log.warning("tensorrt: cached engine %s is not reusable (%s); rebuilding it",
                            self.engine_path, why)
        t0 = time.perf_counter()
        data = self._build()
        write_cached_engine(self.engine_path, self._meta_path, data, self.fields)
        engine = self._deserialize(data)
        if engine is None:
            raise BackendError(f"tensorrt: the engine just built for {self.model_path.name} cannot be loaded "
                               "(see TensorRT's log above)")
        return engine, f"built in {time.perf_counter() - t0:.0f} s"

    def _build(self) -> bytes:
        trt = self._trt
        log.warning("tensorrt: building a %s engine for %s on %s (first run only; can take minutes on "
                    "Jetson), cached in %s", self.precision, self.model_path.name, self.gpu_name,
                    self.engine_path.parent)
        builder = create_trt_object("builder", trt.Builder, self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10 and 11
        parser = create_trt_object("ONNX parser", trt.OnnxParser, network, self._logger)
        if not parser.parse_from_file(str(self.model_path)):
            errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            errors = errors or ["unknown error"]
            raise BackendError(f"tensorrt: cannot parse {self.model_path.name}: {errors[0]}"
                               + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        shapes = profile_shapes({t.name: tuple(t.shape) for t in inputs}, self.opt_batch, self.max_batch)
        config = builder.create_builder_config()
        if shapes:
            profile = builder.create_optimization_profile()
            for tname, (lo, opt, hi) in shapes.items():
                profile.set_shape(tname, lo, opt, hi)
            config.add_optimization_profile(profile)
        if self._workspace_mb:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self._workspace_mb << 20)
        for flag_name in builder_flags(self.precision, self._weak_typing):
            config.set_flag(getattr(trt.BuilderFlag, flag_name))
        timing = self._attach_timing_cache(config)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(f"tensorrt: building an engine for {self.model_path.name} failed "
                               "(see TensorRT's log above)")
        if timing is not None:
            try:
                atomic_write_bytes(self._timing_path, bytes(config.get_timing_cache().serialize()))
            except Exception as e:  # a timing cache is an optimisation: never fail the build over it
                log.warning("tensorrt: cannot save the timing cache %s: %s", self._timing_path, e)
        return bytes(serialized)

    def _attach_timing_cache(self, config):
        blob = b""
        if self._timing_path.is_file():
            try:
                blob = self._timing_path.read_bytes()
            except OSError:
                blob = b""
        for data in ((blob, b"") if blob else (b"",)):
            try:
                cache = config.create_timing_cache(data)
                if cache is not None and config.set_timing_cache(cache, False):
                    return cache
            except Exception as e:
                log.debug("tensorrt: timing cache rejected: %s", e)
            if data:
                log.warning("tensorrt: timing cache %s is unusable; starting a new one", self._timing_path)
        return None
