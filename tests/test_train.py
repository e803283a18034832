"""Training on tiny synthetic data: it learns, stage 2 recovers the EPD, resume and DDP work.

Everything uses the tiny preset and a few hundred 48x48 images, so each run takes seconds on one core.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from lldif_edge.cli import app  # noqa: E402
from lldif_edge.errors import LldifError  # noqa: E402
from lldif_edge.lldif.checkpoint import load_checkpoint, load_resume_state  # noqa: E402
from lldif_edge.lldif.train import Reporter, TrainConfig, one_cycle_factor, plan_phases, train  # noqa: E402

CHANCE = 1 / 7


class Recorder(Reporter):
    def __init__(self):
        self.records: list[dict] = []
        self.steps = 0

    def step(self, loss: float, acc: float) -> None:
        self.steps += 1

    def end_epoch(self, record: dict) -> None:
        self.records.append(record)


def _config(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), out=str(out), preset="tiny", batch_size=16, lr=3e-3, darken_p=0.5, seed=0)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, faces_train, faces_val):
    """One full two-stage run (s1 6 epochs, dm 1, joint 5), shared by the tests below."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    rec = Recorder()
    best = train(_config(faces_train, out, val=str(faces_val), epochs=6, stage2_epochs=6), rec)
    return out, best, rec


def test_plan_phases():
    tc = TrainConfig(data="d", out="o", epochs=10, stage2_epochs=6)
    assert plan_phases(tc) == [("s1", 10), ("dm", 1), ("joint", 5)]
    tc.stage, tc.dm_fraction = "2", 0.3
    assert plan_phases(tc) == [("dm", 2), ("joint", 4)]
    tc.stage, tc.dm_fraction = "all", 0.0
    assert plan_phases(tc) == [("s1", 10), ("joint", 6)]  # no sampler-only epoch
    tc.stage, tc.prior = "all", False
    assert plan_phases(tc) == [("s1", 16)]  # the same budget in one phase: no prior for a stage 2 to train
    tc.stage = "2"
    assert plan_phases(tc) == [("s2", 6)]
    tc.stage = "1"
    assert plan_phases(tc) == [("s1", 10)]


def test_one_learning_rate_schedule_spans_all_phases():
    total = 1000
    f = [one_cycle_factor(s, total) for s in range(total)]
    peak = f.index(max(f))
    assert peak == 100 and f[0] == pytest.approx(1 / 25) and f[-1] < 1e-3
    assert all(a <= b for a, b in zip(f[:peak], f[1:peak + 1], strict=True))  # the warm-up only rises
    assert all(a >= b for a, b in zip(f[peak:], f[peak + 1:], strict=False))  # then the decay only falls


