"""The INT8 toolbox the exporter (`lldif_edge.export.int8_export`) drives; it never exports anything itself.

* `Workbench`: the scratch state of one INT8 export (pre-processed graphs, range caches per calibration set,
  quantized variants) and a stage-wise evaluator for trying precision choices.
* `stage_feeds`: what each sub-graph of the FP32 pipeline receives on given faces (cond: images; denoiser:
  cond outputs; llformer: images + EPD), so every part is calibrated on its real inputs.
* `datafree_config`: data-free calibration sets (BN-statistic synthesis, the uniform-noise control, drawn dark
  faces), chosen per sub-graph.
* Mixed precision by measurement: on the cpu target keep in float what int8 kernels cannot speed up
  (`apply_speed_groups`: the image's first convs, matrix-vector Gemms, the attention core, the per-image
  standardisation), then measure what keeping each candidate in float (a whole cond/denoiser sub-graph; each
  sub-graph's elementwise nodes; the LayerNormalization, Softmax, Gelu and residual-Add nodes of cond/llformer)
  buys in top-1 agreement and KL divergence with FP32; keep in float only what pays (`choose_precision`, greedy,
  see `_better`). `parse_exclude`: an explicit list instead. `keep_faster`: FP32 where INT8 is slower here.
* `add_amx_variants`: ONNX Runtime AMX variants on a CPU with AMX-INT8, kept where faster.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from lldif_edge.bench import interleaved_latency
from lldif_edge.calibration.quantize import (
    GROUPS,
    NODE_GROUPS,
    SPEED_GROUPS,
    QuantSettings,
    TensorReader,
    calibrate_graph,
    node_groups,
    preprocess_graph,
    quantize_graph,
    reencode_conv_weights,
)
from lldif_edge.errors import LldifError
from lldif_edge.hardware import cpu_features
from lldif_edge.lowlight import darken_many
from lldif_edge.metrics import compare_logits
from lldif_edge.package import CONFIDENCE_KEY, ORT_AMX_VARIANT, CalibrationReport, GraphEntry, Package, sha256_file
from lldif_edge.runtimes.onnxruntime_backend import OnnxRuntimeBackend
from lldif_edge.runtimes.pipeline import Pipeline
from lldif_edge.synthetic import synthetic_faces

log = logging.getLogger(__name__)

CALIB_BATCH = 32
DATAFREE_MAX = 64  # synthesised faces: enough for ranges, about a minute on the base model
SELECTION_FACES = 256  # generated faces used to choose precisions when calibration is data-free
MIN_GAIN = 0.005  # keep a candidate in float when it raises top-1 agreement by this much...
KL_FACTOR = 0.5  # ...or, at no loss of agreement, at least halves the mean KL divergence to FP32
KL_FLOOR = 1e-5  # (by more than this: smaller KL changes are float noise)
MIN_AGREEMENT = 0.8  # below this on the verification faces, no package is written
FP32 = "fp32"
# The key order INT8 manifests are written in, which differs from FP32's (`package.MANIFEST_ORDER`): kept so an
# INT8 package is byte for byte what earlier exports wrote for the same model and settings.
INT8_ORDER = ("format", "model", "classes", "input", "graphs", "pipeline", "sampler", CONFIDENCE_KEY, "created",
              "opset", "tools", "pipeline_fused", "calibration", "fp32_verification", "int8_report", "verification")
INT8_INPUT_ORDER = ("size", "channels", "color", "scale", "mean", "std")
INT8_GRAPH_ORDER = ("file", "sha256", "precision", "inputs", "outputs")


# ---------------------------------------------------------------- small helpers
def _better(a: dict, b: dict, min_gain: float) -> bool:
    """Is measurement `a` enough better than `b` to pay for keeping something in float?"""
    da = a["top1_agreement"] - b["top1_agreement"]
    return da >= min_gain - 1e-12 or (da >= -1e-12 and a["mean_kl"] <= KL_FACTOR * b["mean_kl"]
                                       and b["mean_kl"] - a["mean_kl"] > KL_FLOOR)


def stage_feeds(pipe: Pipeline, faces: np.ndarray, batch: int = CALIB_BATCH) -> dict[str, list[dict]]:
    """Run the FP32 pipeline (on the CPU: numpy feeds) on `faces` and record, per sub-graph, the input dict it
    received (per batch).

    Every batch has the same size (the last one is topped up with the first faces again): ORT's histogram
    calibrators stack the batches and fail on a short last one."""
    batch = min(batch, len(faces))
    faces = faces[np.arange(len(faces) + (-len(faces)) % batch) % len(faces)]
    feeds: dict[str, list[dict]] = {name: [] for name, _ in pipe.stages}
    for i in range(0, len(faces), batch):
        pipe.logits(pipe.preprocess(faces[i:i + batch]), feeds=feeds)
    return feeds


def measure_latency(pipes: dict[str, Pipeline], faces: np.ndarray, runs: int = 200, warmup: int = 20) -> dict:
    """Median ms per face at batch 1 per stage and end to end; the pipelines take turns run by run, so a
    change in machine load hits all of them alike."""
    x1 = next(iter(pipes.values())).preprocess(faces[:1])
    samples = interleaved_latency(pipes, x1, runs, rounds=runs, warmup=warmup)
    return {k: {stage: round(float(np.median(v)), 4) for stage, v in s.items()} for k, s in samples.items()}


# ---------------------------------------------------------------- the workbench
class Workbench:
    """Scratch state of one INT8 export: pre-processed graphs, range caches per calibration set, the quantized
    variants already built, and a stage-wise evaluator for trying precision choices (a stage reruns only when
    it or a stage before it changed)."""

    def __init__(self, work: Path, fp32: Pipeline, settings: QuantSettings):
        self.work, self.fp32, self.settings = work, fp32.package, settings
        self.constants = dict(fp32.constants)
        self.graphs = list(self.fp32.pipeline)
        self.pre: dict[str, Path] = {}
        for g in self.graphs:
            self.pre[g] = work / "pre" / f"{g}.onnx"
            self.pre[g].parent.mkdir(parents=True, exist_ok=True)
            preprocess_graph(self.fp32_file(g), self.pre[g])
        self.groups = {g: node_groups(self.pre[g]) for g in self.graphs}
        self._built: dict[tuple, Path] = {}
        # How trials are measured: on the CPU target with ORT's fused integer kernels (what will run); on
        # TensorRT with ORT's reference QDQ arithmetic (no fusion), which is what explicit quantization
        # specifies -- ORT's x86 S8S8 kernels add errors of their own that TensorRT does not have.
        self.reference_qdq = settings.target != "cpu"
        self.measured_with = ("onnxruntime reference QDQ arithmetic (no int8 kernel fusion)" if self.reference_qdq
                              else "onnxruntime CPU int8 kernels")
        self._stages: dict[tuple, OnnxRuntimeBackend] = {}  # the runtime's backend, one per graph file
        self._outputs: dict[tuple, dict[str, np.ndarray]] = {}
        self._inputs: dict[str, np.ndarray] = {}

    def fp32_file(self, g: str) -> Path:
        return self.fp32.graph_path(g)

    def calibrate(self, tag: str, feeds: dict[str, list[dict]]) -> None:
        """Compute every sub-graph's tensor ranges on one calibration set (`tag`), once."""
        for g in self.graphs:
            cache = self.work / "q" / tag / f"{g}.ranges.json"
            cache.parent.mkdir(parents=True, exist_ok=True)
            calibrate_graph(self.pre[g], TensorReader(feeds[g]), self.settings, cache)

    def variant(self, g: str, tag: str, exclude: frozenset[str]) -> Path:
        key = (g, tag, exclude)
        if key not in self._built:
            digest = hashlib.sha1("\n".join(sorted(exclude)).encode()).hexdigest()[:10]
            dst = self.work / "q" / tag / f"{g}.{digest}.onnx"
            quantize_graph(self.pre[g], dst, self.settings, self.work / "q" / tag / f"{g}.ranges.json", exclude)
            self._built[key] = dst
        return self._built[key]

    def file(self, g: str, choice) -> Path:
        """choice: FP32, or (calibration tag, frozenset of node names kept in float)."""
        return self.fp32_file(g) if choice == FP32 else self.variant(g, choice[0], choice[1])

    def assemble(self, root: Path, config: dict, calibration: CalibrationReport | None = None,
                 extra: dict | None = None) -> Package:
        """Write the package of `config` (sub-graph -> choice) into the existing folder `root`: the FP32
        package's manifest with these graphs, no fused graph, `calibration`, and `extra` added to its keys."""
        fp32 = self.fp32
        graphs = {}
        for g in self.graphs:
            dst = root / f"{g}.onnx"
            shutil.copyfile(self.file(g, config[g]), dst)
            entry = fp32.graphs[g]
            excluded = {} if config[g] == FP32 else {"excluded_nodes": sorted(config[g][1])}
            graphs[g] = replace(entry, file=dst.name, sha256=sha256_file(dst),
                                precision=FP32 if config[g] == FP32 else "int8",
                                extra={**entry.extra, "bytes": dst.stat().st_size, **excluded},
                                order=INT8_GRAPH_ORDER)
        pkg = Package(classes=fp32.classes, input=replace(fp32.input, order=INT8_INPUT_ORDER), graphs=graphs,
                      pipeline=fp32.pipeline, pipeline_fused=None, model=fp32.model, sampler=fp32.sampler,
                      calibration=calibration, confidence=fp32.confidence,
                      extra={**{k: v for k, v in fp32.extra.items() if k != "verification"}, **(extra or {})},
                      root=root, order=INT8_ORDER)
        pkg.write(root)
        return pkg

    def set_inputs(self, key: str, x: np.ndarray) -> None:
        """Register a preprocessed batch under `key` for `logits`."""
        self._inputs[key] = x

    def _stage(self, path: Path) -> OnnxRuntimeBackend:
        return OnnxRuntimeBackend(path, optimization="none" if self.reference_qdq else "all")

    def logits(self, config: dict, key: str) -> np.ndarray:
        """Logits of `config` on the batch `key`. Its own loop, not a `Pipeline`: a trial takes each sub-graph
        from a different file (FP32 or a variant under trial) with no package folder around them, and reuses the
        outputs of the stages before the first one that changed (selection runs dozens of trials). The stages are
        the runtime's ONNX Runtime backend, so the arithmetic is the one a Pipeline runs."""
        tensors = {"image": self._inputs[key], **self.constants}
        prefix: tuple = (key,)
        for g in self.graphs:
            prefix += ((g, config[g]),)
            if prefix not in self._outputs:
                if (g, config[g]) not in self._stages:
                    self._stages[(g, config[g])] = self._stage(self.file(g, config[g]))
                stage = self._stages[(g, config[g])]
                self._outputs[prefix] = stage.run({k: tensors[k] for k in stage.input_names})
            tensors.update(self._outputs[prefix])
        return tensors["logits"]


