"""The model package (docs/design.md, section 3): a folder with manifest.json and ONNX sub-graphs.

Torch-free: the runtime reads packages with this module; the exporter writes them with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lldif_edge.errors import PackageError

FORMAT = "lldif-edge-package/1"
MANIFEST = "manifest.json"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# The embedded default packages, shipped pre-exported so a runtime-only install needs no torch.
DEFAULT_PACKAGES = (WEIGHTS_DIR / "default_int8", WEIGHTS_DIR / "default_fp32")


# A graph may carry variant files that a backend runs instead of its main file on some machines: the same
# inputs, outputs and numbers, encoded for a faster kernel there (see `Pipeline.graph_path`).
ORT_AMX_VARIANT = "onnxruntime-cpu-amx"


# How the runtime turns logits into probabilities (`metrics.calibrated_probabilities`): a temperature and the
# label smoothing to undo, fitted at export on held-out faces (`calibration.confidence`). Absent: plain softmax.
CONFIDENCE_KEY = "confidence_calibration"


def confidence_calibration(manifest: dict) -> tuple[float, float]:
    """(temperature, label_smoothing) of a package; (1, 0), the plain softmax, when its manifest has none."""
    c = manifest.get(CONFIDENCE_KEY) or {}
    try:
        t, e = float(c.get("temperature", 1.0)), float(c.get("label_smoothing", 0.0))
    except (AttributeError, TypeError, ValueError):
        t = e = math.nan
    if not (math.isfinite(t) and t > 0 and 0 <= e < 1):
        raise PackageError(f"manifest: {CONFIDENCE_KEY} needs a temperature > 0 and a label_smoothing in [0, 1), "
                           f"got {c!r}; re-export the package or fit it again (lldif-edge calibrate-confidence)")
    return t, e


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_ref(ckpt: Path) -> str:
    """How a manifest names its source checkpoint: 'embedded:<file>' for the shipped default, else a path."""
    ckpt = Path(ckpt).resolve()
    return f"embedded:{ckpt.name}" if ckpt.parent == WEIGHTS_DIR else str(ckpt)


def checkpoint_path(manifest: dict) -> Path:
    ref = manifest["model"]["checkpoint"]
    return WEIGHTS_DIR / ref.split(":", 1)[1] if ref.startswith("embedded:") else Path(ref)


def default_package() -> Path:
    for p in DEFAULT_PACKAGES:
        if (p / MANIFEST).is_file():
            return p
    raise PackageError(
        "no embedded default package found; create one with `lldif-edge export` or pass --package DIR"
    )


# ---------------------------------------------------------------- the typed manifest
# Each record keeps the keys it does not model in `extra` (reports, notes, sizes), so reading and writing a
# manifest keeps everything in it. It also keeps its key order (`order`): a record read from a file writes its
# keys as they were there, one built by the exporter in the order exports have always had, so a package
# written through these records is byte for byte what the exporter wrote before them.
MANIFEST_ORDER = ("format", "created", "model", "classes", "input", "opset", "graphs", "pipeline", "pipeline_fused",
                  "calibration", CONFIDENCE_KEY, "tools", "sampler", "fp32_verification", "int8_report",
                  "verification")


def _ordered(d: dict, order: tuple[str, ...]) -> dict:
    """`d` with the keys named in `order` first, in that order; the others after, as they come."""
    return {**{k: d[k] for k in order if k in d}, **d}
def _need(cond: bool, where: str, what: str, got: object) -> None:
    if not cond:
        raise PackageError(f"{MANIFEST}: {where} must be {what}, got {got!r}; re-export the package")


def _split(d: object, where: str, known: tuple[str, ...]) -> tuple[dict, dict]:
    _need(isinstance(d, dict), where, "an object", d)
    return {k: d[k] for k in known if k in d}, {k: v for k, v in d.items() if k not in known}


@dataclass
class InputSpec:
    """What the first graph takes: `channels` x `size` x `size` float32, uint8 pixels * scale, (x - mean) / std;
    `color` gray: grey faces replicated to every channel."""

    size: int
    channels: int
    color: str
    scale: float = 1 / 255
    mean: list[float] | None = None
    std: list[float] | None = None
    extra: dict = field(default_factory=dict)
    order: tuple[str, ...] = field(default=("size", "channels", "color", "layout", "dtype", "scale", "mean", "std",
                                            "note"), compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: object) -> InputSpec:
        known, extra = _split(d, "input", ("size", "channels", "color", "scale", "mean", "std"))
        for key in ("size", "channels"):
            _need(isinstance(known.get(key), int) and known[key] > 0, f"input.{key}", "a positive integer",
                  known.get(key))
        _need(known.get("color") in ("gray", "rgb"), "input.color", "'gray' or 'rgb'", known.get("color"))
        for key in ("mean", "std"):
            v = known.get(key)
            _need(v is None or (isinstance(v, list) and len(v) == known["channels"]), f"input.{key}",
                  f"a list of {known['channels']} numbers", v)
        return cls(**known, extra=extra, order=tuple(d))

    def to_dict(self) -> dict:
        d = {"size": self.size, "channels": self.channels, "color": self.color, "scale": self.scale,
             "mean": self.mean, "std": self.std}
        return _ordered({**{k: v for k, v in d.items() if v is not None}, **self.extra}, self.order)


@dataclass
class GraphEntry:
    """One ONNX file of the package: its sha256, the precision it was exported in (None in a variant entry,
    which has its main file's), its tensors, and the variant files a backend may run instead on some machines
    (`variants`, keyed like ORT_AMX_VARIANT)."""

    file: str
    sha256: str
    precision: str | None = "fp32"
    inputs: dict[str, list[int]] = field(default_factory=dict)
    outputs: dict[str, list[int]] = field(default_factory=dict)
    variants: dict[str, GraphEntry] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    order: tuple[str, ...] = field(default=("file", "sha256", "precision", "bytes", "inputs", "outputs"),
                                   compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: object, where: str) -> GraphEntry:
        known, extra = _split(d, where, ("file", "sha256", "precision", "inputs", "outputs", "variants"))
        for key in ("file", "sha256"):
            _need(isinstance(known.get(key), str), f"{where}.{key}", "a string", known.get(key))
        variants = {k: cls.from_dict(v, f"{where}.variants.{k}") for k, v in known.pop("variants", {}).items()}
        return cls(**{"precision": None, **known}, variants=variants, extra=extra, order=tuple(d))

    def to_dict(self) -> dict:
        d = {"file": self.file, "sha256": self.sha256}
        if self.precision is not None:
            d["precision"] = self.precision
        if self.inputs:
            d["inputs"] = self.inputs
        if self.outputs:
            d["outputs"] = self.outputs
        d.update(self.extra)
        if self.variants:
            d["variants"] = {k: v.to_dict() for k, v in self.variants.items()}
        return _ordered(d, self.order)


@dataclass
class CalibrationReport:
    """How an INT8 package was quantised: the target ("cpu", "tensorrt") and the activation encoding, which
    decide where it can run (TensorRT needs symmetric int8), plus the full report in `extra`."""

    target: str | None = None
    activation_type: str | None = None
    activation_symmetric: bool | None = None
    extra: dict = field(default_factory=dict)
    order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: object) -> CalibrationReport:
        known, extra = _split(d, "calibration", ("target", "activation_type", "activation_symmetric"))
        return cls(**known, extra=extra, order=tuple(d))

    def to_dict(self) -> dict:
        d = {"target": self.target, "activation_type": self.activation_type,
             "activation_symmetric": self.activation_symmetric}
        return _ordered({**{k: v for k, v in d.items() if v is not None}, **self.extra}, self.order)

    @property
    def asymmetric_activations(self) -> bool:
        return self.activation_type == "uint8" or self.activation_symmetric is False


@dataclass
class Package:
    """manifest.json, typed. `read` validates it (one line naming the field on a bad one) and, with `verify`,
    every file against its sha256; `write` writes it atomically. Keys it does not model stay in `extra`.
    `pipeline_fused` and `calibration` are written even when None (null), as the exporter always has."""

    classes: list[str]
    input: InputSpec
    graphs: dict[str, GraphEntry]
    pipeline: list[str]
    pipeline_fused: list[str] | None = None
    model: dict = field(default_factory=dict)
    sampler: dict | None = None
    calibration: CalibrationReport | None = None
    confidence: dict | None = None  # CONFIDENCE_KEY: temperature and label smoothing, see `confidence_calibration`
    extra: dict = field(default_factory=dict)
    root: Path | None = None
    order: tuple[str, ...] = field(default=MANIFEST_ORDER, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: object, root: Path | None = None) -> Package:
        _need(isinstance(d, dict), "the manifest", "an object", type(d).__name__)
        if d.get("format") != FORMAT:
            raise PackageError(f"{MANIFEST}: unsupported package format {d.get('format')!r} (expected {FORMAT})")
        for key in ("classes", "input", "graphs", "pipeline"):
            if key not in d:
                raise PackageError(f"{MANIFEST}: manifest lacks '{key}'")
        known, extra = _split(d, "the manifest", ("classes", "input", "graphs", "pipeline", "pipeline_fused",
                                                  "model", "sampler", "calibration", CONFIDENCE_KEY))
        extra.pop("format")
        _need(isinstance(known["classes"], list) and known["classes"], "classes", "a non-empty list",
              known["classes"])
        _need(isinstance(known["graphs"], dict), "graphs", "an object", known["graphs"])
        graphs = {k: GraphEntry.from_dict(v, f"graphs.{k}") for k, v in known["graphs"].items()}
        for key in ("pipeline", "pipeline_fused"):
            order = known.get(key)
            _need(order is None or (isinstance(order, list) and all(g in graphs for g in order)), key,
                  f"a list of graph names ({', '.join(graphs)})", order)
        cal = known.get("calibration")
        return cls(classes=list(known["classes"]), input=InputSpec.from_dict(known["input"]), graphs=graphs,
                   pipeline=list(known["pipeline"]), pipeline_fused=known.get("pipeline_fused"),
                   model=known.get("model", {}), sampler=known.get("sampler"),
                   calibration=None if cal is None else CalibrationReport.from_dict(cal),
                   confidence=known.get(CONFIDENCE_KEY), extra=extra, root=root, order=tuple(d))

    def to_dict(self) -> dict:
        d = {"format": FORMAT, "model": self.model, "classes": self.classes, "input": self.input.to_dict(),
             "graphs": {k: g.to_dict() for k, g in self.graphs.items()}, "pipeline": self.pipeline,
             "pipeline_fused": self.pipeline_fused, "sampler": self.sampler,
             "calibration": None if self.calibration is None else self.calibration.to_dict(),
             CONFIDENCE_KEY: self.confidence}
        d = {k: v for k, v in d.items() if v is not None or k in ("pipeline_fused", "calibration")}
        return _ordered({**d, **self.extra}, self.order)

    @property
    def sample_steps(self) -> int | None:
        """The sampler step count K the package was exported with (None without a prior)."""
        return (self.sampler or {}).get("steps")

    @classmethod
    def read(cls, package: str | Path | None = None, verify: bool = True) -> Package:
        return _read(package, verify)[0]

    def write(self, root: Path) -> None:
        write_manifest(root, self.to_dict())

    def verify_files(self) -> None:
        """Every listed file, variants included, must exist with its recorded sha256."""
        for name, graph in self.graphs.items():
            for entry in [graph, *graph.variants.values()]:
                f = self.root / entry.file
                if not f.is_file():
                    raise PackageError(f"package {self.root}: sub-graph '{name}' file {f.name} is missing")
                if sha256_file(f) != entry.sha256:
                    raise PackageError(f"package {self.root}: {f.name} does not match its sha256 in the manifest "
                                       "(modified or corrupt); re-export the package")

    def confidence_calibration(self) -> tuple[float, float]:
        return confidence_calibration({CONFIDENCE_KEY: self.confidence})

    @property
    def checkpoint(self) -> Path:
        """The checkpoint the package was exported from (the torch reference runs it)."""
        return checkpoint_path({"model": self.model})

    def graph_path(self, name: str) -> Path:
        return self.root / self.graphs[name].file


def _read(package: str | Path | None, verify: bool) -> tuple[Package, dict]:
    root = Path(package) if package is not None else default_package()
    path = root / MANIFEST
    if not path.is_file():
        raise PackageError(f"not a model package: {root} has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PackageError(f"unreadable manifest {path}: {e}") from e
    try:
        pkg = Package.from_dict(manifest, root)
    except PackageError as e:  # name the file, not just manifest.json
        raise PackageError(f"{path}: {str(e).removeprefix(MANIFEST + ': ')}") from e
    if verify:
        pkg.verify_files()
    return pkg, manifest


def load_manifest(package: str | Path | None, verify: bool = True) -> tuple[Path, dict]:
    """manifest.json as a plain dict, validated like `Package.read` (for the tools that read its reports)."""
    pkg, manifest = _read(package, verify)
    return pkg.root, manifest


def write_manifest(root: Path, manifest: dict) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, root / MANIFEST)


class PackageWriter:
    """Writes a package into a temporary sibling folder and renames it into place at the end.

    A failed export leaves `out` as it was; an existing non-empty `out` needs `force`.
    """

    def __init__(self, out: str | Path, force: bool = False):
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())) and not force:
            raise PackageError(f"output folder {self.out} is not empty (use --force to replace it)")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", dir=self.out.parent))

    def __enter__(self) -> PackageWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        # mkdtemp makes the folder private (0700); a package is for every user of the install (0755 - umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o755 & ~umask)
        old = None
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.out, old)
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
