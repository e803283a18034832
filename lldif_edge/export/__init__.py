"""Export: a checkpoint -> a verified model package of ONNX sub-graphs (DESIGN section 3). Needs torch."""