# ---------------------------------------------------------------- exclusions
def _candidates(bench: Workbench) -> dict[str, tuple[str, str | None]]:
    """name -> (sub-graph, group or None for the whole sub-graph)."""
    out: dict[str, tuple[str, str | None]] = {}
    for g in ("cond", "denoiser"):
        if g in bench.graphs:
            out[g] = (g, None)
    for g in bench.graphs:
        for group in GROUPS if g != "denoiser" else ("Elementwise",):  # the denoiser is an MLP + sampler arithmetic
            if bench.groups[g][group]:
                out[f"{g}:{group}"] = (g, group)
    return out


def _apply(bench: Workbench, config: dict, graph: str, group: str | None = None,
           nodes: list[str] | None = None) -> dict:
    new = dict(config)
    if new[graph] == FP32:
        return new
    if group is None and nodes is None:
        new[graph] = FP32
    else:
        tag, excl = new[graph]
        new[graph] = (tag, excl | frozenset(bench.groups[graph][group] if group else nodes))
    return new


def apply_speed_groups(bench: Workbench, config: dict) -> tuple[dict, list[str]]:
    """Keep the SPEED_GROUPS in float (short-dot convs, matrix-vector Gemms, the attention core), and a
    sub-graph with no int8 conv or matmul left in FP32 whole: its element-wise ops alone would only add Q/DQ.
    Measured on the default model (AVX-512 VNNI + AMX, ORT, 1 thread, 3,000 interleaved runs, p50 per face),
    against first convs only in float: LLformer 1.41 -> 1.32 ms, cond 0.16 -> 0.14, denoiser 0.14 -> 0.07."""
    import onnx

    kept = []
    for g in bench.graphs:
        speed = {n for group in SPEED_GROUPS for n in bench.groups[g][group]}
        compute = {n.name for n in onnx.load(str(bench.pre[g])).graph.node if n.op_type in ("Conv", "MatMul", "Gemm")}
        if compute and compute <= speed:
            config = _apply(bench, config, g)
            kept.append(f"{g} (speed)")
            continue
        for group in SPEED_GROUPS:
            if bench.groups[g][group]:
                config = _apply(bench, config, g, group)
                kept.append(f"{g}:{group} (speed)")
    return config, kept


