"""Per-sub-graph ONNX export into a verified model package.

Exporter choice: torch 2.13's default dynamo exporter writes opset 18 whatever is asked and was 30x slower
here; the TorchScript exporter (`dynamo=False`) honours the requested opset, keeps the small weights inside
each .onnx and produced graphs that both ONNX Runtime and OpenVINO read. The opset is in the manifest.
"""

from __future__ import annotations

import datetime
import importlib.metadata as md
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from lldif_edge.errors import PackageError
from lldif_edge.lldif.checkpoint import load_checkpoint, resolve_checkpoint
from lldif_edge.lldif.model import LLDif, timestep_embedding
from lldif_edge.lowlight import darken_many
from lldif_edge.metrics import compare_logits
from lldif_edge.package import GraphEntry, InputSpec, Package, PackageWriter, checkpoint_ref, sha256_file

log = logging.getLogger(__name__)

# Verification limits: a package whose FP32 graphs differ more from PyTorch than this is not written.
MAX_LOGIT_DIFF = 1e-3
MIN_AGREEMENT = 0.999


class CondGraph(nn.Module):
    def __init__(self, model: LLDif):
        super().__init__()
        self.encoder = model.cond_encoder

    def forward(self, image):
        return self.encoder(image)


class DenoiserGraph(nn.Module):
    """The K sampler steps (`ddim_sample`) unrolled into one graph, with what the checkpoint fixes folded in.

    The first layer's weight is split by its input (x_t | cond | time embedding): each step's time embedding
    and the start noise are constants, so their products become a per-step bias. The graph then takes only
    `cond`; the first step is one Gemm on it, and no Shape/Expand chain broadcasts the noise over the batch
    (at batch 1 those small ops took most of the denoiser's time in ONNX Runtime).
    """

    def __init__(self, model: LLDif, k: int | None = None):
        super().__init__()
        d, e, c = model.denoiser, model.cfg.epd_dim, model.cfg.cond_dim
        first = d.net[0]
        self.ts, self.rest = model.sampler_timesteps(k), d.net[1:]
        with torch.no_grad():
            w = first.weight
            temb = timestep_embedding(torch.tensor(self.ts, dtype=torch.float32), d.time_dim)
            bias = temb @ w[:, e + c:].T + first.bias  # (K, hidden)
            bias[0] += (model.start_noise @ w[:, :e].T)[0]
        self.register_buffer("w_x", w[:, :e].detach().clone())
        self.register_buffer("w_cond", w[:, e:e + c].detach().clone())
        self.register_buffer("step_bias", bias)
        self.register_buffer("start_noise", model.start_noise.clone())
        self.register_buffer("alphas_cumprod", model.alphas_cumprod.clone())

    def forward(self, cond):
        x, x0 = self.start_noise, None  # (1, epd_dim): broadcasts over the batch
        for i, t in enumerate(self.ts):
            h = F.linear(cond, self.w_cond, self.step_bias[i])
            if i > 0:
                h = h + F.linear(x, self.w_x)
            x0 = self.rest(h)
            if i == len(self.ts) - 1:
                break
            ab_t, ab_next = self.alphas_cumprod[t], self.alphas_cumprod[self.ts[i + 1]]
            eps = (x - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
            x = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return x0


class LLformerGraph(nn.Module):
    def __init__(self, model: LLDif):
        super().__init__()
        self.llformer = model.llformer

    def forward(self, image, epd=None):
        return self.llformer(image, epd)


class FusedGraph(nn.Module):
    def __init__(self, model: LLDif, k: int | None = None):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, image):
        return self.model(image, self.k)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], opset: int) -> None:
    axes = {n: {0: "batch"} for n in inputs + outputs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, opset_version=opset, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    onnx.checker.check_model(str(path), full_check=True)


def graph_specs(model: LLDif, k: int | None = None) -> dict[str, tuple[nn.Module, dict[str, list[int]],
                                                                      dict[str, list[int]]]]:
    """name -> (module, inputs with shapes, outputs with shapes); -1 is the dynamic batch. `k`: the sampler
    step count the denoiser unrolls (default: the checkpoint's)."""
    c = model.cfg
    image = [-1, c.in_chans, c.input_size, c.input_size]
    logits = [-1, len(c.classes)]
    if not c.prior:
        return {"llformer": (LLformerGraph(model), {"image": image}, {"logits": logits})}
    return {
        "cond": (CondGraph(model), {"image": image}, {"cond": [-1, c.cond_dim]}),
        "denoiser": (DenoiserGraph(model, k), {"cond": [-1, c.cond_dim]}, {"epd": [-1, c.epd_dim]}),
        "llformer": (LLformerGraph(model), {"image": image, "epd": [-1, c.epd_dim]}, {"logits": logits}),
    }


def _example(shape: list[int]) -> torch.Tensor:
    return torch.rand([2 if d == -1 else d for d in shape])


def tool_versions() -> dict[str, str]:
    out = {}
    for pkg in ("lldif-edge", "torch", "onnx", "onnxruntime", "openvino"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def verification_images(model: LLDif, verify_data: str | Path | None, count: int = 256,
                        seed: int = 0) -> tuple[np.ndarray, str]:
    """Darkened real faces from a folder when given, else darkened generated faces."""
    c = model.cfg
    if verify_data:
        from lldif_edge.data import load_folder

        ds = load_folder(verify_data, c.classes, c.input_size, 1 if c.grayscale else 3)
        idx = np.random.default_rng(seed).permutation(len(ds))[:count]
        return darken_many(ds.images[idx], seed), f"{len(idx)} darkened images from {verify_data}"
    from lldif_edge.synthetic import synthetic_faces

    faces, _ = synthetic_faces(count, c.input_size, seed)
    faces = faces[..., None] if c.grayscale else np.repeat(faces[..., None], 3, axis=-1)
    return darken_many(faces, seed), f"{count} darkened generated faces (lldif_edge.synthetic)"


def export_package(model_path: str | Path | None, out: str | Path, steps: int | None = None, opset: int = 17,
                   fused: bool = False, force: bool = False, verify_data: str | Path | None = None,
                   confidence_data: str | Path | None = None, confidence_exclude: str | Path | None = None) -> dict:
    """Write and verify a package; returns its manifest (as written, a dict). Nothing lands in `out` unless
    verification passes.
    `confidence_data`: labelled held-out faces to fit the confidence calibration on (`calibration.confidence`),
    without the images of `confidence_exclude` (the training folder); none: the plain softmax, said so."""
    from lldif_edge.calibration import confidence

    ckpt = resolve_checkpoint(model_path)
    model, meta = load_checkpoint(ckpt)
    cfg = model.cfg
    distilled = meta.get("distillation")
    k = steps or cfg.sample_steps  # the sampler step count K: an argument, the checkpoint's config stays as is
    if cfg.prior and k != cfg.sample_steps:
        log.warning("exporting a %d-step sampler from a checkpoint made for %d steps: accuracy is not the "
                    "distilled one (run `lldif-edge distill --steps %d` first)", k, cfg.sample_steps, k)
    specs = graph_specs(model, k)
    calib_faces = None
    if confidence_data is not None:  # before any slow work: a bad folder fails first
        calib_faces, dropped = confidence.load_faces(confidence_data, cfg.classes, cfg.input_size,
                                                     1 if cfg.grayscale else 3, confidence_exclude, ckpt)
    sampler = None
    if cfg.prior:
        ts = model.sampler_timesteps(k)
        sampler = {
            "steps": k, "timesteps": ts, "schedule_timesteps": cfg.timesteps,
            "beta_start": cfg.beta_start, "beta_end": cfg.beta_end,
            "alphas_cumprod": [float(model.alphas_cumprod[t]) for t in ts],
            "teacher_steps": distilled["teacher_steps_s"] if distilled else k,
            "distilled": bool(distilled),
            "start_noise": model.start_noise.flatten().tolist(),
        }
    pkg = Package(
        classes=list(cfg.classes),
        input=InputSpec(size=cfg.input_size, channels=cfg.in_chans, color="gray" if cfg.grayscale else "rgb",
                        scale=1 / 255, mean=[0.0] * cfg.in_chans, std=[1.0] * cfg.in_chans,
                        extra={"layout": "NCHW", "dtype": "float32",
                               "note": "uint8 pixels * scale; grey faces replicated to every channel; the graphs "
                                       "standardise each image themselves"}),
        graphs={},
        pipeline=list(specs),
        pipeline_fused=["fused"] if fused else None,
        model={"checkpoint": checkpoint_ref(ckpt), "checkpoint_sha256": sha256_file(ckpt), "preset": cfg.preset,
               "prior": cfg.prior, "metrics": meta.get("metrics")},
        sampler=sampler,
        confidence=confidence.NO_DATA,
        extra={"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "opset": opset, "tools": tool_versions()},
    )
    if fused:
        c = cfg
        specs["fused"] = (FusedGraph(model, k), {"image": [-1, c.in_chans, c.input_size, c.input_size]},
                          {"logits": [-1, len(c.classes)]})
    with PackageWriter(out, force) as writer:
        for name, (module, inputs, outputs) in specs.items():
            path = writer.tmp / f"{name}.onnx"
            args = tuple(_example(s) for s in inputs.values())
            _export(module, args, path, list(inputs), list(outputs), opset)
            pkg.graphs[name] = GraphEntry(file=path.name, sha256=sha256_file(path), precision="fp32",
                                          inputs=inputs, outputs=outputs, extra={"bytes": path.stat().st_size})
        pkg.write(writer.tmp)
        pkg.extra["verification"] = verify_package(model, writer.tmp, verify_data, fused, k)
        if calib_faces is not None:
            from lldif_edge.runtimes.pipeline import Pipeline

            pkg.confidence = confidence.fit_confidence(
                Pipeline(writer.tmp), calib_faces,
                confidence.source_description(confidence_data, confidence_exclude, dropped))
        pkg.write(writer.tmp)
    return pkg.to_dict()


def verify_package(model: LLDif, root: Path, verify_data: str | Path | None, fused: bool,
                   k: int | None = None) -> dict:
    """ONNX Runtime vs PyTorch (`k` sampler steps) on darkened faces; OpenVINO must read every graph when it
    is installed."""
    from lldif_edge.runtimes.pipeline import Pipeline

    faces, source = verification_images(model, verify_data)
    with torch.no_grad():
        x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255
        reference = model(x.expand(-1, model.cfg.in_chans, -1, -1), k).numpy()
    result = {"source": source}
    for variant in ["sub-graphs"] + (["fused"] if fused else []):
        pipe = Pipeline(root, fused=variant == "fused")
        got = pipe.logits(pipe.preprocess(faces))
        r = compare_logits(reference, got)
        result[variant] = r
        if r["max_abs_logit_diff"] > MAX_LOGIT_DIFF or r["top1_agreement"] < MIN_AGREEMENT:
            raise PackageError(f"export verification failed ({variant}): max |logit diff| "
                               f"{r['max_abs_logit_diff']:.2e}, top-1 agreement {r['top1_agreement']:.4f}")
    result["openvino_reads"] = openvino_reads(root)
    return result


def openvino_reads(root: Path) -> bool | str:
    """Every graph of a package must parse in OpenVINO too (it reads the ONNX directly)."""
    try:
        import openvino as ov
    except ImportError:
        return "not checked (openvino not installed)"
    core = ov.Core()
    for f in sorted(root.glob("*.onnx")):
        core.read_model(str(f))
    return True
