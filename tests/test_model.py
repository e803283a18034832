"""Model size, sampler determinism and checkpoints (no training here)."""

from __future__ import annotations

import json
import pickle

import pytest

torch = pytest.importorskip("torch")

from lldif_edge.errors import PackageError  # noqa: E402
from lldif_edge.lldif.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from lldif_edge.lldif.config import ModelConfig, preset_config  # noqa: E402
from lldif_edge.lldif.model import build_model, count_macs, count_parameters, inference_parameters  # noqa: E402


def _batch(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 48, 48, generator=torch.Generator().manual_seed(seed))


def _trained_like(cfg: ModelConfig):
    """A model whose BatchNorm statistics are no longer the defaults, so a round trip must carry buffers."""
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    with torch.no_grad():
        model(_batch(8, seed=1))
        if cfg.prior:
            model.teacher_epd(_batch(8, seed=2), None)
    return model.eval()


def test_tiny_preset_is_small():
    model = build_model(preset_config("tiny"))
    assert count_parameters(model) < 100_000
    assert 0 < inference_parameters(model) <= count_parameters(model)
    assert count_macs(model) > 0


def test_base_preset_builds_and_counts_macs():
    model = build_model(preset_config("base"))
    macs = count_macs(model)
    assert 1e6 < macs < 1e9
    assert model.training is True  # count_macs restores the mode it found
    logits = model.eval()(_batch(2))
    assert logits.shape == (2, 7)


def test_unknown_preset_is_a_user_error():
    from lldif_edge.errors import LldifError

    with pytest.raises(LldifError, match="unknown preset"):
        preset_config("huge")


def test_no_prior_ablation_builds_without_sampler():
    model = build_model(preset_config("tiny", prior=False)).eval()
    assert not hasattr(model, "denoiser")
    assert model(_batch(2)).shape == (2, 7)


def test_config_json_round_trip():
    cfg = preset_config("tiny", classes=["a", "b", "c"])
    back = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg


def test_sampler_is_deterministic():
    model = _trained_like(preset_config("tiny"))
    x = _batch()
    with torch.no_grad():
        epd1, epd2 = model.sample_epd(x), model.sample_epd(x)
        logits1, logits2 = model(x), model(x)
        alone = model(x[:1])
    assert torch.equal(epd1, epd2)
    assert torch.equal(logits1, logits2)
    torch.testing.assert_close(alone, logits1[:1], rtol=1e-4, atol=1e-5)  # no dependence on batch companions


def test_start_noise_is_a_stored_buffer_fixed_by_the_config():
    cfg = preset_config("tiny")
    torch.manual_seed(1)
    a = build_model(cfg)
    torch.manual_seed(2)
    b = build_model(cfg)
    assert "start_noise" in a.state_dict()
    assert "start_noise" in dict(a.named_buffers())
    assert torch.equal(a.start_noise, b.start_noise)  # global RNG state does not matter
    assert a.start_noise.shape == (1, cfg.epd_dim)
    c = build_model(preset_config("tiny", noise_seed=7))
    assert not torch.equal(a.start_noise, c.start_noise)


def test_sampler_steps_end_at_t0():
    model = build_model(preset_config("tiny"))
    ts = model.sampler_timesteps()
    assert len(ts) == model.cfg.sample_steps
    assert ts[0] == model.cfg.timesteps - 1 and ts[-1] == 0
    assert ts == sorted(ts, reverse=True)
    assert model.sampler_timesteps(1) == [model.cfg.timesteps - 1]


@pytest.mark.parametrize("prior", [True, False])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, prior):
    model = _trained_like(preset_config("tiny", prior=prior))
    path = save_checkpoint(model, tmp_path / "ckpt", {"note": "hello"})
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    loaded, meta = load_checkpoint(path)
    assert meta["note"] == "hello"
    assert meta["config"]["classes"] == model.cfg.classes
    assert loaded.cfg == model.cfg
    assert not loaded.training
    x = _batch()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # A run folder and the .json sidecar resolve to the same checkpoint.
    (tmp_path / "run").mkdir()
    save_checkpoint(model, tmp_path / "run" / "best")
    for ref in (tmp_path / "run", tmp_path / "ckpt.json"):
        again, _ = load_checkpoint(ref)
        with torch.no_grad():
            assert torch.equal(model(x), again(x))


