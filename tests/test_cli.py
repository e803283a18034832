"""The `lldif-edge` command: darken, and how user errors reach the terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import make_faces
from typer.testing import CliRunner

from lldif_edge.cli import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lldif_edge.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_darken_is_reproducible_and_writes_png(tmp_path):
    src = make_faces(tmp_path / "src", 2, classes=["happy", "sad"], ext=".jpg")
    runner = CliRunner()
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        result = runner.invoke(app, ["darken", str(src), str(tmp_path / name), "--seed", seed])
        assert result.exit_code == 0, result.output
    a, b, c = (_files(tmp_path / n) for n in "abc")
    assert sorted(a) == ["happy/000.png", "happy/001.png", "sad/000.png", "sad/001.png"]
    assert all(v[:8] == PNG_MAGIC for v in a.values())
    assert a == b  # same seed: byte-identical
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)  # other seed: other pixels
    original = cv2.imread(str(src / "happy" / "000.jpg"), cv2.IMREAD_UNCHANGED)
    dark = cv2.imread(str(tmp_path / "a" / "happy" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert dark.shape == original.shape and dark.dtype == np.uint8
    assert dark.mean() < original.mean()
    assert not list((tmp_path / "a").rglob("*.tmp*"))


def test_darken_output_of_a_file_does_not_depend_on_its_neighbours(tmp_path):
    src = make_faces(tmp_path / "src", 3, classes=["happy"])
    runner = CliRunner()
    assert runner.invoke(app, ["darken", str(src), str(tmp_path / "all"), "--seed", "1"]).exit_code == 0
    (src / "happy" / "000.png").unlink()
    assert runner.invoke(app, ["darken", str(src), str(tmp_path / "some"), "--seed", "1"]).exit_code == 0
    assert (tmp_path / "all/happy/001.png").read_bytes() == (tmp_path / "some/happy/001.png").read_bytes()


def test_darken_exclude_leaves_out_training_duplicates_and_repeats(tmp_path):
    src = make_faces(tmp_path / "val", 3, classes=["happy"])
    train = make_faces(tmp_path / "train", 1, classes=["happy"])  # the same drawing as val/happy/000.png
    assert (train / "happy" / "000.png").read_bytes() == (src / "happy" / "000.png").read_bytes()
    (src / "happy" / "repeat.png").write_bytes((src / "happy" / "001.png").read_bytes())
    result = CliRunner().invoke(app, ["darken", str(src), str(tmp_path / "out"), "--exclude", str(train)])
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "out").keys() == {"happy/001.png", "happy/002.png"}
    assert "left out 2 duplicates" in " ".join(result.output.split())


def test_darken_skips_unreadable_files(tmp_path):
    src = make_faces(tmp_path / "src", 1, classes=["happy"])
    (src / "happy" / "broken.png").write_bytes(b"not a png")
    result = CliRunner().invoke(app, ["darken", str(src), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "out").keys() == {"happy/000.png"}


def test_darken_missing_source_is_a_one_line_error(tmp_path):
    proc = _cli("darken", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing" in lines[0]
    assert "Traceback" not in proc.stderr


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the console-script entry point in-process; returns (exit code, stderr)."""
    from lldif_edge.cli import main

    monkeypatch.setattr(sys, "argv", ["lldif-edge", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def test_eval_missing_data_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from lldif_edge.lldif.checkpoint import save_checkpoint
    from lldif_edge.lldif.config import preset_config
    from lldif_edge.lldif.model import build_model

    model = save_checkpoint(build_model(preset_config("tiny")), tmp_path / "m")
    proc = _cli("eval", "--data", "/nonexistent", "--model", str(model))  # the real process, exit code and all
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "/nonexistent" in lines[0]
    assert "Traceback" not in proc.stderr

    # A long path must not be wrapped onto a second line.
    long = "/nonexistent/" + "x" * 150
    code, err = _main(monkeypatch, capsys, "eval", "--data", long, "--model", str(model))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:") and long in err
    # Without --model the error may name the missing default weights or the data, but stays one line.
    code, err = _main(monkeypatch, capsys, "eval", "--data", "/nonexistent")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error:")


@pytest.mark.parametrize("option, value", [("--kl-weight", "-1"), ("--label-dropout", "1.5"),
                                           ("--epd-from", "label"), ("--stage", "3"),
                                           ("--dm-fraction", "1"), ("--darken-warmup", "-1")])
def test_train_rejects_bad_settings_by_name(monkeypatch, capsys, tmp_path, option, value):
    pytest.importorskip("torch")
    code, err = _main(monkeypatch, capsys, "train", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                      option, value)
    assert code == 2 and option in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["8,a", "8,0"])
def test_distill_rejects_bad_cond_channels_by_name(monkeypatch, capsys, tmp_path, value):
    pytest.importorskip("torch")
    from lldif_edge.lldif.checkpoint import save_checkpoint
    from lldif_edge.lldif.config import preset_config
    from lldif_edge.lldif.model import build_model

    model = save_checkpoint(build_model(preset_config("tiny")), tmp_path / "m")
    code, err = _main(monkeypatch, capsys, "distill", "--model", str(model), "--steps", "1", "--data", str(tmp_path),
                      "--out", str(tmp_path / "student"), "--cond-channels", value)
    assert code == 2 and "--cond-channels" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "student.safetensors").exists()


