"""The one way in to export: a table of targets and `export(target, ...)`.

A target is a name, a line that says what it writes, and the function that writes it. A new one (an OpenVINO
IR, a prebuilt TensorRT engine) is a row in `TARGETS` plus its function; `lldif-edge export --target NAME`
lists and reaches every row. Calibration (`lldif_edge.calibration`) is a toolbox the INT8 targets use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lldif_edge.errors import LldifError


@dataclass(frozen=True)
class Common:
    """What every target takes: the sampler step count K (None: the checkpoint's), the ONNX opset, the
    parity-check faces, the held-out faces to fit the confidence calibration on, and whether to replace `out`."""

    steps: int | None = None
    opset: int = 17
    fused: bool = False
    force: bool = False
    verify_data: str | Path | None = None
    confidence_data: str | Path | None = None
    confidence_exclude: str | Path | None = None


@dataclass(frozen=True)
class Int8Settings:
    """How an INT8 target calibrates (`export_int8` says what each does): faces from a folder or video
    (`calib`) or a camera, else data-free; `exclude` None measures what to keep in float."""

    calib: str | Path | None = None
    calib_camera: int | None = None
    calib_count: int = 256
    method: str = "minmax"
    darken: bool = False
    eval_dir: str | Path | None = None
    exclude: list[str] | None = None
    keep_float: list[str] | None = None  # kept in float on top of `exclude` or the measured choice
    reduce_range: bool | None = None
    keep_faster: bool = False
    extra: dict = field(default_factory=dict)  # further export_int8 arguments (tests: fewer runs)


@dataclass(frozen=True)
class Target:
    name: str
    summary: str
    write: Callable[[str | Path | None, Path, Common, Int8Settings | None], dict]
    int8: bool = False  # calibrates (takes Int8Settings); `export` returns the INT8 report, else the manifest


def _fp32(model, out, common: Common, _: Int8Settings | None) -> dict:
    from lldif_edge.export.onnx_export import export_package

    return export_package(model, out, steps=common.steps, opset=common.opset, fused=common.fused,
                          force=common.force, verify_data=common.verify_data,
                          confidence_data=common.confidence_data, confidence_exclude=common.confidence_exclude)


def _fp16(model, out, common: Common, _: Int8Settings | None) -> dict:
    from lldif_edge.export.fp16_export import export_fp16

    return export_fp16(model, out, steps=common.steps, opset=common.opset, fused=common.fused, force=common.force,
                       verify_data=common.verify_data, confidence_data=common.confidence_data,
                       confidence_exclude=common.confidence_exclude)


def _int8(quant_target: str):
    def write(model, out, common: Common, s: Int8Settings | None) -> dict:
        from lldif_edge.export.int8_export import export_int8

        s = s or Int8Settings()
        return export_int8(model, out, calib=s.calib, calib_camera=s.calib_camera, calib_count=s.calib_count,
                           method=s.method, darken=s.darken, target=quant_target, eval_dir=s.eval_dir,
                           force=common.force, exclude=s.exclude, keep_float=s.keep_float, steps=common.steps,
                           opset=common.opset,
                           verify_data=common.verify_data, keep_faster_subgraphs=s.keep_faster,
                           reduce_range=s.reduce_range, confidence_data=common.confidence_data,
                           confidence_exclude=common.confidence_exclude, **s.extra)
    return write


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("fp32", "ONNX float32 sub-graphs, verified against PyTorch (every backend)", _fp32),
    Target("fp16", "ONNX float16 sub-graphs, float32 in and out, verified against the FP32 package (GPUs, "
           "OpenVINO; ONNX Runtime on CPU runs it too, not faster)", _fp16),
    Target("int8-cpu", "static QDQ int8 for CPUs: uint8 activations, int8 per-channel weights (ONNX Runtime, "
           "OpenVINO)", _int8("cpu"), int8=True),
    Target("int8-tensorrt", "static QDQ int8, symmetric int8 activations and weights (TensorRT, also the CPU "
           "runtimes)", _int8("tensorrt"), int8=True),
)}


def export(target: str, model: str | Path | None, out: str | Path, common: Common | None = None,
           int8: Int8Settings | None = None) -> dict:
    """Write a verified package of `target` (a key of TARGETS) from checkpoint `model` into `out`. Returns the
    package's manifest, for an INT8 target its report (also in the manifest, 'int8_report')."""
    if target not in TARGETS:
        raise LldifError(f"unknown export target '{target}' (choose from {', '.join(TARGETS)})")
    t = TARGETS[target]
    if int8 is not None and not t.int8:
        raise LldifError(f"export target '{target}' does not calibrate: INT8 settings only apply to "
                         + ", ".join(n for n, x in TARGETS.items() if x.int8))
    return t.write(model, Path(out), common or Common(), int8)