def parse_exclude(bench: Workbench, config: dict, exclude: list[str]) -> tuple[dict, list[str]]:
    """Entries: a sub-graph ('denoiser': all of it in float), a group ('LayerNormalization' in every sub-graph,
    or 'llformer:Softmax'), or a node name ('llformer:/llformer/blocks.0/attn/Softmax', or the bare name)."""
    import onnx

    done = []
    for raw in (e.strip() for e in exclude):
        if not raw:
            continue
        graph, sep, name = raw.partition(":")
        if not (sep and graph in bench.graphs):
            graph, name = "", raw
        targets = [graph] if graph else bench.graphs
        if not graph and name in bench.graphs:
            config = _apply(bench, config, name)
        elif name in NODE_GROUPS:
            hit = [g for g in targets if bench.groups[g][name]]
            if not hit:
                log.warning("int8 exclude '%s': no such nodes in %s", raw, ", ".join(targets))
            for g in hit:
                config = _apply(bench, config, g, name)
        else:
            hit = [g for g in targets if name in {n.name for n in onnx.load(str(bench.pre[g])).graph.node}]
            if not hit:
                raise LldifError(f"int8 exclude '{raw}' is neither a sub-graph ({', '.join(bench.graphs)}), a node "
                                 f"group ({', '.join(NODE_GROUPS)}) nor the name of a node in the graphs")
            for g in hit:
                config = _apply(bench, config, g, nodes=[name])
        done.append(raw)
    return config, done


