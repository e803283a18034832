"""The `lldif-edge` command. The only place that turns LldifError into a message and an exit code."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape  # messages quote extras such as lldif-edge[openvino], which rich would swallow
from rich.table import Table

from lldif_edge.errors import LldifError
from lldif_edge.paths import check_output

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="LLDif low-light expression recognition at the edge.")
console = Console(stderr=True)
log = logging.getLogger("lldif_edge")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, show_time=False)])


def _print_version(value: bool) -> None:
    if value:
        from lldif_edge import __version__

        print(f"lldif-edge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
          version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    _setup_logging(verbose)


# ---------------------------------------------------------------- training
@app.command()
def train(
    data: Path = typer.Option(..., help="Training folder <root>/<class>/*.jpg"),
    out: Path = typer.Option(..., help="Run folder: checkpoints, resume.safetensors for --resume"),
    val: Path | None = typer.Option(None, help="Validation folder (darkened once with --val-seed)"),
    preset: str = typer.Option("base", help="Model preset: tiny | small | base | cnn (plain CNN, with --no-prior) | "
                                            "rescnn (residual CNN, the prior through FiLM adapters)"),
    stage: str = typer.Option("all", help="1 | 2 | all (2: the rest of the full plan, from --init or OUT/stage1)"),
    epochs: int = typer.Option(30, help="Stage-1 epochs"),
    stage2_epochs: int | None = typer.Option(None, help="Stage-2 epochs (default: half of --epochs)"),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(2e-3),
    darken_p: float = typer.Option(0.9, help="Share of training images darkened on the fly"),
    darken_warmup: int = typer.Option(0, help="Epochs over which that share ramps up from 0 (0: from the start)"),
    no_prior: bool = typer.Option(False, "--no-prior", help="Ablation: the LLformer without the EPD"),
    equalize: bool = typer.Option(False, "--equalize", help="Per-image histogram equalisation inside the model, "
                                                            "before the standardisation (grayscale presets)"),
    label_dropout: float = typer.Option(1.0, help="Stage 1: share of EPDs made without the true label"),
    epd_from: str = typer.Option("view", help="The EPD's face in training: view (what the LLformer sees) | "
                                              "clean (its normal-light twin, privileged)"),
    kl_weight: float = typer.Option(1.0, help="Joint phase: weight of the KL to the frozen stage-1 model"),
    dm_fraction: float = typer.Option(0.1, help="Share of stage-2 epochs that train only the sampler (at least "
                                                "one); 0: none, the joint phase starts at once"),
    init: Path | None = typer.Option(None, help="Stage-1 checkpoint to start stage 2 from"),
    image_branch: Path | None = typer.Option(None, help="Checkpoint whose image branch this run starts from (its "
                                                        "architecture too); the prior and adapters start fresh"),
    resume_moments: str = typer.Option("bf16", help="Optimiser moments in the resume file: bf16 (half the size) "
                                                    "| fp32 (a resumed run repeats the uninterrupted one exactly)"),
    seed: int = typer.Option(0, help="Data order, augmentation and (without --init-seed) the fresh weights"),
    init_seed: int | None = typer.Option(None, help="Seed of the fresh weights only: runs that share it start "
                                                    "alike, so their weights can be averaged"),
    val_seed: int = typer.Option(0),
    threads: int | None = typer.Option(None, help="torch CPU threads"),
    bf16: bool | None = typer.Option(None, help="bf16 autocast on CPU (default: only with native bf16)"),
    resume: bool = typer.Option(False, help="Continue from OUT/resume.safetensors"),
) -> None:
    """Train LLDif (stage 1, stage 2 or both) with a progress bar; keeps the best checkpoint."""
    check_output(out, "--out", folder=True)
    from lldif_edge.lldif.train import TrainConfig
    from lldif_edge.lldif.train import train as run_training

    tc = TrainConfig(
        data=str(data), out=str(out), val=str(val) if val else None, preset=preset, stage=stage, epochs=epochs,
        stage2_epochs=stage2_epochs, batch_size=batch_size, lr=lr, darken_p=darken_p, darken_warmup=darken_warmup,
        prior=not no_prior, equalize=equalize, label_dropout=label_dropout, epd_from=epd_from, kl_weight=kl_weight,
        dm_fraction=dm_fraction, seed=seed, init_seed=init_seed, val_seed=val_seed, bf16=bf16, resume=resume,
        init=str(init) if init else None, image_branch=str(image_branch) if image_branch else None,
        resume_moments=resume_moments,
    )
    best = run_training(tc, _RichReporter(), threads)
    console.print(f"best checkpoint: {best}")


class _RichReporter:
    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.3f}"),
                                 TimeRemainingColumn(), console=console, transient=True)
        self.task = None

    def start_epoch(self, phase, epoch, total_epochs, steps):
        self.progress.start()
        self.task = self.progress.add_task(f"{phase} epoch {epoch}/{total_epochs}", total=steps, loss=0.0, acc=0.0)

    def step(self, loss, acc):
        self.progress.update(self.task, advance=1, loss=loss, acc=acc)

    def end_epoch(self, record):
        self.progress.remove_task(self.task)
        self.progress.stop()
        val = record.get("val_lowlight_acc")
        console.print(
            f"{record['phase']} epoch {record['epoch']}: loss {record['train_loss']:.3f} "
            f"train acc {record['train_acc']:.3f}"
            + (f" epd L1 {record['epd_l1']:.3f}" if record["epd_l1"] else "")
            + (f" val low-light acc {val:.4f}" if val is not None else "")
            + f" ({record['seconds']:.0f} s)"
        )
        print(json.dumps(record), flush=True)  # one JSON line per epoch for logs and scripts


# ---------------------------------------------------------------- data
@app.command()
def darken(
    src: Path = typer.Argument(..., help="Folder tree of images"),
    dst: Path = typer.Argument(..., help="Output folder (PNG files, same tree)"),
    seed: int = typer.Option(0, help="Same seed, same output"),
    exclude: Path | None = typer.Option(None, help="Skip images byte-identical to one in this folder (e.g. the "
                                                   "training set) or to an earlier one: a de-duplicated test set"),
) -> None:
    """Write a darkened copy of a folder tree as PNG: each image gets a random exposure curve (gain, gamma) and
    sensor shot and read noise, the synthetic low light that training and `eval --darken` use (docs/design.md)."""
    check_output(dst, "DST", folder=True)
    from lldif_edge.lowlight import darken_folder

    done = darken_folder(src, dst, seed, exclude)
    for f in done["unreadable"]:
        console.print(f"[yellow]skipped unreadable image {f}")
    written, skipped, duplicates = done["written"], len(done["unreadable"]), done["duplicates"]
    console.print(f"darkened {written} images into {dst}" + (f", skipped {skipped} unreadable" if skipped else "")
                  + (f", left out {duplicates} duplicates" if exclude else ""))


# ---------------------------------------------------------------- evaluation
@app.command("eval")
def evaluate(
    data: Path = typer.Option(..., help="Folder <root>/<class>/*.jpg"),
    model: Path | None = typer.Option(None, help="Checkpoint (.safetensors or run folder); default: embedded"),
    package: Path | None = typer.Option(None, help="Evaluate an exported package instead of a checkpoint"),
    backend: str = typer.Option("onnxruntime", help="Runtime backend for --package"),
    device: str | None = typer.Option(None, help="Backend device (cpu, cuda, GPU, ...)"),
    compare: bool = typer.Option(False, help="With --package: top-1 agreement with the torch checkpoint"),
    darken_data: bool = typer.Option(False, "--darken", help="Darken the images first (fixed --seed)"),
    seed: int = typer.Option(0, help="Seed of --darken"),
    steps: int | None = typer.Option(None, help="Sampler steps of a checkpoint (default: the model's)"),
    tta: bool = typer.Option(False, help="Checkpoint only: average with the horizontally flipped face"),
    exclude: Path | None = typer.Option(None, help="Training folder: drop byte-identical images from --data"),
    confusion: Path | None = typer.Option(None, help="Write the confusion matrix as PNG here"),
    calibration_plot: Path | None = typer.Option(None, "--calibration-plot",
                                                 help="Write the reliability diagram (before and after the "
                                                      "package's confidence calibration) as PNG here"),
    coverage_plot: Path | None = typer.Option(None, "--coverage-plot",
                                              help="Write accuracy against coverage (answering only faces above "
                                                   "a confidence, `run --min-confidence`) as PNG here"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
) -> None:
    """Accuracy, per-class recall and macro-F1 of a checkpoint or a package on a labelled folder; the expected
    calibration error of its confidence before and after calibration, and accuracy against coverage."""
    for option, path in (("--confusion", confusion), ("--calibration-plot", calibration_plot),
                         ("--coverage-plot", coverage_plot)):
        if path:
            check_output(path, option)
    from lldif_edge import evaluation

    report, classes = evaluation.evaluate(data, model, package, backend, device, compare, steps, tta, exclude,
                                          darken_data, seed)
    if as_json:
        print(json.dumps(report), flush=True)
    else:
        _print_report(report)
        _print_confidence(report)
    # after the report: a failed write never loses the accuracy
    if confusion:
        _late_write("--confusion", confusion, lambda: evaluation.write_confusion_plot(report, classes, confusion))
    if calibration_plot:
        _late_write("--calibration-plot", calibration_plot,
                    lambda: evaluation.write_reliability_plot(report, calibration_plot))
    if coverage_plot:
        _late_write("--coverage-plot", coverage_plot, lambda: evaluation.write_coverage_plot(report, coverage_plot))


def _print_confidence(report: dict) -> None:
    c, rc = report["confidence"], {p["coverage"]: p for p in report["risk_coverage"]["points"]}
    how = (f"calibrated (temperature {c['temperature']:.3f}, label smoothing undone {c['label_smoothing']:.3f})"
           if c["calibrated"] else "not calibrated (plain softmax)")
    console.print(f"confidence {how}: ECE ({c['ece_bins']} bins) {c['ece_before']:.4f} before, "
                  f"{c['ece_after']:.4f} after", highlight=False, soft_wrap=True)
    console.print("accuracy when answering only the most confident faces: " + ", ".join(
        f"{cov:.0%} of faces {rc[cov]['accuracy']:.3f} (--min-confidence {rc[cov]['threshold']:.2f})"
        for cov in (0.5, 0.8, 1.0)), highlight=False, soft_wrap=True)


@app.command()
def info(as_json: bool = typer.Option(False, "--json", help="Print as JSON")) -> None:
    """Which backends and devices are present here, why a backend is not, and the CPU features INT8 needs."""
    from lldif_edge.hardware import CPU_FEATURES, machine_facts
    from lldif_edge.runtimes.registry import backend_report

    facts = {**machine_facts(), "backends": backend_report()}
    if as_json:
        print(json.dumps(facts))
        return
    table = Table(title="lldif-edge backends")
    for col in ("backend", "available", "devices", "why not"):
        table.add_column(col)
    for r in facts["backends"]:
        table.add_row(r["backend"], "yes" if r["available"] else "no", ", ".join(r["devices"]), escape(r["why_not"]))
    out = Console()
    out.print(table)
    cpu = facts["cpu"]
    found = ", ".join(cpu["features"]) or "none of " + ", ".join(CPU_FEATURES)
    out.print(f"CPU: {cpu['model']}; int8/bf16 features: {found}")
    out.print(f"python {facts['python']} on {facts['machine']}, {facts['cpu_threads']} CPU threads, "
              f"display: {'yes' if facts['display'] else 'no (run --show is off by default)'}, "
              f"torch: {'installed' if facts['torch_installed'] else 'not installed (runtime-only install)'}")


def _late_write(option: str, path: Path, write) -> None:
    """Write a file after the results were printed; a failure is a one-line error, not a traceback."""
    try:
        write()
    except OSError as e:
        raise LldifError(f"{option} {path}: {e.strerror or e}") from e


def _print_report(report: dict) -> None:
    table = Table(title=f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  "
                        f"({report['images']} images)")
    for col in ("class", "recall", "precision", "support"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for name, m in report["per_class"].items():
        table.add_row(name, f"{m['recall']:.3f}", f"{m['precision']:.3f}", str(m["support"]))
    Console().print(table)
    keys = ("parameters", "mmacs_per_face", "sample_steps", "backend", "agreement_with_torch", "duplicates_dropped")
    extra = {k: report[k] for k in keys if report.get(k) is not None}
    Console().print("  ".join(f"{k}: {v}" for k, v in extra.items()))


@app.command()
def distill(
    model: Path | None = typer.Option(None, help="Teacher checkpoint (a prior model); default: embedded"),
    steps: int = typer.Option(..., help="Student sampler steps K (1 or 2; part of the exported model)"),
    teacher_steps: int | None = typer.Option(None, help="Teacher sampler steps S (default: the teacher's)"),
    data: Path = typer.Option(..., help="Training folder <root>/<class>/*.jpg"),
    val: Path | None = typer.Option(None, help="Validation folder (darkened once with --val-seed)"),
    out: Path = typer.Option(..., help="Student checkpoint (.safetensors + .json)"),
    epochs: int = typer.Option(5),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(1e-3, help="Start learning rate; cut 10x after an epoch that does not improve"),
    darken_p: float = typer.Option(0.9, help="Share of training images darkened on the fly"),
    seed: int = typer.Option(0),
    val_seed: int = typer.Option(0),
    threads: int | None = typer.Option(None, help="torch CPU threads (the timings use them too)"),
    cond_channels: str | None = typer.Option(None, help="A new, narrower condition encoder for the student, "
                                             "its stage widths as in 8,16,32 (default: the teacher's encoder)"),
    cond_convs: int | None = typer.Option(None, help="Convolutions per stage of the student's new condition "
                                                     "encoder: 1 or 2 (default: the teacher's)"),
) -> None:
    """Distil the sampler to K steps: the student reproduces the teacher's S-step EPD and class scores."""
    check_output(out, "--out", make_parents=True)
    widths = None
    if cond_channels is not None:
        try:
            widths = tuple(int(w) for w in cond_channels.split(","))
        except ValueError:
            raise LldifError(f"--cond-channels {cond_channels!r}: expected widths separated by commas, "
                             "as in 8,16,32") from None
    from lldif_edge.lldif.distill import distill as run_distill

    m = run_distill(model, steps, teacher_steps, data, out, epochs, batch_size, lr, val_dir=val,
                    val_seed=val_seed, darken_p=darken_p, seed=seed, threads=threads,
                    reporter=_RichReporter(), cond_channels=widths, cond_convs=cond_convs)
    where = "low-light validation images" if m["check_set"] == "val" else "darkened training images"
    table = Table(title=f"{m['check_images']} {where}; best epoch {m['best_epoch']}; threads {m['threads']}")
    for col in ("sampler", "accuracy", "agreement", "EPD L1", "ms/face"):
        table.add_column(col, justify="left" if col == "sampler" else "right")
    k, s = m["steps_k"], m["teacher_steps_s"]
    table.add_row(f"teacher, {s} steps", f"{m['teacher_acc']:.4f}", "", "", f"{m['teacher_ms_per_face']:.2f}")
    table.add_row(f"teacher, {k} steps", f"{m['undistilled_acc']:.4f}", f"{m['undistilled_agreement']:.4f}",
                  f"{m['undistilled_epd_l1']:.5f}", "")
    table.add_row(f"student, {k} steps", f"{m['student_acc']:.4f}", f"{m['agreement']:.4f}",
                  f"{m['epd_l1']:.5f}", f"{m['student_ms_per_face']:.2f}")
    Console().print(table)
    console.print(f"student checkpoint: {m['checkpoint']}")


