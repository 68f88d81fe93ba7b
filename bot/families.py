"""A checkpoint's family (SD 1.x/2.x or SDXL) read from its files, without torch.

The bot loads no model, yet refuses a LoRA made for the other family before it queues
anything: where the config gives a model no `family`, it is read here from a local
checkpoint (a diffusers folder's model_index.json, or a .safetensors file's tensor
names). A hub repo id is not read (it may not be downloaded yet): its model names its
family in the config to take LoRAs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from engine.protocol import Family

# Only SDXL checkpoints carry a second text encoder (OpenCLIP bigG) as embedder 1.
SDXL_SINGLE_FILE_KEY = "conditioner.embedders.1."
# A .safetensors header bigger than this is not a header: the file is refused.
_MAX_HEADER = 100_000_000


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names from a .safetensors header (8-byte length, then JSON): no torch."""
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        if length > _MAX_HEADER:
            raise ValueError("header too large")
        header = json.loads(file.read(length))
    return [key for key in header if key != "__metadata__"]


def family_of(source: str) -> Family | None:
    """The family of the checkpoint at local path `source`, or None where its files do not
    say (a hub repo id, a .ckpt, an unreadable or unknown folder)."""
    path = Path(source)
    try:
        if path.is_dir() and (path / "model_index.json").is_file():
            index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
            name = str(index.get("_class_name", ""))
            if not name.startswith("StableDiffusion"):
                return None
            return Family.SDXL if "XL" in name else Family.SD
        if path.is_file() and path.suffix.lower() == ".safetensors":
            keys = safetensors_keys(path)
            sdxl = any(key.startswith(SDXL_SINGLE_FILE_KEY) for key in keys)
            return Family.SDXL if sdxl else Family.SD
    except (OSError, ValueError, struct.error):
        return None
    return None
