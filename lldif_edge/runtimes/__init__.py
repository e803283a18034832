"""Runtime backends and the package pipeline. Never imports torch, nor the model code in `lldif/`."""

from lldif_edge.runtimes.pipeline import Pipeline, load_pipeline, softmax
from lldif_edge.runtimes.registry import backend_names, get_backend

__all__ = ["Pipeline", "load_pipeline", "softmax", "backend_names", "get_backend"]