def choose_precision(bench: Workbench, base: dict, ref: np.ndarray, desc: str,
                     min_gain: float = MIN_GAIN) -> tuple[dict, dict]:
    """Measure every candidate against all-INT8 and keep in float, greedily, only what pays."""
    def measure(cfg):
        return compare_logits(ref, bench.logits(cfg, "select"))

    all_int8 = measure(base)
    only = {g: measure({h: base[h] if h == g else FP32 for h in bench.graphs}) for g in bench.graphs}
    cands = _candidates(bench)
    single = {name: measure(_apply(bench, base, *spec)) for name, spec in cands.items()}
    order = sorted((n for n in cands if _better(single[n], all_int8, min_gain)),
                   key=lambda n: (-single[n]["top1_agreement"], single[n]["mean_kl"]))
    current, cur_m, kept = base, all_int8, []
    for name in order:
        trial = _apply(bench, current, *cands[name])
        m = measure(trial)
        if _better(m, cur_m, min_gain):
            current, cur_m = trial, m
            kept.append(name)
    log.info("mixed precision: kept in float %s (agreement %.4f -> %.4f)", kept or "nothing",
             all_int8["top1_agreement"], cur_m["top1_agreement"])
    return current, {
        "selection_faces": desc,
        "rule": f"keep in float when top-1 agreement with FP32 rises by >= {min_gain} or, at no loss of "
                f"agreement, mean KL falls to <= {KL_FACTOR} of before; greedy over the candidates that pass alone",
        "all_int8": all_int8, "only_this_subgraph_int8": only, "kept_float_alone": single,
        "kept_float": kept, "result": cur_m,
    }


def keep_faster(bench: Workbench, config: dict, faces: np.ndarray, runs: int = 100) -> tuple[dict, dict]:
    """Keep in FP32 every sub-graph whose INT8 version is slower on this machine (median per face at batch 1,
    1 thread). Opt-in: the export machine is not always the deployment machine."""
    roots = {}
    for name, cfg in (("fp32", {g: FP32 for g in bench.graphs}), ("int8", config)):
        roots[name] = Path(tempfile.mkdtemp(prefix=f"speed-{name}-", dir=bench.work))
        bench.assemble(roots[name], cfg)
    lat = measure_latency({k: Pipeline(r, threads=1) for k, r in roots.items()}, faces, runs=runs)
    new = dict(config)
    slower = [g for g in bench.graphs if config[g] != FP32 and lat["int8"][g] > lat["fp32"][g]]
    for g in slower:
        new[g] = FP32
    for r in roots.values():
        shutil.rmtree(r, ignore_errors=True)
    log.info("speed check: kept in FP32 for speed: %s", slower or "nothing")
    return new, {"latency_ms_per_face": lat, "kept_float_for_speed": slower}


# A variant must beat its main file by this much (median per face) to be kept: less is within run-to-run noise.
VARIANT_MIN_SPEEDUP = 0.97


