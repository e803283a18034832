"""Endurance and speed of `lldif-edge run` on a 640x480 video with one face, no display.

Builds the video (a darkened real photo when given, else a drawn face, drifting slowly), runs the real
loop (capture -> detect -> classify -> track -> overlay) over it, and samples resident memory.

    python scripts/endurance.py --frames 10000 [--photo ../shared/data/faces/fer_justin.jpg] [--package DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from lldif_edge.app import Recognizer, open_source
from lldif_edge.app import run as run_loop
from lldif_edge.errors import LldifError
from lldif_edge.lowlight import darken
from lldif_edge.paths import check_output
from lldif_edge.synthetic import synthetic_face


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_video(path: Path, frames: int, photo: str | None) -> None:
    rng = np.random.default_rng(0)
    if photo:
        face = cv2.imread(photo)
        if face is None:
            raise SystemExit(f"cannot read {photo}")
        face = cv2.resize(face, (int(face.shape[1] * 260 / face.shape[0]), 260))
    else:
        face = cv2.cvtColor(cv2.resize(synthetic_face(rng, 48, 3), (200, 200)), cv2.COLOR_GRAY2BGR)
    face = darken(face, np.random.default_rng(1))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 480))
    h, w = face.shape[:2]
    for i in range(frames):
        frame = np.full((480, 640, 3), 12, np.uint8)
        x = int(150 + 100 * np.sin(i / 60))
        frame[100:100 + h, x:x + w] = face[:, : max(0, min(w, 640 - x))]
        writer.write(frame)
    writer.release()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--photo", default=None)
    ap.add_argument("--package", default=None)
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--detect-every", type=int, default=None, help="Full-frame detection every N frames")
    ap.add_argument("--keep-video", default=None, help="Also copy the generated video here (for `lldif-edge run`)")
    args = ap.parse_args()
    if args.keep_video:
        try:
            check_output(args.keep_video, "--keep-video")  # before the work, not after it
        except LldifError as e:
            raise SystemExit(f"error: {e}") from None
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "one_face.mp4"
        make_video(video, args.frames, args.photo)
        if args.keep_video:
            shutil.copyfile(video, args.keep_video)
        extra = {"detect_every": args.detect_every} if args.detect_every else {}
        rec = Recognizer.load(args.package, backend=args.backend, **extra)
        samples: list[tuple[int, float]] = []
        done = threading.Event()
        counter = {"frames": 0}

        class Count:
            def write(self, s):
                counter["frames"] += s.count("\n")

            def flush(self):
                pass

        def sample():
            while not done.wait(1.0):
                samples.append((counter["frames"], rss_mb()))

        t = threading.Thread(target=sample, daemon=True)
        start_rss = rss_mb()
        t.start()
        t0 = time.time()
        stats = run_loop(rec, open_source(video=str(video)), show=False, json_out=Count())
        done.set()
        t.join()
        after_warmup = [m for f, m in samples if f >= min(500, args.frames // 10)]
        report = {
            "frames": stats["frames"], "fps": stats["fps"], "seconds": time.time() - t0,
            "stages_median_ms": {k: v["median_ms"] for k, v in stats["stages"].items()},
            "stages_mean_ms": {k: v["mean_ms"] for k, v in stats["stages"].items()},
            "rss_start_mb": start_rss, "rss_after_warmup_mb": after_warmup[0] if after_warmup else None,
            "rss_end_mb": rss_mb(), "rss_max_mb": max((m for _, m in samples), default=None),
            "rss_growth_after_warmup_mb": (max(after_warmup) - after_warmup[0]) if after_warmup else None,
            "detect_every": rec.detect_every,
            "package": str(rec.predictor.root) if hasattr(rec.predictor, "root") else None,
        }
        print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
