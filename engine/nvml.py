"""The GPU as NVML sees it (memory of every process, utilisation), when pynvml is installed.

Optional: without pynvml (`pip install nvidia-ml-py`), without a driver or on
the CPU, every figure is None and the engine works the same.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

_handles: dict[int, Any] = {}
_unavailable = False


def _handle(index: int) -> Any:
    global _unavailable
    if _unavailable:
        return None
    if index not in _handles:
        try:
            import pynvml

            pynvml.nvmlInit()
            _handles[index] = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as error:  # no module, no driver, no such GPU
            log.info("NVML figures unavailable: %s", error)
            _unavailable = True
            return None
    return _handles[index]


def nvml_index(device: str) -> int | None:
    """NVML's index of torch's `cuda:N` (CUDA_VISIBLE_DEVICES renumbers); None off CUDA."""
    if not device.startswith("cuda"):
        return None
    ordinal = int(device.partition(":")[2] or 0)
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v]
    if visible and all(v.isdigit() for v in visible) and ordinal < len(visible):
        return int(visible[ordinal])
    return ordinal


def gpu_usage(device: str) -> dict[str, Any]:
    """Status fields: gpu_memory_used_bytes, gpu_memory_free_bytes, gpu_utilization."""
    index = nvml_index(device)
    handle = None if index is None else _handle(index)
    if handle is None:
        return {}
    import pynvml

    try:
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
    except Exception as error:
        log.warning("NVML query failed: %s", error)
        return {}
    return {
        "gpu_memory_used_bytes": int(memory.used),
        "gpu_memory_free_bytes": int(memory.free),
        "gpu_utilization": float(rates.gpu),
    }
