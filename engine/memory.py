"""Memory arithmetic: what resident models weigh, what a batch will need, what the device has.

The batch estimate is deliberately rough (bytes per output pixel per image,
measured order of magnitude for SD and SDXL with fused attention, VAE decode
included): it only has to split a batch that clearly cannot fit before it
runs. An out-of-memory error that still happens is caught and the batch is
split further (engine.pipelines).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from engine.checkpoints import Family

GIB = 1 << 30
# Without a configured budget, CUDA keeps checkpoints up to this share of its
# memory; the rest is for activations. Elsewhere one checkpoint stays resident.
DEFAULT_BUDGET_SHARE = 0.8
# Peak activation bytes per output pixel of one image in half precision,
# classifier-free guidance (a doubled UNet batch) and VAE decode included.
_PEAK_BYTES_PER_PIXEL = {Family.SD: 4096, Family.SDXL: 5120}
# Left free for the allocator's fragmentation and the libraries' workspaces.
_HEADROOM_BYTES = GIB // 2


def module_bytes(modules: Iterable[torch.nn.Module]) -> int:
    """Bytes of the parameters and buffers of `modules`, each tensor counted once."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            pointer = tensor.data_ptr()
            if pointer not in seen:
                seen.add(pointer)
                total += tensor.numel() * tensor.element_size()
    return total


def resolve_budget(model_memory_gb: float | None, device: torch.device) -> int | None:
    """Bytes that resident checkpoints may use; None: keep one checkpoint at a time."""
    if model_memory_gb is not None:
        return int(model_memory_gb * GIB)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * DEFAULT_BUDGET_SHARE)
    return None


@dataclass(frozen=True)
class DeviceMemory:
    used: int
    total: int
    free: int


def device_memory(device: torch.device) -> DeviceMemory | None:
    """The device's memory now; None where torch cannot tell (CPU, MPS)."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return DeviceMemory(used=total - free, total=total, free=free)


def batch_peak_bytes(
    family: Family, width: int, height: int, count: int, dtype: torch.dtype
) -> int:
    """Estimated activation memory of `count` images at width x height, weights excluded."""
    element = torch.finfo(dtype).bits // 8
    return _PEAK_BYTES_PER_PIXEL[family] * width * height * count * element // 2


def images_per_batch(
    family: Family, width: int, height: int, count: int, dtype: torch.dtype, free: int | None
) -> int:
    """How many of `count` images to run at once given `free` device bytes (None: all)."""
    if free is None:
        return count
    one = batch_peak_bytes(family, width, height, 1, dtype)
    fits = (free - _HEADROOM_BYTES) // one
    return max(1, min(count, fits))
