"""The `lldif-edge` command. The only place that turns LldifError into a message and an exit code."""

from __future__ import annotations

import json
import logging
import sys
import zlib
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from lldif_edge.errors import DataError, LldifError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLDif low-light expression recognition at the edge.")
console = Console(stderr=True)
log = logging.getLogger("lldif_edge")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False, show_time=False)])


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")) -> None:
    _setup_logging(verbose)


# ---------------------------------------------------------------- training
@app.command()
def train(
    data: Path = typer.Option(..., help="Training folder <root>/<class>/*.jpg"),
    out: Path = typer.Option(..., help="Run folder: checkpoints, last.pt for --resume"),
    val: Path | None = typer.Option(None, help="Validation folder (darkened once with --val-seed)"),
    preset: str = typer.Option("base", help="Model preset: tiny | base"),
    stage: str = typer.Option("all", help="1 | 2 | all"),
    epochs: int = typer.Option(30, help="Stage-1 epochs"),
    stage2_epochs: int | None = typer.Option(None, help="Stage-2 epochs (default: half of --epochs)"),
    batch_size: int = typer.Option(128),
    lr: float = typer.Option(2e-3),
    darken_p: float = typer.Option(0.9, help="Share of training images darkened on the fly"),
    no_prior: bool = typer.Option(False, "--no-prior", help="Ablation: the LLformer without the EPD"),
    init: Path | None = typer.Option(None, help="Stage-1 checkpoint to start stage 2 from"),
    seed: int = typer.Option(0),
    val_seed: int = typer.Option(0),
    threads: int | None = typer.Option(None, help="torch CPU threads"),
    bf16: bool | None = typer.Option(None, help="bf16 autocast on CPU (default: only with native bf16)"),
    resume: bool = typer.Option(False, help="Continue from OUT/last.pt"),
) -> None:
    """Train LLDif (stage 1, stage 2 or both) with a progress bar; keeps the best checkpoint."""
    import torch

    from lldif_edge.lldif.train import TrainConfig
    from lldif_edge.lldif.train import train as run_training

    if stage not in ("1", "2", "all"):
        raise LldifError(f"--stage must be 1, 2 or all, not '{stage}'")
    if threads:
        torch.set_num_threads(threads)
    tc = TrainConfig(
        data=str(data), out=str(out), val=str(val) if val else None, preset=preset, stage=stage, epochs=epochs,
        stage2_epochs=stage2_epochs, batch_size=batch_size, lr=lr, darken_p=darken_p, prior=not no_prior,
        seed=seed, val_seed=val_seed, bf16=bf16, resume=resume, init=str(init) if init else None,
    )
    best = run_training(tc, _RichReporter())
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
        print(json.dumps(record), file=sys.stderr if False else sys.stdout, flush=True)


# ---------------------------------------------------------------- data
@app.command()
def darken(
    src: Path = typer.Argument(..., help="Folder tree of images"),
    dst: Path = typer.Argument(..., help="Output folder (PNG files, same tree)"),
    seed: int = typer.Option(0, help="Same seed, same output"),
) -> None:
    """Write a darkened copy of a folder tree (DESIGN section 2 synthesis)."""
    import cv2
    import numpy as np

    from lldif_edge.data import IMAGE_EXTS
    from lldif_edge.lowlight import darken as darken_one

    if not src.is_dir():
        raise DataError(f"source folder not found: {src}")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DataError(f"no images under {src}")
    written = skipped = 0
    for f in files:
        rel = f.relative_to(src)
        img = cv2.imdecode(np.fromfile(str(f), np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            console.print(f"[yellow]skipped unreadable image {f}")
            skipped += 1
            continue
        # Per-file stream: the output of a file does not depend on which other files are present.
        rng = np.random.default_rng([seed, zlib.crc32(rel.as_posix().encode())])
        target = dst / rel.with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.stem + ".tmp.png")
        if img.dtype != np.uint8:
            img = (img / 256).astype(np.uint8)
        cv2.imwrite(str(tmp), darken_one(img, rng))
        tmp.replace(target)
        written += 1
    console.print(f"darkened {written} images into {dst}" + (f", skipped {skipped} unreadable" if skipped else ""))


# ---------------------------------------------------------------- evaluation
@app.command("eval")
def evaluate(
    data: Path = typer.Option(..., help="Folder <root>/<class>/*.jpg"),
    model: Path | None = typer.Option(None, help="Checkpoint (.safetensors or run folder); default: embedded"),
    darken_data: bool = typer.Option(False, "--darken", help="Darken the images first (fixed --seed)"),
    seed: int = typer.Option(0, help="Seed of --darken"),
    steps: int | None = typer.Option(None, help="Sampler steps (default: the model's)"),
    tta: bool = typer.Option(False, help="Average with the horizontally flipped face"),
    exclude: Path | None = typer.Option(None, help="Training folder: drop byte-identical images from --data"),
    confusion: Path | None = typer.Option(None, help="Confusion-matrix PNG (default: beside nothing, skipped)"),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
) -> None:
    """Accuracy, per-class recall and macro-F1 of a checkpoint on a labelled folder."""
    import numpy as np

    from lldif_edge.data import drop_duplicates, load_folder
    from lldif_edge.lldif.checkpoint import load_checkpoint, resolve_checkpoint
    from lldif_edge.lldif.model import count_macs, inference_parameters
    from lldif_edge.lldif.train import predict_logits
    from lldif_edge.lowlight import darken_many
    from lldif_edge.metrics import classification_report, write_confusion_png

    net, meta = load_checkpoint(model)
    cfg = net.cfg
    if steps:
        cfg.sample_steps = steps
    channels = 1 if cfg.grayscale else 3
    ds = load_folder(data, cfg.classes, cfg.input_size, channels)
    dropped = None
    if exclude:
        ds, dropped = drop_duplicates(ds, load_folder(exclude, cfg.classes, cfg.input_size, channels))
    images = darken_many(ds.images, seed) if darken_data else ds.images
    preds = predict_logits(net, images, tta=tta).argmax(-1)
    report = classification_report(ds.labels, preds, cfg.classes)
    report.update(model=str(resolve_checkpoint(model)), data=str(data), darkened=darken_data, seed=seed,
                  sample_steps=cfg.sample_steps, tta=tta, duplicates_dropped=dropped,
                  parameters=inference_parameters(net), mmacs_per_face=round(count_macs(net) / 1e6, 1))
    if confusion:
        write_confusion_png(report["confusion"], cfg.classes, confusion,
                            f"{Path(report['model']).name} on {data.name}: acc {report['accuracy']:.4f}")
    if as_json:
        print(json.dumps(report))
        return
    _print_report(report)
    del np


def _print_report(report: dict) -> None:
    table = Table(title=f"accuracy {report['accuracy']:.4f}  macro-F1 {report['macro_f1']:.4f}  "
                        f"({report['images']} images)")
    for col in ("class", "recall", "precision", "support"):
        table.add_column(col, justify="right" if col != "class" else "left")
    for name, m in report["per_class"].items():
        table.add_row(name, f"{m['recall']:.3f}", f"{m['precision']:.3f}", str(m["support"]))
    Console().print(table)
    extra = {k: report[k] for k in ("parameters", "mmacs_per_face", "sample_steps") if k in report}
    Console().print("  ".join(f"{k}: {v}" for k, v in extra.items()))


def main() -> None:
    try:
        app()
    except LldifError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
