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


def load_manifest(package: str | Path | None, verify: bool = True) -> tuple[Path, dict]:
    """Read manifest.json; with `verify`, every listed file must exist with its recorded sha256."""
    root = Path(package) if package is not None else default_package()
    path = root / MANIFEST
    if not path.is_file():
        raise PackageError(f"not a model package: {root} has no {MANIFEST}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PackageError(f"unreadable manifest {path}: {e}") from e
    if manifest.get("format") != FORMAT:
        raise PackageError(f"{path}: unsupported package format {manifest.get('format')!r} (expected {FORMAT})")
    for key in ("classes", "input", "graphs", "pipeline"):
        if key not in manifest:
            raise PackageError(f"{path}: manifest lacks '{key}'")
    if verify:
        for name, graph in manifest["graphs"].items():
            for entry in [graph, *graph.get("variants", {}).values()]:
                f = root / entry["file"]
                if not f.is_file():
                    raise PackageError(f"package {root}: sub-graph '{name}' file {f.name} is missing")
                if sha256_file(f) != entry["sha256"]:
                    raise PackageError(f"package {root}: {f.name} does not match its sha256 in the manifest "
                                       "(modified or corrupt); re-export the package")
    return root, manifest


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
