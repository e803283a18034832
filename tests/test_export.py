"""Export of the tiny model into a package, parity with torch on every backend here, tamper detection,
bad package and bad input errors, the entry-point registry, and the no-torch runtime path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # export needs torch: a runtime-only install skips this module

from lldif_edge.errors import BackendError, LldifError, PackageError  # noqa: E402
from lldif_edge.export.onnx_export import export_package  # noqa: E402
from lldif_edge.lldif.checkpoint import save_checkpoint  # noqa: E402
from lldif_edge.lldif.config import preset_config  # noqa: E402
from lldif_edge.lldif.model import build_model  # noqa: E402
from lldif_edge.runtimes import load_pipeline  # noqa: E402
from lldif_edge.synthetic import synthetic_faces  # noqa: E402


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(preset_config("tiny")).eval()
    # Untrained BatchNorm statistics are identity; randomise them so the export sees non-trivial folding.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def package(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg") / "tiny-package"
    export_package(tiny_ckpt, out, fused=True)
    return out


def torch_logits(ckpt, faces):
    from lldif_edge.lldif.checkpoint import load_checkpoint
    from lldif_edge.lldif.train import predict_logits

    model, _ = load_checkpoint(ckpt)
    return predict_logits(model, faces[..., None])


def test_manifest_records_graphs_sampler_and_verification(package):
    m = json.loads((package / "manifest.json").read_text())
    assert set(m["graphs"]) == {"cond", "denoiser", "llformer", "fused"}
    assert m["pipeline"] == ["cond", "denoiser", "llformer"]
    assert m["opset"] == 17 and m["sampler"]["steps"] == preset_config("tiny").sample_steps
    assert len(m["sampler"]["start_noise"]) == preset_config("tiny").epd_dim
    v = m["verification"]
    assert v["sub-graphs"]["top1_agreement"] == 1.0 and v["sub-graphs"]["max_abs_logit_diff"] < 1e-3
    assert v["openvino_reads"] is True
    for g in m["graphs"].values():
        assert len(g["sha256"]) == 64 and g["precision"] == "fp32"
        assert not list(package.glob("*.data"))  # weights stay inside each .onnx


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_backends_agree_with_torch(package, tiny_ckpt, backend):
    faces, _ = synthetic_faces(40, seed=3)  # > OpenVINO's chunk size: batches are split and joined
    # OpenVINO's CPU default runs FP32 models in bf16 where the CPU has it (AMX): pin f32 to compare exactly.
    pipe = load_pipeline(package, backend=backend, **({"precision": "f32"} if backend == "openvino" else {}))
    probs = pipe.predict(faces)
    ref = torch_logits(tiny_ckpt, faces)
    assert probs.shape == (40, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == ref.argmax(1)).all()
    np.testing.assert_allclose(np.log(probs) - np.log(probs).mean(1, keepdims=True),
                               ref - ref.mean(1, keepdims=True), atol=1e-3)


def test_fused_graph_matches_sub_graphs(package):
    faces, _ = synthetic_faces(8, seed=4)
    a = load_pipeline(package).predict(faces)
    b = load_pipeline(package, fused=True).predict(faces)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_onnxruntime_io_binding_chains_ortvalues_and_matches(package):
    """The GPU path (IO binding, intermediates kept as OrtValues) exercised on the CPU provider."""
    import onnxruntime as ort

    faces, _ = synthetic_faces(5, seed=6)
    plain = load_pipeline(package)
    bound = load_pipeline(package, io_binding=True)
    assert all(stage.device_tensors for _, stage in bound.stages) and "IO binding" in bound.describe()
    cond = bound.stages[0][1]
    out = cond.run({"image": bound.preprocess(faces)}, keep_on_device=True)
    assert all(isinstance(v, ort.OrtValue) for v in out.values())
    np.testing.assert_allclose(bound.predict(faces), plain.predict(faces), atol=1e-6)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_op_profile_says_where_the_time_goes(package, backend):
    from lldif_edge.bench import profile_ops

    faces, _ = synthetic_faces(2, seed=7)
    rows = profile_ops(load_pipeline(package, backend=backend, threads=1, profile=True), faces, runs=5, warmup=1)
    assert {r["graph"] for r in rows} == {"cond", "denoiser", "llformer"}
    assert abs(sum(r["share"] for r in rows) - 1) < 1e-6 and all(r["ms_per_face"] >= 0 for r in rows)
    assert {r["kind"] for r in rows} <= {"int8_kernels", "float_compute", "qdq", "other"}
    assert any(r["kind"] == "float_compute" for r in rows)  # an FP32 package: convs and GEMMs in float
    with pytest.raises(BackendError, match="profile=True"):
        load_pipeline(package, backend=backend).stages[0][1].op_profile()


def test_single_face_rgb_and_batch_array_inputs(package):
    faces, _ = synthetic_faces(3, seed=5)
    pipe = load_pipeline(package)
    batch = pipe.predict(faces)
    one = pipe.predict(faces[0])
    rgb = pipe.predict(np.repeat(faces[0][..., None], 3, axis=-1))
    np.testing.assert_allclose(one[0], batch[0], atol=1e-5)
    np.testing.assert_allclose(rgb[0], batch[0], atol=1e-2)


def test_bad_inputs_are_clear_errors(package):
    pipe = load_pipeline(package)
    with pytest.raises(LldifError, match="empty batch"):
        pipe.predict([])
    with pytest.raises(LldifError, match="uint8"):
        pipe.predict([np.zeros((48, 48), np.float32)])
    with pytest.raises(LldifError, match="shape"):
        pipe.logits(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(LldifError, match="float32"):
        pipe.logits(np.zeros((1, 3, 48, 48), np.float64))


def test_tampered_or_missing_file_is_refused(package, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(package, copy)
    data = bytearray((copy / "llformer.onnx").read_bytes())
    data[-10] ^= 0xFF
    (copy / "llformer.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageError, match="llformer.onnx does not match its sha256"):
        load_pipeline(copy)
    (copy / "cond.onnx").unlink()
    with pytest.raises(PackageError, match="cond.onnx is missing"):
        load_pipeline(copy)


def test_not_a_package_and_unknown_backend(package, tmp_path):
    with pytest.raises(PackageError, match="no manifest.json"):
        load_pipeline(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="unreadable manifest"):
        load_pipeline(tmp_path)
    with pytest.raises(BackendError, match="unknown backend 'nope'"):
        load_pipeline(package, backend="nope")


def test_the_export_front_door_refuses_unknown_targets_and_misplaced_settings(tiny_ckpt, tmp_path):
    from lldif_edge.export.targets import TARGETS, Int8Settings, export

    assert {"fp32", "int8-cpu", "int8-tensorrt"} <= set(TARGETS)
    with pytest.raises(LldifError, match="unknown export target 'int4' \\(choose from fp32, "):
        export("int4", tiny_ckpt, tmp_path / "a")
    with pytest.raises(LldifError, match="'fp32' does not calibrate"):
        export("fp32", tiny_ckpt, tmp_path / "b", int8=Int8Settings(calib_count=8))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_fp16_target_is_one_row_and_agrees_with_fp32_on_onnxruntime_and_openvino(tiny_ckpt, package, tmp_path):
    from lldif_edge.export.targets import TARGETS, Common, export
    from lldif_edge.package import Package

    assert "fp16" in TARGETS and not TARGETS["fp16"].int8
    manifest = export("fp16", tiny_ckpt, tmp_path / "fp16", Common(fused=True))
    assert manifest["verification"]["sub-graphs"]["top1_agreement"] >= 0.99
    pkg = Package.read(tmp_path / "fp16")
    assert {g.precision for g in pkg.graphs.values()} == {"fp16"}
    assert sum(g.extra["bytes"] for g in pkg.graphs.values()) < 0.8 * sum(g.extra["fp32_bytes"]
                                                                           for g in pkg.graphs.values())
    faces = synthetic_faces(32, 48, seed=4)[0]
    ref = load_pipeline(package).predict(faces)
    for backend in ["onnxruntime", "openvino"]:
        if backend == "openvino":
            pytest.importorskip("openvino")
        for fused in (False, True):
            got = load_pipeline(tmp_path / "fp16", backend=backend, fused=fused).predict(faces)
            assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.95
            np.testing.assert_allclose(got, ref, atol=2e-2)


def test_the_step_count_is_an_argument_never_a_changed_config(tiny_ckpt, tmp_path, faces_val, monkeypatch):
    from lldif_edge.lldif.torch_backend import _load
    from lldif_edge.package import Package

    k = preset_config("tiny").sample_steps + 2
    manifest = export_package(tiny_ckpt, tmp_path / "k", steps=k)  # verified against torch with k steps
    assert manifest["sampler"]["steps"] == k and len(manifest["sampler"]["timesteps"]) == k
    faces = synthetic_faces(8, 48, seed=3)[0]
    ours = load_pipeline(tmp_path / "k").predict(faces)
    np.testing.assert_allclose(load_pipeline(tmp_path / "k", backend="torch").predict(faces), ours, atol=1e-4)
    from lldif_edge.lldif.reference import reference_logits  # eval --compare / --steps: K passed to the model

    pipe = load_pipeline(tmp_path / "k")
    np.testing.assert_allclose(reference_logits(tiny_ckpt, faces[..., None], steps=k),
                               pipe.logits(pipe.preprocess(faces)), atol=1e-4)
    import lldif_edge.lldif.reference as reference  # eval --package --compare runs torch at the package's K
    from lldif_edge.evaluation import evaluate_package

    asked = []
    monkeypatch.setattr(reference, "reference_logits",
                        lambda *a, steps=None: asked.append(steps) or reference_logits(*a, steps=steps))
    report, _ = evaluate_package(tmp_path / "k", faces_val, compare=True)
    assert asked == [k] and report["max_abs_logit_diff_vs_torch"] < 1e-3
    cached = _load(str(Package.read(tmp_path / "k").checkpoint))  # the torch backend's model, shared
    assert cached.cfg.sample_steps == preset_config("tiny").sample_steps


def test_bench_runners_come_from_the_backends():
    from lldif_edge.bench import runner_variants

    assert runner_variants("onnxruntime", "int8") == [("onnxruntime int8", "onnxruntime", {})]
    assert "torch" not in [name for _, name, _ in runner_variants("all", "fp32")]  # the reference runs on its own
    if pytest.importorskip("openvino"):
        assert [label for label, _, _ in runner_variants("openvino", "fp32")] == ["openvino fp32 (f32)",
                                                                                  "openvino fp32 (CPU default)"]


def test_the_typed_manifest_reads_the_shipped_packages_and_keeps_every_key():
    from lldif_edge.package import DEFAULT_PACKAGES, MANIFEST, Package, sha256_file

    for root in DEFAULT_PACKAGES:
        before = sha256_file(root / MANIFEST)
        pkg = Package.read(root)
        text = (root / MANIFEST).read_text()
        assert json.dumps(pkg.to_dict(), indent=2) == text  # every key, null or not, in its order
        assert pkg.input.size == 48 and pkg.pipeline == ["cond", "denoiser", "llformer"]
        assert sha256_file(root / MANIFEST) == before
    assert Package.read(DEFAULT_PACKAGES[0]).calibration.target == "cpu"


def test_an_exported_manifest_round_trips_through_the_typed_package(package, tmp_path):
    from lldif_edge.package import MANIFEST, Package

    pkg = Package.read(package)
    again = Package.from_dict(json.loads(json.dumps(pkg.to_dict())), package)
    assert again == pkg and again.graphs["denoiser"].precision == "fp32"
    pkg.write(tmp_path)  # the writer gives back the exporter's file byte for byte
    assert (tmp_path / MANIFEST).read_bytes() == (package / MANIFEST).read_bytes()


def test_a_bad_manifest_field_is_one_line_naming_it(package, tmp_path):
    import shutil

    from lldif_edge.package import Package

    copy = tmp_path / "copy"
    shutil.copytree(package, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["input"]["size"] = "48"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match=r"manifest.json: input.size must be a positive integer, got '48'"):
        load_pipeline(copy)
    m["input"]["size"], m["pipeline"] = 48, ["cond", "nope"]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="pipeline must be a list of graph names"):
        Package.read(copy)
    m["format"] = "lldif-edge-package/0"
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(PackageError, match="unsupported package format 'lldif-edge-package/0'"):
        Package.read(copy)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_unknown_backend_option_is_an_error_naming_it(package, backend):
    pytest.importorskip(backend)
    with pytest.raises(BackendError, match=f"{backend}: unknown option.*io_bindng"):
        load_pipeline(package, backend=backend, io_bindng=True)


def test_onnxruntime_session_config_keys_still_reach_the_session(package):
    pipe = load_pipeline(package, **{"session.intra_op.allow_spinning": "0"})
    config = pipe.stages[0][1].session.get_session_options().get_session_config_entry
    assert config("session.intra_op.allow_spinning") == "0"


def test_export_refuses_non_empty_out_and_leaves_it_intact(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(PackageError, match="not empty"):
        export_package(tiny_ckpt, out)
    assert (out / "keep.txt").read_text() == "mine"
    export_package(tiny_ckpt, out, force=True)
    assert (out / "manifest.json").is_file() and not (out / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp folders left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o755 & ~umask  # readable by every user of the install, not 0700


def test_runtime_path_never_imports_torch(package):
    code = textwrap.dedent(f"""
        import sys, numpy as np
        import lldif_edge, lldif_edge.runtimes, lldif_edge.app
        from lldif_edge.runtimes import load_pipeline
        from lldif_edge.synthetic import synthetic_faces
        p = load_pipeline({str(package)!r})
        p.predict(synthetic_faces(2)[0])
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_third_party_backend_joins_through_entry_points(package, tmp_path):
    """A package that declares an entry point in group lldif_edge.runtimes is picked up by name."""
    site = tmp_path / "site"
    (site / "mybackend").mkdir(parents=True)
    (site / "mybackend" / "__init__.py").write_text(textwrap.dedent("""
        from lldif_edge.runtimes.onnxruntime_backend import OnnxRuntimeBackend
        class Echo(OnnxRuntimeBackend):
            name = "echo"
            def describe(self):
                return "echo backend"
    """))
    dist = site / "mybackend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mybackend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lldif_edge.runtimes]\necho = mybackend:Echo\n")
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(site)!r})
        from lldif_edge.runtimes import backend_names, load_pipeline
        assert "echo" in backend_names(), backend_names()
        p = load_pipeline({str(package)!r}, backend="echo")
        print(p.describe())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "echo backend" in r.stdout, r.stderr


