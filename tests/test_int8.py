"""INT8 export (lldif_edge.calibration): calibration sources, data-free synthesis, QDQ packages, bad inputs.

A tiny model trained for a few seconds on the generated faces of conftest; every export is small and uses few
latency runs. The agreement threshold is stated once (MIN_AGREEMENT).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime.quantization")

from pattern_faces import face_image, make_faces  # noqa: E402

from lldif_edge.calibration.quantize import TensorReader, node_groups, preprocess_graph  # noqa: E402
from lldif_edge.calibration.sources import (  # noqa: E402
    ArraySource,
    FolderSource,
    collect_faces,
    is_crop,
    open_calibration_source,
)
from lldif_edge.errors import DataError, LldifError, PackageError  # noqa: E402
from lldif_edge.export.int8_export import export_int8  # noqa: E402
from lldif_edge.package import load_manifest  # noqa: E402
from lldif_edge.runtimes.pipeline import Pipeline  # noqa: E402

# INT8 vs FP32 top-1 agreement an INT8 package of the tiny model must reach on held-out darkened faces.
MIN_AGREEMENT = 0.85
FAST = dict(latency_runs=10)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, faces_train, faces_val) -> Path:
    from lldif_edge.lldif.train import TrainConfig, train

    out = tmp_path_factory.mktemp("tiny_run")
    return train(TrainConfig(data=str(faces_train), val=str(faces_val), out=str(out), preset="tiny", epochs=2,
                             stage2_epochs=2, batch_size=32))


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    return make_faces(tmp_path_factory.mktemp("int8_eval"), 6, seed=7)


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 else f)
    vw.release()
    return path


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())


def _check_package(out: Path, report: dict, eval_dir: Path) -> Pipeline:
    root, manifest = load_manifest(out)  # every file matches its sha256
    assert manifest["int8_report"]["calibration"] == manifest["calibration"]
    assert set(manifest["graphs"]) == set(manifest["pipeline"])
    assert all(g["precision"] in ("int8", "fp32") for g in manifest["graphs"].values())
    assert any(g["precision"] == "int8" for g in manifest["graphs"].values())
    pipe = Pipeline(out)
    from lldif_edge.data import load_folder

    ds = load_folder(eval_dir, pipe.classes, pipe.input_size, 1)
    probs = pipe.predict(ds.images)
    assert probs.shape == (len(ds), len(pipe.classes)) and np.isfinite(probs).all()
    assert report["eval"]["top1_agreement"] >= MIN_AGREEMENT
    for g in report["graphs"].values():
        assert g["bytes"] > 0 and g["fp32_bytes"] > 0
        assert isinstance(g["ops"]["float_compute_count"], int)
        if g["precision"] == "int8":
            assert g["ops"]["int8_kernel_count"] > 0
    lat = report["latency_ms_per_face"]
    assert lat["fp32"]["end_to_end"] > 0 and lat["int8"]["end_to_end"] > 0
    return pipe


# ---------------------------------------------------------------- whole exports
def test_int8_from_a_folder_measures_mixed_precision(tiny_ckpt, faces_val, eval_dir, tmp_path, caplog):
    out = tmp_path / "pkg"
    with caplog.at_level(logging.WARNING):
        report = export_int8(tiny_ckpt, out, calib=faces_val, calib_count=1000, eval_dir=eval_dir, **FAST)
    assert "only 56 faces" in caplog.text  # fewer faces than asked: a warning, and the export goes on
    cal = report["calibration"]
    assert cal["count"] == 56 and cal["source"] == f"folder {faces_val}"
    assert (cal["activation_type"], cal["weight_type"], cal["target"]) == ("uint8", "int8", "cpu")
    mp = report["mixed_precision"]
    assert {"cond", "denoiser", "cond:Elementwise", "denoiser:Elementwise", "llformer:Elementwise",
            "llformer:LayerNormalization", "llformer:Softmax", "llformer:Gelu", "llformer:ResidualAdd"
            } <= set(mp["kept_float_alone"])
    assert set(mp["only_this_subgraph_int8"]) == {"cond", "denoiser", "llformer"}
    # cpu target: what int8 cannot speed up stays in float before anything is measured; the denoiser (Gemms
    # only) stays FP32 whole
    assert "llformer:ShallowConv" not in mp["kept_float_alone"]
    speed = ["cond:ShallowConv (speed)", "cond:VectorGemm (speed)", "cond:Standardize (speed)", "denoiser (speed)",
             "llformer:ShallowConv (speed)", "llformer:VectorGemm (speed)", "llformer:ActMatMul (speed)",
             "llformer:Standardize (speed)"]
    assert cal["kept_float"] == [*speed, *mp["kept_float"]]
    assert report["graphs"]["denoiser"]["precision"] == "fp32"
    # float convs/matmuls ORT runs: cond's first conv + projection; llformer's first conv, modulation and head
    # Gemms, the two attention matmuls
    for g, n_float in (("cond", 2), ("llformer", 5)):
        if report["graphs"][g]["precision"] == "int8":
            assert report["graphs"][g]["ops"]["float_compute_count"] == n_float
    _check_package(out, report, eval_dir)
    assert "fp32_accuracy" in report["eval"] and "int8_accuracy" in report["eval"]


def test_int8_from_a_video_with_an_override_list(tiny_ckpt, eval_dir, tmp_path):
    rng = np.random.default_rng(3)
    frames = [cv2.resize(face_image(i % 7, rng), (96, 96)) for i in range(40)]  # 96 px: face crops
    video = _write_video(tmp_path / "faces.mp4", frames)
    out = tmp_path / "pkg"
    report = export_int8(tiny_ckpt, out, calib=video, calib_count=20, eval_dir=eval_dir,
                         exclude=["denoiser", "llformer:LayerNormalization"], **FAST)
    assert report["calibration"]["source"] == f"video {video}" and report["calibration"]["count"] == 20
    _, manifest = load_manifest(out)
    assert manifest["graphs"]["denoiser"]["precision"] == "fp32"
    assert manifest["graphs"]["llformer"]["precision"] == "int8"
    excluded = manifest["graphs"]["llformer"]["excluded_nodes"]
    assert excluded and all("LayerNorm" in n or "norm" in n.lower() for n in excluded)
    _check_package(out, report, eval_dir)


def test_int8_keep_float_adds_to_the_measured_choice(tiny_ckpt, eval_dir, tmp_path):
    """keep_float: a group kept in float on top of what the export measures, which still runs."""
    out = tmp_path / "pkg"
    report = export_int8(tiny_ckpt, out, calib=eval_dir, keep_float=["llformer:Softmax"], **FAST)
    mp = report["mixed_precision"]
    assert "kept_float_alone" in mp and mp["forced_float"] == ["llformer:Softmax"]
    assert report["calibration"]["kept_float"][-1] == "llformer:Softmax"
    _, manifest = load_manifest(out)
    excluded = manifest["graphs"]["llformer"]["excluded_nodes"]
    assert any("Softmax" in n for n in excluded)


def test_int8_data_free_for_tensorrt(tiny_ckpt, eval_dir, tmp_path):
    import onnx

    out = tmp_path / "pkg"
    report = export_int8(tiny_ckpt, out, calib_count=32, datafree_steps=15, target="tensorrt", exclude=[],
                         eval_dir=eval_dir, **FAST)
    cal = report["calibration"]
    df = cal["data_free"]
    assert cal["source"].startswith("data-free")
    assert df["synthesis"]["bn_loss_end"] < df["synthesis"]["bn_loss_start"]
    for g in ("cond", "denoiser", "llformer"):
        entry = df["per_subgraph"][g]
        candidates = {"synthesised", "noise_control", "drawn_faces"}
        assert candidates <= set(entry) and entry["chosen"] in candidates
    assert (cal["activation_type"], cal["activation_symmetric"]) == ("int8", True)
    assert not any("ShallowConv" in k for k in cal["kept_float"])  # a cpu speed rule: TensorRT gets all of it
    zero_points = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(out / "llformer.onnx")).graph.initializer
                   if i.name.endswith("zero_point")]
    eight_bit = [z for z in zero_points if z.dtype.itemsize == 1]  # int32 ones belong to the quantized biases
    assert eight_bit
    assert all(z.dtype == np.int8 and not z.any() for z in eight_bit)  # symmetric S8: every zero point is 0
    _check_package(out, report, eval_dir)


# ---------------------------------------------------------------- bad input: one line, nothing written
def test_amx_variant_keeps_the_numbers_and_runs_only_on_ort_with_amx(tiny_ckpt, eval_dir, tmp_path, monkeypatch):
    import onnx

    import lldif_edge.calibration.int8 as int8
    import lldif_edge.runtimes.pipeline

    def cpu(*features):
        return lambda: {"model": "test", "features": list(features)}

    out = tmp_path / "pkg"
    monkeypatch.setattr(int8, "cpu_features", cpu())
    report = export_int8(tiny_ckpt, out, calib=eval_dir, exclude=[], **FAST)
    assert report["calibration"]["onnxruntime_amx_variants"]["written"] == []  # no AMX here: nothing written
    assert not list(out.glob("*.ort-amx.onnx"))

    monkeypatch.setattr(int8, "cpu_features", cpu("avx512_vnni", "amx_int8"))
    monkeypatch.setattr(int8, "VARIANT_MIN_SPEEDUP", 1e9)  # keep whatever the timing says, to test the rest
    report = export_int8(tiny_ckpt, out, calib=eval_dir, exclude=[], force=True, **FAST)
    amx = report["calibration"]["onnxruntime_amx_variants"]
    assert set(amx["written"]) == {"cond", "llformer"} and amx["latency_ms_per_face"]["amx"]["llformer"] > 0
    _, manifest = load_manifest(out)  # variant files are verified against their sha256 too
    variant = out / manifest["graphs"]["llformer"]["variants"]["onnxruntime-cpu-amx"]["file"]

    def conv_weight_zero_points(path):
        m = onnx.load(str(path))
        init = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
        return [init[n.input[2]] for n in m.graph.node if n.op_type == "DequantizeLinear"
                and n.input[0] in init and init[n.input[0]].ndim == 4 and init[n.input[0]].dtype == np.int8]

    assert all(not z.any() for z in conv_weight_zero_points(out / "llformer.onnx"))
    assert all((z == 1).all() for z in conv_weight_zero_points(variant))

    monkeypatch.setattr(lldif_edge.runtimes.pipeline, "cpu_features", cpu("amx_int8"))
    on_amx, main = Pipeline(out), Pipeline(out, variants=False)
    assert on_amx.files["llformer"] == variant.name and main.files["llformer"] == "llformer.onnx"
    assert "ort-amx" in on_amx.describe()
    assert main.graph_path("llformer", "openvino", None).name == "llformer.onnx"
    assert main.graph_path("llformer", "onnxruntime", "cuda").name == "llformer.onnx"
    x = main.preprocess(load_folder_images(eval_dir))
    np.testing.assert_allclose(on_amx.logits(x), main.logits(x), atol=1e-5)  # same weights, other kernel
    monkeypatch.setattr(lldif_edge.runtimes.pipeline, "cpu_features", cpu("avx512_vnni"))
    assert Pipeline(out).files["llformer"] == "llformer.onnx"

    variant.write_bytes(variant.read_bytes()[:-1])
    with pytest.raises(PackageError, match="sha256"):
        load_manifest(out)


def load_folder_images(root: Path) -> np.ndarray:
    from lldif_edge.data import FER_CLASSES, load_folder

    return load_folder(root, FER_CLASSES, 48, 1).images


def test_empty_calibration_folder(tiny_ckpt, tmp_path):
    (tmp_path / "empty" / "happy").mkdir(parents=True)
    out = tmp_path / "pkg"
    with pytest.raises(DataError, match="has no images"):
        export_int8(tiny_ckpt, out, calib=tmp_path / "empty")
    assert _nothing_written(out)


def test_unreadable_video(tiny_ckpt, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    out = tmp_path / "pkg"
    with pytest.raises(DataError, match="cannot read video"):
        export_int8(tiny_ckpt, out, calib=bad)
    assert _nothing_written(out)


def test_camera_that_does_not_open(tiny_ckpt, tmp_path):
    out = tmp_path / "pkg"
    with pytest.raises(DataError, match="camera 97 does not open"):
        export_int8(tiny_ckpt, out, calib_camera=97)
    assert _nothing_written(out)


def test_no_face_in_any_frame(tiny_ckpt, tmp_path):
    ramp = np.tile(np.linspace(0, 60, 320, dtype=np.float32), (240, 1))
    frames = [(ramp + i).astype(np.uint8) for i in range(6)]  # 320x240 photos of nothing
    video = _write_video(tmp_path / "empty.mp4", frames)
    out = tmp_path / "pkg"
    with pytest.raises(DataError, match="no face found in video"):
        export_int8(tiny_ckpt, out, calib=video)
    assert _nothing_written(out)


def test_missing_source_and_bad_options(tiny_ckpt, tmp_path):
    out = tmp_path / "pkg"
    with pytest.raises(DataError, match="not found"):
        export_int8(tiny_ckpt, out, calib=tmp_path / "nowhere")
    with pytest.raises(LldifError, match="not both"):
        export_int8(tiny_ckpt, out, calib=tmp_path, calib_camera=0)
    with pytest.raises(LldifError, match="calibration method"):
        export_int8(tiny_ckpt, out, method="kl")
    with pytest.raises(LldifError, match="INT8 target"):
        export_int8(tiny_ckpt, out, target="npu")
    assert _nothing_written(out)
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(PackageError, match="not empty"):
        export_int8(tiny_ckpt, out, calib=tmp_path)
    assert (out / "keep.txt").read_text() == "x"


# ---------------------------------------------------------------- the parts
def test_crop_or_photo():
    assert is_crop(np.zeros((48, 48), np.uint8)) and is_crop(np.zeros((96, 80, 3), np.uint8))
    assert is_crop(np.zeros((150, 140, 3), np.uint8))
    assert not is_crop(np.zeros((480, 640, 3), np.uint8)) and not is_crop(np.zeros((120, 200), np.uint8))


def test_folder_source_detects_faces_in_photos_and_darkens_only_bright_faces(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "a" / f"crop{i}.png"), face_image(i, rng))  # bright crops
    cv2.imwrite(str(tmp_path / "a" / "dark.png"), np.full((48, 48), 10, np.uint8))  # already dark
    cv2.imwrite(str(tmp_path / "a" / "photo.png"), np.full((240, 320, 3), 128, np.uint8))  # a photo, no face
    boxes = []
    src = FolderSource(tmp_path, detect=lambda frame: boxes.append(frame.shape) or [])
    plain, _ = collect_faces(src, 10, 48, 1)
    assert boxes == [(240, 320, 3)]  # only the photo went to the detector, which found nothing
    faces, info = collect_faces(src, 10, 48, 1, darken_normal=True)
    assert faces.shape == (4, 48, 48, 1) and faces.dtype == np.uint8
    assert info["darkened"] == 3 and info["count"] == 4
    before, after = plain.reshape(4, -1).mean(1), faces.reshape(4, -1).mean(1)
    bright = before > 0.25 * 255
    assert bright.sum() == 3 and (after[bright] < before[bright]).all()
    assert (after[~bright] == before[~bright]).all()  # the dark face is kept as it is


def test_sources_share_the_reader_protocol(tmp_path):
    src = ArraySource(np.zeros((3, 48, 48), np.uint8), "three faces")
    got = [src.get_next() for _ in range(4)]
    assert [g is None for g in got] == [False, False, False, True]
    src.rewind()
    assert src.get_next() is not None and len(list(src)) == 3
    reader = TensorReader([{"x": np.zeros(1)}, {"x": np.ones(1)}])
    assert len(reader) == 2 and reader.get_next()["x"][0] == 0 and reader.get_next()["x"][0] == 1
    assert reader.get_next() is None
    reader.rewind()
    assert reader.get_next() is not None
    with pytest.raises(DataError, match="not found"):
        open_calibration_source(tmp_path / "missing", None, 8)


def test_node_groups_find_the_sensitive_nodes(tiny_ckpt, tmp_path):
    from lldif_edge.export.onnx_export import export_package

    export_package(tiny_ckpt, tmp_path / "fp32")
    preprocess_graph(tmp_path / "fp32" / "llformer.onnx", tmp_path / "pre.onnx")
    groups = node_groups(tmp_path / "pre.onnx")
    assert len(groups["LayerNormalization"]) == 3  # two per block (depth 1) + the final norm
    assert len(groups["Softmax"]) == 1 and any("Erf" in n for n in groups["Gelu"])
    assert len(groups["ResidualAdd"]) >= 3  # the stem's ResBlock + attention + MLP skips
    assert groups["Standardize"] and not any("Conv" in n for n in groups["Standardize"])
    assert not any(n.endswith(("Conv", "MatMul", "Gemm")) for n in groups["Elementwise"])
    assert set(groups["LayerNormalization"]) <= set(groups["Elementwise"])
    assert "/llformer/blocks.0/attn/qkv/MatMul" in groups["MatMul"]
    assert groups["ShallowConv"] == ["/llformer/stem/stem.1/stem.1.0/Conv"]  # 3 channels x 3x3: the first conv
    assert groups["VectorGemm"] == ["/llformer/blocks.0/modulation/Gemm", "/llformer/head/Gemm"]
    core = groups["ActMatMul"]  # the attention core, out to (not including) the qkv and output projections
    assert {"/llformer/blocks.0/attn/MatMul", "/llformer/blocks.0/attn/MatMul_1",
            "/llformer/blocks.0/attn/Softmax"} <= set(core)
    assert not {"/llformer/blocks.0/attn/qkv/MatMul", "/llformer/blocks.0/attn/proj/MatMul"} & set(core)
    assert not any("norm" in n or "mlp" in n or "modulation" in n for n in core)
    assert all(n.rsplit("/", 1)[-1].startswith(("MatMul", "Gemm")) for n in groups["MatMul"])


def test_synthesis_beats_noise_on_bn_statistics(tiny_ckpt):
    from lldif_edge.calibration.datafree import bn_statistic_loss, noise_faces, synthesize_faces
    from lldif_edge.lldif.checkpoint import load_checkpoint

    model, _ = load_checkpoint(tiny_ckpt)
    faces, info = synthesize_faces(model, count=16, steps=20, seed=0)
    assert faces.shape == (16, 48, 48, 1) and faces.dtype == np.uint8
    assert info["bn_loss_end"] < bn_statistic_loss(model, noise_faces(16, 48, 1))


def test_cpu_target_uses_reduced_range_weights_by_default():
    from lldif_edge.calibration.quantize import QuantSettings

    assert QuantSettings("cpu").reduce_range is True  # no int16 saturation on x86 without VNNI
    assert QuantSettings("tensorrt").reduce_range is False
    assert QuantSettings("cpu", reduce_range=False).describe()["reduce_range"] is False


def test_calibration_is_a_toolbox_that_never_exports():
    import subprocess
    import sys

    code = ("import sys, lldif_edge.calibration.int8, lldif_edge.calibration.datafree, lldif_edge.calibration.sources, "
            "lldif_edge.calibration.confidence; bad = [m for m in sys.modules if m.startswith('lldif_edge.export')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
