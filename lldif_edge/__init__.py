"""lldif-edge: LLDif low-light facial expression recognition for robots. Importing this never imports torch."""

__version__ = "0.1.0"