# ---------------------------------------------------------------- export and benchmark
@app.command()
def export(
    model: Path | None = typer.Option(None, help="Checkpoint; default: the embedded default model"),
    out: Path = typer.Option(Path("lldif-package"), help="Package folder to write"),
    steps: int | None = typer.Option(None, help="Sampler steps K (default: the checkpoint's)"),
    opset: int = typer.Option(17, help="ONNX opset"),
    fused: bool = typer.Option(False, help="Also write fused.onnx (everything in one graph)"),
    force: bool = typer.Option(False, help="Replace a non-empty --out"),
    verify_data: Path | None = typer.Option(None, help="Labelled folder of real faces for the parity check "
                                                           "(default: generated faces)"),
    target: str | None = typer.Option(None, "--target", help="What to write: fp32 (default), int8-cpu, "
                                      "int8-tensorrt, fp16 (the table in lldif_edge/export/targets.py)"),
    int8: bool = typer.Option(False, "--int8", help="Write an INT8 package (static QDQ, per-channel weights): "
                                                    "--target int8-<--int8-target>"),
    calib: Path | None = typer.Option(None, "--calib", help="--int8: folder of face crops or photos, or a video "
                                                            "file (default: data-free calibration)"),
    calib_camera: int | None = typer.Option(None, "--calib-camera", help="--int8: calibrate on camera N"),
    calib_count: int = typer.Option(256, "--calib-count", min=1, help="--int8: number of faces taken from --calib "
                                    "or --calib-camera (data-free calibration generates at most 64: each costs "
                                    "an optimisation)"),
    calib_method: str = typer.Option("minmax", "--calib-method", help="--int8: minmax | entropy | percentile"),
    darken_calib: bool = typer.Option(False, "--darken", help="--int8: darken the normal-light calibration faces"),
    eval_dir: Path | None = typer.Option(None, "--eval", help="--int8: labelled folder, darkened with seed 0, "
                                                              "for FP32 vs INT8 accuracy and agreement"),
    int8_target: str = typer.Option("cpu", "--int8-target", help="--int8: cpu (U8 activations, S8 weights) | "
                                                                 "tensorrt (symmetric S8/S8)"),
    int8_exclude: str | None = typer.Option(
        None, "--int8-exclude", help="--int8: comma list to keep in float instead of measuring what to keep: "
        "sub-graphs (denoiser), node groups (Elementwise, Standardize, LayerNormalization, Softmax, Gelu, "
        "ResidualAdd, MatMul, ShallowConv, VectorGemm, ActMatMul; or llformer:Softmax) or node names; '' "
        "quantizes everything (the cpu target's float speed groups included)"),
    int8_keep_float: str | None = typer.Option(
        None, "--int8-keep-float", help="--int8: comma list, in --int8-exclude's form, kept in float on top of "
        "what the export measures (or --int8-exclude lists)"),
    int8_reduce_range: bool | None = typer.Option(
        None, "--int8-reduce-range/--int8-full-range", help="--int8: 7-bit weights (default for the cpu target: "
                                                            "no int16 saturation on x86 without VNNI)"),
    int8_keep_faster: bool = typer.Option(False, "--int8-keep-faster", help="--int8: also keep in FP32 the "
                                          "sub-graphs whose INT8 version is slower on this machine"),
    confidence_data: Path | None = typer.Option(
        None, "--confidence-data", help="Labelled folder of held-out faces (never the training images) to calibrate "
        "the package's confidence on, each darkened and in normal light (default: none, the plain softmax)"),
    confidence_exclude: Path | None = typer.Option(
        None, "--confidence-exclude", help="Training folder: drop byte-identical images from --confidence-data"),
) -> None:
    """Export a checkpoint into a verified model package of ONNX sub-graphs (FP32, or INT8 with --int8)."""
    from lldif_edge.export.targets import TARGETS, Common, Int8Settings
    from lldif_edge.export.targets import export as export_target

    check_output(out, "--out", folder=True)
    if confidence_exclude and not confidence_data:
        raise LldifError("--confidence-exclude only applies with --confidence-data")
    if int8 and f"int8-{int8_target}" not in TARGETS:
        raise LldifError(f"unknown --int8-target '{int8_target}' (choose from "
                         f"{', '.join(n.removeprefix('int8-') for n, t in TARGETS.items() if t.int8)})")
    if int8 and target not in (None, f"int8-{int8_target}"):
        raise LldifError(f"--int8 --int8-target {int8_target} means --target int8-{int8_target}, not {target}")
    name = target or (f"int8-{int8_target}" if int8 else "fp32")
    if name not in TARGETS:
        raise LldifError(f"unknown --target '{name}' (choose from {', '.join(TARGETS)})")
    common = Common(steps=steps, opset=opset, fused=fused, force=force, verify_data=verify_data,
                    confidence_data=confidence_data, confidence_exclude=confidence_exclude)
    if not TARGETS[name].int8:
        given = [name for name, v in (("--calib", calib), ("--calib-camera", calib_camera), ("--eval", eval_dir),
                                      ("--int8-exclude", int8_exclude), ("--int8-keep-float", int8_keep_float),
                                      ("--int8-reduce-range/--int8-full-range", int8_reduce_range)) if v is not None]
        if given or darken_calib:
            raise LldifError(f"{', '.join(given + (['--darken'] if darken_calib else []))} only apply with --int8")
    else:
        if fused:
            console.print("[yellow]--fused is ignored with --int8: the INT8 package runs its sub-graphs")
        exclude = None if int8_exclude is None else [e for e in int8_exclude.split(",") if e.strip()]
        keep_float = [e for e in (int8_keep_float or "").split(",") if e.strip()]
        settings = Int8Settings(calib=calib, calib_camera=calib_camera, calib_count=calib_count, method=calib_method,
                                darken=darken_calib, eval_dir=eval_dir, exclude=exclude, keep_float=keep_float,
                                reduce_range=int8_reduce_range, keep_faster=int8_keep_faster)
        report = export_target(name, model, out, common, settings)
        _print_int8(report)
        _print_calibration(report["confidence_calibration"])
        return
    manifest = export_target(name, model, out, common)
    v = manifest["verification"]
    console.print(f"wrote {out}: "
                  + ", ".join(f"{k} ({g['bytes'] / 1e3:.0f} kB)" for k, g in manifest["graphs"].items()))
    console.print(f"verified on {v['source']}: max |logit diff| {v['sub-graphs']['max_abs_logit_diff']:.1e}, "
                  f"top-1 agreement {v['sub-graphs']['top1_agreement']:.4f}; OpenVINO reads it: {v['openvino_reads']}")
    _print_calibration(manifest["confidence_calibration"])


