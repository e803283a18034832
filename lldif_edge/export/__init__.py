"""Export: a checkpoint -> a verified model package of ONNX sub-graphs (docs/design.md, section 3).

Needs torch."""
