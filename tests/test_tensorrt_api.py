"""The TensorRT backend and its test fakes against the real TensorRT Python bindings (10.3 and 11.x).

The `tensorrt-cu12-bindings` wheels are small (about 1.2 MB) but their extension, tensorrt.so, links
libnvinfer, libnvonnxparser and libnvinfer_plugin from the multi-GB `-libs` wheel, which PyPI serves only as
a stub that downloads from NVIDIA's own index. The extension needs just nine C entry points from those
libraries (the factories createInferBuilder_INTERNAL, createInferRuntime_INTERNAL, ... and plugin
registration); every other call goes through C++ interfaces. So this test compiles stand-ins that return
NULL, puts them beside the real tensorrt.so and imports the real module: real classes, enums, properties and
pybind11 signatures, without a GPU. Constructing a Builder or Runtime then fails exactly as it does when
libnvinfer cannot create one (TypeError "factory function returned nullptr"), which the backend must turn
into a one-line error. What this cannot check: anything libnvinfer computes (parsing, building, running).

Wheels are looked for in $LLDIF_EDGE_TRT_WHEELS, else ~/.cache/lldif-edge/trt-wheels (fill it with
scripts/fetch_trt_api_wheels.sh, about 10 MB); wheels for another Python version are ignored. Without
wheels, or without a C compiler, the real-module tests skip. An installed `tensorrt` (a Jetson, a GPU
machine) is checked as it is, with its real libraries.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import trt_api_probe as probe

HERE = Path(__file__).resolve().parent
WHEELS = Path(os.environ.get("LLDIF_EDGE_TRT_WHEELS") or Path.home() / ".cache" / "lldif-edge" / "trt-wheels")
TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
# The C entry points tensorrt.so (10.x and 11.x) takes from TensorRT's libraries (`nm -D --undefined-only`).
STUB_C = """
void *createInferBuilder_INTERNAL(void *a, int b) { return 0; }
void *createInferRefitter_INTERNAL(void *a, void *b, int c) { return 0; }
void *createInferRuntime_INTERNAL(void *a, int b) { return 0; }
void *createNvOnnxParser_INTERNAL(void *a, void *b, int c) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *a, void *b, int c) { return 0; }
void *getBuilderPluginRegistry(int a) { return 0; }
void *getPluginRegistry(void) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
int initLibNvInferPlugins(void *a, const char *b) { return 0; }
"""
NAMES_10_ONLY = ("BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.BF16", "BuilderFlag.FP8",
                 "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
                 "IBuilderConfig.int8_calibrator", "Builder.platform_has_fast_fp16", "Builder.platform_has_fast_int8")


def _wheels(pattern: str) -> list[Path]:
    return sorted(WHEELS.glob(pattern)) if WHEELS.is_dir() else []


def _trt_wheels() -> dict[str, Path]:
    """TensorRT version -> bindings wheel for this Python and machine (one per version)."""
    out = {}
    for whl in _wheels(f"tensorrt_cu1*_bindings-*-{TAG}-none-*{platform.machine()}.whl"):
        out.setdefault(whl.name.split("-")[1], whl)
    return out


TRT_WHEELS = _trt_wheels()
CC = shutil.which("cc") or shutil.which("gcc")
FETCH = "scripts/fetch_trt_api_wheels.sh"


def _unpack(whl: Path, dest: Path) -> Path:
    with zipfile.ZipFile(whl) as z:
        z.extractall(dest)
    return dest


@pytest.fixture(scope="module")
def cuda_dirs(tmp_path_factory) -> list[str]:
    """Unpacked cuda-bindings + cuda-pathfinder wheels, if in the cache (else the probe uses what is installed)."""
    bindings = _wheels(f"cuda_bindings-*-{TAG}-{TAG}-*{platform.machine()}*.whl")
    finders = _wheels("cuda_pathfinder-*-py3-none-any.whl")
    if not bindings:
        return []
    root = tmp_path_factory.mktemp("cuda")
    _unpack(bindings[-1], root)
    if finders:
        _unpack(max(finders, key=lambda p: [int(x) for x in re.findall(r"\d+", p.name.split("-")[1])]), root)
    return [str(root)]


def _run_probe(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "trt_api_probe.py"), *args], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _check_report(r: dict) -> None:
    """What must hold for every real TensorRT 10 or 11 module."""
    assert r["missing_api"] == [], f"TensorRT {r['version']} lacks names the backend uses"
    assert r["fake_vs_real"] == [], "tests/fake_tensorrt.py differs from the real module"
    assert r["builder_flags"] == {"fp32": [], "fp16": [], "int8": []}
    weak = r["weak_typing"]
    assert weak == all(r["watch"][n] for n in ("BuilderFlag.FP16", "BuilderFlag.INT8"))
    mapped = {k: v for k, v in r["dtypes"].items() if not v.startswith("error")}
    assert mapped == {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32",
                      "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}
    assert all("\n" not in v and "no numpy equivalent" in v for v in r["dtypes"].values() if v.startswith("error"))
    assert r["dims"] == [-1, 3] and r["logger"] == "Logger"
    assert r["watch"]["IExecutionContext.execute_async_v3"]
    if r["real_cuda"] is not None:
        assert r["real_cuda"]["fake_vs_real"] == [], "FakeCudart differs from cuda-python"
        ok, why = r["real_cuda"]["availability"]
        if not ok and "driver version is insufficient" in why:  # no GPU driver: the fake must say the same
            assert r["real_cuda"]["fake_no_driver"] == [ok, why]


@pytest.mark.skipif(not CC, reason="no C compiler for the stand-in TensorRT libraries")
@pytest.mark.parametrize("version", sorted(TRT_WHEELS) or [pytest.param("none", marks=pytest.mark.skip(
    reason=f"no tensorrt-cu12-bindings wheel for {TAG} in {WHEELS} (run {FETCH})"))])
def test_backend_against_real_bindings_wheel(version, tmp_path, cuda_dirs):
    root = _unpack(TRT_WHEELS[version], tmp_path / "whl")
    pkg = root / "tensorrt_bindings"
    major = version.split(".")[0]
    (tmp_path / "stub.c").write_text(STUB_C)
    for lib in ("libnvinfer", "libnvonnxparser", "libnvinfer_plugin"):  # found through tensorrt.so's $ORIGIN
        subprocess.run([CC, "-shared", "-fPIC", "-o", str(pkg / f"{lib}.so.{major}"), str(tmp_path / "stub.c")],
                       check=True, capture_output=True)
    args = ["--trt", str(root)] + [a for d in cuda_dirs for a in ("--cuda", d)]
    r = _run_probe(args)
    assert r["version"] == version
    _check_report(r)
    if int(major) == 10:
        assert r["weak_typing"] and all(r["watch"][n] for n in NAMES_10_ONLY)
        # fp16 passes the feature check; the stand-in libnvinfer then refuses the runtime, as a real one
        # does without a usable GPU: one line, no traceback
        assert r["fp16"] == ("tensorrt: cannot create the TensorRT runtime (pybind11::init(): factory function "
                             "returned nullptr); see TensorRT's log above")
    else:
        assert not r["weak_typing"] and not any(r["watch"][n] for n in NAMES_10_ONLY)
        assert r["watch"]["NetworkDefinitionCreationFlag.STRONGLY_TYPED"]
        assert r["fp16"] == (f"tensorrt: TensorRT {version} has no FP16 builder flag (strongly typed networks "
                             "only); use precision fp32, or a Q/DQ int8 package")


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="tensorrt is not installed here")
def test_backend_against_installed_tensorrt():
    """On a Jetson or a GPU machine: the same names and signatures on the installed TensorRT."""
    r = _run_probe([])
    assert r["missing_api"] == [] and r["fake_vs_real"] == []
    assert r["builder_flags"] == {"fp32": [], "fp16": [], "int8": []}


# ------------------------------------------------------------------ the comparison itself (no wheel needed)
class _RealLike:
    """A class documented the way pybind11 documents TensorRT's (signatures in the docstrings)."""

    def set_shape(self, *args, **kwargs):
        """set_shape(self: tensorrt.IOptimizationProfile, input: str, min: tensorrt.Dims, opt: tensorrt.Dims,
        max: tensorrt.Dims) -> None"""

    def get_tensor_shape(self, *args, **kwargs):
        """get_tensor_shape(*args, **kwargs)
Overloaded function.

1. get_tensor_shape(self: tensorrt.ICudaEngine, name: str) -> tensorrt.Dims

2. get_tensor_shape(self: tensorrt.ICudaEngine, name: str, profile: Dict[str, int] = {}) -> tensorrt.Dims
"""

    num_io_tensors = property(lambda self: 0, doc=None)


