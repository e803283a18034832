"""Static post-training quantization of one ONNX sub-graph into QDQ, and what ONNX Runtime makes of it.

Thin layer over `onnxruntime.quantization`: the settings per target, a calibration reader over recorded
input dicts, ORT's pre-processing, the node groups we measure for mixed precision, and an operator count of
the graph ORT actually runs (after its optimiser has fused Q/DQ pairs into integer kernels, or not).
Torch-free.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from lldif_edge.errors import LldifError
from lldif_edge.opkinds import op_kind

log = logging.getLogger(__name__)

# Activation/weight types per target (docs/design.md, section 4). ORT's x86 kernels fuse QDQ convs into QLinearConv
# only with U8 activations; TensorRT's explicit quantization wants symmetric S8 for both.
# reduce_range (7-bit weights) for cpu: x86 without VNNI multiplies u8 x s8 with vpmaddubsw, whose int16 pair
# sums saturate with full-range weights. Measured on an AVX2 CPU (default model, 3,293 dark faces): OpenVINO
# INT8 agreed with ONNX Runtime INT8 on 99.1 % of faces with it, 98.75 % without; accuracy within 0.2 points.
# float_output_ops (cpu): MatMuls keep a float output instead of a Q/DQ pair after them, which ORT runs as one
# MatMulIntegerToFloat kernel; with the 8-bit output the next float op (bias add, GELU, residual) first needed a
# DequantizeLinear. Measured on the default LLformer (AVX-512 VNNI + AMX Xeon, 1 thread): 8 DequantizeLinear
# fewer, p50 0.892 -> 0.858 ms, top-1 agreement with FP32 0.969 -> 0.973 (no rounding of the outputs).
TARGETS = {
    "cpu": {"activation": "QUInt8", "weight": "QInt8", "activation_symmetric": False, "weight_symmetric": True,
            "reduce_range": True, "float_output_ops": ["MatMul"]},
    "tensorrt": {"activation": "QInt8", "weight": "QInt8", "activation_symmetric": True, "weight_symmetric": True,
                 "reduce_range": False, "float_output_ops": []},
}
METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}
# The node groups whose sensitivity is measured; see `node_groups`.
GROUPS = ("Elementwise", "LayerNormalization", "Softmax", "Gelu", "ResidualAdd", "MatMul")
# Groups kept in float on the cpu target without measuring, because int8 kernels cannot speed them up; every
# group can be named in an exclude list. Standardize: int8 ops on per-image scalars are no faster (cond p50
# 0.071 vs 0.072 ms) and far less exact (cond output max |diff| from FP32 0.06 in float, 0.75 quantized).
SPEED_GROUPS = ("ShallowConv", "VectorGemm", "ActMatMul", "Standardize")
NODE_GROUPS = GROUPS + SPEED_GROUPS
# Shorter int8 dot products than this (Conv input channels x kernel area) run slower than float on x86: ORT's
# u8s8 kernels are built for long ones. Measured on an AVX-512 VNNI + AMX Xeon, 1 thread (ORT profile): the
# LLformer's first 3x3 conv (3 -> 32 channels at 48x48, dot products of 27) took 192 us per face as
# QLinearConv, 78 us in float.
SHALLOW_CONV_DOT = 64
# What the attention core (ActMatMul) may walk through from an activation-activation MatMul.
ATTENTION_CORE_OPS = {"MatMul", "Softmax", "Mul", "Div", "Add", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                      "Split", "Gather", "Slice"}
# What "Elementwise" leaves quantized: the ops with integer kernels that pay, and what fuses into them.
CORE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "Relu", "Clip", "MaxPool", "AveragePool",
            "GlobalAveragePool"}


@dataclass(frozen=True)
class QuantSettings:
    target: str = "cpu"
    method: str = "minmax"
    per_channel: bool = True
    reduce_range: bool | None = None  # None: the target's default

    def __post_init__(self):
        if self.target not in TARGETS:
            raise LldifError(f"unknown INT8 target '{self.target}' (choose from {', '.join(TARGETS)})")
        if self.reduce_range is None:
            object.__setattr__(self, "reduce_range", TARGETS[self.target]["reduce_range"])
        if self.method not in METHODS:
            raise LldifError(f"unknown calibration method '{self.method}' (choose from {', '.join(METHODS)})")

    @property
    def activation_type(self) -> QuantType:
        return getattr(QuantType, TARGETS[self.target]["activation"])

    @property
    def weight_type(self) -> QuantType:
        return getattr(QuantType, TARGETS[self.target]["weight"])

    def extra_options(self) -> dict:
        t = TARGETS[self.target]
        return {
            "ActivationSymmetric": t["activation_symmetric"],
            "WeightSymmetric": t["weight_symmetric"],
            # per-output-channel weights for the transformer's MatMuls too (ORT defaults to per-tensor there)
            "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
            "OpTypesToExcludeOutputQuantization": t["float_output_ops"],
        }

    def describe(self) -> dict:
        t = TARGETS[self.target]
        return {"format": "QDQ", "target": self.target, "method": self.method,
                "activation_type": "uint8" if t["activation"] == "QUInt8" else "int8",
                "weight_type": "int8", "activation_symmetric": t["activation_symmetric"],
                "weight_symmetric": t["weight_symmetric"], "per_channel_weights": self.per_channel,
                "reduce_range": self.reduce_range, "float_output_ops": t["float_output_ops"]}


class TensorReader(CalibrationDataReader):
    """ORT calibration reader over a list of recorded input dicts (one dict per batch)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self.start, self.end, self.i = 0, len(feeds), 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start + self.i >= self.end:
            return None
        self.i += 1
        return self.feeds[self.start + self.i - 1]

    def rewind(self) -> None:
        self.i = 0

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.i = start_index, end_index, 0

    def __len__(self) -> int:
        return len(self.feeds)


