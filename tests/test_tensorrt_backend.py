"""TensorRT backend: everything that can be checked without TensorRT or a GPU.

NOT EXECUTED HERE: the real TensorRT build and run path (no GPU, no libnvinfer); scripts/gpu_check.sh runs it
on a GPU machine. The pure helpers (cache key, cache reuse, dtype mapping, profiles, precision, Q/DQ
detection, feed validation) are tested directly. The orchestration in `TensorRTBackend` (build -> cache ->
load -> run -> chunk -> rebuild) runs against the fakes in tests/fake_tensorrt.py, whose names, signatures
and errors tests/test_tensorrt_api.py checks against the real TensorRT 10.3 / 11.x bindings and cuda-python:
they check our control flow and data movement, not TensorRT's numerics or kernels.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from fake_tensorrt import MAGIC, NULLPTR, FakeCudart, make_fake_trt

from lldif_edge.errors import BackendError
from lldif_edge.package import CalibrationReport
from lldif_edge.runtimes import tensorrt_backend as tb
from lldif_edge.runtimes import tensorrt_engine as te

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(autouse=True)
def _fresh_probe():
    tb._probe.cache_clear()
    yield
    tb._probe.cache_clear()


# --------------------------------------------------------------------------------------- small ONNX files
def _affine_onnx(path: Path) -> Path:
    """y = 2 * x + s with x: (N, 3) dynamic batch, s: (1, 3) static."""
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "s"], ["y"])], "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], [two])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _qdq_onnx(path: Path, zp_type=TensorProto.INT8, zp: int = 0) -> Path:
    """x -> QuantizeLinear -> DequantizeLinear -> Relu -> y: an explicitly quantised graph (symmetric int8 by
    default, as TensorRT wants; uint8 or a non-zero zero point as ONNX Runtime's CPU target writes)."""
    inits = [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1]),
             helper.make_tensor("zp", zp_type, [], [zp])]
    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["dq"]),
         helper.make_node("Relu", ["dq"], ["y"])], "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# ------------------------------------------------------------------------------------------- pure helpers
BASE = dict(onnx_sha256="ab" * 32, gpu_name="Orin", compute_capability="8.7", trt_version="10.3.0",
            precision="fp16", max_batch=32, opt_batch=1)


def test_cache_key_changes_with_each_component():
    """Each key component (ONNX sha256, GPU, compute capability, TensorRT, precision, profile) matters."""
    key = te.engine_cache_key(**BASE)
    assert key == te.engine_cache_key(**BASE) and len(key) == 24 and int(key, 16) >= 0
    assert key == te.engine_cache_key(**{**BASE, "compute_capability": (8, 7)})  # same value, other spelling
    changes = dict(onnx_sha256="cd" * 32, gpu_name="RTX 4090", compute_capability="8.9", trt_version="10.7.0",
                   precision="int8", max_batch=16, opt_batch=4)
    keys = {key}
    for field, value in changes.items():
        k = te.engine_cache_key(**{**BASE, field: value})
        assert k != key, field
        keys.add(k)
    assert len(keys) == len(changes) + 1