def add_amx_variants(root: Path, pkg: Package, faces: np.ndarray, runs: int = 300) -> dict:
    """cpu target: give each INT8 sub-graph with conv weights an ORT-on-AMX variant (`reencode_conv_weights`)
    and keep it where it is faster on this machine, measured side by side through `Pipeline` (median per
    face, batch 1, 1 thread). Writes the files and `pkg`'s manifest into `root`; returns the report.
    Only on a CPU with AMX-INT8: elsewhere the variant would never run, and there is nothing to measure."""
    if "amx_int8" not in cpu_features()["features"]:
        return {"written": [], "note": "this CPU has no AMX-INT8: no variant measured or written"}
    candidates = []
    for g, entry in pkg.graphs.items():
        dst = root / f"{g}.ort-amx.onnx"
        if entry.precision == "int8" and reencode_conv_weights(root / entry.file, dst):
            entry.variants = {ORT_AMX_VARIANT: GraphEntry(file=dst.name, sha256=sha256_file(dst), precision=None,
                                                          extra={"bytes": dst.stat().st_size})}
            candidates.append(g)
    if not candidates:
        return {"written": [], "note": "no int8 conv weights to re-encode"}
    pkg.write(root)
    pipes = {"main": Pipeline(root, threads=1, variants=False), "amx": Pipeline(root, threads=1)}
    lat = measure_latency(pipes, faces, runs=runs)
    kept = [g for g in candidates if lat["amx"][g] <= VARIANT_MIN_SPEEDUP * lat["main"][g]]
    for g in set(candidates) - set(kept):
        (root / pkg.graphs[g].variants.pop(ORT_AMX_VARIANT).file).unlink()
    pkg.write(root)
    log.info("ONNX Runtime AMX variants kept for %s", kept or "nothing")
    return {"written": kept, "measured": candidates,
            "latency_ms_per_face": {"statistic": "median", "batch": 1, "threads": 1, "runs": runs, **lat},
            "rule": f"kept where the variant's median is <= {VARIANT_MIN_SPEEDUP} of the main file's"}


# ---------------------------------------------------------------- data-free
def _beats(a: dict, b: dict) -> bool:
    """Clearly better: top-1 agreement higher by at least MIN_GAIN or, when the agreements are that close, a
    mean KL lower by more than 10% (and by more than KL_FLOOR)."""
    if abs(a["top1_agreement"] - b["top1_agreement"]) >= MIN_GAIN:
        return a["top1_agreement"] > b["top1_agreement"]
    return a["mean_kl"] < 0.9 * b["mean_kl"] and b["mean_kl"] - a["mean_kl"] > KL_FLOOR


def datafree_config(bench: Workbench, model, pipe: Pipeline, count: int, ref: np.ndarray, seed: int,
              steps: int, k: int | None = None) -> tuple[dict, dict]:
    """Three calibration sets that need no user data, chosen per sub-graph by agreement with FP32 (each
    measured with only that sub-graph in INT8): BN-statistic synthesis, the uniform-noise control, and
    procedurally drawn faces through the low-light synthesis (on the default model the first two left
    INT8 agreeing on only 41-69% of faces; the drawn faces have the statistics of a real dark face)."""
    from lldif_edge.calibration.datafree import bn_statistic_loss, noise_faces, synthesize_faces

    cfg = model.cfg
    synth, sinfo = synthesize_faces(model, count=count, steps=steps, seed=seed, k=k)
    channels = synth.shape[-1]
    noise = noise_faces(count, cfg.input_size, channels, seed)
    drawn = np.repeat(synthetic_faces(count, cfg.input_size, seed)[0][..., None], channels, axis=-1)
    drawn = darken_many(drawn, seed)
    sinfo["bn_loss_noise_control"] = round(bn_statistic_loss(model, noise), 4)
    sinfo["bn_loss_drawn_faces"] = round(bn_statistic_loss(model, drawn), 4)
    sets = {"synth": synth, "noise": noise, "drawn": drawn}
    for tag, faces in sets.items():
        bench.calibrate(tag, stage_feeds(pipe, faces))
    names = {"synth": "synthesised", "noise": "noise_control", "drawn": "drawn_faces"}
    per_graph, config = {}, {}
    for g in bench.graphs:
        ms = {tag: compare_logits(ref, bench.logits({h: (tag, frozenset()) if h == g else FP32
                                                     for h in bench.graphs}, "select"))
              for tag in sets}
        pick = "synth"
        for tag in ("noise", "drawn"):
            if _beats(ms[tag], ms[pick]):
                pick = tag
        per_graph[g] = {**{names[t]: m for t, m in ms.items()}, "chosen": names[pick]}
        config[g] = (pick, frozenset())
    whole = {names[tag]: compare_logits(ref, bench.logits({g: (tag, frozenset()) for g in bench.graphs}, "select"))
             for tag in sets}
    return config, {"synthesis": sinfo, "per_subgraph": per_graph, "all_subgraphs": whole}
