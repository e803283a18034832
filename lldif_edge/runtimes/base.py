"""The backend interface: load one sub-graph, run a dict of numpy arrays, return a dict. Nothing more."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class Backend(ABC):
    """One loaded sub-graph on one device. `run` must be safe to call from several threads."""

    name: str = ""

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(available, reason): whether the backend's package is importable here, and why not."""
        return True, ""

    @classmethod
    def devices(cls) -> list[str]:
        return ["cpu"]

    @abstractmethod
    def __init__(self, model_path: Path, device: str | None = None, threads: int | None = None, **options):
        ...

    @property
    @abstractmethod
    def input_names(self) -> list[str]: ...

    @property
    @abstractmethod
    def output_names(self) -> list[str]: ...

    @abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> str:
        """What actually runs (device, provider, precision), for reports."""
        return self.name