def _print_calibration(c: dict) -> None:
    if not c.get("fitted_on"):
        console.print(f"[yellow]confidence not calibrated: {c['note']}", highlight=False, soft_wrap=True)
        return
    x = c["cross_fitted"]
    console.print(f"confidence calibrated on {c['fitted_on']['faces']} faces of {c['fitted_on']['data']}: "
                  f"temperature {c['temperature']:.3f}, label smoothing undone {c['label_smoothing']:.3f}; "
                  f"ECE ({c['ece_bins']} bins, {x['folds']}-fold cross-fitted) in the dark "
                  f"{x['dark']['ece_before']:.4f} -> {x['dark']['ece_after']:.4f}, in normal light "
                  f"{x['normal']['ece_before']:.4f} -> {x['normal']['ece_after']:.4f}", highlight=False, soft_wrap=True)


@app.command("calibrate-confidence")
def calibrate_confidence(
    package: Path = typer.Option(..., help="Model package folder whose manifest gets the calibration"),
    data: Path = typer.Option(..., help="Labelled folder of held-out faces <root>/<class>/*.jpg (never the "
                                        "training images); each is used darkened and in normal light"),
    exclude: Path | None = typer.Option(None, help="Training folder: drop byte-identical images from --data"),
    seed: int = typer.Option(0, help="Seed of the darkening"),
    backend: str = typer.Option("onnxruntime", help="Runtime backend that computes the logits"),
) -> None:
    """Fit a package's confidence calibration (temperature, undone label smoothing) on held-out faces and write
    it into its manifest; the sub-graphs stay as they are. `export --confidence-data` does the same at export."""
    from lldif_edge.calibration.confidence import calibrate_package
    from lldif_edge.package import MANIFEST

    if (package / MANIFEST).is_file():
        check_output(package / MANIFEST, "--package")
    _print_calibration(calibrate_package(package, data, exclude, seed, backend))