def preprocess_graph(src: Path, dst: Path) -> None:
    """ORT's quantization pre-processing (symbolic shape inference, basic graph optimisation)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with _quiet_ort():
        try:
            quant_pre_process(str(src), str(dst))
        except Exception as e:  # symbolic shape inference fails on some graphs; ONNX shape inference is enough
            log.info("quant_pre_process with symbolic shapes failed on %s (%s); retrying without", src.name, e)
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


class _OrtQuantizationChatter(logging.Filter):
    """ORT's quantizer warns through the root logger about things that are expected here (per-channel axes it
    falls back from on LayerNorm weights, bias copies per unrolled step); move them to our debug log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR and "onnxruntime" in record.pathname and "quantization" in record.pathname:
            log.debug("onnxruntime.quantization: %s", record.getMessage())
            return False
        return True


@contextlib.contextmanager
def _quiet_ort():
    root, chatter = logging.getLogger(), _OrtQuantizationChatter()
    root.addFilter(chatter)
    try:
        yield
    finally:
        root.removeFilter(chatter)


def calibrate_graph(pre: Path, reader: CalibrationDataReader, settings: QuantSettings, cache: Path) -> None:
    """Collect the tensor ranges of `pre` on `reader` and write them to `cache` (ORT's JSON range cache).

    Done here rather than inside `quantize_static`, which cannot pass the histogram size: ORT's entropy default
    (128 bins for 128 quantized bins) always returns the min/max range. 512 bins: TensorRT's 2048 made ORT's
    pure-Python threshold search 5x slower (110 s for the tiny model's unrolled denoiser) for no gain here.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    options = {"entropy": {"num_bins": 512, "num_quantized_bins": 128},
               "percentile": {"num_bins": 2048, "percentile": 99.999}}.get(settings.method, {})
    with tempfile.TemporaryDirectory(prefix="lldif-calib-") as tmp, _quiet_ort():
        calibrator = create_calibrator(pre, list(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=METHODS[settings.method], extra_options=options)
        with contextlib.redirect_stdout(io.StringIO()):  # the histogram calibrators print their progress
            calibrator.collect_data(reader)
            ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache)


def quantize_graph(pre: Path, dst: Path, settings: QuantSettings, cache: Path,
                   exclude: frozenset[str] | set[str] = frozenset()) -> None:
    """QDQ-quantize `pre` into `dst` with the tensor ranges in `cache` (`calibrate_graph`), so trying several
    exclusion sets calibrates only once."""
    if not Path(cache).is_file():
        raise FileNotFoundError(f"no calibration ranges at {cache}: run calibrate_graph first")
    with _quiet_ort():
        quantize_static(
            str(pre), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
            reduce_range=settings.reduce_range, activation_type=settings.activation_type,
            weight_type=settings.weight_type, nodes_to_exclude=sorted(exclude),
            calibrate_method=METHODS[settings.method], extra_options=settings.extra_options(),
            calibration_cache_path=str(cache),
        )


# ---------------------------------------------------------------- node groups
def node_groups(path: Path) -> dict[str, list[str]]:
    """Names of the nodes in each sensitive group of a (pre-processed) graph.

    * Elementwise: every node but Conv/MatMul/Gemm and what fuses into them (Relu, pooling): Add, Mul, Div,
      Sigmoid, Softmax, LayerNorm, Concat, Reshape, ... Quantizing these (ORT's default op list) puts 8-bit
      steps on residual streams, EPD modulation and bias adds, and their QLinear kernels are no faster here.
    * Standardize: everything between the image input and the first Conv (per-image mean/variance: a dark
      face's tiny variance is where a per-tensor activation scale hurts most).
    * LayerNormalization, Softmax: those ops.
    * Gelu: Erf and the Div/Add/Mul around it (opset 17 spells GELU out), or a Gelu op.
    * ResidualAdd: Adds of two computed tensors of the same shape (skip connections, not bias/broadcast adds).
    * ShallowConv: Convs whose dot products are shorter than SHALLOW_CONV_DOT (the image's first conv): kept in
      float for speed on the cpu target, not measured (`export.int8_export.export_int8`).
    * VectorGemm: Gemm nodes, i.e. linear layers on one vector per face (the denoiser, the EPD modulation,
      the heads): a matrix-vector product gains nothing from int8 kernels and pays Q/DQ around it.
    * ActMatMul: the attention core, MatMuls of two computed tensors (q @ k^T, attn @ v) with the softmax,
      scaling and reshapes between the qkv and output projections. Its neighbours must stay float with it, or
      ORT fuses the Q/DQ pairs left around a float MatMul into QLinearMatMul anyway.
    * MatMul: MatMul and Gemm (the transformer's linear layers and attention products, the heads). On a CPU
      without VNNI both ORT's QLinearMatMul and OpenVINO's jit_gemm_I8 were slower than their float GEMMs
      (`lldif-edge bench --profile`), so keeping these in float can be faster as well as more exact.
    """
    model = onnx.load(str(path))
    g = model.graph
    const = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(d.dim_param or d.dim_value for d in dims) if dims else None

    groups: dict[str, list[str]] = {k: [] for k in NODE_GROUPS}
    groups["Elementwise"] = [n.name for n in g.node if n.op_type not in CORE_OPS and n.op_type != "Constant"]
    first_conv = next((n for n in g.node if n.op_type == "Conv"), None)
    if first_conv is not None:
        seen, todo = set(), [i for i in first_conv.input if i in producer and i not in const]
        while todo:
            node = producer[todo.pop()]
            if node.name not in seen and node.op_type != "Constant":
                seen.add(node.name)
                todo += [i for i in node.input if i in producer and i not in const]
        groups["Standardize"] = [n.name for n in g.node if n.name in seen]
    weights = {i.name: tuple(i.dims) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Conv" and len(weights.get(n.input[1], ())) == 4:
            _, cin, kh, kw = weights[n.input[1]]
            if cin * kh * kw < SHALLOW_CONV_DOT:
                groups["ShallowConv"].append(n.name)
        if n.op_type in ("LayerNormalization", "Softmax"):
            groups[n.op_type].append(n.name)
        elif n.op_type in ("MatMul", "Gemm"):
            groups["MatMul"].append(n.name)
            if n.op_type == "Gemm":
                groups["VectorGemm"].append(n.name)
            elif not any(i in const for i in n.input):
                groups["ActMatMul"] += _attention_core(n, producer, consumers, const)
        elif n.op_type in ("Gelu", "FastGelu", "BiasGelu"):
            groups["Gelu"].append(n.name)
        elif n.op_type == "Erf":
            members = [n] + [producer[i] for i in n.input if i in producer and producer[i].op_type == "Div"]
            frontier = [c for c in consumers[n.output[0]] if c.op_type == "Add"]
            for _ in range(2):  # (1 + erf) -> x * (...) -> * 0.5
                members += frontier
                frontier = [c for m in frontier for c in consumers[m.output[0]] if c.op_type == "Mul"]
            groups["Gelu"] += [m.name for m in members]
        elif n.op_type == "Add" and len(n.input) == 2 and not any(i in const for i in n.input):
            a, b = (shapes.get(i) for i in n.input)
            if a is not None and a == b:
                groups["ResidualAdd"].append(n.name)
    return {k: sorted(set(v)) for k, v in groups.items()}


def _attention_core(matmul, producer: dict, consumers: dict, const: set) -> list[str]:
    """The nodes around an activation-activation MatMul, out to the projections that carry weights: only
    reshapes, softmax and constant scale/bias arithmetic (`ATTENTION_CORE_OPS`) are walked through."""
    def weighted(n):
        return n.op_type in CORE_OPS and any(i in const for i in n.input)

    def eligible(n):  # an Add or Mul of two computed tensors is a residual stream or the EPD modulation
        arithmetic = n.op_type in ("Add", "Mul", "Div")
        return n.op_type in ATTENTION_CORE_OPS and not weighted(n) and not (
            arithmetic and not any(i in const for i in n.input))

    core, todo = set(), [matmul]
    while todo:
        n = todo.pop()
        if n.name in core or (n is not matmul and not eligible(n)):
            continue
        core.add(n.name)
        todo += [producer[i] for i in n.input if i in producer and i not in const]
        todo += [c for o in n.output for c in consumers[o]]
    return sorted(core)


# ---------------------------------------------------------------- ORT's AMX path
def reencode_conv_weights(src: Path, dst: Path) -> int:
    """Write `src` with each int8 per-channel conv weight stored as q + 1 with zero point 1: the same
    dequantized values, so the same numbers. Returns how many weights were re-encoded (0: nothing written).

    Why: ONNX Runtime's QLinearConv takes its symmetric direct-convolution kernels (AVX-512 VNNI here) when
    the weight zero points are 0, and its general int8 GEMM (im2col + QGEMM, which has AMX kernels) when they
    are not. On an AMX Xeon the GEMM path ran the default LLFormer's convs 25-40 % faster (p50 0.759 -> 0.694
    ms per face, bit-identical logits). OpenVINO ran the re-encoded graph in float (1.79 ms vs 0.68 ms INT8),
    so this is a variant file for ORT on AMX CPUs, not the package's main graph. The 7-bit weights of the cpu
    target leave room for the +1; a weight already at 127 is left as it is.
    """
    from onnx import numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    init = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            consumers[i].append(n)
    count = 0
    for n in g.node:
        if n.op_type != "DequantizeLinear" or len(n.input) < 3 or n.input[0] not in init or n.input[2] not in init:
            continue
        w, zp = init[n.input[0]], init[n.input[2]]
        if w.data_type != onnx.TensorProto.INT8 or len(w.dims) != 4:
            continue
        if not consumers[n.output[0]] or any(c.op_type != "Conv" for c in consumers[n.output[0]]):
            continue
        q, z = numpy_helper.to_array(w), numpy_helper.to_array(zp)
        if z.any() or q.max() >= 127 or len(consumers[n.input[0]]) > 1 or len(consumers[n.input[2]]) > 1:
            continue
        w.CopyFrom(numpy_helper.from_array((q.astype(np.int16) + 1).astype(np.int8), w.name))
        zp.CopyFrom(numpy_helper.from_array(np.ones_like(z), zp.name))
        count += 1
    if count:
        onnx.save(model, str(dst))
    return count


# ---------------------------------------------------------------- what ORT runs
def optimized_op_counts(path: Path) -> dict[str, int]:
    """Operator types in the graph ONNX Runtime runs on this CPU (ORT_ENABLE_ALL, as the runtime backend)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="lldif-ortopt-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.log_severity_level = 3  # the "hardware specific optimisations" warning is expected here
        so.intra_op_num_threads = 1
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        model = onnx.load(so.optimized_model_filepath)
    counts = collections.Counter(n.op_type + (" (nchwc)" if n.domain.endswith("nchwc") else "")
                                 for n in model.graph.node)
    return dict(sorted(counts.items()))


def classify_ops(counts: dict[str, int]) -> dict:
    """Split an op count into integer kernels, float compute (conv/matmul/gemm), Q/DQ and the rest."""
    out: dict = {"int8_kernels": {}, "float_compute": {}, "qdq": {}, "other": {}}
    for op, n in counts.items():
        out[op_kind(op)][op] = n
    out["int8_kernel_count"] = sum(out["int8_kernels"].values())
    out["float_compute_count"] = sum(out["float_compute"].values())
    return out
