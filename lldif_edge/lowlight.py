"""Low-light synthesis (docs/design.md, section 2), numpy version for files and evaluation sets.

y = b * (a*x)^g with a~U(0.9,1), b~U(0.5,1), g~U(1.5,5); then shot and read noise
y + sqrt(y*s)*N(0,1) + r*N(0,1) with s~U(1e-3,1e-2), r~U(2e-3,1e-2); clip; quantise to 8 bits.
The torch twin used for on-the-fly training augmentation is `lldif.augment.darken_batch`.
"""

from __future__ import annotations

import numpy as np

RANGES = {
    "a": (0.9, 1.0),
    "b": (0.5, 1.0),
    "gamma": (1.5, 5.0),
    "shot": (1e-3, 1e-2),
    "read": (2e-3, 1e-2),
}


def darken(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Darken one uint8 image (H,W) or (H,W,C) with fresh parameters drawn from `rng`."""
    x = image.astype(np.float32) / 255.0
    a, b, g, s, r = (rng.uniform(*RANGES[k]) for k in ("a", "b", "gamma", "shot", "read"))
    y = b * np.power(a * x, g)
    y = y + np.sqrt(y * s) * rng.standard_normal(y.shape) + r * rng.standard_normal(y.shape)
    return np.round(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)


def darken_many(images: np.ndarray, seed: int) -> np.ndarray:
    """Darken a stack of uint8 images, one parameter draw per image, reproducible for a seed."""
    rng = np.random.default_rng(seed)
    return np.stack([darken(im, rng) for im in images]) if len(images) else images.copy()


def darken_folder(src, dst, seed: int = 0, exclude=None) -> dict:
    """Write a darkened PNG copy of folder tree `src` into `dst` (`lldif-edge darken`). Each file gets its own
    random stream from `seed` and its relative path, so its output does not depend on which other files are
    there. `exclude`: a folder; images byte-identical to one there, or to an earlier one, are left out.
    Returns the counts and the unreadable files it skipped."""
    import zlib
    from pathlib import Path

    import cv2

    from lldif_edge.data import IMAGE_EXTS, content_id, file_sha1s
    from lldif_edge.errors import DataError

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"source folder not found: {src}")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise DataError(f"no images under {src}")
    seen = file_sha1s(exclude) if exclude else None
    written, unreadable, duplicates = 0, [], 0
    for f in files:
        rel = f.relative_to(src)
        raw = f.read_bytes()
        if seen is not None:
            digest = content_id(raw)
            if digest in seen:
                duplicates += 1
                continue
            seen.add(digest)
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            unreadable.append(f)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(rel.as_posix().encode())])
        target = dst / rel.with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.stem + ".tmp.png")
        if img.dtype != np.uint8:
            img = (img / 256).astype(np.uint8)
        cv2.imwrite(str(tmp), darken(img, rng))
        tmp.replace(target)
        written += 1
    return {"written": written, "unreadable": unreadable, "duplicates": duplicates}
