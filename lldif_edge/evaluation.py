"""`lldif-edge eval`: a package or a checkpoint on a labelled folder -> the report (accuracy, per-class recall,
macro-F1, the confidence's calibration error before and after calibration, accuracy against coverage).

The package path needs no torch; the checkpoint path (and `compare` with the torch checkpoint) imports it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lldif_edge.hardware import torch_installed
from lldif_edge.metrics import (
    ECE_BINS,
    calibrated_probabilities,
    classification_report,
    compare_logits,
    expected_calibration_error,
    reliability_bins,
    risk_coverage,
)
from lldif_edge.package import CONFIDENCE_KEY, confidence_calibration


def load_eval_images(data: Path, classes: list[str], size: int, channels: int, exclude: Path | None,
                     darken_data: bool, seed: int):
    """(dataset, images to evaluate: darkened with `seed` when asked, duplicates dropped: the count or None)."""
    from lldif_edge.data import drop_duplicates, load_folder
    from lldif_edge.lowlight import darken_many

    ds = load_folder(data, classes, size, channels)
    dropped = None
    if exclude:
        ds, dropped = drop_duplicates(ds, load_folder(exclude, classes, size, channels))
    return ds, (darken_many(ds.images, seed) if darken_data else ds.images), dropped


def confidence_report(logits, labels, manifest: dict | None) -> dict:
    """ECE of the plain softmax and of the package's calibrated probabilities (a checkpoint has no calibration),
    reliability bins of both, and the risk-coverage curve of the calibrated confidence."""
    t, e = confidence_calibration(manifest) if manifest else (1.0, 0.0)
    raw, probs = calibrated_probabilities(logits), calibrated_probabilities(logits, t, e)
    entry = (manifest or {}).get(CONFIDENCE_KEY) or {}
    return {
        "confidence": {
            "calibrated": (t, e) != (1.0, 0.0), "temperature": t, "label_smoothing": e,
            "fitted_on": entry.get("fitted_on"), "ece_bins": ECE_BINS,
            "ece_before": expected_calibration_error(raw, labels),
            "ece_after": expected_calibration_error(probs, labels),
            "reliability_before": reliability_bins(raw, labels),
            "reliability_after": reliability_bins(probs, labels)},
        "risk_coverage": risk_coverage(probs.max(-1), probs.argmax(-1) == np.asarray(labels)),
    }


def evaluate(data: Path, model: Path | None = None, package: Path | None = None, backend: str = "onnxruntime",
             device: str | None = None, compare: bool = False, steps: int | None = None, tta: bool = False,
             exclude: Path | None = None, darken_data: bool = False, seed: int = 0) -> tuple[dict, list[str]]:
    """`lldif-edge eval`: the report of `package`, or of the checkpoint `model`; with neither, the embedded
    checkpoint, or the embedded package where torch is not installed."""
    if package is not None or model is None and not torch_installed():
        return evaluate_package(package, data, backend, device, exclude, darken_data, seed, compare, model)
    return evaluate_checkpoint(model, data, steps, tta, exclude, darken_data, seed)


def evaluate_package(package: Path | None, data: Path, backend: str = "onnxruntime", device: str | None = None,
                     exclude: Path | None = None, darken_data: bool = False, seed: int = 0, compare: bool = False,
                     model: Path | None = None) -> tuple[dict, list[str]]:
    """The report of a package (None: the embedded default) and its classes. `compare`: top-1 agreement and the
    largest logit difference with the torch checkpoint (`model`, default: the one the package names) run with the
    package's sampler steps."""
    from lldif_edge.runtimes import load_pipeline

    pipe = load_pipeline(package, backend=backend, device=device)
    manifest = pipe.manifest
    ds, images, dropped = load_eval_images(data, pipe.classes, pipe.input_size, 1 if pipe.grayscale else 3,
                                           exclude, darken_data, seed)
    logits = pipe.batched_logits(images)
    extra: dict = {"backend": pipe.describe(), "graphs": {k: v["precision"] for k, v in manifest["graphs"].items()}}
    if compare:
        from lldif_edge.lldif.reference import reference_logits
        from lldif_edge.package import checkpoint_path

        diff = compare_logits(reference_logits(model or checkpoint_path(manifest), images,
                                               steps=pipe.package.sample_steps), logits)
        extra["agreement_with_torch"] = diff["top1_agreement"]
        extra["max_abs_logit_diff_vs_torch"] = diff["max_abs_logit_diff"]
    return _report(ds, logits, pipe.classes, str(pipe.root), data, darken_data, seed, dropped, extra,
                   manifest), pipe.classes


def evaluate_checkpoint(model: Path | None, data: Path, steps: int | None = None, tta: bool = False,
                        exclude: Path | None = None, darken_data: bool = False,
                        seed: int = 0) -> tuple[dict, list[str]]:
    """The report of a torch checkpoint (None: the embedded default) and its classes; `steps`: its sampler's K."""
    from lldif_edge.lldif.checkpoint import load_checkpoint, resolve_checkpoint
    from lldif_edge.lldif.model import count_macs, inference_parameters
    from lldif_edge.lldif.train import predict_logits

    net, _ = load_checkpoint(model)
    cfg = net.cfg
    ds, images, dropped = load_eval_images(data, cfg.classes, cfg.input_size, 1 if cfg.grayscale else 3, exclude,
                                           darken_data, seed)
    logits = predict_logits(net, images, tta=tta, steps=steps)
    extra = {"sample_steps": (steps or cfg.sample_steps) if cfg.prior else None, "tta": tta,
             "parameters": inference_parameters(net), "mmacs_per_face": round(count_macs(net, steps) / 1e6, 1)}
    return _report(ds, logits, cfg.classes, str(resolve_checkpoint(model)), data, darken_data, seed, dropped,
                   extra, None), cfg.classes


def _report(ds, logits, classes, source: str, data: Path, darken_data: bool, seed: int, dropped, extra: dict,
            manifest: dict | None) -> dict:
    report = classification_report(ds.labels, logits.argmax(-1), classes)
    report.update(model=source, data=str(data), darkened=darken_data, seed=seed, duplicates_dropped=dropped, **extra)
    report.update(confidence_report(logits, ds.labels, manifest))
    return report


# ---------------------------------------------------------------- the report's figures
# The writers are imported when called, from metrics, so a replaced one (a test's failing disk) is the one used.
def _subject(report: dict) -> str:
    return f"{Path(report['model']).name} on {Path(report['data']).name}"


def write_confusion_plot(report: dict, classes: list[str], path: Path) -> None:
    from lldif_edge.metrics import write_confusion_png

    write_confusion_png(report["confusion"], classes, path, f"{_subject(report)}: acc {report['accuracy']:.4f}")


def write_reliability_plot(report: dict, path: Path) -> None:
    """The reliability diagram of the plain softmax and, when the package has one, of its calibration."""
    from lldif_edge.metrics import write_reliability_png

    c = report["confidence"]
    before = {"name": "softmax", "bins": c["reliability_before"], "ece": c["ece_before"]}
    after = {"name": "calibrated", "bins": c["reliability_after"], "ece": c["ece_after"]}
    write_reliability_png(before, after if c["calibrated"] else None, path,
                          _subject(report) + (" (darkened)" if report["darkened"] else ""))


def write_coverage_plot(report: dict, path: Path) -> None:
    from lldif_edge.metrics import write_risk_coverage_png

    write_risk_coverage_png(report["risk_coverage"], path,
                            _subject(report) + (" (darkened)" if report["darkened"] else ""))
