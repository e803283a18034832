"""Low-light synthesis (DESIGN section 2): the numpy version and its torch twin."""

from __future__ import annotations

import numpy as np
import pytest

from lldif_edge.lowlight import RANGES, darken, darken_many


def _expected_mean(x: float) -> float:
    """E[b * (a*x)^g] for the documented uniform ranges, by numerical integration (noise has zero mean)."""
    a = np.linspace(*RANGES["a"], 401)
    g = np.linspace(*RANGES["gamma"], 801)
    inner = np.power(a[:, None] * x, g[None, :]).mean()
    return float(np.mean(RANGES["b"]) * inner)


def _grey(n: int, value: int = 128, size: int = 12) -> np.ndarray:
    return np.full((n, size, size), value, np.uint8)


def test_darken_many_is_reproducible_for_a_seed():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    a, b = darken_many(images, 3), darken_many(images, 3)
    assert a.dtype == np.uint8 and a.shape == images.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, darken_many(images, 4))
    assert np.array_equal(darken_many(images[:0], 3), images[:0])


def test_darken_keeps_shape_and_channels():
    rng = np.random.default_rng(1)
    color = rng.integers(0, 256, (10, 9, 3), dtype=np.uint8)
    out = darken(color, np.random.default_rng(0))
    assert out.shape == color.shape and out.dtype == np.uint8


def test_darken_lowers_brightness_as_the_formula_says():
    images = _grey(400)
    out = darken_many(images, 0).astype(np.float64) / 255
    assert (out.mean(axis=(1, 2)) < 128 / 255).all()
    expected = _expected_mean(128 / 255)
    assert out.mean() == pytest.approx(expected, abs=0.015)
    # Black stays (almost) black: only read/shot noise, clipped at 0.
    assert darken_many(_grey(20, 0), 0).mean() < 3
    # Brighter input, brighter output on average (the curve is monotonic).
    assert darken_many(_grey(200, 220), 1).mean() > darken_many(_grey(200, 60), 1).mean()


def test_torch_twin_matches_numpy_brightness_distribution():
    torch = pytest.importorskip("torch")
    from lldif_edge.lldif.augment import darken_batch

    rng = np.random.default_rng(5)
    base = rng.integers(60, 230, (400, 1, 1), dtype=np.uint8)
    images = np.broadcast_to(base, (400, 12, 12)).copy()  # flat images of many brightness levels
    np_means = darken_many(images, 0).astype(np.float64).mean(axis=(1, 2)) / 255
    x = torch.from_numpy(images).float().unsqueeze(1) / 255
    out = darken_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.allclose(out * 255, torch.round(out * 255), atol=1e-3)  # quantised to 8 bits
    t_means = out.mean(dim=(1, 2, 3)).double().numpy()
    assert t_means.mean() == pytest.approx(np_means.mean(), abs=0.02)
    assert t_means.std() == pytest.approx(np_means.std(), abs=0.03)
    for q in (0.1, 0.5, 0.9):
        assert np.quantile(t_means, q) == pytest.approx(np.quantile(np_means, q), abs=0.04)
