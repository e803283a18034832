"""Calibration and INT8 quantization (docs/design.md, section 4).

* `sources`: calibration faces from a folder, a video, a camera or arrays (one reader protocol). Torch-free.
* `datafree`: BN-statistic synthesis of calibration images, and its uniform-noise control. Needs torch.
* `quantize`: static QDQ quantization of one sub-graph with ONNX Runtime, node groups, operator counts.
* `int8`: the INT8 toolbox (workbench, data-free sets, mixed-precision search, AMX variants) that
  `lldif_edge.export.int8_export` drives; nothing here exports a package.
* `confidence`: confidence calibration of a package (temperature, undone label smoothing) on held-out faces.
  Torch-free.

Nothing is imported here, so `import lldif_edge.calibration.sources` stays light.
"""
