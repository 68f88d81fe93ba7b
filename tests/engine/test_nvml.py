"""NVML figures in the engine's Status: optional, and absent off CUDA."""

from __future__ import annotations

import pytest

from engine.nvml import gpu_usage, nvml_index
from engine.protocol import Status, decode_event, encode


def test_cuda_ordinals_map_to_nvml_indexes_through_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert nvml_index("cuda:1") == 1 and nvml_index("cuda") == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert nvml_index("cuda:1") == 3
    assert nvml_index("cpu") is None


def test_the_cpu_has_no_nvml_figures_and_status_travels_without_them() -> None:
    assert gpu_usage("cpu") == {}
    status = Status(
        device="cpu",
        loaded=[],
        running_batch=None,
        running_jobs=[],
        memory_used_bytes=None,
        memory_total_bytes=None,
    )
    assert decode_event(encode(status)) == status
    assert status.gpu_utilization is None and status.gpu_memory_free_bytes is None
