"""Backend registry: built-in names plus the `lldif_edge.runtimes` entry-point group for third parties."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from lldif_edge.errors import BackendError
from lldif_edge.runtimes.base import Backend

ENTRY_POINT_GROUP = "lldif_edge.runtimes"
# Imported lazily by name, so a robot with only one runtime installed never imports the others.
BUILTIN = {
    "onnxruntime": "lldif_edge.runtimes.onnxruntime_backend:OnnxRuntimeBackend",
    "openvino": "lldif_edge.runtimes.openvino_backend:OpenVinoBackend",
    "tensorrt": "lldif_edge.runtimes.tensorrt_backend:TensorRTBackend",
}


def _targets() -> dict[str, str]:
    targets = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        targets.setdefault(ep.name, ep.value)
    return targets


def backend_names() -> list[str]:
    return sorted(_targets())


def backend_status(name: str) -> tuple[type[Backend] | None, str]:
    """(class, "") when usable here, else (None, why not): for `info` and `--backend all`."""
    try:
        return get_backend(name), ""
    except BackendError as e:
        return None, str(e)


def backend_report() -> list[dict]:
    """Every backend: whether it is usable here, its devices, and why not (`lldif-edge info`)."""
    rows = []
    for name in backend_names():
        cls, why = backend_status(name)
        devices = []
        if cls is not None:
            try:
                devices = cls.devices()
            except Exception as e:  # a backend that imports but cannot enumerate devices
                why = f"cannot list devices: {e}"
        rows.append({"backend": name, "available": cls is not None and not why, "devices": devices, "why_not": why})
    return rows


def get_backend(name: str) -> type[Backend]:
    targets = _targets()
    if name not in targets:
        raise BackendError(f"unknown backend '{name}' (known: {', '.join(sorted(targets))})")
    module, _, attr = targets[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except ImportError as e:
        raise BackendError(f"backend '{name}' cannot be imported: {e}") from e
    ok, why = cls.availability()
    if not ok:
        raise BackendError(f"backend '{name}' is not available: {why}")
    return cls
