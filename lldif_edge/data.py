"""Image folders `<root>/<class>/*.{jpg,jpeg,png,bmp}` to uint8 arrays, with class aliases and de-duplication.

Torch-free on purpose: evaluation of an exported package and calibration use it on a runtime-only install.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lldif_edge.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}
# FER2013 label order; the default class list of a new model. The runtime reads classes from the manifest.
FER_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
ALIASES = {
    "anger": "angry", "angry": "angry", "mad": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "neutral": "neutral", "calm": "neutral",
    "contempt": "contempt",
}
# Expression classes that real datasets (CK+, AffectNet) carry but FER2013 models do not know.
FOREIGN_CLASSES = {"contempt"}


def canonical_class(folder_name: str) -> str | None:
    return ALIASES.get(folder_name.strip().lower())


@dataclass
class FolderData:
    """Decoded images (N,H,W,C uint8) with integer labels into `classes`."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    paths: list[str] = field(default_factory=list)
    sha1: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep: np.ndarray) -> FolderData:
        idx = np.flatnonzero(keep) if keep.dtype == bool else keep
        return FolderData(
            self.images[idx], self.labels[idx], self.classes,
            [self.paths[i] for i in idx], [self.sha1[i] for i in idx],
        )


def scan_folder(root: str | Path, classes: list[str]) -> list[tuple[Path, int]]:
    """List (file, class index) pairs; errors name the folder that cannot be used."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    wanted = {c: i for i, c in enumerate(classes)}
    items: list[tuple[Path, int]] = []
    skipped: dict[str, int] = {}
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise DataError(f"{root} has no class folders (expected <root>/<class>/*.jpg)")
    for sub in subdirs:
        files = sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        name = sub.name if sub.name in wanted else canonical_class(sub.name)
        if name in wanted:
            items += [(f, wanted[name]) for f in files]
        elif name in FOREIGN_CLASSES:
            skipped[sub.name] = len(files)
        else:
            raise DataError(
                f"class folder {sub} does not match any class of the model ({', '.join(classes)})"
            )
    for name, n in skipped.items():
        log.warning("skipped %d images of class '%s', which the model does not know", n, name)
    if not items:
        raise DataError(f"no images ({'/'.join(sorted(IMAGE_EXTS))}) found under {root}")
    return items


def read_image(path: str | Path, size: int, channels: int) -> np.ndarray | None:
    """Decode and resize one image to (size,size,channels) uint8, RGB order; None if unreadable."""
    raw = np.fromfile(str(path), dtype=np.uint8)
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    img = cv2.imdecode(raw, flag) if raw.size else None
    if img is None:
        return None
    return to_model_pixels(img if channels == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB), size, channels)


def to_model_pixels(img: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Any uint8 image (gray, or RGB for channels=3) -> (size,size,channels) uint8."""
    if img.ndim == 3 and channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    elif img.ndim == 2 and channels == 3:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[:2] != (size, size):
        shrink = img.shape[0] > size
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return img.reshape(size, size, channels)


def load_folder(root: str | Path, classes: list[str], size: int = 48, channels: int = 1) -> FolderData:
    """Decode every image of a class-folder tree; unreadable files are named, skipped and counted."""
    items = scan_folder(root, classes)
    images, labels, paths, sha1s = [], [], [], []
    bad = 0
    for path, label in items:
        data = path.read_bytes()
        img = read_image(path, size, channels)
        if img is None:
            log.warning("skipped unreadable image %s", path)
            bad += 1
            continue
        images.append(img)
        labels.append(label)
        paths.append(str(path))
        sha1s.append(content_id(data))
    if bad:
        log.warning("%d of %d images under %s were unreadable and skipped", bad, len(items), root)
    if not images:
        raise DataError(f"no readable images under {root}")
    return FolderData(np.stack(images), np.asarray(labels, dtype=np.int64), list(classes), paths, sha1s)


def content_id(data: bytes) -> str:
    """The identity of an image file for de-duplication: the sha1 of its bytes."""
    return hashlib.sha1(data).hexdigest()


def file_sha1s(root: str | Path) -> set[str]:
    """`content_id` of every image file under `root` (the identity `drop_duplicates` uses)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder not found: {root}")
    return {content_id(p.read_bytes()) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS}


def drop_duplicates(val: FolderData, train: FolderData | None = None) -> tuple[FolderData, dict[str, int]]:
    """Drop validation images byte-identical to a training image, or to an earlier validation image."""
    seen = set(train.sha1) if train is not None else set()
    keep = np.ones(len(val), dtype=bool)
    stats = {"shared_with_train": 0, "repeated_in_val": 0}
    val_seen: set[str] = set()
    for i, h in enumerate(val.sha1):
        if h in seen:
            keep[i], stats["shared_with_train"] = False, stats["shared_with_train"] + 1
        elif h in val_seen:
            keep[i], stats["repeated_in_val"] = False, stats["repeated_in_val"] + 1
        val_seen.add(h)
    if not keep.all():
        log.info(
            "dropped %d validation images shared with training and %d repeated within validation",
            stats["shared_with_train"], stats["repeated_in_val"],
        )
    return val.subset(keep), stats
