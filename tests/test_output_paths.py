"""Every output path a command takes is checked before any work: a one-line error naming the option, exit 2."""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import pytest

from lldif_edge.cli import app
from lldif_edge.errors import LldifError
from lldif_edge.paths import check_output

# (command line with {bad} where the output path goes, the option the error must name, its parameter). The other
# arguments are missing on purpose: the output check must come first, so no case loads a model or data.
OUTPUTS = [
    (["train", "--data", "/missing", "--out", "{bad}"], "--out", "out"),
    (["darken", "/missing", "{bad}"], "DST", "dst"),
    (["eval", "--data", "/missing", "--confusion", "{bad}.png"], "--confusion", "confusion"),
    (["eval", "--data", "/missing", "--calibration-plot", "{bad}.png"], "--calibration-plot", "calibration_plot"),
    (["eval", "--data", "/missing", "--coverage-plot", "{bad}.png"], "--coverage-plot", "coverage_plot"),
    (["distill", "--steps", "1", "--data", "/missing", "--out", "{bad}"], "--out", "out"),
    (["export", "--model", "/missing.safetensors", "--out", "{bad}"], "--out", "out"),
    (["export", "--int8", "--model", "/missing.safetensors", "--out", "{bad}"], "--out", "out"),
    (["bench", "--package", "/missing", "--chart", "{bad}.png"], "--chart", "chart"),
    (["run", "--images", "/missing", "--record", "{bad}.mp4"], "--record", "record"),
]
# Path parameters that are read, not written. A new one must go here or into OUTPUTS.
INPUTS = {
    "train": {"data", "val", "init", "image_branch"},
    "darken": {"src", "exclude"},
    "eval": {"data", "model", "package", "exclude"},
    "calibrate-confidence": {"package", "data", "exclude"},  # the package's manifest is rewritten: checked if there
    "distill": {"model", "data", "val"},
    "export": {"model", "verify_data", "calib", "eval_dir", "confidence_data", "confidence_exclude"},
    "bench": {"package", "model"},
    "run": {"images", "package", "detector_model"},
}


def _path_parameters() -> dict[str, set[str]]:
    """Per command, the parameters annotated Path (or Path | None, list[Path] | None)."""
    found = {}
    for info in app.registered_commands:
        hints = typing.get_type_hints(info.callback)
        name = info.name or info.callback.__name__
        found[name] = {p for p, t in hints.items() if p != "return" and "Path" in str(t)}
    return found


def test_every_path_parameter_is_an_input_or_a_checked_output():
    outputs: dict[str, set[str]] = {}
    for argv, _, param in OUTPUTS:
        outputs.setdefault(argv[0], set()).add(param)
    params = _path_parameters()
    assert params.keys() >= outputs.keys()
    for command, names in params.items():
        unknown = names - INPUTS.get(command, set()) - outputs.get(command, set())
        assert not unknown, f"lldif-edge {command}: add {unknown} to INPUTS or OUTPUTS (outputs need check_output)"
        assert outputs.get(command, set()) <= names


def _bad_paths(tmp_path: Path) -> list[Path]:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    bad = [blocker / "out"]  # below a plain file: no folder can be made there
    if Path("/proc/self").is_dir():
        bad.append(Path("/proc/lldif-edge-out"))  # a folder nobody may create files in, root included
    return bad


@pytest.mark.parametrize("argv, option, param", OUTPUTS,
                         ids=[f"{a[0]} {o}" + (" --int8" if "--int8" in a else "") for a, o, _ in OUTPUTS])
def test_an_unwritable_output_fails_first_in_one_line(argv, option, param, tmp_path, monkeypatch, capsys):
    from lldif_edge.cli import main

    for bad in _bad_paths(tmp_path):
        args = [a.replace("{bad}", str(bad)) for a in argv]
        monkeypatch.setattr(sys, "argv", ["lldif-edge", *args])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {option} {bad}"), err
        assert "Traceback" not in err
        assert not bad.exists()


def test_check_output_accepts_what_can_be_written(tmp_path):
    assert check_output(tmp_path / "cm.png", "--confusion") == tmp_path / "cm.png"
    assert check_output(tmp_path / "new" / "deeper" / "pkg", "--out", folder=True)  # parents are made later
    assert check_output(tmp_path / "new" / "student", "--out", make_parents=True)
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing behind


@pytest.mark.parametrize("kwargs, path, words", [
    ({}, "missing/cm.png", "does not exist"),
    ({}, ".", "is a folder"),
    ({"folder": True}, "a_file", "is a file, not a folder"),
    ({"suffixes": (".mp4",)}, "clip.avi", "ending in .mp4"),
])
def test_check_output_says_what_is_wrong(kwargs, path, words, tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(LldifError, match=words):
        check_output(tmp_path / path, "--x", **kwargs)


def test_eval_prints_the_accuracy_before_a_late_write_fails(tmp_path, monkeypatch, capsys):
    """The folder can vanish while eval runs: the report is printed, then the write fails in one line."""
    import json

    from conftest import make_faces

    import lldif_edge.metrics
    from lldif_edge.cli import main

    data = make_faces(tmp_path / "val", 2, classes=["happy", "sad"])

    def fail(*args, **kwargs):
        raise OSError(f"cannot write {args[2]}")

    monkeypatch.setattr(lldif_edge.metrics, "write_confusion_png", fail)
    monkeypatch.setattr(sys, "argv", ["lldif-edge", "eval", "--data", str(data), "--json", "--package",
                                      "lldif_edge/weights/default_int8", "--confusion", str(tmp_path / "cm.png")])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    assert exc.value.code == 2
    assert json.loads(out)["images"] == 4
    assert err.startswith("error: --confusion") and len(err.strip().splitlines()) == 1