def test_timing_cache_key_ignores_the_onnx_file():
    a = te.timing_cache_key("Orin", "8.7", "10.3.0", "fp16")
    assert a == te.timing_cache_key("Orin", (8, 7), "10.3.0", "fp16")
    assert a != te.timing_cache_key("Orin", "8.7", "10.4.0", "fp16")
    assert a != te.timing_cache_key("Orin", "8.7", "10.3.0", "fp32")
    assert a != te.timing_cache_key("Thor", "8.7", "10.3.0", "fp16")


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("LLDIF_EDGE_CACHE", str(tmp_path / "c"))
    assert te.cache_dir() == tmp_path / "c" / "tensorrt"
    assert te.cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("LLDIF_EDGE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert te.cache_dir() == tmp_path / "home" / ".cache" / "lldif-edge" / "tensorrt"


def test_cached_engine_reuse_decision(tmp_path):
    fields = te.engine_fields(**BASE)
    engine, meta = tmp_path / "g.engine", tmp_path / "g.json"
    assert te.cached_engine_is_reusable(engine, meta, fields) == (False, "no cached engine")
    engine.write_bytes(b"plan")
    ok, why = te.cached_engine_is_reusable(engine, meta, fields)
    assert not ok and "missing" in why

    te.write_cached_engine(engine, meta, b"engine-bytes", fields)
    assert te.cached_engine_is_reusable(engine, meta, fields) == (True, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.engine", "g.json"]  # no temporary files left

    other = te.engine_fields(**{**BASE, "trt_version": "10.4.0"})
    ok, why = te.cached_engine_is_reusable(engine, meta, other)
    assert not ok and "another" in why

    engine.write_bytes(b"engine-bytez")  # same size, other content
    ok, why = te.cached_engine_is_reusable(engine, meta, fields)
    assert not ok and "corrupt" in why
    engine.write_bytes(b"engine")  # truncated
    assert not te.cached_engine_is_reusable(engine, meta, fields)[0]

    te.write_cached_engine(engine, meta, b"engine-bytes", fields)
    meta.write_text("{not json")
    ok, why = te.cached_engine_is_reusable(engine, meta, fields)
    assert not ok and "unreadable" in why


def test_atomic_write_replaces_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "f.bin"
    te.atomic_write_bytes(target, b"one")
    te.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(te.os, "replace", boom)
    with pytest.raises(OSError):
        te.atomic_write_bytes(target, b"three")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


@pytest.mark.parametrize("name, want", [("FLOAT", np.float32), ("HALF", np.float16), ("INT8", np.int8),
                                        ("INT32", np.int32), ("INT64", np.int64), ("BOOL", np.bool_),
                                        ("UINT8", np.uint8)])
def test_dtype_mapping(name, want):
    assert tb.numpy_dtype(name) == np.dtype(want)
    assert tb.numpy_dtype(f"DataType.{name}") == np.dtype(want)
    assert tb.numpy_dtype(types.SimpleNamespace(name=name)) == np.dtype(want)  # like a pybind11 enum member


def test_dtype_mapping_rejects_types_numpy_lacks():
    for name in ("BF16", "FP8", "INT4"):
        with pytest.raises(BackendError, match=name):
            tb.numpy_dtype(name)


def test_parse_device():
    assert [tb.parse_device(d) for d in (None, "cuda", "GPU", "cuda:1", "gpu:2")] == [0, 0, 0, 1, 2]
    for bad in ("cpu", "cuda:x", "dla:0"):
        with pytest.raises(BackendError):
            tb.parse_device(bad)


def test_parse_options(monkeypatch):
    monkeypatch.delenv(tb.PRECISION_ENV, raising=False)
    o = tb.parse_options({})
    assert (o["precision"], o["max_batch"], o["opt_batch"], o["rebuild"]) == ("auto", 32, 1, False)
    monkeypatch.setenv(tb.PRECISION_ENV, "FP16")
    assert tb.parse_options({})["precision"] == "fp16"
    assert tb.parse_options({"precision": "int8"})["precision"] == "int8"  # the option beats the environment
    assert tb.parse_options({"max_batch": "8", "opt_batch": 4})["max_batch"] == 8
    for bad in ({"precision": "bf16"}, {"max_batch": 0}, {"opt_batch": 64}, {"workspace_mb": -1},
                {"max_batch": "many"}, {"intra_op_num_threads": 2}):
        with pytest.raises(BackendError) as e:
            tb.parse_options(bad)
        assert "\n" not in str(e.value)


def test_resolve_precision_table():
    assert te.resolve_precision("auto", False) == ("fp32", None)
    assert te.resolve_precision("auto", True) == ("int8", None)
    assert te.resolve_precision("fp16", False) == ("fp16", None)
    assert te.resolve_precision("int8", True) == ("int8", None)
    eff, warn = te.resolve_precision("int8", False)
    assert eff == "fp16" and "Q/DQ" in warn
    eff, warn = te.resolve_precision("fp32", True)
    assert eff == "int8" and "quantised" in warn
    assert te.builder_flags("fp32") == [] and te.builder_flags("fp16") == ["FP16"]
    assert te.builder_flags("int8") == ["INT8", "FP16"]


def test_profile_shapes():
    got = te.profile_shapes({"cond": (-1, 64), "start_noise": (1, 16)}, opt_batch=1, max_batch=32)
    assert got == {"cond": ((1, 64), (1, 64), (32, 64))}
    assert te.profile_shapes({"image": [-1, 1, 48, 48]}, 4, 8)["image"] == ((1, 1, 48, 48), (4, 1, 48, 48),
                                                                             (8, 1, 48, 48))
    with pytest.raises(BackendError, match="only the batch axis"):
        te.profile_shapes({"image": (-1, 1, -1, 48)}, 1, 8)
    with pytest.raises(BackendError):
        te.profile_shapes({"image": (-1, 3)}, 9, 8)


def test_batch_chunks():
    assert tb.batch_chunks(70, 32) == [slice(0, 32), slice(32, 64), slice(64, 70)]
    assert tb.batch_chunks(5, 32) == [slice(0, 5)]
    with pytest.raises(BackendError):
        tb.batch_chunks(0, 32)


def test_validate_feeds():
    f32 = np.dtype(np.float32)
    specs = [tb.TensorSpec("x", f32, (-1, 3)), tb.TensorSpec("s", f32, (1, 3))]
    s = np.zeros((1, 3), np.float32)
    assert tb.validate_feeds({"x": np.zeros((5, 3), np.float32), "s": s}, specs) == 5
    cases = [({"x": np.zeros((5, 3), np.float32)}, "missing"),
             ({"x": np.zeros((5, 3), np.float32), "s": s, "z": s}, "unexpected"),
             ({"x": np.zeros((5, 3), np.float64), "s": s}, "float32"),
             ({"x": np.zeros((5, 4), np.float32), "s": s}, r"\(N, 3\)"),
             ({"x": np.zeros((5, 3, 1), np.float32), "s": s}, "shape"),
             ({"x": np.zeros((0, 3), np.float32), "s": s}, "empty"),
             ({"x": [[0.0, 0.0, 0.0]], "s": s}, "numpy array"),
             ({"x": np.zeros((5, 3), np.float32), "s": np.zeros((2, 3), np.float32)}, "shape")]
    for feeds, msg in cases:
        with pytest.raises(BackendError, match=msg) as e:
            tb.validate_feeds(feeds, specs)
        assert "\n" not in str(e.value)
    two = [tb.TensorSpec("a", np.dtype(np.float32), (-1,)), tb.TensorSpec("b", np.dtype(np.float32), (-1,))]
    with pytest.raises(BackendError, match="disagree"):
        tb.validate_feeds({"a": np.zeros(2, np.float32), "b": np.zeros(3, np.float32)}, two)


# ---------------------------------------------------------------------------------------- Q/DQ detection
def test_qdq_detection_with_onnx(tmp_path):
    assert te.onnx_has_qdq(_qdq_onnx(tmp_path / "q.onnx")) is True
    assert te.onnx_has_qdq(_affine_onnx(tmp_path / "a.onnx")) is False


def test_qdq_detection_in_a_subgraph(tmp_path):
    inner = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "sc"], ["o"])], "then", [],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])],
        [helper.make_tensor("w", TensorProto.INT8, [2], [1, 2]),
         helper.make_tensor("sc", TensorProto.FLOAT, [], [0.5])])
    other = helper.make_graph([helper.make_node("Identity", ["k"], ["o2"])], "else", [],
                              [helper.make_tensor_value_info("o2", TensorProto.FLOAT, [2])],
                              [helper.make_tensor("k", TensorProto.FLOAT, [2], [0.0, 0.0])])
    if_node = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=other)
    graph = helper.make_graph([if_node], "g",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "if.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert te.qdq_from_onnx(path) is True


def test_qdq_detection_without_onnx(tmp_path, monkeypatch):
    """Without `onnx` (a runtime-only install): the manifest's precision decides, else a byte scan."""
    q, a = _qdq_onnx(tmp_path / "q.onnx"), _affine_onnx(tmp_path / "a.onnx")
    monkeypatch.setattr(te, "qdq_from_onnx", lambda path: None)
    assert te.onnx_has_qdq(q) is True and te.onnx_has_qdq(a) is False  # byte scan
    assert te.qdq_from_bytes(q, chunk=7) is True  # tokens split across read chunks are still found
    assert te.onnx_has_qdq(a, manifest_precision="int8") is True  # the option
    assert te.onnx_has_qdq(q, manifest_precision="fp32") is False
    (tmp_path / "manifest.json").write_text(json.dumps({"graphs": {"llformer": {"file": "a.onnx",
                                                                                "precision": "int8"}}}))
    assert te.onnx_has_qdq(a) is False  # a manifest beside the file is not read: Pipeline passes what counts


def test_qdq_compatibility_with_tensorrt(tmp_path, monkeypatch):
    """TensorRT's explicit quantisation needs symmetric int8 Q/DQ; the CPU target's uint8 is refused."""
    assert te.qdq_incompatibility(_qdq_onnx(tmp_path / "ok.onnx")) is None
    assert "uint8" in te.qdq_incompatibility(_qdq_onnx(tmp_path / "u8.onnx", TensorProto.UINT8, 128))
    assert "non-zero" in te.qdq_incompatibility(_qdq_onnx(tmp_path / "nz.onnx", TensorProto.INT8, 3))
    no_zp = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "scale"], ["q"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("q", TensorProto.UINT8, [2])],
                              [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])])
    onnx.save(helper.make_model(no_zp, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "n.onnx"))
    assert "uint8" in te.qdq_incompatibility(tmp_path / "n.onnx")

    # without onnx: the manifest's calibration record decides
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    u8 = _qdq_onnx(tmp_path / "m.onnx", TensorProto.UINT8, 128)
    monkeypatch.setattr(builtins, "__import__", no_onnx)
    assert te.qdq_incompatibility(u8) is None  # no calibration record: nothing to go on, TensorRT will say
    assert "uint8" in te.qdq_incompatibility(u8, CalibrationReport(target="cpu", activation_type="uint8"))
    assert te.qdq_incompatibility(u8, CalibrationReport(target="tensorrt", activation_type="int8")) is None


