"""`lldif-edge export --int8`: a checkpoint -> a verified INT8 model package (docs/design.md, section 4).

The exporter drives the calibration toolbox (`lldif_edge.calibration`), which never exports itself:

1. Export and verify the FP32 package (`export_package`) into a scratch folder.
2. Calibration faces: a folder, a video, a camera (`calibration.sources`), or data-free
   (`calibration.int8.datafree_config`: BN-statistic synthesis, the uniform-noise control and drawn dark faces,
   chosen per sub-graph).
3. Run the FP32 pipeline on them and record what each sub-graph receives (`stage_feeds`), so every part is
   calibrated on its real inputs; ORT pre-processing, then static QDQ quantization (`calibration.quantize`).
4. Mixed precision by measurement (`apply_speed_groups`, `choose_precision`), or an explicit `exclude` list.
5. Write the package (PackageWriter: temp folder + rename; nothing lands in `out` on failure); on a CPU with
   AMX-INT8, add ONNX Runtime variants where they are faster (`add_amx_variants`). Then verify it through
   `Pipeline` and report: sizes, float ops ORT still runs, agreement/accuracy on `eval_dir`, latency FP32 vs INT8.
"""

from __future__ import annotations

import datetime
import tempfile
import time
from pathlib import Path

import numpy as np

from lldif_edge.calibration import confidence
from lldif_edge.calibration.int8 import (
    DATAFREE_MAX,
    FP32,
    MIN_AGREEMENT,
    MIN_GAIN,
    SELECTION_FACES,
    Workbench,
    add_amx_variants,
    apply_speed_groups,
    choose_precision,
    datafree_config,
    keep_faster,
    log,
    measure_latency,
    parse_exclude,
    stage_feeds,
)
from lldif_edge.calibration.quantize import QuantSettings, classify_ops, optimized_op_counts
from lldif_edge.calibration.sources import collect_faces, open_calibration_source
from lldif_edge.data import load_folder
from lldif_edge.errors import LldifError, PackageError
from lldif_edge.export.onnx_export import export_package, openvino_reads
from lldif_edge.lldif.checkpoint import load_checkpoint, resolve_checkpoint
from lldif_edge.lowlight import darken_many
from lldif_edge.metrics import compare_logits
from lldif_edge.package import CalibrationReport, PackageWriter
from lldif_edge.runtimes.pipeline import Pipeline
from lldif_edge.synthetic import synthetic_faces


