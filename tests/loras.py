"""Tiny LoRAs built locally for the LoRA and draft-mode tests (no hub), and their config."""

from __future__ import annotations

from pathlib import Path

from engine.protocol import Family, LoraSpec

# Each LoRA by name: its family and the seed of its random weights (tells them apart).
TINY_LORAS: dict[str, tuple[Family, int]] = {
    "ink": (Family.SD, 1),
    "glow": (Family.SD, 2),
    "xlfilm": (Family.SDXL, 3),
    # The draft LoRA of the tiny SD model: LCM-style, run with the LCM sampler in 4 steps.
    "lcm": (Family.SD, 4),
}


def write_tiny_loras(root: Path) -> dict[str, Path]:
    """Every tiny LoRA, one folder each under `root` (pytorch_lora_weights.safetensors)."""
    from engine.tiny import write_tiny_lora  # torch is imported only where LoRAs are built

    return {
        name: write_tiny_lora(root / name, family, seed)
        for name, (family, seed) in TINY_LORAS.items()
    }


def lora_config(paths: dict[str, Path]) -> dict[str, LoraSpec]:
    """`[loras.<name>]` of the members' LoRAs (not the draft one): "ink" with a trigger word."""
    return {
        "ink": LoraSpec(source=str(paths["ink"]), family=Family.SD, triggers=["ink wash"]),
        "glow": LoraSpec(source=str(paths["glow"]), family=Family.SD, weight=0.6),
        "xlfilm": LoraSpec(source=str(paths["xlfilm"]), family=Family.SDXL),
    }
