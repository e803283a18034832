"""Fakes of the `tensorrt` and `cuda.bindings.runtime` modules, for tests that have no GPU.

They follow the real Python APIs: class, method, property and enum member names, parameter names and defaults,
return types (in the annotations), and the errors the real modules give:

* a TensorRT constructor whose library call fails raises TypeError("pybind11::init(): factory function
  returned nullptr"), as the real bindings do (`create_fails`);
* `deserialize_cuda_engine` returns None for data it cannot load, `build_serialized_network` None when the
  build fails, `set_input_shape` / `set_tensor_address` / `execute_async_v3` / `parse_from_file` return bool;
* the parser's `get_error` returns a ParserError with `desc()` and `__str__`;
* cuda-python returns `(error, value)` tuples, `(error,)` for calls without a value and `(error, None)` when
  the call fails; without a driver every call fails with cudaErrorInsufficientDriver (`driver=False`), as
  cuda-python 12.9 does (12.6 raises RuntimeError "Failed to dlopen libcuda.so.1" instead).

tests/test_tensorrt_api.py compares every name and signature here with the real TensorRT 10.3 and 11.x
bindings and the real cuda-python (tests/trt_api_probe.py), so a fake that drifts from the real API fails there.
Where a fake must differ it says so: IHostMemory offers `__bytes__` where the real one offers the buffer
protocol (both serve `bytes(x)`). What the fakes compute (y = 2 * x + s) is for the tests, not TensorRT's.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types

import numpy as np

MAGIC = b"FAKE-TRT-ENGINE:"
NULLPTR = "pybind11::init(): factory function returned nullptr"  # the real bindings' message
NO_DRIVER = b"CUDA driver version is insufficient for CUDA runtime version"  # real cuda-python, no driver


# ------------------------------------------------------------------------------------------- cuda-python
class FakeStream:
    """Like cuda-python's cudaStream_t: an opaque handle that int() turns into the address."""

    def __init__(self, handle: int):
        self._handle = handle

    def __int__(self):
        return self._handle


class FakeCudart:
    class cudaError_t(enum.IntEnum):  # noqa: N801 - mirrors cuda-python's names
        cudaSuccess = 0
        cudaErrorInsufficientDriver = 35

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, n_gpus: int = 1, driver: bool = True):
        self._n_gpus, self._driver, self._next = n_gpus, driver, 0x1000
        self.mem: dict[int, bytearray] = {}
        self.mallocs, self.frees = 0, 0

    def _fail(self):
        return self.cudaError_t.cudaErrorInsufficientDriver, None

    def cudaGetDeviceCount(self):  # noqa: N802
        return (self.cudaError_t.cudaSuccess, self._n_gpus) if self._driver else self._fail()

    def cudaGetDeviceProperties(self, device):  # noqa: N802
        if not self._driver:
            return self._fail()
        return self.cudaError_t.cudaSuccess, types.SimpleNamespace(name=b"Fake Orin\0\0\0", major=8, minor=7,
                                                                   totalGlobalMem=8 << 30)

    def cudaGetErrorString(self, error):  # noqa: N802
        text = NO_DRIVER if error == self.cudaError_t.cudaErrorInsufficientDriver else b"fake error"
        return self.cudaError_t.cudaSuccess, text

    def cudaSetDevice(self, device):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,) if self._driver else self._fail()[:1]

    def cudaMalloc(self, size):  # noqa: N802
        ptr, self._next = self._next, self._next + ((size + 0xFFF) // 0x1000 + 1) * 0x1000
        self.mem[ptr] = bytearray(size)
        self.mallocs += 1
        return self.cudaError_t.cudaSuccess, ptr

    def cudaFree(self, devPtr):  # noqa: N802, N803
        del self.mem[devPtr]
        self.frees += 1
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        assert isinstance(stream, FakeStream)
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            assert count <= len(self.mem[dst])
            self.mem[dst][:count] = ctypes.string_at(src, count)
        else:
            ctypes.memmove(dst, bytes(self.mem[src][:count]), count)
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):  # noqa: N802
        return self.cudaError_t.cudaSuccess, FakeStream(77)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)