def export_int8(model_path: str | Path | None, out: str | Path, calib: str | Path | None = None,
                calib_camera: int | None = None, calib_count: int = 256, method: str = "minmax",
                darken: bool = False, target: str = "cpu", eval_dir: str | Path | None = None,
                force: bool = False, exclude: list[str] | None = None, steps: int | None = None,
                opset: int = 17, verify_data: str | Path | None = None, reduce_range: bool | None = None,
                datafree_steps: int = 50, latency_runs: int = 200, min_agreement: float = MIN_AGREEMENT,
                min_gain: float = MIN_GAIN, keep_faster_subgraphs: bool = False, seed: int = 0,
                confidence_data: str | Path | None = None, confidence_exclude: str | Path | None = None,
                keep_float: list[str] | None = None) -> dict:
    """Write a verified INT8 package into `out`; returns the report (also in its manifest, 'int8_report').

    `calib`: a folder (face crops or photos) or a video file; `calib_camera`: a camera index; neither:
    data-free. `exclude`: None measures what to keep in float; a list (possibly empty) decides it instead
    (see `parse_exclude`). `keep_float`: entries in the same form kept in float on top of that, so a layer that a
    model is known to need in float is kept without restating the rest. `keep_faster_subgraphs`: also keep in
    FP32 the sub-graphs whose INT8 version is slower on the exporting machine (on an AVX2 CPU: the unrolled
    denoiser). `confidence_data`,
    `confidence_exclude`: held-out labelled faces to fit the INT8 package's confidence calibration on
    (`export_package`). Nothing is written to `out` unless every step succeeds.
    """
    settings = QuantSettings(target=target, method=method, reduce_range=reduce_range)
    t_start = time.perf_counter()
    with PackageWriter(out, force) as writer, tempfile.TemporaryDirectory(prefix="lldif-int8-") as tmp:
        work = Path(tmp)
        model, _ = load_checkpoint(model_path)
        cfg = model.cfg
        channels = 1 if cfg.grayscale else 3

        # Calibration faces and evaluation images first: a bad source fails before any slow work.
        source_info = None
        if calib is not None or calib_camera is not None:
            source = open_calibration_source(calib, calib_camera, calib_count)
            faces, source_info = collect_faces(source, calib_count, cfg.input_size, channels, darken, seed)
        eval_set = None
        if eval_dir is not None:
            ds = load_folder(eval_dir, cfg.classes, cfg.input_size, channels)
            eval_set = (darken_many(ds.images, seed=0), ds.labels)
        calib_faces = None
        if confidence_data is not None:
            calib_faces, dropped = confidence.load_faces(confidence_data, cfg.classes, cfg.input_size, channels,
                                                         confidence_exclude, resolve_checkpoint(model_path))

        export_package(model_path, work / "fp32", steps=steps, opset=opset, force=True,
                       verify_data=verify_data)
        fp32 = Pipeline(work / "fp32")
        bench = Workbench(work, fp32, settings)

        if source_info is None:  # data-free: choose on generated faces, the only held-out images there are
            gen, _ = synthetic_faces(SELECTION_FACES, cfg.input_size, seed + 1)
            sel_faces = darken_many(gen[..., None], seed + 1)
            sel_desc = f"{len(sel_faces)} darkened generated faces (lldif_edge.synthetic)"
            bench.set_inputs("select", fp32.preprocess(sel_faces))
            ref = bench.logits({g: FP32 for g in bench.graphs}, "select")
            n = min(calib_count, DATAFREE_MAX)
            base, datafree_report = datafree_config(bench, model, fp32, n, ref, seed, datafree_steps, k=steps)
            names = {"synth": "BN-statistic synthesis", "noise": "uniform-noise control", "drawn": "drawn dark faces"}
            used = [t for t in names if any(c[0] == t for c in base.values())]
            source_info = {"source": "data-free: " + " + ".join(names[t] for t in used),
                "requested": calib_count, "count": n, "data_free": datafree_report}
        else:
            sel_faces, sel_desc = faces, f"the {len(faces)} calibration faces"
            bench.set_inputs("select", fp32.preprocess(sel_faces))
            ref = bench.logits({g: FP32 for g in bench.graphs}, "select")
            bench.calibrate("calib", stage_feeds(fp32, faces))
            base = {g: ("calib", frozenset()) for g in bench.graphs}

        # On the cpu target what int8 kernels cannot speed up stays in float before anything is measured
        # (`apply_speed_groups`); an explicit exclude list decides everything itself.
        speed_kept = []
        if exclude is None and target == "cpu":
            base, speed_kept = apply_speed_groups(bench, base)
        if exclude is None:
            config, selection = choose_precision(bench, base, ref, sel_desc, min_gain)
        else:
            config, done = parse_exclude(bench, base, exclude)
            selection = {"selection_faces": sel_desc, "override": done,
                         "result": compare_logits(ref, bench.logits(config, "select"))}
        forced = []
        if keep_float:
            config, forced = parse_exclude(bench, config, keep_float)
            selection.update(forced_float=forced, result=compare_logits(ref, bench.logits(config, "select")))

        kept = speed_kept + list(selection.get("kept_float", selection.get("override"))) + forced
        if keep_faster_subgraphs and target != "cpu":
            log.warning("keep-faster ignored: INT8 speed on this CPU says nothing about target %s", target)
        elif keep_faster_subgraphs:
            config, selection["speed_check"] = keep_faster(bench, config, sel_faces)
            if all(c == FP32 for c in config.values()):
                raise LldifError("no sub-graph runs faster in INT8 than in FP32 on this machine: use the FP32 "
                                 "package (or export INT8 without keep-faster)")
            kept += [f"{g} (speed)" for g in selection["speed_check"]["kept_float_for_speed"]]
        calibration = {**source_info, "method": method, "darken": darken, "seed": seed, **settings.describe(),
                       "kept_float": kept,
                       "precision": {g: FP32 if config[g] == FP32 else "int8" for g in bench.graphs}}
        pkg = bench.assemble(writer.tmp, config, CalibrationReport.from_dict(calibration), {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "fp32_verification": bench.fp32.extra.get("verification"),
        })
        if target == "cpu":
            amx = add_amx_variants(writer.tmp, pkg, sel_faces, max(latency_runs, 100))
            calibration["onnxruntime_amx_variants"] = pkg.calibration.extra["onnxruntime_amx_variants"] = amx
        # the INT8 logits differ a little from FP32's: the confidence is fitted on this package's own
        pkg.confidence = confidence.NO_DATA if calib_faces is None else confidence.fit_confidence(
            Pipeline(writer.tmp), calib_faces,
            confidence.source_description(confidence_data, confidence_exclude, dropped))
        report = verify_and_report(bench, writer.tmp, fp32, config, calibration, selection, sel_faces, sel_desc, ref,
                         eval_set, latency_runs, min_agreement)
        report["confidence_calibration"] = pkg.confidence
        report["seconds"] = round(time.perf_counter() - t_start, 1)
        pkg.extra["int8_report"] = report
        pkg.extra["verification"] = report["verification"]
        pkg.write(writer.tmp)
    report["out"] = str(out)
    return report


