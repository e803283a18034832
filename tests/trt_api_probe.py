"""Compare the TensorRT backend and the test fakes with a real `tensorrt` module; print one JSON report.

    python tests/trt_api_probe.py [--trt DIR] [--cuda DIR ...]

--trt DIR: a folder holding an unpacked `tensorrt_bindings` package (from a tensorrt-cu12-bindings wheel,
with stand-ins for libnvinfer's C entry points beside tensorrt.so: see tests/test_tensorrt_api.py); without
it the installed `tensorrt` is used (on a Jetson or a GPU machine). --cuda DIR: folders with unpacked
cuda-bindings (and cuda-pathfinder) wheels; without them an installed cuda-python is used if there is one.

It runs in its own process because the bindings are built for one Python version, and because of the
stand-in libraries. What it checks:
* `fake_vs_real`: every class, enum member, method and property of tests/fake_tensorrt.py exists in the
  real module, with the same kind (method or property), parameter names, defaults and return type; the same
  for FakeCudart against `cuda.bindings.runtime`;
* `missing_api`: the backend's TRT_API names the real module lacks;
* `weak_typing`, `watch`: which of the names that differ between TensorRT 10 and 11 the module has;
* `dtypes`, `dims`, `logger`: the backend's dtype mapping on real DataType members, real Dims and Logger;
* `fp16`: the backend constructed with precision fp16 on the real module (and a fake GPU): with stand-in
  libraries it must fail at the first TensorRT object with a one-line error (10.x), or be refused before
  that because 11.x has no FP16 flag;
* `real_cuda_probe`: the backend's availability with the real cuda-python (here: no driver).
"""

from __future__ import annotations

import argparse
import enum
import importlib
import inspect
import json
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Names that differ between TensorRT 10 and 11 (11 removed weak typing and implicit-batch leftovers).
WATCH = ("BuilderFlag.FP16", "BuilderFlag.INT8", "BuilderFlag.BF16", "BuilderFlag.FP8",
         "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
         "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "IBuilderConfig.int8_calibrator",
         "Builder.platform_has_fast_fp16", "Builder.platform_has_fast_int8", "DataType.FP4",
         "IExecutionContext.execute_async_v3", "IExecutionContext.execute_v2")