# -------------------------------------------------------------------------------------------- tensorrt
def onnx_io(path) -> tuple[list, list]:
    """(inputs, outputs) as [(name, shape with -1 for symbolic dims)], like TensorRT's parsed network."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}

    def shape(vi):
        return [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]

    return ([(i.name, shape(i)) for i in model.graph.input if i.name not in inits],
            [(o.name, shape(o)) for o in model.graph.output])


def make_fake_trt(cudart: FakeCudart, version: str = "10.3.0", weak_typing: bool = True,
                  create_fails: tuple[str, ...] = ()):
    """A fake `tensorrt` module. weak_typing=False is TensorRT 11 (no BuilderFlag.FP16/INT8); create_fails
    names the classes whose constructor fails as when libnvinfer cannot create the object."""
    trt = types.SimpleNamespace(__version__=version, builds=[], contexts=0)

    class DataType(enum.Enum):
        FLOAT, HALF, BF16, INT8, INT32, INT64, BOOL, UINT8, FP8, INT4 = range(10)

    class TensorIOMode(enum.Enum):
        NONE, INPUT, OUTPUT = range(3)

    class MemoryPoolType(enum.Enum):
        WORKSPACE = 0

    flags = ["FP16", "INT8"] if weak_typing else []
    BuilderFlag = enum.Enum("BuilderFlag", [*flags, "TF32"])  # noqa: N806

    def check_create(cls_name):
        if cls_name in create_fails:
            raise TypeError(NULLPTR)

    class Logger:
        class Severity(enum.Enum):
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        WARNING = Severity.WARNING

        def __init__(self, min_severity=Severity.WARNING) -> None:
            self._min_severity = min_severity

    class Dims:
        def __init__(self, shape) -> None:
            self._dims = tuple(int(d) for d in shape)

        def __len__(self) -> int:
            return len(self._dims)

        def __getitem__(self, arg0) -> int:
            return self._dims[arg0]

    class ITensor:
        def __init__(self, name, shape) -> None:
            self._name, self._shape = name, Dims(shape)

        @property
        def name(self) -> str:
            return self._name

        @property
        def shape(self) -> Dims:
            return self._shape

    class INetworkDefinition:
        def __init__(self) -> None:
            self._inputs, self._outputs = [], []

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        def get_input(self, index) -> ITensor:
            return ITensor(*self._inputs[index])

    class ParserError:
        def __init__(self, text) -> None:
            self._text = text

        def desc(self) -> str:
            return self._text

        def __str__(self) -> str:
            return self._text

    class OnnxParser:
        def __init__(self, network, logger) -> None:
            check_create("OnnxParser")
            self._network = network

        @property
        def num_errors(self) -> int:
            return 0

        def parse_from_file(self, model) -> bool:
            self._network._inputs, self._network._outputs = onnx_io(model)
            return True

        def get_error(self, index) -> ParserError:
            raise IndexError(index)

    class IHostMemory:
        def __init__(self, data) -> None:
            self._data = bytes(data)

        @property
        def nbytes(self) -> int:
            return len(self._data)

        def __bytes__(self):  # the real class has the buffer protocol instead
            return self._data

    class ITimingCache:
        def __init__(self, blob) -> None:
            self._blob = bytes(blob)

        def serialize(self) -> IHostMemory:
            return IHostMemory(self._blob + b"+")

    class IOptimizationProfile:
        def __init__(self) -> None:
            self._shapes = {}

        def set_shape(self, input, min, opt, max) -> None:  # noqa: A002 - the real parameter names
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

    class IBuilderConfig:
        def __init__(self) -> None:
            self._flags, self._profiles, self._timing, self._pool = [], [], None, None

        def set_flag(self, flag) -> None:
            assert isinstance(flag, BuilderFlag)
            self._flags.append(flag)

        def set_memory_pool_limit(self, pool, pool_size) -> None:
            self._pool = (pool, pool_size)

        def add_optimization_profile(self, profile) -> int:
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache) -> ITimingCache:
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch) -> bool:
            self._timing = cache
            return True

        def get_timing_cache(self) -> ITimingCache:
            return self._timing

    class Builder:
        def __init__(self, logger) -> None:
            check_create("Builder")

        def create_network(self, flags=0) -> INetworkDefinition:
            assert flags == 0
            return INetworkDefinition()

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig()

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network, config) -> IHostMemory:
            shapes = config._profiles[0]._shapes if config._profiles else {}
            for name, shape in network._inputs:  # TensorRT needs a profile entry for every dynamic input
                if -1 in shape and name not in shapes:
                    return None
            trt.builds.append({"flags": [f.name for f in config._flags], "profile": shapes, "pool": config._pool,
                               "timing_in": config._timing._blob if config._timing else None})
            info = {"inputs": network._inputs, "outputs": network._outputs,
                    "max_batch": max((hi[0] for _, _, hi in shapes.values()), default=1)}
            return IHostMemory(MAGIC + json.dumps(info).encode())

    class IExecutionContext:
        """Computes y = 2 * x + s (the affine test graph) from the fake device memory."""

        def __init__(self, engine) -> None:
            self._engine, self._shapes, self._addr = engine, {}, {}

        def set_input_shape(self, name, shape) -> bool:
            if shape[0] > self._engine._info["max_batch"] and dict(self._engine._info["inputs"])[name][0] == -1:
                return False
            self._shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name) -> Dims:
            shape = dict(self._engine._info["inputs"] + self._engine._info["outputs"])[name]
            batch = self._shapes.get("x", (1,))[0]
            return Dims([batch if d == -1 else d for d in shape])

        def set_tensor_address(self, name, memory) -> bool:
            self._addr[name] = memory
            return True

        def execute_async_v3(self, stream_handle) -> bool:
            assert isinstance(stream_handle, int)

            def read(name):
                shape = self._shapes[name]
                n = int(np.prod(shape)) * 4
                return np.frombuffer(bytes(cudart.mem[self._addr[name]][:n]), np.float32).reshape(shape)

            y = (2 * read("x") + read("s")).astype(np.float32)
            cudart.mem[self._addr["y"]][:y.nbytes] = y.tobytes()
            return True

    class ICudaEngine:
        def __init__(self, info) -> None:
            self._info = info
            self._io = ([(n, s, TensorIOMode.INPUT) for n, s in info["inputs"]]
                        + [(n, s, TensorIOMode.OUTPUT) for n, s in info["outputs"]])

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, index) -> str:
            return self._io[index][0]

        def get_tensor_mode(self, name) -> TensorIOMode:
            return {n: m for n, _, m in self._io}[name]

        def get_tensor_dtype(self, name) -> DataType:
            return DataType.FLOAT

        def get_tensor_shape(self, name) -> Dims:
            return Dims({n: s for n, s, _ in self._io}[name])

        def create_execution_context(self, strategy=0) -> IExecutionContext:
            trt.contexts += 1
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger) -> None:
            check_create("Runtime")

        def deserialize_cuda_engine(self, serialized_engine) -> ICudaEngine:
            data = bytes(serialized_engine)
            if not data.startswith(MAGIC):
                return None
            try:
                return ICudaEngine(json.loads(data[len(MAGIC):]))
            except ValueError:
                return None

    for cls in (DataType, TensorIOMode, MemoryPoolType, BuilderFlag, Logger, Dims, ITensor, INetworkDefinition,
                ParserError, OnnxParser, IHostMemory, ITimingCache, IOptimizationProfile, IBuilderConfig, Builder,
                IExecutionContext, ICudaEngine, Runtime):
        setattr(trt, cls.__name__, cls)
    return trt