def _print_int8(r: dict) -> None:
    c = r["calibration"]
    fewer = ""
    if c.get("requested", c["count"]) > c["count"]:
        fewer = ("; data-free calibration generates at most that many, --calib-count counts faces from --calib or "
                 "--calib-camera" if "data_free" in c else f"; {c['requested']} asked for, no more found")
    console.print(f"wrote {r['out']} in {r['seconds']:.0f} s: calibrated on {c['count']} faces ({c['source']}{fewer}); "
                  f"{c['method']}, {c['target']} target: {c['activation_type']} activations, {c['weight_type']} "
                  f"per-channel weights; kept in float: {', '.join(c['kept_float']) or 'nothing'}", highlight=False)
    lat = r.get("latency_ms_per_face", {})
    table = Table(title="INT8 vs FP32 per sub-graph (ms: median per face, batch 1, 1 thread)",
                  caption="int8, float: conv and matmul kernels ONNX Runtime runs on this CPU")
    for col in ("graph", "precision", "kB", "int8", "float", "FP32 ms", "INT8 ms"):
        table.add_column(col, justify="left" if col == "graph" else "right", no_wrap=True)
    for name, g in r["graphs"].items():
        table.add_row(name, g["precision"], f"{g['fp32_bytes'] / 1e3:.0f} -> {g['bytes'] / 1e3:.0f}",
                      str(g["ops"]["int8_kernel_count"]), str(g["ops"]["float_compute_count"]),
                      f"{lat['fp32'][name]:.3f}" if lat else "", f"{lat['int8'][name]:.3f}" if lat else "")
    if lat:
        table.add_row("total", "", "", "", "", f"{lat['fp32']['end_to_end']:.3f}", f"{lat['int8']['end_to_end']:.3f}")
    Console().print(table)
    amx = c.get("onnxruntime_amx_variants")
    if amx and amx.get("measured"):
        lat_amx = amx["latency_ms_per_face"]
        console.print("ONNX Runtime AMX variants (conv weights re-encoded for ORT's AMX GEMM path; used on AMX "
                      "CPUs only): " + ", ".join(
                          f"{g} {lat_amx['main'][g]:.3f} -> {lat_amx['amx'][g]:.3f} ms "
                          f"({'kept' if g in amx['written'] else 'not faster, dropped'})" for g in amx["measured"]),
                      highlight=False)
    if lat:
        console.print(f"INT8 takes {lat['int8']['end_to_end'] / lat['fp32']['end_to_end']:.2f}x the FP32 time per face "
                      "on this CPU", highlight=False)
    v = r["verification"]
    console.print(f"top-1 agreement with FP32 on {v['source']}: {v['sub-graphs']['top1_agreement']:.4f} "
                  f"({v['measured_with']})", highlight=False)
    if "eval" in r:
        e = r["eval"]
        console.print(f"on --eval ({e['images']} darkened images): accuracy FP32 {e['fp32_accuracy']:.4f}, "
                      f"INT8 {e['int8_accuracy']:.4f}; top-1 agreement {e['top1_agreement']:.4f}", highlight=False)


