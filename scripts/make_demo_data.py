#!/usr/bin/env python3
"""Write the inputs of `make demo` under OUT (default build/demo):

- OUT/synthetic/{train,val}/<class>/*.png: learnable synthetic 48x48 "faces", one pattern per class
  (the same generator as the tests), so the tiny preset can be trained and evaluated in seconds anywhere.
- OUT/fer2013/<class>/*.jpg: a few real FER2013 validation faces per class, copied from
  ../shared/data/fer2013/val when that folder is present (it is never committed into the project).

Idempotent: an existing folder is left as it is.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from pattern_faces import make_faces  # noqa: E402

FER_VAL = REPO.parent / "shared" / "data" / "fer2013" / "val"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "demo")
    ap.add_argument("--per-class", type=int, default=30, help="synthetic training images per class")
    ap.add_argument("--fer-per-class", type=int, default=20, help="FER2013 validation images per class")
    args = ap.parse_args()

    synthetic = args.out / "synthetic"
    if not synthetic.is_dir():
        make_faces(synthetic / "train", args.per_class, seed=1)
        make_faces(synthetic / "val", max(4, args.per_class // 3), seed=2)
    print(f"synthetic faces: {synthetic}")

    fer = args.out / "fer2013"
    if FER_VAL.is_dir() and not fer.is_dir():
        tmp = fer.with_name(fer.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        for class_dir in sorted(p for p in FER_VAL.iterdir() if p.is_dir()):
            (tmp / class_dir.name).mkdir(parents=True)
            for f in sorted(class_dir.glob("*.jpg"))[: args.fer_per_class]:
                shutil.copy2(f, tmp / class_dir.name / f.name)
        tmp.rename(fer)
    if fer.is_dir():
        print(f"FER2013 faces: {fer}")


if __name__ == "__main__":
    main()
