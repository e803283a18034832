"""Python 3.10 (JetPack 6, ROS 2 Humble): the project says so, and the static checks `make test` runs would catch
a 3.11-only construct (vermin: library calls; ruff's py310 target: syntax)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VERMIN = shutil.which("vermin", path=str(BIN)) or shutil.which("vermin")
RUFF = shutil.which("ruff", path=str(BIN)) or shutil.which("ruff")
ONLY_311 = {  # each needs Python >= 3.11 (3.12 for the f-string)
    "tomllib.py": "import tomllib\n",
    "utc.py": "import datetime\n\nnow = datetime.datetime.now(datetime.UTC)\n",
    "self.py": "from typing import Self\n",
    "digest.py": "import hashlib\n\nhashlib.file_digest(open('f', 'rb'), 'sha256')\n",
    "strenum.py": "from enum import StrEnum\n",
    "group.py": "raise ExceptionGroup('x', [ValueError()])\n",
}
SYNTAX_311 = {
    "except_star.py": "try:\n    pass\nexcept* ValueError:\n    pass\n",
    "fstring.py": "d = {'a': 1}\nprint(f'{d['a']}')\n",
}


def test_the_project_declares_python_310():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^requires-python = ">=3\.10"$', text, re.M)
    assert re.search(r'^target-version = "py310"$', text, re.M)
    assert "--target=3.10-" in (ROOT / "Makefile").read_text()


@pytest.mark.skipif(VERMIN is None, reason="vermin is not installed (the dev extra has it)")
def test_vermin_rejects_311_library_calls(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, code in ONLY_311.items():
        (bad / name).write_text(code)
    proc = subprocess.run([VERMIN, "--target=3.10-", "--violations", "--no-tips", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode != 0
    flagged = {Path(line.split()[-1]).name for line in proc.stdout.splitlines() if line.startswith("!2, 3.11")}
    assert flagged == set(ONLY_311), proc.stdout
    ok = tmp_path / "ok.py"
    ok.write_text("import datetime\n\nnow = datetime.datetime.now(datetime.timezone.utc)\n")
    assert subprocess.run([VERMIN, "--target=3.10-", "--violations", str(ok)], capture_output=True).returncode == 0


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (the dev extra has it)")
def test_ruff_py310_rejects_newer_syntax(tmp_path):
    for name, code in SYNTAX_311.items():
        (tmp_path / name).write_text(code)
        proc = subprocess.run([RUFF, "check", "--no-cache", "--isolated", "--target-version", "py310",
                               str(tmp_path / name)], capture_output=True, text=True)
        assert proc.returncode != 0 and "Python 3.10" in proc.stdout, (name, proc.stdout)
