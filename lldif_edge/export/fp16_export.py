"""The fp16 target: the FP32 package's graphs with float16 weights and arithmetic (half the size), float32 in
and out so every runtime feeds it like any package. Verified against the FP32 package through `Pipeline`."""

from __future__ import annotations

import datetime
import tempfile
from dataclasses import replace
from pathlib import Path

import onnx

from lldif_edge.calibration import confidence
from lldif_edge.errors import PackageError
from lldif_edge.export.onnx_export import export_package, openvino_reads, verification_images
from lldif_edge.lldif.checkpoint import load_checkpoint, resolve_checkpoint
from lldif_edge.metrics import compare_logits
from lldif_edge.package import MANIFEST_ORDER, Package, PackageWriter, sha256_file
from lldif_edge.runtimes.pipeline import Pipeline

MIN_AGREEMENT = 0.99  # top-1 agreement with the FP32 package below which no fp16 package is written


def to_fp16(src: Path, dst: Path) -> None:
    """One ONNX graph in float16; inputs and outputs stay float32 (Cast nodes at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(src)), keep_io_types=True), str(dst))


def export_fp16(model_path: str | Path | None, out: str | Path, steps: int | None = None, opset: int = 17,
                fused: bool = False, force: bool = False, verify_data: str | Path | None = None,
                confidence_data: str | Path | None = None, confidence_exclude: str | Path | None = None) -> dict:
    """Write a verified fp16 package into `out`; returns its manifest. The confidence calibration is fitted on
    the fp16 package's own logits. Nothing is written to `out` unless every step succeeds."""
    model, _ = load_checkpoint(model_path)
    cfg = model.cfg
    calib_faces = None
    if confidence_data is not None:  # before any slow work: a bad folder fails first
        calib_faces, dropped = confidence.load_faces(confidence_data, cfg.classes, cfg.input_size,
                                                     1 if cfg.grayscale else 3, confidence_exclude,
                                                     resolve_checkpoint(model_path))
    with PackageWriter(out, force) as writer, tempfile.TemporaryDirectory(prefix="lldif-fp16-") as tmp:
        fp32_root = Path(tmp) / "fp32"
        export_package(model_path, fp32_root, steps=steps, opset=opset, fused=fused, force=True,
                       verify_data=verify_data)
        fp32_pkg = Package.read(fp32_root)
        graphs = {}
        for name, entry in fp32_pkg.graphs.items():
            path = writer.tmp / entry.file
            to_fp16(fp32_root / entry.file, path)
            graphs[name] = replace(entry, sha256=sha256_file(path), precision="fp16",
                                   extra={**entry.extra, "bytes": path.stat().st_size,
                                          "fp32_bytes": entry.extra["bytes"]})
        extra = {k: v for k, v in fp32_pkg.extra.items() if k != "verification"}
        extra.update(created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     fp32_verification=fp32_pkg.extra["verification"])
        # a new package: the exporter's key order, not the FP32 file's
        pkg = replace(fp32_pkg, graphs=graphs, extra=extra, root=writer.tmp, order=MANIFEST_ORDER)
        pkg.write(writer.tmp)

        faces, source = verification_images(model, verify_data)
        fp32 = Pipeline(fp32_root)
        verification = {"source": source, "reference": "the FP32 package"}
        for variant in ["sub-graphs"] + (["fused"] if fused else []):
            f = variant == "fused"
            ref = Pipeline(fp32_root, fused=f).logits(fp32.preprocess(faces))
            r = compare_logits(ref, Pipeline(writer.tmp, fused=f).logits(fp32.preprocess(faces)))
            verification[variant] = r
            if r["top1_agreement"] < MIN_AGREEMENT:
                raise PackageError(f"fp16 export verification failed ({variant}): top-1 agreement with FP32 "
                                   f"{r['top1_agreement']:.4f} < {MIN_AGREEMENT}, max |logit diff| "
                                   f"{r['max_abs_logit_diff']:.2e}; use the FP32 package")
        verification["openvino_reads"] = openvino_reads(writer.tmp)
        pkg.extra["verification"] = verification
        if calib_faces is not None:
            pkg.confidence = confidence.fit_confidence(
                Pipeline(writer.tmp), calib_faces,
                confidence.source_description(confidence_data, confidence_exclude, dropped))
        pkg.write(writer.tmp)
    return pkg.to_dict()
