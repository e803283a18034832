"""Facts about the machine that decide which kernels pay: the CPU model and its instruction-set features.

Core, no dependencies: the runtime path (which variant file a backend runs), training (whether bf16 is native),
INT8 export (whether to add AMX variants), `info` and `bench` all read them here; `machine_facts` adds what
`info` says besides (Python, a display, whether torch is installed).
"""

from __future__ import annotations

import importlib.util
import os
import platform
from pathlib import Path

# The CPU features that decide what INT8 and bf16 are worth: VNNI/AMX-INT8 give x86 fast u8 x s8 dot
# products (without them ORT's int8 convs were barely faster than float), AVX-512 BF16/AMX-BF16 native bf16;
# asimddp/i8mm are the ARM (Jetson, Graviton) int8 dot-product instructions.
CPU_FEATURES = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                "asimddp", "i8mm")


def cpu_features() -> dict:
    """CPU model and which of CPU_FEATURES it has (Linux /proc/cpuinfo; elsewhere only the platform)."""
    model, flags = None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model is None:
                model = value.strip()
            elif key in ("flags", "Features"):
                flags |= set(value.split())
    except OSError:
        pass
    return {"model": model or platform.processor() or platform.machine(),
            "features": [f for f in CPU_FEATURES if f in flags]}


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def machine_facts() -> dict:
    """What `lldif-edge info` says about this machine: Python, CPU and its features, a display, torch."""
    return {"python": platform.python_version(), "machine": platform.machine(), "cpu_threads": os.cpu_count(),
            "cpu": cpu_features(), "display": bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")),
            "torch_installed": torch_installed()}


def has_cpu_feature(*names: str) -> bool:
    """True when this CPU has any of `names` (members of CPU_FEATURES)."""
    return bool(set(names) & set(cpu_features()["features"]))