@app.command()
def bench(
    package: list[Path] | None = typer.Option(None, help="Package folder(s), e.g. FP32 and INT8; "
                                                         "default: the embedded default"),
    backend: str = typer.Option("onnxruntime", help="Runtime backend, or 'all' for every available one"),
    device: str | None = typer.Option(None, help="Backend device"),
    threads: int = typer.Option(1, help="Intra-op threads (latency is measured per face at batch 1)"),
    batch: int = typer.Option(32, help="Batch size of the throughput run"),
    runs: int = typer.Option(200, help="Timed batch-1 runs after warm-up"),
    rounds: int = typer.Option(5, help="Split the timed runs into rounds that visit every runner in turn"),
    reference: bool | None = typer.Option(None, help="Time the torch S-step teacher too "
                                                     "(default: when torch and the checkpoint are here)"),
    model: Path | None = typer.Option(None, help="Reference checkpoint (default: the one in the manifest)"),
    teacher_steps: int | None = typer.Option(None, help="Reference sampler steps (default: the teacher's S)"),
    chart: Path | None = typer.Option(None, help="Write a PNG bar chart of latency and throughput"),
    profile: bool = typer.Option(False, help="Also time every op type and kernel (onnxruntime, openvino): "
                                             "where the time goes, and which layers really ran in int8"),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON"),
) -> None:
    """Latency p50/p90/p99 per sub-graph and end to end, throughput, and the ratio to the torch teacher."""
    if chart:
        check_output(chart, "--chart")
    from lldif_edge import bench as bench_lib

    results = bench_lib.run_bench(package or [None], backend, device, threads, batch, runs, rounds, reference, model,
                                  teacher_steps, profile)
    if as_json:
        print(json.dumps(results), flush=True)
    else:
        _print_bench(results)
    if chart:  # after the tables: a failed write never loses the measurements
        _late_write("--chart", chart, lambda: bench_lib.write_bench_chart(results, chart))


