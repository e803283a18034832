"""Shared fixtures: tiny synthetic "faces" (one learnable pattern per class) and the ../shared data path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from pattern_faces import face_image, make_faces

__all__ = ["SHARED", "face_image", "make_faces"]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# Tests use the helpers of scripts/ (the detection study's synthetic scenes) as the scripts themselves do.
sys.path.insert(0, str(REPO / "scripts"))

# The machine is small and shared: one thread per test process keeps the suite predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    try:
        import torch
    except ImportError:  # a runtime-only install: nothing to pin
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session")
def faces_train(tmp_path_factory) -> Path:
    return make_faces(tmp_path_factory.mktemp("train"), 24, seed=1)


@pytest.fixture(scope="session")
def faces_val(tmp_path_factory) -> Path:
    return make_faces(tmp_path_factory.mktemp("val"), 8, seed=2)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"{data} is absent (shared data is never committed)")
    return data