def test_cli_export_eval_bench_info(tiny_ckpt, tmp_path, faces_val):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "lldif_edge.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=300)

    out = tmp_path / "pkg"
    r = cli("export", "--model", tiny_ckpt, "--out", out)
    assert r.returncode == 0, r.stderr
    r = cli("export", "--model", tiny_ckpt, "--out", out)
    assert r.returncode == 2 and "not empty" in r.stderr
    r = cli("eval", "--package", out, "--data", faces_val, "--darken", "--compare", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["agreement_with_torch"] == 1.0 and report["images"] == 56
    r = cli("bench", "--package", out, "--runs", "10", "--batch", "4", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert "onnxruntime fp32" in res["runners"] and res["speedup_vs_torch_p50"] > 0
    assert set(res["runners"]["onnxruntime fp32"]["latency_ms"]) == {"end_to_end", "cond", "denoiser", "llformer"}
    torch_runner = next(v for k, v in res["runners"].items() if k.startswith("torch teacher"))  # one runner more
    assert set(torch_runner["latency_ms"]) == {"end_to_end", "cond", "denoiser", "llformer"}
    assert torch_runner["rounds"] == res["runners"]["onnxruntime fp32"]["rounds"]
    r = cli("bench", "--package", out, "--runs", "5", "--batch", "2", "--no-reference", "--profile")
    assert r.returncode == 0, r.stderr
    assert "where the time goes" in r.stdout and "float_compute" in r.stdout
    r = cli("bench", "--package", out, "--package", out, "--backend", "onnxruntime", "--runs", "3", "--batch", "2",
            "--no-reference", "--json")
    assert r.returncode == 0, r.stderr
    bench = json.loads(r.stdout)
    assert len(bench["runners"]) == 2  # same precision twice: both kept, told apart by folder
    r = cli("info", "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    assert facts["cpu"] == bench["cpu"] and facts["cpu"]["model"]  # what the timings were measured on
    rows = {b["backend"]: b for b in facts["backends"]}
    assert rows["onnxruntime"]["available"] and rows["torch"]["available"]
    assert not rows["tensorrt"]["available"] and rows["tensorrt"]["why_not"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_equalizing_model_exports_and_agrees_with_torch(tmp_path_factory, backend):
    torch.manual_seed(0)
    model = build_model(preset_config("tiny", equalize=True)).eval()
    ckpt = save_checkpoint(model, tmp_path_factory.mktemp("eq") / "tiny_eq")
    out = tmp_path_factory.mktemp("eqpkg") / "pkg"
    export_package(ckpt, out)
    faces, _ = synthetic_faces(12, seed=5)
    faces = (faces.astype(np.float32) ** 2 / 255).astype(np.uint8)  # darker, with many tied levels
    pipe = load_pipeline(out, backend=backend, **({"precision": "f32"} if backend == "openvino" else {}))
    probs = pipe.predict(faces)
    ref = torch_logits(ckpt, faces)
    np.testing.assert_allclose(np.log(probs) - np.log(probs).mean(1, keepdims=True),
                               ref - ref.mean(1, keepdims=True), atol=1e-3)


def test_the_film_adapter_design_exports_and_quantizes(tmp_path):
    """The second design (residual CNN, the EPD through zero-initialised FiLM adapters at every stage) goes
    through the same export: FP32 agrees with torch, the data-free INT8 package loads in ONNX Runtime."""
    from lldif_edge.export.int8_export import export_int8

    torch.manual_seed(0)
    cfg = preset_config("rescnn", stem_channels=(8, 16), stem_blocks=(0, 1), embed_dim=16, epd_dim=8, clip_dim=8,
                        cond_dim=8, encoder_channels=(8,), denoiser_hidden=16, timesteps=50, sample_steps=2)
    model = build_model(cfg).eval()
    for film in model.llformer.adapters:  # trained adapters are not the identity
        torch.nn.init.normal_(film.proj.weight, std=0.1)
    ckpt = save_checkpoint(model, tmp_path / "film")
    export_package(ckpt, tmp_path / "fp32")
    faces = synthetic_faces(16, seed=3)[0]
    pipe = load_pipeline(tmp_path / "fp32")
    np.testing.assert_allclose(pipe.logits(pipe.preprocess(faces)), torch_logits(ckpt, faces), atol=1e-3)
    report = export_int8(ckpt, tmp_path / "int8", calib_count=16, datafree_steps=5, latency_runs=5)
    assert report["graphs"]["llformer"]["precision"] == "int8"
    assert load_pipeline(tmp_path / "int8").predict(faces).shape == (16, 7)