def _print_bench(results: dict) -> None:
    """Tables that fit 80 columns: end to end per runner, then p50 per sub-graph; details as lines below."""
    out = Console()
    runners = results["runners"]
    cpu = results["cpu"]
    out.print(f"{cpu['model']} ({', '.join(cpu['features']) or 'no int8/bf16 features'}), "
              f"{results['threads']} thread(s)", highlight=False)
    batch = next(iter(runners.values()))["batch"]
    table = Table(title=f"ms per face at batch 1; faces/s at batch {batch}")
    for col in ("runner", "p50", "p90", "p99", "faces/s"):
        table.add_column(col, justify="left" if col == "runner" else "right")
    for name, r in runners.items():
        lat = r["latency_ms"]["end_to_end"]
        table.add_row(escape(name), f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}",
                      f"{r['throughput_fps']:.0f}")
    out.print(table)
    stages = list(dict.fromkeys(s for r in runners.values() for s in r["latency_ms"] if s != "end_to_end"))
    if stages:
        per_stage = Table(title="p50 per sub-graph (ms, batch 1)")
        per_stage.add_column("runner")
        for stage in stages:
            per_stage.add_column(stage, justify="right")
        for name, r in runners.items():
            lat = r["latency_ms"]
            per_stage.add_row(escape(name), *(f"{lat[s]['p50']:.3f}" if s in lat else "" for s in stages))
        out.print(per_stage)
    for backend_name, ratio in results.get("int8_vs_fp32_p50", {}).items():
        out.print(f"{backend_name}: INT8 takes {ratio:.2f}x the FP32 time per face (p50, batch 1)", highlight=False)
    if "speedup_vs_torch_p50" in results:
        out.print(f"{next(iter(runners))} is {results['speedup_vs_torch_p50']:.1f}x faster than the torch teacher "
                  "(p50, batch 1)", highlight=False)
    for name, r in runners.items():
        floats = r.get("float_subgraphs")
        out.print(f"{escape(name)}: {escape(r['describe'])}"
                  + (f"; kept in FP32: {', '.join(floats)}" if floats else ""), highlight=False)
    for label, why in results["skipped"].items():
        out.print(f"{label}: not run ({escape(why)})", highlight=False)
    for name, rows in results.get("profiles", {}).items():
        kinds: dict[str, float] = {}
        for r in rows:
            kinds[r["kind"]] = kinds.get(r["kind"], 0.0) + r["share"]
        out.print(f"{escape(name)}, where the time goes: "
                  + ", ".join(f"{k} {v:.0%}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])),
                  highlight=False)
        prof = Table(title=f"{escape(name)}: ops >= 1 % of the time")
        for col in ("graph", "op", "kernel", "kind", "ms/face", "share"):
            prof.add_column(col, justify="right" if col in ("ms/face", "share") else "left")
        for r in rows:
            if r["share"] >= 0.01:
                prof.add_row(r["graph"], r["op"], r["kernel"], r["kind"], f"{r['ms_per_face']:.4f}",
                             f"{r['share']:.1%}")
        out.print(prof)


# ---------------------------------------------------------------- application
@app.command("run")
def run_app(
    camera: int | None = typer.Option(None, "--camera", help="Camera index, e.g. 0"),
    video: str | None = typer.Option(None, "--video", help="Video file or stream URL (rtsp://, http://)"),
    images: Path | None = typer.Option(None, "--images", help="Folder of images, one frame each"),
    package: Path | None = typer.Option(None, help="Model package folder (default: the shipped INT8 one)"),
    backend: str = typer.Option("onnxruntime", help="onnxruntime | openvino | tensorrt"),
    device: str | None = typer.Option(None, help="Device of the backend (default: its best)"),
    detector: str = typer.Option("auto", help="Face detector: yunet | haar | auto (YuNet when its model is given "
                                              "or cached, else Haar)"),
    detector_model: Path | None = typer.Option(
        None, "--detector-model", help="YuNet .onnx (default: ~/.cache/lldif-edge or $LLDIF_EDGE_CACHE)"),
    fetch_detector: bool = typer.Option(False, "--fetch-detector", help="Download the YuNet model into the cache "
                                                                        "when it is not there (sha256-checked)"),
    align: bool = typer.Option(True, "--align/--no-align", help="Turn faces upright and frame them like the "
                                                                "training faces on YuNet's landmarks"),
    brighten: str = typer.Option("auto", help="Brighten the detector's input only (the classifier sees the "
                                              "original frame): none | gamma | clahe | gamma+clahe | auto "
                                              "(gamma on dark frames only)"),
    show: bool | None = typer.Option(None, "--show/--no-show", help="Window (default: if a display exists)"),
    record: Path | None = typer.Option(None, "--record", help="Write the annotated video to OUT.mp4"),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per frame on stdout"),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, help="Stop after N frames"),
    threads: int = typer.Option(1, help="Runtime threads per classification call"),
    detect_every: int = typer.Option(10, min=1, help="Full-frame face detection every N frames; in between, "
                                                      "known faces are re-found near their last box"),
    min_confidence: float = typer.Option(0.0, "--min-confidence", min=0.0, max=1.0,
                                         help="Label 'not sure' (JSON: label null, with the probabilities) when "
                                              "the calibrated confidence is under P; `eval` shows the accuracy "
                                              "each P buys"),
) -> None:
    """Detect faces, classify their expression, track and draw them, from a camera, a video or images."""
    if record:
        check_output(record, "--record", suffixes=(".mp4",))
    from lldif_edge.app import Recognizer, make_detector, open_source
    from lldif_edge.app import run as run_loop

    source = open_source(camera=camera, video=video, images=images)  # a bad camera fails within 5 s
    try:
        det = make_detector(detector, detector_model, brighten, fetch=fetch_detector)
        rec = Recognizer.load(package, backend=backend, device=device, detector=det, threads=threads,
                              detect_every=detect_every, min_confidence=min_confidence, align=align)
    except BaseException:
        source.close()
        raise
    per_image = _ImageResults(source) if images is not None and not as_json else None
    stats = run_loop(rec, source, show=show, record=record, json_out=sys.stdout if as_json else per_image,
                     max_frames=max_frames)
    st = stats["stages"]
    if per_image is not None:
        per_image.print()
    if as_json:  # the last line: FPS and per-stage times, for machines (frame lines carry "frame", this "summary")
        try:
            print(json.dumps({"summary": stats}, separators=(",", ":")), flush=True)
        except BrokenPipeError:
            pass
    console.print(
        f"{stats['frames']} frames in {stats['seconds']:.1f} s: {stats['fps']:.1f} FPS ({stats['ended']}); "
        + "  ".join(f"{k} {v['median_ms']:.1f}" for k, v in st.items() if v["median_ms"] is not None)
        + " ms median" + (f"; recorded {stats['recording']}" if stats["recording"] else ""),
        highlight=False)


class _ImageResults:
    """Takes the run loop's JSON lines for an images folder and prints one table row per face at the end."""

    def __init__(self, source):
        self.source, self.rows = source, []

    def write(self, line: str) -> None:
        self.rows.append((self.source.current, json.loads(line)["faces"]))

    def flush(self) -> None:
        pass

    def print(self) -> None:
        root = Path(self.source.name)
        table = Table(title=f"faces in {root}")
        table.add_column("image", overflow="fold")
        for col in ("face", "expression", "confidence", "box x,y,w,h"):
            table.add_column(col, justify="right" if col in ("face", "confidence") else "left", no_wrap=True)
        for path, faces in self.rows:
            name = escape(path.relative_to(root).as_posix())
            if not faces:
                table.add_row(name, "", "no face found", "", "")
            for i, f in enumerate(faces, 1):
                table.add_row(name if i == 1 else "", str(i), f["label"] or "not sure", f"{f['confidence']:.2f}",
                              ",".join(str(v) for v in f["box"]))
        Console().print(table)
        sys.stdout.flush()  # the table before the summary line on stderr


def main() -> None:
    try:
        app()
    except LldifError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # one line, unwrapped
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
