"""Score `lldif-edge run --json` on a clip of `scripts/make_clip.py` against the clip's truth.

    python scripts/score_clip.py build/clips/one_dark.mp4 [build/clips/six_dark.mp4 ...]
        [--config haar="--detector haar" --config yunet="--detector yunet --detector-model M.onnx"]
        [--repeat 2] [--json]
    python scripts/score_clip.py CLIP --config new="" --config old="PYTHONPATH=/tmp/old-checkout"  # two versions

Runs `lldif-edge run --video CLIP --no-show --json ARGS` once per clip, config and repeat, configs interleaved
(haar, yunet, haar, yunet, ...) so that a CPU shared with other work loads them alike; prints the load average
beside the numbers. A detected face belongs to a photo of the frame when its box centre lies in the rectangle the
photo was pasted into (the largest such face when there are several). Per clip and config:

* photos found: photos with a face in at least one frame (of all photos);
* faces found: face-frames with a face (one per photo and frame);
* frame right: face-frames whose `label` (this frame's classification) is the photo's;
* track right: the same for `track_label` (the track's smoothed label);
* photos right: photos whose most frequent frame label (track label) is theirs, over the frames with a face;
* not sure: face-frames with `label: null` (calibrated confidence under `--min-confidence`);
* with `--smoothing A,B,...`: track right again for each smoothing weight (the newest frame's weight in the
  track's moving average, `Recognizer(smoothing=)`), replayed from the run's own probabilities and track ids;
* FPS and the per-stage medians (ms) of the run's summary line, and the CPU time (user + system) the run took a
  frame: on a CPU shared with other work, FPS falls with the load while the CPU time a frame stays near what it
  costs on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path


def run_clip(clip: Path, args: list[str], env: dict[str, str] | None = None) -> tuple[list[dict], dict]:
    """(frame lines, summary) of `lldif-edge run` on `clip`, with `env` added to the environment."""
    # the console script, not `python -m`, which would put the current folder (this checkout) before PYTHONPATH
    script = Path(sys.executable).with_name("lldif-edge")
    cmd = ([str(script)] if script.is_file() else [sys.executable, "-m", "lldif_edge.cli"])
    cmd += ["run", "--video", str(clip), "--no-show", "--json"]
    p = subprocess.run(cmd + args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd + args)} failed ({p.returncode}): {p.stderr.strip() or p.stdout[-500:]}")
    frames, summary = [], None
    for line in p.stdout.splitlines():
        if not line.startswith("{"):
            continue
        d = json.loads(line)
        if "summary" in d:
            summary = d["summary"]
        elif "frame" in d:
            frames.append(d)
    if summary is None:
        raise SystemExit(f"no summary line from {shlex.join(cmd + args)}")
    return frames, summary


def inside(box, rect) -> bool:
    x, y, w, h = box[:4]
    rx, ry, rw, rh = rect
    cx, cy = x + w / 2, y + h / 2
    return rx <= cx < rx + rw and ry <= cy < ry + rh


def match(truth_frame: list[dict], faces: list[dict]) -> list[dict | None]:
    """For each photo of a frame, the largest detected face whose centre lies in its rectangle (or None)."""
    out = []
    for t in truth_frame:
        mine = [f for f in faces if inside(f["box"], t["rect"])]
        out.append(max(mine, key=lambda f: f["box"][2] * f["box"][3]) if mine else None)
    return out


def majority(labels: list) -> object:
    return Counter(labels).most_common(1)[0][0] if labels else None


def score(truth: dict, frames: list[dict]) -> dict:
    """Counts of the module docstring for one run of a clip."""
    if len(frames) != len(truth["frames"]):
        raise SystemExit(f"the run gave {len(frames)} frames, the truth has {len(truth['frames'])}")
    faces = found = right = track_right = unsure = 0
    per_photo: dict[str, dict] = {p: {"label": None, "frame": [], "track": []} for p in truth["photos"]}
    for t_frame, run_frame in zip(truth["frames"], frames, strict=True):
        for t, f in zip(t_frame, match(t_frame, run_frame["faces"]), strict=True):
            faces += 1
            rec = per_photo[t["photo"]]
            rec["label"] = t["label"]
            if f is None:
                continue
            found += 1
            track_label = f.get("track_label", f["label"])
            right += f["label"] == t["label"]
            track_right += track_label == t["label"]
            unsure += f["label"] is None
            rec["frame"].append(f["label"])
            rec["track"].append(track_label)
    return {
        "photos": len(per_photo), "photos_found": sum(bool(r["frame"]) for r in per_photo.values()),
        "photos_right": sum(majority(r["frame"]) == r["label"] for r in per_photo.values() if r["frame"]),
        "photos_right_track": sum(majority(r["track"]) == r["label"] for r in per_photo.values() if r["track"]),
        "faces": faces, "faces_found": found, "frame_right": right, "track_right": track_right, "not_sure": unsure,
    }


def resmooth(frames: list[dict], alpha: float) -> list[dict]:
    """The run's frames with `track_label` recomputed for smoothing weight `alpha`, as `Tracker` does it: a track
    starts at its first frame's probabilities and moves `alpha` of the way to each new frame's."""
    state: dict[int, dict[str, float]] = {}
    out = []
    for fr in frames:
        faces = []
        for f in fr["faces"]:
            p = f["probabilities"]
            prev = state.get(f["track_id"])
            sm = dict(p) if prev is None else {k: alpha * v + (1 - alpha) * prev[k] for k, v in p.items()}
            if f["track_id"] >= 0:
                state[f["track_id"]] = sm
            faces.append({**f, "track_label": max(sm, key=sm.get)})
        out.append({**fr, "faces": faces})
    return out


def parse_config(text: str) -> tuple[str, dict[str, str], list[str]]:
    """NAME=[VAR=VALUE ...] run options -> (name, environment, options)."""
    name, _, rest = text.partition("=")
    words = shlex.split(rest)
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    return name.strip(), env, words


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", type=Path, nargs="+")
    ap.add_argument("--config", action="append", default=[],
                    help='NAME="[VAR=VALUE ...] run options", repeatable (default: one config, the defaults); '
                         'VAR=VALUE words set the run\'s environment, e.g. PYTHONPATH of another checkout')
    ap.add_argument("--repeat", type=int, default=1, help="runs per clip and config, interleaved")
    ap.add_argument("--smoothing", default=None, help="smoothing weights to replay, e.g. 0.1,0.2,0.4,1")
    ap.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = ap.parse_args(argv)
    configs = [parse_config(c) for c in args.config] or [("default", {}, [])]
    results = []
    for clip in args.clips:
        truth_path = clip.with_suffix(".truth.json")
        if not truth_path.is_file():
            raise SystemExit(f"no truth beside the clip: {truth_path} (make clips with scripts/make_clip.py)")
        truth = json.loads(truth_path.read_text())
        for rep in range(args.repeat):
            for name, env, run_args in configs:
                load = os.getloadavg()[0]
                frames, summary = run_clip(clip, run_args, env)
                results.append({
                    "clip": clip.name, "config": name, "repeat": rep, "args": shlex.join(run_args), "env": env,
                    **score(truth, frames), "fps": summary["fps"],
                    "cpu_ms_per_frame": (round(1000.0 * summary["cpu_seconds"] / max(1, summary["frames"]), 2)
                                         if "cpu_seconds" in summary else None),
                    "median_ms": {k: v["median_ms"] for k, v in summary["stages"].items()},
                    "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
                })
                if args.smoothing:
                    results[-1]["track_right_at"] = {
                        a: score(truth, resmooth(frames, float(a)))["track_right"] for a in args.smoothing.split(",")}
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=1))
        return 0
    print(f"{os.cpu_count()} CPUs; load = 1-min load average before/after each run")
    head = ("clip", "config", "photos found", "photos right", "faces found", "frame right", "track right",
            "not sure", "FPS", "capture/detect/classify/track+overlay ms", "CPU ms a frame", "load")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in results:
        m = r["median_ms"]
        print(f"| {r['clip']} | {r['config']} | {r['photos_found']}/{r['photos']} | "
              f"{r['photos_right']}/{r['photos']} (track {r['photos_right_track']}) | "
              f"{r['faces_found']}/{r['faces']} | {r['frame_right']}/{r['faces']} | {r['track_right']}/{r['faces']} | "
              f"{r['not_sure']} | {r['fps']:.1f} | "
              f"{m['capture']:.2f}/{m['detect']:.2f}/{m['classify']:.2f}/{m['track_overlay']:.2f} | "
              f"{r['cpu_ms_per_frame'] or float('nan'):.1f} | {r['load_before']:.1f}/{r['load_after']:.1f} |")
        if "track_right_at" in r:
            print("|  | track right at smoothing " + ", ".join(f"{a}: {v}" for a, v in r["track_right_at"].items())
                  + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