def _lookup(root, dotted: str):
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _split_params(text: str) -> list[str]:
    """Split a pybind11 parameter list at top-level commas (types nest [], (), <>)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _type_name(text: str) -> str:
    """'tensorrt_bindings.tensorrt.ICudaEngine' and 'nvonnxparser::IParserError' -> 'CudaEngine', 'ParserError'."""
    name = text.strip().split("::")[-1].split(".")[-1].strip("'\"")
    return name[1:] if re.match(r"I[A-Z][a-z]", name) else name


def real_signatures(func, name: str) -> list[tuple[list[tuple[str, bool]], str]]:
    """[(params without self as (name, has default), return type)] for each overload in a pybind11 docstring."""
    doc = getattr(func, "__doc__", None) or ""
    out = []
    for params, ret in re.findall(rf"^(?:\d+\. )?{re.escape(name)}\((.*)\) -> (.+)$", doc, re.M):
        parts = _split_params(params)[1:]  # drop self
        out.append(([(p.split(":")[0].split("=")[0].strip(), "=" in p) for p in parts], _type_name(ret)))
    return out


def fake_signature(func) -> tuple[list[tuple[str, bool]], str]:
    sig = inspect.signature(func)
    params = [(p.name, p.default is not inspect.Parameter.empty) for p in list(sig.parameters.values())[1:]]
    ret = sig.return_annotation
    ret = "None" if ret in (None, "None") else _type_name(ret if isinstance(ret, str) else ret.__name__)
    return params, ret


def compare_class(fake, real, qual: str, constructed: bool) -> list[str]:
    problems = []
    if isinstance(fake, type) and issubclass(fake, enum.Enum):
        members = getattr(real, "__members__", {})
        return [f"{qual}.{m} is not a member of the real enum" for m in fake.__members__ if m not in members]
    for name, attr in vars(fake).items():
        if name.startswith("_") and name not in ("__str__", "__len__", "__getitem__") and not (
                name == "__init__" and constructed):
            continue
        where = f"{qual}.{name}"
        real_attr = inspect.getattr_static(real, name, None)
        if real_attr is None:
            problems.append(f"{where} does not exist in the real module")
        elif isinstance(attr, type):
            problems += compare_class(attr, getattr(real, name), where, constructed=False)
        elif isinstance(attr, property):
            if not isinstance(real_attr, property):
                problems.append(f"{where} is a property in the fake, not in the real module")
                continue
            real_ret = real_signatures(real_attr.fget, "")
            want = _type_name(str(inspect.signature(attr.fget).return_annotation))
            if real_ret and real_ret[0][1] != want:
                problems.append(f"{where} returns {real_ret[0][1]} in the real module, {want} in the fake")
        elif callable(attr):
            if isinstance(real_attr, property):
                problems.append(f"{where} is a method in the fake, a property in the real module")
                continue
            overloads = real_signatures(getattr(real, name), name)
            mine = fake_signature(attr)
            if overloads and mine not in overloads:
                problems.append(f"{where}{mine} matches no real signature {overloads}")
        # plain class attributes (Logger.WARNING): existing is enough
    return problems


def compare_module(fake, real, constructed) -> list[str]:
    """`constructed`: the classes the backend instantiates itself (their __init__ is compared too)."""
    problems = []
    for name, attr in vars(fake).items():
        if isinstance(attr, type):
            real_cls = getattr(real, name, None)
            if real_cls is None:
                problems.append(f"{name} does not exist in the real module")
            else:
                problems += compare_class(attr, real_cls, name, constructed=name in constructed)
    return problems


def compare_cudart(fake_cls, real) -> list[str]:
    problems = []
    for name, attr in vars(fake_cls).items():
        if name.startswith("_"):
            continue
        real_attr = getattr(real, name, None)
        if real_attr is None:
            problems.append(f"cudart.{name} does not exist in cuda-python")
        elif isinstance(attr, type):
            problems += [f"cudart.{name}.{m} does not exist in cuda-python" for m in attr.__members__
                         if not hasattr(real_attr, m)]
        else:
            want = [p for p in inspect.signature(attr).parameters][1:]
            got = list(inspect.signature(real_attr).parameters)
            if want != got:
                problems.append(f"cudart.{name}{tuple(want)} differs from cuda-python's {tuple(got)}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trt", type=Path)
    ap.add_argument("--cuda", type=Path, action="append", default=[])
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    for d in [args.trt, *args.cuda]:
        if d is not None:
            sys.path.insert(0, str(d))
    from fake_tensorrt import FakeCudart, make_fake_trt

    from lldif_edge.errors import BackendError
    from lldif_edge.runtimes import tensorrt_backend as tb
    from lldif_edge.runtimes import tensorrt_engine as te

    trt = importlib.import_module("tensorrt_bindings" if args.trt else "tensorrt")
    report: dict = {"version": trt.__version__, "stand_in_libraries": args.trt is not None}
    weak = tb.weakly_typed(trt)
    report["weak_typing"] = weak
    report["missing_api"] = tb.missing_trt_api(trt)
    report["watch"] = {name: _lookup(trt, name) is not None for name in WATCH}
    report["fake_vs_real"] = compare_module(make_fake_trt(FakeCudart(), weak_typing=weak), trt, tb.TRT_API)

    dtypes = {}
    for member in trt.DataType.__members__.values():
        try:
            dtypes[member.name] = str(tb.numpy_dtype(member))
        except BackendError as e:
            dtypes[member.name] = "error: " + str(e)
    report["dtypes"] = dtypes
    report["dims"] = list(tuple(int(d) for d in trt.Dims([-1, 3])))
    report["logger"] = type(trt.Logger(trt.Logger.WARNING)).__name__
    report["builder_flags"] = {p: [f for f in te.builder_flags(p, weak) if _lookup(trt.BuilderFlag, f) is None]
                               for p in ("fp32", "fp16", "int8")}  # flags the backend sets that are absent

    # The backend itself on the real module, with a fake GPU so that it gets to the TensorRT calls.
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "g.onnx"
        model.write_bytes(b"not parsed: the backend fails or refuses before parsing")
        tb._import_trt = lambda: trt
        real_cudart_import = tb._import_cudart
        tb._import_cudart = FakeCudart
        tb.onnx_has_qdq = lambda path, manifest_precision=None: False
        tb._probe.cache_clear()
        try:
            tb.TensorRTBackend(model, precision="fp16", cache_dir=Path(tmp) / "cache")
            report["fp16"] = "constructed"
        except BackendError as e:
            report["fp16"] = str(e)
        # availability with the real cuda-python, when there is one
        tb._import_cudart = real_cudart_import
        tb._probe.cache_clear()
        try:
            cudart = real_cudart_import()
        except ImportError:
            report["real_cuda"] = None
        else:
            report["real_cuda"] = {"module": cudart.__name__,
                                   "fake_vs_real": compare_cudart(FakeCudart, cudart),
                                   "availability": list(tb.TensorRTBackend.availability())}
            tb._probe.cache_clear()
            tb._import_cudart = lambda: FakeCudart(driver=False)
            report["real_cuda"]["fake_no_driver"] = list(tb.TensorRTBackend.availability())
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