def test_help_lists_the_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "eval", "darken"):
        assert command in result.output


def test_run_video_json_streams_frames_then_a_summary(tmp_path):
    """`lldif-edge run --video X --json` on the shipped INT8 package, in a process that must not import torch."""
    from lldif_edge.synthetic import synthetic_face

    face = cv2.resize(synthetic_face(np.random.default_rng(0), 48, 3), (160, 160))
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for _ in range(12):
        frame = np.full((240, 320, 3), 20, np.uint8)
        frame[40:200, 80:240] = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
        writer.write(frame)
    writer.release()
    code = ("import sys; from lldif_edge.cli import main; sys.argv = ['lldif-edge', 'run', '--video', sys.argv[1], "
            "'--json', '--no-show', '--max-frames', '8']\n"
            "try:\n    main()\nfinally:\n    assert 'torch' not in sys.modules, 'run imported torch'")
    proc = subprocess.run([sys.executable, "-c", code, str(video)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [ln["frame"] for ln in lines[:-1]] == list(range(8))
    summary = lines[-1]["summary"]
    assert summary["frames"] == 8 and summary["fps"] > 0 and set(summary["stages"]) >= {"detect", "classify"}


def test_version():
    from lldif_edge import __version__

    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"lldif-edge {__version__}"


def test_info_prints_install_hints_with_their_extras():
    """rich markup must not swallow `[openvino]` / `[tensorrt]` in the hints the table prints."""
    import os

    facts = json.loads(_cli("info", "--json").stdout)
    hints = [b["why_not"] for b in facts["backends"] if "[" in (b["why_not"] or "")]
    env = {**os.environ, "COLUMNS": "400"}  # one table line per backend, no wrapping
    text = subprocess.run([sys.executable, "-m", "lldif_edge.cli", "info"], capture_output=True, text=True,
                          timeout=120, env=env).stdout
    for hint in hints:
        assert hint in text
    if not hints:  # every backend is installed here: the escaping is still what prints the text
        from rich.console import Console
        from rich.markup import escape

        console = Console(width=200, record=True)
        console.print(escape("pip install lldif-edge[openvino]"))
        assert "lldif-edge[openvino]" in console.export_text()


def test_error_messages_keep_square_brackets(monkeypatch, capsys):
    import lldif_edge.cli as cli
    from lldif_edge.errors import BackendError

    def fail():
        raise BackendError("backend 'openvino' is not available (pip install lldif-edge[openvino])")

    monkeypatch.setattr(cli, "app", fail)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert "pip install lldif-edge[openvino])" in capsys.readouterr().err


def _frame_with(face: np.ndarray | None) -> np.ndarray:
    frame = np.full((240, 320, 3), 90, np.uint8)
    if face is not None:
        frame[40:200, 80:240] = cv2.resize(face, (160, 160))
    return frame


def test_run_images_prints_each_image_with_its_faces(tmp_path, monkeypatch, capsys):
    """Without --json, `run --images` ends with a table: every image, and each face's label and confidence,
    the same the JSON lines say."""
    from conftest import SHARED

    folder = tmp_path / "imgs"
    folder.mkdir()
    cv2.imwrite(str(folder / "blank.png"), _frame_with(None))
    photo = SHARED / "data" / "faces" / "fer_justin.jpg"  # a real face, when the shared data is here
    if photo.is_file():
        (folder / "photo.jpg").write_bytes(photo.read_bytes())
    from lldif_edge.cli import main

    def run(*extra: str) -> str:
        monkeypatch.setattr(sys, "argv", ["lldif-edge", "run", "--images", str(folder), "--no-show", *extra])
        with pytest.raises(SystemExit) as exc:
            main()
        assert exc.value.code == 0
        return capsys.readouterr().out

    frames = [json.loads(line) for line in run("--json").splitlines() if '"frame"' in line]
    table = run()
    names = sorted(p.name for p in folder.iterdir())
    assert len(frames) == len(names)
    for name, frame in zip(names, frames, strict=True):
        row = next(line for line in table.splitlines() if name in line)
        if frame["faces"]:
            face = frame["faces"][0]
            assert face["label"] in row and f"{face['confidence']:.2f}" in row
        else:
            assert "no face found" in row
    assert frames[names.index("blank.png")]["faces"] == []


def test_bench_names_runners_by_package_and_fits_80_columns(tmp_path):
    """The shipped FP32 and INT8 packages: runners named by backend and precision, the sub-graphs an INT8
    package keeps in float listed, the INT8/FP32 ratio printed, every line within 80 columns, a titled chart."""
    import os

    from lldif_edge.package import load_manifest

    weights = Path("lldif_edge/weights")
    chart = tmp_path / "bench.png"
    env = {**os.environ, "COLUMNS": "80"}
    proc = subprocess.run([sys.executable, "-m", "lldif_edge.cli", "bench", "--package", str(weights / "default_fp32"),
                           "--package", str(weights / "default_int8"), "--runs", "4", "--rounds", "1", "--batch",
                           "2", "--chart", str(chart)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, proc.stdout
    assert any(line.startswith("│ onnxruntime fp32 ") for line in lines)
    assert any(line.startswith("│ onnxruntime int8 ") for line in lines)
    assert "onnxruntime: INT8 takes" in proc.stdout and "x the FP32 time per face" in proc.stdout
    _, manifest = load_manifest(weights / "default_int8")
    in_float = [g for g, v in manifest["graphs"].items() if v["precision"] != "int8"]
    text = " ".join(proc.stdout.split())
    if in_float:
        assert f"kept in FP32: {', '.join(in_float)}" in text
    if "torch" in text:
        assert "torch teacher (" in text and "-step sampler)" in text
    assert chart.read_bytes()[:8] == PNG_MAGIC


def test_int8_export_says_why_it_calibrated_on_fewer_faces(capsys):
    from lldif_edge.cli import _print_int8

    report = {"out": "pkg", "seconds": 1.0, "graphs": {},
              "calibration": {"count": 64, "requested": 256, "source": "data-free: drawn dark faces",
                              "data_free": {}, "method": "minmax", "target": "cpu", "activation_type": "U8",
                              "weight_type": "S8", "kept_float": []},
              "verification": {"source": "generated faces", "sub-graphs": {"top1_agreement": 1.0},
                               "measured_with": "onnxruntime"}}
    _print_int8(report)
    err = " ".join(capsys.readouterr().err.split())
    assert "calibrated on 64 faces" in err and "data-free calibration generates at most that many" in err
    report["calibration"].update(requested=64)
    _print_int8(report)
    assert "at most" not in capsys.readouterr().err