_RealLike.set_shape.__doc__ = _RealLike.set_shape.__doc__.replace("\n        ", " ")
_RealLike.num_io_tensors.fget.__doc__ = "(arg0: tensorrt.ICudaEngine) -> int\n"


def _fake(**members):
    return type("Fake", (), members)


def test_comparison_reports_drift():
    """The fake-vs-real comparison catches a wrong parameter name, a missing default, a wrong return type, a
    method that is a property, and a name that does not exist."""
    def set_shape(self, input, min, opt, max) -> None: ...  # noqa: A002
    def get_tensor_shape(self, name) -> Dims: ...  # noqa: F821 - a string annotation, never evaluated
    def num_io_tensors(self) -> int: ...

    good = _fake(set_shape=set_shape, get_tensor_shape=get_tensor_shape, num_io_tensors=property(num_io_tensors))
    assert probe.compare_class(good, _RealLike, "X", constructed=False) == []

    def renamed(self, name, min, opt, max) -> None: ...  # noqa: A002
    def returns_list(self, name) -> list: ...
    def extra_default(self, name, profile) -> Dims: ...  # noqa: F821
    bad = _fake(set_shape=renamed, get_tensor_shape=returns_list, num_io_tensors=num_io_tensors,
                execute_async_v2=set_shape)
    problems = probe.compare_class(bad, _RealLike, "X", constructed=False)
    assert len(problems) == 4, problems
    assert any("X.set_shape" in p for p in problems) and any("X.get_tensor_shape" in p for p in problems)
    assert any("X.num_io_tensors is a method in the fake" in p for p in problems)
    assert any("X.execute_async_v2 does not exist" in p for p in problems)
    assert probe.compare_class(_fake(get_tensor_shape=extra_default), _RealLike, "X", constructed=False)


def test_signature_parsing():
    assert probe.real_signatures(_RealLike.get_tensor_shape, "get_tensor_shape") == [
        ([("name", False)], "Dims"), ([("name", False), ("profile", True)], "Dims")]
    assert probe._type_name("tensorrt_bindings.tensorrt.ICudaEngine") == "CudaEngine"
    assert probe._type_name("nvonnxparser::IParserError") == "ParserError"
    assert probe._type_name("INT8") == "INT8" and probe._type_name("bool") == "bool"