def verify_and_report(bench: Workbench, root: Path, fp32: Pipeline, config: dict, calibration: dict, selection: dict,
            sel_faces: np.ndarray, sel_desc: str, ref: np.ndarray, eval_set, latency_runs: int,
            min_agreement: float) -> dict:
    """Verify the written package through `Pipeline` and measure it against its FP32 parent."""
    int8 = Pipeline(root)
    got = int8.batched_logits(sel_faces)
    if not np.isfinite(got).all():
        raise PackageError("the INT8 package gives non-finite logits")
    through_pipeline = compare_logits(ref, got)
    verification = {"source": sel_desc, "reference": "the FP32 package", "measured_with": bench.measured_with,
                    "sub-graphs": through_pipeline}
    if bench.reference_qdq:
        verification["sub-graphs"] = compare_logits(ref, bench.logits(config, "select"))
        verification["onnxruntime_cpu_kernels"] = through_pipeline
    report: dict = {"calibration": calibration, "mixed_precision": selection, "verification": verification}
    if eval_set is not None:
        images, labels = eval_set
        lf, li = fp32.batched_logits(images), int8.batched_logits(images)
        if bench.reference_qdq:
            bench.set_inputs("eval", fp32.preprocess(images))
            li, li_kernels = bench.logits(config, "eval"), li
        report["eval"] = {"darkened_seed": 0, "measured_with": bench.measured_with,
                          "fp32_accuracy": float((lf.argmax(-1) == labels).mean()),
                          "int8_accuracy": float((li.argmax(-1) == labels).mean()), **compare_logits(lf, li)}
        if bench.reference_qdq:
            report["eval"]["onnxruntime_cpu_kernels"] = compare_logits(lf, li_kernels)
        verification["eval"] = report["eval"]
    check = report.get("eval", verification["sub-graphs"])
    if check["top1_agreement"] < min_agreement:
        raise PackageError(f"INT8 agrees with FP32 on only {check['top1_agreement']:.1%} of the verification "
                           f"faces (< {min_agreement:.0%}): calibrate on real faces, keep more in float (exclude) "
                           "or use the FP32 package")
    verification["openvino_reads"] = openvino_reads(root)

    graphs = {}
    for g in bench.graphs:
        f32, q = bench.fp32_file(g), root / f"{g}.onnx"
        graphs[g] = {"precision": FP32 if config[g] == FP32 else "int8", "fp32_bytes": f32.stat().st_size,
                     "bytes": q.stat().st_size,
                     "excluded_nodes": [] if config[g] == FP32 else sorted(config[g][1]),
                     "ops_fp32": classify_ops(optimized_op_counts(f32)),
                     "ops": classify_ops(optimized_op_counts(q))}
    report["graphs"] = graphs
    report["ops_counted_in"] = "the graph ONNX Runtime (CPU, ORT_ENABLE_ALL) runs after fusing Q/DQ into kernels"
    report["float_compute_ops_remaining"] = sum(v["ops"]["float_compute_count"] for v in graphs.values())
    if latency_runs:
        faces = eval_set[0] if eval_set is not None else sel_faces
        pipes = {"fp32": Pipeline(fp32.root, threads=1), "int8": Pipeline(root, threads=1)}
        lat = measure_latency(pipes, faces, runs=latency_runs)
        lat["int8_over_fp32"] = {k: round(lat["int8"][k] / lat["fp32"][k], 3) for k in lat["fp32"]}
        report["latency_ms_per_face"] = {"batch": 1, "threads": 1, "runs": latency_runs,
                                         "statistic": "median", **lat}
    return report