def test_loading_a_checkpoint_never_unpickles(tmp_path, monkeypatch):
    path = save_checkpoint(_trained_like(preset_config("tiny")), tmp_path / "ckpt")
    # The weights file is safetensors: an 8-byte header length, then a JSON header.
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert json.loads(raw[8:8 + n])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.json", "ckpt.safetensors"]

    def refuse(*a, **k):
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model, _ = load_checkpoint(path)
    assert model(_batch(1)).shape == (1, 7)


def test_missing_or_damaged_checkpoint_is_a_package_error(tmp_path):
    with pytest.raises(PackageError, match="not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    path = save_checkpoint(build_model(preset_config("tiny")), tmp_path / "ckpt")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(PackageError, match="cannot load"):
        load_checkpoint(path)
    path.write_bytes(raw)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(PackageError, match="cannot load"):
        load_checkpoint(path)


def test_cnn_baseline_preset_is_a_plain_cnn_of_similar_cost():
    cnn = build_model(preset_config("cnn", prior=False))
    assert len(cnn.llformer.blocks) == 0 and not hasattr(cnn, "denoiser")
    assert cnn(_batch(2)).shape == (2, 7)
    base_llformer_macs = count_macs(build_model(preset_config("base", prior=False)))
    assert 0.8 < count_macs(cnn) / base_llformer_macs < 1.5


def test_cpu_features_reads_cpuinfo_flags(tmp_path, monkeypatch):
    from lldif_edge import hardware

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu avx2 avx512_vnni amx_bf16 sse4_2\n")
    real_path = hardware.Path
    monkeypatch.setattr(hardware, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    monkeypatch.setattr(hardware.platform, "processor", lambda: "")
    assert hardware.cpu_features() == {"model": "Test CPU", "features": ["avx2", "avx512_vnni", "amx_bf16"]}
    from lldif_edge.lldif.train import cpu_has_native_bf16

    assert cpu_has_native_bf16()


def test_equalize_ignores_any_order_keeping_brightness_curve():
    from lldif_edge.lldif.model import ImageEqualize

    gen = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 80, (4, 1, 48, 48), generator=gen).float()
    # A brightening, bending curve that keeps the order of grey levels (strictly increasing, no two merged).
    ramp = torch.arange(80)
    curve = (10 + ramp + ramp**2 // 60).float()
    assert (curve[1:] > curve[:-1]).all() and curve.max() < 256
    bright = curve[levels.long()]
    eq = ImageEqualize()
    a, b = eq((levels / 255).expand(-1, 3, -1, -1)), eq((bright / 255).expand(-1, 3, -1, -1))
    assert a.shape == (4, 3, 48, 48)
    torch.testing.assert_close(a, b)
    assert 0 < a.min() and a.max() < 1 and abs(a.mean().item() - 0.5) < 1e-3  # mid-ranks average one half


def test_equalize_export_path_gives_the_training_numbers(monkeypatch):
    from lldif_edge.lldif.model import ImageEqualize

    x = torch.round(_batch(3) ** 3 * 255) / 255  # dark, with ties
    eq = ImageEqualize()
    fast = eq(x)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    torch.testing.assert_close(eq(x), fast)


def test_equalize_config_puts_it_first_in_every_image_graph():
    from lldif_edge.lldif.model import ImageEqualize

    model = build_model(preset_config("tiny", equalize=True))
    for part in (model.llformer.stem, model.clip_image.features, model.cond_encoder.features):
        assert isinstance(part[0], ImageEqualize)
    assert not any(isinstance(m, ImageEqualize) for m in build_model(preset_config("tiny")).modules())
    assert ModelConfig.from_dict(model.cfg.to_dict()).equalize is True
    from lldif_edge.errors import LldifError

    with pytest.raises(LldifError, match="grayscale"):
        build_model(preset_config("tiny", equalize=True, grayscale=False))
