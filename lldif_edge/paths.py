"""Output paths a user gives, checked before any work so that a typo never costs a finished run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lldif_edge.errors import LldifError


def check_output(path: str | Path, option: str, *, folder: bool = False, make_parents: bool = False,
                 suffixes: tuple[str, ...] = ()) -> Path:
    """Raise a one-line LldifError naming `option` unless `path` can be written.

    A file (`folder=False`) needs an existing folder, unless its writer creates missing folders
    (`make_parents`); a folder's missing parents are always created by its writer. Either way the nearest
    existing folder must accept a new file: that is tried, not guessed from permission bits.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise LldifError(f"{option} {path} is a file, not a folder")
    if not folder:
        if path.is_dir():
            raise LldifError(f"{option} {path} is a folder: give a file name")
        if suffixes and path.suffix.lower() not in suffixes:
            raise LldifError(f"{option} needs a file name ending in {' or '.join(suffixes)}, not {path.name}")
    base = path if folder else path.parent
    if not folder and not make_parents and not base.exists():
        raise LldifError(f"{option} {path}: folder {base} does not exist")
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise LldifError(f"{option} {path}: {base} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lldif-write-check-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise LldifError(f"{option} {path}: cannot write in {base} ({e.strerror or e})") from e
    return path