# ------------------------------------------------------------------------------ without tensorrt (here)
@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_is_a_clear_one_line_error(tmp_path):
    """The real situation on this machine: no tensorrt package."""
    ok, why = tb.TensorRTBackend.availability()
    assert ok is False and tb.INSTALL_HINT in why
    assert tb.TensorRTBackend.devices() == []
    with pytest.raises(BackendError) as e:
        tb.TensorRTBackend(_affine_onnx(tmp_path / "a.onnx"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "pip install lldif-edge[tensorrt], or on Jetson use JetPack's TensorRT: see docs/jetson.md" in msg


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here")
def test_registry_reports_missing_tensorrt():
    from lldif_edge.runtimes.registry import backend_names, get_backend

    if "tensorrt" not in backend_names():
        pytest.skip("tensorrt is not registered yet")
    with pytest.raises(BackendError, match=r"pip install lldif-edge\[tensorrt\]"):
        get_backend("tensorrt")


def test_runtime_import_does_not_pull_torch():
    import subprocess
    import sys

    code = "import sys, lldif_edge.runtimes.tensorrt_backend; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------ fakes of tensorrt and cuda-python
# tests/fake_tensorrt.py; tests/test_tensorrt_api.py checks them against the real modules.


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Installs fake tensorrt + cuda-python; returns (trt, cudart, make_backend)."""
    monkeypatch.delenv(tb.PRECISION_ENV, raising=False)
    cudart = FakeCudart()
    trt = make_fake_trt(cudart)
    monkeypatch.setattr(tb, "_import_trt", lambda: trt)
    monkeypatch.setattr(tb, "_import_cudart", lambda: cudart)
    tb._probe.cache_clear()
    model = _affine_onnx(tmp_path / "affine.onnx")

    def make(path=model, **options):
        options.setdefault("cache_dir", tmp_path / "cache")
        return tb.TensorRTBackend(path, **options)

    return trt, cudart, make


def _feeds(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 3)).astype(np.float32), "s": np.array([[1, 2, 3]], np.float32)}


def test_fake_build_cache_and_run(fake, tmp_path):
    """Fake TensorRT: first construction builds and caches, the second loads the cached engine."""
    trt, cudart, make = fake
    assert tb.TensorRTBackend.availability() == (True, "") and tb.TensorRTBackend.devices() == ["cuda:0"]
    b = make()
    assert len(trt.builds) == 1 and b.engine_source.startswith("built")
    build = trt.builds[0]
    assert build["flags"] == [] and b.precision == "fp32"  # auto on an unquantised graph
    assert build["profile"] == {"x": ((1, 3), (1, 3), (32, 3))}  # static input 's' needs no profile entry
    assert b.input_names == ["x", "s"] and b.output_names == ["y"]
    f = _feeds(3)
    out = b.run(f)
    np.testing.assert_allclose(out["y"], 2 * f["x"] + f["s"], rtol=1e-6)
    d = b.describe()
    assert "Fake Orin" in d and "10.3.0" in d and "fp32" in d and "sm 8.7" in d

    cache = tmp_path / "cache"
    engines = list(cache.glob("affine-*.engine"))
    assert len(engines) == 1 and engines[0].with_suffix(".json").is_file()
    assert len(list(cache.glob("timing-*.cache"))) == 1
    assert not list(cache.glob(".*tmp"))

    b2 = make()
    assert len(trt.builds) == 1 and b2.engine_source == "cached"
    np.testing.assert_allclose(b2.run(f)["y"], out["y"])


def test_fake_timing_cache_is_shared_between_graphs(fake, tmp_path):
    trt, _, make = fake
    make()
    other = _affine_onnx(tmp_path / "other.onnx")
    make(other, max_batch=8)  # another engine (other file name, profile), same GPU/TensorRT/precision
    assert len(trt.builds) == 2
    assert trt.builds[0]["timing_in"] == b"" and trt.builds[1]["timing_in"] == b"+"


def test_fake_rebuilds_corrupt_or_unloadable_engines(fake, tmp_path, caplog):
    trt, _, make = fake
    b = make()
    engine = b.engine_path
    data = engine.read_bytes()
    engine.write_bytes(data[:-5] + b"XXXXX")  # corrupt: the sidecar's sha256 no longer matches
    with caplog.at_level(logging.WARNING, logger=tb.__name__):
        b2 = make()
    assert len(trt.builds) == 2 and b2.engine_source.startswith("built")
    assert "not reusable" in caplog.text and "corrupt" in caplog.text
    caplog.clear()

    # Intact on disk (sidecar matches) yet TensorRT refuses it, e.g. a plan from an incompatible build.
    te.write_cached_engine(engine, engine.with_suffix(".json"), b"garbage", b.fields)
    with caplog.at_level(logging.WARNING, logger=tb.__name__):
        b3 = make()
    assert len(trt.builds) == 3 and "cannot be loaded" in caplog.text
    np.testing.assert_allclose(b3.run(_feeds(2))["y"], b.run(_feeds(2))["y"])
    assert engine.read_bytes().startswith(MAGIC)  # the rebuilt engine replaced the garbage


def test_fake_key_changes_rebuild(fake):
    trt, _, make = fake
    a = make()
    b = make(precision="fp16")
    c = make(max_batch=8)
    d = make(rebuild=True)
    assert len(trt.builds) == 4
    assert len({a.engine_path, b.engine_path, c.engine_path}) == 3 and d.engine_path == a.engine_path
    assert trt.builds[1]["flags"] == ["FP16"] and b.precision == "fp16"
    assert trt.builds[2]["profile"]["x"][2] == (8, 3)


def test_fake_int8_from_qdq(fake, tmp_path, caplog):
    trt, _, make = fake
    q = _qdq_onnx(tmp_path / "q.onnx")
    assert make(q).precision == "int8" and trt.builds[-1]["flags"] == ["INT8", "FP16"]
    with caplog.at_level(logging.WARNING, logger=tb.__name__):
        assert make(precision="int8").precision == "fp16"  # unquantised graph: no implicit calibration
    assert "Q/DQ" in caplog.text and trt.builds[-1]["flags"] == ["FP16"]


def test_fake_refuses_cpu_target_int8_before_building(fake, tmp_path):
    trt, _, make = fake
    with pytest.raises(BackendError, match="calibration target") as e:
        make(_qdq_onnx(tmp_path / "u8.onnx", TensorProto.UINT8, 128))
    assert "\n" not in str(e.value) and trt.builds == []


def test_fake_trt11_without_precision_flags(monkeypatch, tmp_path, caplog):
    """TensorRT 11 removed BuilderFlag.FP16/INT8: Q/DQ still builds int8 with no flags, fp16 is refused with
    one line, and int8 on an unquantised graph falls back to fp32 (not to the fp16 it cannot build)."""
    monkeypatch.delenv(tb.PRECISION_ENV, raising=False)
    cudart = FakeCudart()
    trt = make_fake_trt(cudart, version="11.4.0.106", weak_typing=False)
    monkeypatch.setattr(tb, "_import_trt", lambda: trt)
    monkeypatch.setattr(tb, "_import_cudart", lambda: cudart)
    assert not te.weakly_typed(trt) and te.weakly_typed(make_fake_trt(cudart))
    b = tb.TensorRTBackend(_qdq_onnx(tmp_path / "q.onnx"), cache_dir=tmp_path / "c")
    assert b.precision == "int8" and trt.builds[-1]["flags"] == []
    a = _affine_onnx(tmp_path / "a.onnx")
    with pytest.raises(BackendError, match="11.4.0.106 has no FP16 builder flag") as e:
        tb.TensorRTBackend(a, cache_dir=tmp_path / "c", precision="fp16")
    assert "\n" not in str(e.value)
    with caplog.at_level(logging.WARNING, logger=tb.__name__):
        assert tb.TensorRTBackend(a, cache_dir=tmp_path / "c", precision="int8").precision == "fp32"
    assert "building fp32" in caplog.text and trt.builds[-1]["flags"] == []
    assert te.builder_flags("int8", weak_typing=False) == [] and te.builder_flags("fp32", False) == []


def test_fake_covers_every_name_the_backend_uses():
    """The fakes provide all of TRT_API (and test_tensorrt_api.py checks each fake name against the real one)."""
    assert tb.missing_trt_api(make_fake_trt(FakeCudart())) == []
    assert tb.missing_trt_api(make_fake_trt(FakeCudart(), weak_typing=False)) == []
    assert len(set(tb.TRT_API)) == len(tb.TRT_API)


def test_fake_failed_tensorrt_objects_are_one_line_errors(monkeypatch, tmp_path):
    """The bindings raise TypeError('...factory function returned nullptr') when libnvinfer cannot create a
    runtime or builder (seen with the real 10.3 and 11.4 modules): a one-line BackendError instead."""
    monkeypatch.delenv(tb.PRECISION_ENV, raising=False)
    cudart = FakeCudart()
    a = _affine_onnx(tmp_path / "a.onnx")
    monkeypatch.setattr(tb, "_import_cudart", lambda: cudart)
    for what, cls in (("runtime", "Runtime"), ("builder", "Builder"), ("ONNX parser", "OnnxParser")):
        trt = make_fake_trt(cudart, create_fails=(cls,))
        monkeypatch.setattr(tb, "_import_trt", lambda trt=trt: trt)
        tb._probe.cache_clear()
        with pytest.raises(BackendError, match=f"cannot create the TensorRT {what}") as e:
            tb.TensorRTBackend(a, cache_dir=tmp_path / "c", rebuild=True)
        assert NULLPTR in str(e.value) and "\n" not in str(e.value) and trt.builds == []


def test_fake_chunks_batches_above_max_batch(fake):
    _, _, make = fake
    b = make(max_batch=4)
    f = _feeds(10, seed=3)
    np.testing.assert_allclose(b.run(f)["y"], 2 * f["x"] + f["s"], rtol=1e-6)


def test_fake_buffers_are_reused_and_grown(fake):
    _, cudart, make = fake
    b = make()
    b.run(_feeds(4))
    after_first = cudart.mallocs
    assert after_first == 3  # x, s, y
    b.run(_feeds(4))
    b.run(_feeds(2))
    assert cudart.mallocs == after_first  # same or smaller shapes reuse the buffers
    b.run(_feeds(200))  # > 256-byte minimum: x and y grow, s stays
    assert cudart.mallocs == after_first + 2 and cudart.frees == 2
    b.close()
    assert cudart.mem == {}
    with pytest.raises(BackendError, match="closed"):
        b.run(_feeds(1))


def test_fake_run_is_thread_safe(fake):
    _, _, make = fake
    b = make()
    errors = []

    def work(seed):
        try:
            for k in range(20):
                f = _feeds(1 + (seed + k) % 5, seed=seed * 100 + k)
                np.testing.assert_allclose(b.run(f)["y"], 2 * f["x"] + f["s"], rtol=1e-6)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_fake_input_errors(fake):
    _, _, make = fake
    b = make()
    with pytest.raises(BackendError, match="float32"):
        b.run({"x": np.zeros((2, 3)), "s": np.zeros((1, 3), np.float32)})
    with pytest.raises(BackendError, match="unknown option"):
        make(intra_op_num_threads=2)
    with pytest.raises(BackendError, match="no CUDA device 3"):
        make(device="cuda:3")
    with pytest.raises(BackendError, match="does not exist"):
        make(Path("/nonexistent/x.onnx"))


def test_fake_availability_reasons(monkeypatch):
    cudart = FakeCudart(n_gpus=0)
    monkeypatch.setattr(tb, "_import_cudart", lambda: cudart)
    monkeypatch.setattr(tb, "_import_trt", lambda: make_fake_trt(cudart))
    ok, why = tb.TensorRTBackend.availability()
    assert not ok and "no CUDA GPU" in why

    tb._probe.cache_clear()  # no driver: what real cuda-python says on this machine
    monkeypatch.setattr(tb, "_import_cudart", lambda: FakeCudart(driver=False))
    ok, why = tb.TensorRTBackend.availability()
    assert not ok and why == ("no usable CUDA GPU (cudaGetDeviceCount failed: CUDA driver version is "
                              "insufficient for CUDA runtime version)")

    tb._probe.cache_clear()  # cuda-python 12.6 (JetPack 6's) raises instead when libcuda.so.1 is absent
    no_libcuda = FakeCudart()

    def raises():
        raise RuntimeError("Failed to dlopen libcuda.so.1")

    no_libcuda.cudaGetDeviceCount = raises
    monkeypatch.setattr(tb, "_import_cudart", lambda: no_libcuda)
    assert tb.TensorRTBackend.availability() == (False, "no usable CUDA GPU (Failed to dlopen libcuda.so.1)")
    monkeypatch.setattr(tb, "_import_cudart", lambda: cudart)

    tb._probe.cache_clear()  # a future TensorRT that dropped a name the backend calls
    trt = make_fake_trt(cudart, version="12.0.0")
    del trt.IExecutionContext.execute_async_v3
    monkeypatch.setattr(tb, "_import_trt", lambda: trt)
    ok, why = tb.TensorRTBackend.availability()
    assert not ok and why == ("TensorRT 12.0.0 lacks IExecutionContext.execute_async_v3 (this backend supports "
                              "the TensorRT 10 and 11 Python API)")

    tb._probe.cache_clear()
    monkeypatch.setattr(tb, "_import_trt", lambda: make_fake_trt(cudart, version="8.6.1"))
    ok, why = tb.TensorRTBackend.availability()
    assert not ok and "8.6.1" in why and ">= 10" in why

    def no_cuda():
        raise ImportError("No module named 'cuda'")

    tb._probe.cache_clear()
    monkeypatch.setattr(tb, "_import_trt", lambda: make_fake_trt(cudart))
    monkeypatch.setattr(tb, "_import_cudart", no_cuda)
    ok, why = tb.TensorRTBackend.availability()
    assert not ok and "cuda-python" in why


def test_fake_parse_and_build_failures_are_one_line(fake, monkeypatch, tmp_path):
    trt, _, make = fake

    class BadParser(trt.OnnxParser):
        num_errors = 2

        def parse_from_file(self, model):
            return False

        def get_error(self, index):
            return trt.ParserError(f"In node {index} (Foo): UNSUPPORTED_NODE: no importer\nstack...")

    good_parser = trt.OnnxParser
    monkeypatch.setattr(trt, "OnnxParser", BadParser)
    with pytest.raises(BackendError, match=r"cannot parse affine.onnx: In node 0 .* \(and 1 more\)") as e:
        make()
    assert "\n" not in str(e.value)

    monkeypatch.setattr(trt, "OnnxParser", good_parser)
    monkeypatch.setattr(trt.Builder, "build_serialized_network", lambda self, network, config: None)
    with pytest.raises(BackendError, match="building an engine for affine.onnx failed"):
        make()
    assert not list((tmp_path / "cache").glob("*.engine"))  # nothing half-written is left to be reused
