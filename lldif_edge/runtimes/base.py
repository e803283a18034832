"""The backend interface: load one sub-graph, run a dict of numpy arrays, return a dict. Nothing more."""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from lldif_edge.errors import BackendError


class Backend(ABC):
    """One loaded sub-graph on one device. `run` must be safe to call from several threads."""

    name: str = ""
    requires: str | None = None  # the Python package the backend needs
    install_hint: str = ""
    # Set by __init__: the graph's tensor names, in the graph's order.
    input_names: list[str]
    output_names: list[str]
    # True when `run(feeds, keep_on_device=True)` can return device tensors that the next stage's `run`
    # accepts as inputs (a GPU pipeline then skips host copies between sub-graphs).
    device_tensors: bool = False
    # True when the backend needs facts from the package's manifest (a graph's recorded precision, the
    # checkpoint behind it): `Pipeline` then passes `package` (a `lldif_edge.package.Package`) and `graph` (the
    # graph's name) as keyword arguments. Backends never read manifest.json themselves.
    takes_package: bool = False
    # True for a reference that `bench` times as its own runner (the torch checkpoint), not with `--backend all`.
    timed_as_reference: bool = False

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason): whether the backend's package is importable here, and why not."""
        if cls.requires and importlib.util.find_spec(cls.requires) is None:
            return False, f"package {cls.requires} is not installed{cls.install_hint}"
        return True, ""

    @classmethod
    def devices(cls) -> list[str]:
        return ["cpu"]

    @abstractmethod
    def __init__(self, model_path: Path, device: str | None = None, threads: int | None = None, **options):
        ...

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    @classmethod
    def bench_variants(cls, name: str, precision: str) -> list[tuple[str, dict]]:
        """(runner label, options) that `bench` times for a package of `precision` on this backend (registered
        as `name`): one runner by default; a backend whose default precision differs adds a pinned one."""
        return [(f"{name} {precision}", {})]

    def describe(self) -> str:
        """What actually runs (device, provider, precision), for reports."""
        return self.name


def reject_unknown_options(backend: str, options: dict, known: list[str], extra: str = "") -> None:
    """One line naming the option and the backend, instead of a typo silently doing nothing (or worse)."""
    if options:
        raise BackendError(f"{backend}: unknown option(s) {', '.join(sorted(options))} "
                           f"(known: {', '.join(known)}{extra})")