def test_tiny_preset_learns_well_above_chance(trained):
    out, best, rec = trained
    assert best == out / "best.safetensors" and best.is_file()
    assert [r["phase"] for r in rec.records] == ["s1"] * 6 + ["dm"] * 1 + ["joint"] * 5
    assert rec.steps == 12 * (7 * 24 // 16)
    meta = json.loads(best.with_suffix(".json").read_text())
    m = meta["metrics"]
    assert m["phase"] in ("dm", "joint")  # the deployable model uses the sampler, not the labels
    assert m["val_lowlight_acc"] > 0.6 > 4 * CHANCE
    assert m["val_normal_acc"] > 0.6
    assert m["val_images"] == 56
    assert meta["config"]["preset"] == "tiny"
    for name in ("stage1.safetensors", "stage1_best.safetensors", "resume.safetensors"):
        assert (out / name).is_file()


def test_stage2_recovers_the_epd(trained):
    out, _, rec = trained
    history = load_resume_state(out / "resume.safetensors")["history"]
    assert [h["global_epoch"] for h in history] == list(range(1, 13))
    assert history == rec.records
    l1 = [h["epd_l1"] for h in history if h["phase"] in ("dm", "joint")]
    assert len(l1) == 6 and all(v > 0 for v in l1)
    assert l1[-1] < 0.95 * l1[0]
    assert min(l1[-2:]) < min(l1[:2])
    assert all(h["epd_l1"] == 0 for h in history if h["phase"] == "s1")


def test_eval_cli_on_the_trained_run(trained, faces_val, tmp_path):
    out, _, _ = trained
    png = tmp_path / "cm.png"
    result = CliRunner().invoke(app, ["eval", "--data", str(faces_val), "--model", str(out), "--darken",
                                      "--seed", "3", "--json", "--confusion", str(png)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["images"] == 56 and report["darkened"] is True
    assert report["accuracy"] > 0.6
    assert set(report["per_class"]) == set(load_checkpoint(out)[0].cfg.classes)
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_prior_ablation_trains(faces_train, tmp_path):
    rec = Recorder()
    best = train(_config(faces_train, tmp_path, epochs=2, stage2_epochs=1, prior=False), rec)
    assert [r["phase"] for r in rec.records] == ["s1"] * 3
    lrs = [r["lr"] for r in rec.records]
    assert lrs[1] > lrs[2]  # one schedule: the third epoch continues the decay, no restart
    model, _ = load_checkpoint(best)
    assert model.cfg.prior is False


def test_without_a_dm_epoch_the_joint_phase_starts_from_the_warm_started_sampler(faces_train, tmp_path, monkeypatch):
    import lldif_edge.lldif.train as train_module

    warm_starts = []
    original = train_module.warm_start_condition_encoder
    monkeypatch.setattr(train_module, "warm_start_condition_encoder",
                        lambda model: warm_starts.append(1) or original(model))
    rec = Recorder()
    train(_config(faces_train, tmp_path, epochs=1, stage2_epochs=2, dm_fraction=0.0), rec)
    assert [r["phase"] for r in rec.records] == ["s1", "joint", "joint"] and warm_starts == [1]


def test_tiny_dataset_and_short_phases_train(tmp_path):
    """Fewer images than one batch, one epoch per phase: the LR schedule must still be valid."""
    from conftest import make_faces

    data = make_faces(tmp_path / "data", 1)
    rec = Recorder()
    best = train(_config(data, tmp_path / "out", epochs=1, stage2_epochs=2, batch_size=64), rec)
    assert [r["phase"] for r in rec.records] == ["s1", "dm", "joint"]
    assert best.is_file()


def test_resume_after_stage1_continues_with_stage2(faces_train, tmp_path):
    runner = CliRunner()
    common = ["train", "--data", str(faces_train), "--out", str(tmp_path), "--preset", "tiny", "--epochs", "2",
              "--stage2-epochs", "2", "--batch-size", "32", "--threads", "1"]
    first = runner.invoke(app, [*common, "--stage", "1"])
    assert first.exit_code == 0, first.output
    state = load_resume_state(tmp_path / "resume.safetensors")
    assert [h["phase"] for h in state["history"]] == ["s1", "s1"]
    assert (tmp_path / "stage1.safetensors").is_file()

    second = runner.invoke(app, [*common, "--stage", "all", "--resume"])
    assert second.exit_code == 0, second.output
    history = load_resume_state(tmp_path / "resume.safetensors")["history"]
    assert [h["phase"] for h in history] == ["s1", "s1", "dm", "joint"]  # stage 1 was not repeated
    assert [h["global_epoch"] for h in history] == [1, 2, 3, 4]
    assert (tmp_path / "best.safetensors").is_file()

    # Resuming a finished run is a no-op that still names the best checkpoint.
    third = runner.invoke(app, [*common, "--stage", "all", "--resume"])
    assert third.exit_code == 0, third.output
    assert len(load_resume_state(tmp_path / "resume.safetensors")["history"]) == 4


class Interrupt(Exception):
    pass


class StopBefore(Recorder):
    """Stops the run as the epoch after `epochs` begins: the last epoch's resume state is on disk by then."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def start_epoch(self, phase: str, epoch: int, total_epochs: int, steps: int) -> None:
        if len(self.records) == self.epochs:
            raise Interrupt


@pytest.mark.parametrize(("prior", "stop_after"), [(False, 2), (True, 4)])
def test_a_run_resumed_mid_phase_repeats_the_uninterrupted_run(faces_train, faces_val, tmp_path, prior, stop_after):
    """Stopped inside a phase (after validation, which puts the model in eval mode) and resumed, a run must
    train exactly as if never stopped: same weights, optimizer, LR schedule, BatchNorm mode and seeds (with the
    optimiser moments kept in FP32; bf16 moments, the default, are checked below)."""
    torch.set_num_threads(1)
    kw = dict(val=str(faces_val), epochs=3, stage2_epochs=3, prior=prior, dm_fraction=0.0, resume_moments="fp32")
    whole = Recorder()
    train(_config(faces_train, tmp_path / "whole", **kw), whole)
    first = StopBefore(stop_after)
    with pytest.raises(Interrupt):
        train(_config(faces_train, tmp_path / "split", **kw), first)
    rest = Recorder()
    train(_config(faces_train, tmp_path / "split", resume=True, **kw), rest)
    assert len(first.records) == stop_after and len(whole.records) == 6
    keys = ("phase", "global_epoch", "lr", "train_loss", "val_lowlight_acc")
    assert [[r[k] for k in keys] for r in first.records + rest.records] == [[r[k] for k in keys] for r in whole.records]


def test_every_training_step_runs_in_train_mode(faces_train, faces_val, tmp_path, monkeypatch):
    """Validation switches the model to eval mode; each epoch must switch it back (BatchNorm, dropout)."""
    import lldif_edge.lldif.train as train_module

    modes = []
    build_model = train_module.build_model

    def build_watched_model(cfg):  # records the classifier's mode at every forward pass that trains
        model = build_model(cfg)
        model.llformer.register_forward_pre_hook(
            lambda module, args: modes.append(module.training) if torch.is_grad_enabled() else None)
        return model

    monkeypatch.setattr(train_module, "build_model", build_watched_model)
    train(_config(faces_train, tmp_path, val=str(faces_val), epochs=3, stage2_epochs=0, prior=False), Recorder())
    assert len(modes) == 3 * (7 * 24 // 16) and all(modes)


def test_stage2_alone_repeats_the_full_runs_stage2(trained, faces_train, faces_val, tmp_path):
    """`--stage 2 --init stage1` continues the full plan's LR schedule and seeds: the same epochs as `--stage all`."""
    out, _, full = trained
    torch.set_num_threads(1)
    rec = Recorder()
    train(_config(faces_train, tmp_path, val=str(faces_val), epochs=6, stage2_epochs=6, stage="2",
                  init=str(out / "stage1.safetensors")), rec)
    stage2 = [r for r in full.records if r["phase"] != "s1"]
    assert [(r["phase"], r["global_epoch"], r["lr"]) for r in rec.records] == \
        [(r["phase"], r["global_epoch"], r["lr"]) for r in stage2]
    assert [r["train_loss"] for r in rec.records] == pytest.approx([r["train_loss"] for r in stage2], rel=1e-4)


def test_equalizing_run_keeps_it_in_the_checkpoint_and_an_old_init_refuses_it(trained, faces_train, tmp_path):
    from lldif_edge.errors import LldifError

    best = train(_config(faces_train, tmp_path / "eq", epochs=1, stage2_epochs=1, prior=False, equalize=True))
    assert load_checkpoint(best)[0].cfg.equalize is True
    out, _, _ = trained
    with pytest.raises(LldifError, match="without --equalize"):
        train(_config(faces_train, tmp_path / "s2", stage="2", epochs=6, equalize=True,
                      init=str(out / "stage1.safetensors")))


def test_darkened_share_ramps_up_over_the_warmup_epochs(faces_train, tmp_path):
    from lldif_edge.lldif.train import darken_share

    tc = _config(faces_train, tmp_path, darken_p=0.8, darken_warmup=2)
    assert [darken_share(tc, e) for e in range(4)] == pytest.approx([0.0, 0.4, 0.8, 0.8])
    assert darken_share(_config(faces_train, tmp_path, darken_p=0.8), 0) == 0.8
    rec = Recorder()
    train(_config(faces_train, tmp_path, epochs=2, stage2_epochs=1, prior=False, darken_warmup=2), rec)
    assert [r["darken_p"] for r in rec.records] == pytest.approx([0.0, 0.25, 0.5])


def test_stage2_without_stage1_is_a_user_error(faces_train, tmp_path):
    from lldif_edge.errors import LldifError

    with pytest.raises(LldifError, match="stage-1 checkpoint"):
        train(_config(faces_train, tmp_path, stage="2", epochs=1))


def test_ddp_two_processes(faces_train, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lldif_edge.cli", "train", "--data", str(faces_train), "--out", str(tmp_path / "ddp"),
           "--preset", "tiny", "--epochs", "1", "--stage2-epochs", "2", "--batch-size", "32", "--threads", "1"]
    # Own process group, so a hang cannot leave orphaned workers behind.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail("torchrun timed out:\n" + stdout[-2000:] + stderr[-2000:])
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    out = tmp_path / "ddp"
    assert (out / "best.safetensors").is_file() and (out / "best.json").is_file()
    history = load_resume_state(out / "resume.safetensors")["history"]
    assert [h["phase"] for h in history] == ["s1", "dm", "joint"]  # rank 0 alone records
    model, _ = load_checkpoint(out)
    assert model(torch.rand(2, 3, 48, 48)).shape == (2, 7)


def test_augment_pair_gives_the_same_view_before_darkening():
    from lldif_edge.lldif.augment import augment_pair

    images = torch.randint(0, 256, (8, 48, 48, 1), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x, clean = augment_pair(images, 3, torch.Generator().manual_seed(1), darken_p=1.0)
    assert x.shape == clean.shape == (8, 3, 48, 48)
    assert x.mean() < 0.6 * clean.mean()  # every view darkened, the clean twin not
    x0, clean0 = augment_pair(images, 3, torch.Generator().manual_seed(1), darken_p=0.0)
    assert torch.equal(x0, clean0) and torch.allclose(clean0, clean)  # same flip and affine either way


@pytest.mark.parametrize("epd_from", ["view", "clean"])
def test_stage1_epd_comes_from_the_chosen_face_without_the_label(epd_from):
    from lldif_edge.lldif.config import preset_config
    from lldif_edge.lldif.model import build_model
    from lldif_edge.lldif.train import Objective

    torch.manual_seed(0)
    model = build_model(preset_config("tiny"))
    seen = []
    original = model.teacher_epd
    model.teacher_epd = lambda image, labels, dropout=0.0: seen.append((image, dropout)) or original(
        image, labels, dropout)
    objective = Objective(model, None, TrainConfig(data="d", out="o", epd_from=epd_from))
    dark, clean = torch.rand(4, 3, 48, 48) * 0.1, torch.rand(4, 3, 48, 48)
    objective(dark, torch.tensor([0, 1, 2, 3]), clean)
    assert seen[0][0] is (clean if epd_from == "clean" else dark) and seen[0][1] == 1.0


def test_condition_encoder_starts_as_the_la_clip_image_encoder():
    from lldif_edge.lldif.config import preset_config
    from lldif_edge.lldif.model import build_model
    from lldif_edge.lldif.train import warm_start_condition_encoder

    torch.manual_seed(0)
    model = build_model(preset_config("tiny")).eval()
    x = torch.rand(2, 3, 48, 48)
    assert not torch.allclose(model.cond_encoder(x), model.clip_image(x))
    warm_start_condition_encoder(model)
    assert torch.equal(model.cond_encoder(x), model.clip_image(x))


def test_cnn_preset_refuses_a_prior(tmp_path, faces_train):
    result = CliRunner().invoke(app, ["train", "--data", str(faces_train), "--out", str(tmp_path / "r"),
                                      "--preset", "cnn", "--epochs", "1"])
    assert result.exit_code != 0 and "--no-prior" in str(result.exception or result.output)


def test_clean_epd_stage1_is_scored_with_the_epd_it_trains_with(faces_train, faces_val, tmp_path):
    """--epd-from clean: LA-CLIP only ever sees normal-light faces, so stage 1 is scored (and its best epoch
    picked) with the EPD made from the normal-light val face, not from the dark one it never saw."""
    from lldif_edge.data import load_folder
    from lldif_edge.lldif.train import predict_logits
    from lldif_edge.lowlight import darken_many

    rec = Recorder()
    best = train(_config(faces_train, tmp_path, val=str(faces_val), epochs=1, stage="1", epd_from="clean"), rec)
    model, _ = load_checkpoint(best)
    val = load_folder(faces_val, model.cfg.classes, 48, 1)
    dark = darken_many(val.images, 0)
    scored = (predict_logits(model, dark, image_only_stage1=True, epd_images_u8=val.images).argmax(-1)
              == val.labels).mean()
    assert rec.records[0]["val_lowlight_acc"] == pytest.approx(scored)
    from_dark = predict_logits(model, dark, image_only_stage1=True)  # the old, mismatched scoring
    assert not np.allclose(from_dark, predict_logits(model, dark, image_only_stage1=True, epd_images_u8=val.images))


def test_bf16_moments_halve_the_resume_file_and_the_resumed_run_stays_close(faces_train, tmp_path):
    torch.set_num_threads(1)
    kw = dict(epochs=2, stage2_epochs=2, prior=False)
    whole = Recorder()
    train(_config(faces_train, tmp_path / "whole", resume_moments="fp32", **kw), whole)
    with pytest.raises(Interrupt):
        train(_config(faces_train, tmp_path / "split", **kw), StopBefore(2))
    small = (tmp_path / "split" / "resume.safetensors").stat().st_size
    assert small < 0.8 * (tmp_path / "whole" / "resume.safetensors").stat().st_size
    rest = Recorder()
    train(_config(faces_train, tmp_path / "split", resume=True, **kw), rest)
    assert [r["lr"] for r in rest.records] == [r["lr"] for r in whole.records[2:]]
    assert rest.records[-1]["train_loss"] == pytest.approx(whole.records[-1]["train_loss"], rel=0.05)


def test_a_broken_resume_file_is_a_one_line_user_error(faces_train, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "resume.safetensors").write_bytes(b"not a safetensors file")
    result = CliRunner().invoke(app, ["train", "--data", str(faces_train), "--out", str(out), "--preset", "tiny",
                                      "--epochs", "1", "--resume"])
    assert isinstance(result.exception, LldifError) and "resume.safetensors" in str(result.exception)


def test_an_older_last_pt_still_resumes(faces_train, tmp_path):
    """Run folders of older versions hold last.pt (torch.save of the same progress and state dicts)."""
    torch.set_num_threads(1)
    kw = dict(epochs=1, stage2_epochs=1, prior=False)
    with pytest.raises(Interrupt):
        train(_config(faces_train, tmp_path, resume_moments="fp32", **kw), StopBefore(1))
    state = load_resume_state(tmp_path / "resume.safetensors")
    torch.save(state, tmp_path / "last.pt")
    (tmp_path / "resume.safetensors").unlink()
    rest = Recorder()
    train(_config(faces_train, tmp_path, resume=True, **kw), rest)
    assert [r["global_epoch"] for r in rest.records] == [2]


def test_a_prior_run_from_a_cnn_image_branch_starts_as_that_cnn(faces_train, faces_val, tmp_path):
    """--image-branch: LLDif's CNN starts from a trained no-prior CNN, its FiLM adapters at zero, so before any
    step it computes exactly what the CNN computes; the fair ablation continues the same CNN without the prior."""
    from lldif_edge.lldif.config import preset_config
    from lldif_edge.lldif.model import build_model
    from lldif_edge.lldif.train import start_from_image_branch

    small = dict(stem_channels=(8, 16), stem_blocks=(0, 1), embed_dim=16, epd_dim=8, clip_dim=8, cond_dim=8,
                 encoder_channels=(8,), denoiser_hidden=16, timesteps=50, sample_steps=2)
    cnn = build_model(preset_config("rescnn", prior=False, **small)).eval()
    from lldif_edge.lldif.checkpoint import save_checkpoint

    ckpt = save_checkpoint(cnn, tmp_path / "cnn")
    lldif = start_from_image_branch(_config(faces_train, tmp_path / "x", image_branch=str(ckpt), prior=True)).eval()
    assert lldif.cfg.prior and len(lldif.llformer.adapters) == 3
    x = torch.rand(3, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(lldif(x), cnn(x))
    ablation = start_from_image_branch(_config(faces_train, tmp_path / "y", image_branch=str(ckpt), prior=False))
    with torch.no_grad():
        assert torch.equal(ablation.eval()(x), cnn(x))

    base = save_checkpoint(build_model(preset_config("tiny", prior=False)), tmp_path / "tiny")
    result = CliRunner().invoke(app, ["train", "--data", str(faces_train), "--out", str(tmp_path / "z"),
                                      "--image-branch", str(base), "--epochs", "1"])
    assert isinstance(result.exception, LldifError) and "does not fit" in str(result.exception)  # tiny's blocks


def test_init_seed_gives_runs_of_other_seeds_the_same_fresh_weights(faces_train, tmp_path):
    """--init-seed: the prior and adapters start from that seed's weights whatever --seed is, so two seeds' runs
    start alike (scripts/average_checkpoints.py needs that); without it --seed sets them too."""
    from lldif_edge.lldif.checkpoint import save_checkpoint
    from lldif_edge.lldif.config import preset_config
    from lldif_edge.lldif.model import build_model
    from lldif_edge.lldif.train import start_from_image_branch

    ckpt = save_checkpoint(build_model(preset_config("rescnn", prior=False, stem_channels=(8, 16),
                                                     stem_blocks=(0, 1), embed_dim=16)), tmp_path / "cnn")

    def start(**kw):
        return start_from_image_branch(_config(faces_train, tmp_path / "x", image_branch=str(ckpt), **kw)).state_dict()

    base, same, other = start(seed=0), start(seed=1, init_seed=0), start(seed=1)
    assert all(torch.equal(base[k], same[k]) for k in base)
    assert not all(torch.equal(base[k], other[k]) for k in base)


@pytest.mark.parametrize("stop_after", [3, 4])  # between the stages; inside the joint phase
def test_the_resume_file_alone_resumes_a_run_elsewhere(faces_train, faces_val, tmp_path, stop_after):
    """A run stopped on one machine goes on on another from its resume file alone (the one file a stopped run
    commits): the best checkpoint so far and the stage-1 model it needs travel inside it."""
    torch.set_num_threads(1)
    kw = dict(val=str(faces_val), epochs=3, stage2_epochs=3, prior=True, dm_fraction=0.0, resume_moments="fp32")
    whole = Recorder()
    train(_config(faces_train, tmp_path / "whole", **kw), whole)
    first = StopBefore(stop_after)
    with pytest.raises(Interrupt):
        train(_config(faces_train, tmp_path / "there", **kw), first)
    (tmp_path / "here").mkdir()
    (tmp_path / "there" / "resume.safetensors").rename(tmp_path / "here" / "resume.safetensors")
    rest = Recorder()
    best = train(_config(faces_train, tmp_path / "here", resume=True, **kw), rest)
    keys = ("phase", "global_epoch", "lr", "train_loss", "val_lowlight_acc")
    assert [[r[k] for k in keys] for r in first.records + rest.records] == [[r[k] for k in keys] for r in whole.records]
    got, want = load_checkpoint(best)[0], load_checkpoint(tmp_path / "whole" / "best.safetensors")[0]
    for (k, a), b in zip(got.state_dict().items(), want.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
