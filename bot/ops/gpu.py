"""This machine's NVIDIA GPUs and torch build, learned without importing torch in the bot.

The driver's view is cheap (a folder in /proc, or `nvidia-smi -L`); torch's
own view costs a subprocess that imports it (a few seconds), so it is asked
only when a GPU is there to be seen: the common mistake it catches is a
CPU-only torch on a machine with an NVIDIA GPU.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")
PROBE_TIMEOUT = 120.0
# Run in a child interpreter: the bot process itself never imports torch.
TORCH_PROBE = """
import json
try:
    import torch
except Exception as error:
    print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
else:
    available = torch.cuda.is_available()
    print(json.dumps({
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": available,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if available else [],
    }))
"""


@dataclass(frozen=True)
class TorchBuild:
    """What `import torch` says in a child process; `error` when it could not be imported."""

    version: str | None = None
    cuda: str | None = None  # the CUDA version torch was built for; None: a CPU-only build
    cuda_available: bool = False
    devices: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    reason: str
    warning: str | None = None


def nvidia_gpus(proc: Path = NVIDIA_PROC) -> list[str]:
    """The NVIDIA GPUs the driver lists, by name; [] when there is no driver or no GPU."""
    if proc.is_dir():
        names = []
        for gpu in sorted(proc.iterdir()):
            model = "NVIDIA GPU"
            information = gpu / "information"
            if information.is_file():
                for line in information.read_text(errors="replace").splitlines():
                    if line.startswith("Model:"):
                        model = line.partition(":")[2].strip()
            names.append(model)
        if names:
            return names
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [
        line.partition(":")[2].partition("(")[0].strip()
        for line in listed.stdout.splitlines()
        if line.startswith("GPU ")
    ]


def probe_torch(python: str = sys.executable, timeout: float = PROBE_TIMEOUT) -> TorchBuild:
    """Import torch in a child interpreter and report its build and the GPUs it sees."""
    try:
        done = subprocess.run(
            [python, "-c", TORCH_PROBE],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return TorchBuild(error=f"importing torch took longer than {timeout:g} s")
    except OSError as error:
        return TorchBuild(error=str(error))
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        return TorchBuild(error=f"the torch probe failed: {' '.join(tail) or done.returncode}")
    if "error" in found:
        return TorchBuild(error=str(found["error"]))
    return TorchBuild(
        version=found["version"],
        cuda=found["cuda"],
        cuda_available=bool(found["cuda_available"]),
        devices=tuple(found["devices"]),
    )


def choose_device(proc: Path = NVIDIA_PROC) -> DeviceChoice:
    """cuda:0 when the NVIDIA driver lists a GPU and torch sees it; else the CPU, with why."""
    gpus = nvidia_gpus(proc)
    if not gpus:
        return DeviceChoice(
            "cpu",
            "no NVIDIA GPU found (no /proc/driver/nvidia/gpus, no nvidia-smi)",
            "no GPU: the engine runs on the CPU, where one 512x512 image takes minutes,"
            " not seconds",
        )
    torch = probe_torch()
    if torch.cuda_available:
        return DeviceChoice("cuda:0", f"torch {torch.version} sees {torch.devices[0]}")
    why = torch.error or f"torch {torch.version} is a CPU-only build"
    return DeviceChoice(
        "cpu",
        f"the driver lists {gpus[0]} but torch cannot use it ({why})",
        f"{gpus[0]} is present but torch cannot use it ({why}): install the CUDA build of"
        " torch (pytorch.org) and run `atelier doctor`; until then the CPU is used (slow)",
    )
