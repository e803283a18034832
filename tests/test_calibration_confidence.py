"""Calibrated confidence and "not sure": the calibration math, the fit at export, the one place every backend
applies it (Pipeline), old packages without it, eval's ECE and risk-coverage report, and abstention in the
Recognizer API and `run --json`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import SHARED
from fake_predictor import BrightnessPredictor

from lldif_edge.app.overlay import draw
from lldif_edge.app.recognizer import Recognizer
from lldif_edge.errors import DataError, LldifError, PackageError
from lldif_edge.metrics import (
    calibrated_probabilities,
    expected_calibration_error,
    fit_calibration,
    reliability_bins,
    risk_coverage,
)
from lldif_edge.package import CONFIDENCE_KEY, confidence_calibration, load_manifest, write_manifest
from lldif_edge.synthetic import synthetic_faces


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "lldif_edge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def draw_labels(probs: np.ndarray, seed: int) -> np.ndarray:
    """One label per row, drawn from that row's distribution: probabilities that are exactly calibrated."""
    rng = np.random.default_rng(seed)
    cum = probs.cumsum(1)
    return np.minimum((rng.random((len(probs), 1)) > cum).sum(1), probs.shape[1] - 1)


# ---------------------------------------------------------------- the math
def test_ece_and_reliability_bins_by_hand():
    labels = np.zeros(10, np.int64)
    p80 = np.tile([0.8, 0.2], (10, 1))  # every face 80 % sure of class 0 ...
    assert expected_calibration_error(p80, labels) == pytest.approx(0.2)  # ... and all right: 0.2 under-confident
    labels[:2] = 1  # 8 of 10 right: calibrated
    assert expected_calibration_error(p80, labels) == pytest.approx(0.0)
    # two bins: 4 faces at 0.95 (all right, gap 0.05) and 6 at 0.55 (3 right, gap 0.05): ECE 0.05
    probs = np.array([[0.95, 0.05]] * 4 + [[0.55, 0.45]] * 6)
    labels = np.array([0] * 4 + [0, 0, 0, 1, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.05)
    r = reliability_bins(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([0, 1]))
    assert len(r["count"]) == 15 and r["count"][-1] == 1 and sum(r["count"]) == 2  # 1.0 falls in the last bin
    assert r["accuracy"][-1] == 1.0 and r["confidence"][-1] == 1.0


def test_calibrated_probabilities_keep_the_label_and_default_to_softmax():
    z = np.random.default_rng(0).normal(0, 3, (200, 7)).astype(np.float32)
    plain = np.exp(z - z.max(1, keepdims=True))
    plain /= plain.sum(1, keepdims=True)
    np.testing.assert_allclose(calibrated_probabilities(z), plain, rtol=1e-5, atol=1e-7)
    for t, e in ((0.5, 0.0), (2.0, 0.0), (1.0, 0.1), (1.3, 0.3)):
        p = calibrated_probabilities(z, t, e)
        assert p.dtype == np.float32 and (p >= 0).all() and np.allclose(p.sum(1), 1, atol=1e-5)
        assert (p.argmax(1) == z.argmax(1)).all()
    # undoing label smoothing inverts it exactly where no class falls under e / C
    q = calibrated_probabilities(np.random.default_rng(1).normal(0, 0.5, (50, 7)))
    smoothed = 0.9 * q + 0.1 / 7
    np.testing.assert_allclose(calibrated_probabilities(np.log(smoothed), 1.0, 0.1), q, atol=1e-5)


def test_fit_recovers_a_temperature():
    z = np.random.default_rng(2).normal(0, 3, (4000, 7))
    labels = draw_labels(calibrated_probabilities(z, 2.0), seed=3)  # the logits are 2x too sharp
    t, e = fit_calibration(z, labels, label_smoothing=False)
    assert e == 0.0 and t == pytest.approx(2.0, rel=0.1)
    before = expected_calibration_error(calibrated_probabilities(z), labels)
    after = expected_calibration_error(calibrated_probabilities(z, t, e), labels)
    assert before > 0.1 and after < 0.04
    t2, e2 = fit_calibration(z, labels)  # the two-parameter fit finds the same: no smoothing to undo
    assert t2 == pytest.approx(2.0, rel=0.15) and e2 < 0.05


def test_fit_recovers_label_smoothing():
    z = np.random.default_rng(4).normal(0, 2.5, (4000, 7))
    q = calibrated_probabilities(z)
    labels = draw_labels(q, seed=5)
    logits = np.log(0.85 * q + 0.15 / 7)  # a model trained against targets smoothed with e = 0.15
    t, e = fit_calibration(logits, labels)
    assert e == pytest.approx(0.15, abs=0.04) and t == pytest.approx(1.0, abs=0.15)
    after = expected_calibration_error(calibrated_probabilities(logits, t, e), labels)
    assert after < expected_calibration_error(calibrated_probabilities(logits), labels) / 2


def test_risk_coverage_by_hand():
    rc = risk_coverage(np.array([0.6, 0.9, 0.7, 0.8]), np.array([0, 1, 0, 1]), coverages=(0.25, 0.5, 1.0))
    pts = {p["coverage"]: p for p in rc["points"]}
    assert pts[0.5] == {"coverage": 0.5, "accuracy": 1.0, "threshold": 0.8, "faces": 2}
    assert pts[1.0]["accuracy"] == 0.5 and pts[1.0]["threshold"] == 0.6
    assert rc["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4) and rc["faces"] == 4


# ---------------------------------------------------------------- packages and backends
@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    pytest.importorskip("torch")
    import torch

    from lldif_edge.export.onnx_export import export_package
    from lldif_edge.lldif.checkpoint import save_checkpoint
    from lldif_edge.lldif.config import preset_config
    from lldif_edge.lldif.model import build_model

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model(preset_config("tiny")).eval(), tmp_path_factory.mktemp("ckpt") / "tiny")
    out = tmp_path_factory.mktemp("pkg") / "tiny"
    export_package(ckpt, out)
    return out


def with_calibration(src, dst, entry):
    shutil.copytree(src, dst)
    _, m = load_manifest(dst)
    if entry is None:
        m.pop(CONFIDENCE_KEY, None)
    else:
        m[CONFIDENCE_KEY] = entry
    write_manifest(dst, m)
    return dst


def test_export_without_faces_says_so_and_keeps_softmax(tiny_package):
    _, m = load_manifest(tiny_package)
    entry = m[CONFIDENCE_KEY]
    assert entry["fitted_on"] is None and "not calibrated" in entry["note"]
    assert confidence_calibration(m) == (1.0, 0.0)


def test_every_backend_applies_the_same_calibration(tiny_package, tmp_path):
    from lldif_edge.runtimes import backend_names, load_pipeline

    pkg = with_calibration(tiny_package, tmp_path / "cal", {"temperature": 0.25, "label_smoothing": 0.2})
    faces, _ = synthetic_faces(16, seed=3)
    backends = [b for b in ("onnxruntime", "openvino", "torch") if b in backend_names()]
    assert "onnxruntime" in backends
    got = {}
    for b in backends:
        try:
            pipe = load_pipeline(pkg, backend=b, **({"precision": "f32"} if b == "openvino" else {}))
        except LldifError as e:  # installed but unusable here
            if b == "onnxruntime":
                raise
            pytest.skip(f"{b}: {e}")
        assert (pipe.temperature, pipe.label_smoothing) == (0.25, 0.2)
        logits = pipe.logits(pipe.preprocess(faces))
        got[b] = pipe.predict(faces)
        np.testing.assert_allclose(got[b], calibrated_probabilities(logits, 0.25, 0.2), atol=1e-6)
        plain = calibrated_probabilities(logits)
        assert not np.allclose(got[b], plain, atol=1e-3)  # the calibration really changed the numbers
    for b, p in got.items():
        np.testing.assert_allclose(p, got["onnxruntime"], atol=2e-3, err_msg=b)


def test_old_packages_without_the_field_load_as_before(tiny_package, tmp_path):
    from lldif_edge.runtimes import load_pipeline

    pkg = with_calibration(tiny_package, tmp_path / "old", None)
    pipe = load_pipeline(pkg)
    faces, _ = synthetic_faces(4, seed=1)
    assert (pipe.temperature, pipe.label_smoothing) == (1.0, 0.0)
    np.testing.assert_allclose(pipe.predict(faces), calibrated_probabilities(pipe.logits(pipe.preprocess(faces))),
                               atol=1e-6)
    assert confidence_calibration({CONFIDENCE_KEY: None}) == (1.0, 0.0)
    for bad in ({"temperature": 0}, {"temperature": "hot"}, {"label_smoothing": 1.0}, "warm"):
        with pytest.raises(PackageError, match=CONFIDENCE_KEY):
            confidence_calibration({CONFIDENCE_KEY: bad})


def test_fit_at_export_and_refit_in_place(tiny_package, faces_train, faces_val, tmp_path):
    from lldif_edge.calibration.confidence import calibrate_package, load_faces
    from lldif_edge.export.onnx_export import export_package
    from lldif_edge.package import checkpoint_path

    _, m = load_manifest(tiny_package)
    ckpt = checkpoint_path(m)
    out = tmp_path / "fitted"
    export_package(ckpt, out, confidence_data=faces_val, confidence_exclude=faces_val / "angry")
    _, m = load_manifest(out)
    entry = m[CONFIDENCE_KEY]
    assert entry["fitted_on"]["faces"] == 48 and entry["fitted_on"]["duplicates_dropped"]["shared_with_train"] == 8
    assert entry["temperature"] > 0 and 0 <= entry["label_smoothing"] < 1
    for part in ("in_sample", "cross_fitted"):
        assert set(entry[part]) >= {"dark", "normal"} and 0 <= entry[part]["dark"]["ece_after"] <= 1
    # refit an existing package: only its manifest changes
    copy = shutil.copytree(tiny_package, tmp_path / "refit")
    before = {g: e["sha256"] for g, e in load_manifest(copy)[1]["graphs"].items()}
    entry = calibrate_package(copy, faces_val, seed=1)
    _, m2 = load_manifest(copy)  # verifies every sub-graph's sha256 again
    assert m2[CONFIDENCE_KEY] == entry and entry["fitted_on"]["darken_seed"] == 1
    assert {g: e["sha256"] for g, e in m2["graphs"].items()} == before
    # the folder a checkpoint was trained on is refused
    meta = tmp_path / "trained.json"
    meta.write_text(json.dumps({"train_config": {"data": str(faces_train)}}))
    with pytest.raises(DataError, match="training data"):
        load_faces(faces_train / "happy", ["happy"], 48, 1, checkpoint=meta.with_suffix(".safetensors"))


def test_int8_export_fits_its_own_logits(tiny_package, faces_val, tmp_path):
    from lldif_edge.export.int8_export import export_int8
    from lldif_edge.package import checkpoint_path
    from lldif_edge.runtimes import load_pipeline

    ckpt = checkpoint_path(load_manifest(tiny_package)[1])
    with pytest.raises(DataError):  # a bad folder fails before the slow work, and nothing is written
        export_int8(ckpt, tmp_path / "bad", calib=faces_val, confidence_data=tmp_path / "missing")
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "int8"
    report = export_int8(ckpt, out, calib=faces_val, calib_count=16, exclude=[], latency_runs=0,
                         confidence_data=faces_val)
    entry = load_manifest(out)[1][CONFIDENCE_KEY]
    assert report["confidence_calibration"] == entry and entry["fitted_on"]["faces"] == 56
    pipe = load_pipeline(out)
    assert (pipe.temperature, pipe.label_smoothing) == (entry["temperature"], entry["label_smoothing"])


def test_eval_reports_ece_and_coverage_with_plots(tiny_package, faces_val, tmp_path):
    pkg = with_calibration(tiny_package, tmp_path / "cal", {"temperature": 0.5, "label_smoothing": 0.05})
    rel, cov = tmp_path / "rel.png", tmp_path / "cov.png"
    r = cli("eval", "--package", pkg, "--data", faces_val, "--darken", "--json", "--calibration-plot", rel,
            "--coverage-plot", cov)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    c = rep["confidence"]
    assert c["calibrated"] and (c["temperature"], c["label_smoothing"]) == (0.5, 0.05) and c["ece_bins"] == 15
    assert c["ece_before"] != c["ece_after"] and sum(c["reliability_after"]["count"]) == rep["images"] == 56
    pts = rep["risk_coverage"]["points"]
    assert [p["coverage"] for p in pts][-1] == 1.0 and pts[-1]["accuracy"] == pytest.approx(rep["accuracy"])
    for png in (rel, cov):
        assert cv2.imread(str(png)) is not None
    r = cli("eval", "--package", pkg, "--data", faces_val, "--coverage-plot", tmp_path / "missing" / "c.png")
    assert r.returncode == 2 and "--coverage-plot" in r.stderr


# ---------------------------------------------------------------- "not sure"
class CentreDetector:
    def detect(self, frame):
        h, w = frame.shape[:2]
        return [(w // 4, h // 4, w // 2, h // 2, 1.0)]


def test_abstention_in_the_api_json_and_overlay():
    frame = np.full((120, 160, 3), 106, np.uint8)  # the fake predictor is torn between two classes
    sure = Recognizer(BrightnessPredictor(), CentreDetector()).process(frame)[0]
    assert sure.label is not None and 0.3 < sure.confidence < 0.9
    rec = Recognizer(BrightnessPredictor(), CentreDetector(), min_confidence=0.95)
    f = rec.process(frame)[0]
    assert f.label is None and getattr(f, "track_label", None) is None  # the track's label too, where there is one
    assert f.confidence == pytest.approx(sure.confidence) and f.probabilities == sure.probabilities
    d = json.loads(json.dumps(f.to_dict()))
    assert d["label"] is None and d.get("track_label") is None and len(d["probabilities"]) == 7
    assert Recognizer(BrightnessPredictor(), CentreDetector(), min_confidence=sure.confidence).process(frame)[0].label
    shown = draw(frame.copy(), [f])
    assert (shown != frame).any()
    for bad in (-0.1, 1.5):
        with pytest.raises(LldifError, match="min_confidence"):
            Recognizer(BrightnessPredictor(), CentreDetector(), min_confidence=bad)


def test_run_json_says_not_sure(tmp_path):
    faces = SHARED / "data" / "faces"
    if not faces.is_dir():
        pytest.skip(f"{faces} is absent")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("fer_justin.jpg", "deepface_img10.jpg"):
        shutil.copy(faces / name, photos / name)
    lines = []
    for p in (0.0, 1.0):
        r = cli("run", "--images", photos, "--no-show", "--json", "--min-confidence", p)
        assert r.returncode == 0, r.stderr
        lines.append([json.loads(ln) for ln in r.stdout.splitlines() if '"frame"' in ln])
    everyone = [f for ln in lines[0] for f in ln["faces"]]
    nobody = [f for ln in lines[1] for f in ln["faces"]]
    assert everyone and len(everyone) == len(nobody)
    assert all(f["label"] for f in everyone) and all(f["label"] is None for f in nobody if f["confidence"] < 1)
    assert [f["probabilities"] for f in everyone] == [f["probabilities"] for f in nobody]
    r = cli("run", "--images", photos, "--no-show", "--min-confidence", "2")
    assert r.returncode == 2 and "min-confidence" in r.stderr
