"""What an ONNX Runtime op (after its graph optimisations) or an OpenVINO kernel computes in: int8 kernels,
float compute, quantize/dequantize, or the rest. Shared by the INT8 report and `bench --profile`."""

from __future__ import annotations

INT8_KERNELS = {"QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                "QAttention", "NhwcQLinearConv", "QLinearMatMul", "QLinearConv"}
FLOAT_COMPUTE = {"Conv", "FusedConv", "NhwcFusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm",
                 "FusedGemm", "Attention", "MultiHeadAttention", "TransposeMatMul"}
QDQ = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def op_kind(op: str, kernel: str = "") -> str:
    """'int8_kernels', 'float_compute', 'qdq' or 'other'. `kernel`: OpenVINO's exec type (e.g. jit_avx2_I8),
    which says the precision a layer really ran in."""
    base = op.split(" ")[0]
    if base in INT8_KERNELS or base.startswith("QLinear") or "_I8" in kernel or "_U8" in kernel:
        return "int8_kernels"
    if base in FLOAT_COMPUTE or base in {"Convolution", "FullyConnected"}:  # the latter two: OpenVINO names
        return "float_compute"
    if base in QDQ or base == "FakeQuantize":
        return "qdq"
    return "other"
