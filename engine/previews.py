"""Live previews: a small PNG of the latents so far, decoded cheaply, replaced atomically.

With a tiny autoencoder (TAESD-style `AutoencoderTiny`) configured as the
model's preview decoder, previews are decoded by it; otherwise a fixed linear
map from the 4 latent channels to RGB gives a blurry but faithful picture with
no extra weights. Neither touches the latents, so previews never change the
final pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers.models.autoencoders.autoencoder_tiny import AutoencoderTiny
from PIL import Image

from engine.checkpoints import Family

PREVIEW_MAX_SIDE = 256

# Latent channel -> RGB factors and bias, fitted on the families' VAEs (as used by
# ComfyUI's and A1111's cheap previews); SD 1.x and 2.x share a latent space.
_LATENT_RGB: dict[Family, tuple[list[list[float]], list[float]]] = {
    Family.SD: (
        [
            [0.3512, 0.2297, 0.3227],
            [0.3250, 0.4974, 0.2350],
            [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177],
        ],
        [0.0, 0.0, 0.0],
    ),
    Family.SDXL: (
        [
            [0.3651, 0.4232, 0.4341],
            [-0.2533, -0.0042, 0.1068],
            [0.1076, 0.1111, -0.0362],
            [-0.3165, -0.2492, -0.2188],
        ],
        [0.1084, -0.0175, -0.0011],
    ),
}


def latents_to_rgb(latents: torch.Tensor, family: Family) -> torch.Tensor:
    """The linear approximation: (4, h, w) latents to (3, h, w) RGB in about [-1, 1]."""
    factors, bias = _LATENT_RGB[family]
    matrix = torch.tensor(factors, dtype=torch.float32, device=latents.device)
    offset = torch.tensor(bias, dtype=torch.float32, device=latents.device)
    return torch.einsum("chw,cr->rhw", latents.float(), matrix) + offset[:, None, None]


class PreviewWriter:
    """Writes the first image of a batch's latents to `path` as a small PNG."""

    def __init__(self, path: Path, family: Family, decoder: AutoencoderTiny | None) -> None:
        self.path = path
        self._family = family
        self._decoder = decoder

    @torch.no_grad()
    def write(self, latents: torch.Tensor) -> str:
        first = latents[:1]
        if self._decoder is not None:
            rgb = self._decoder.decode(first.to(self._decoder.dtype)).sample[0]
        else:
            rgb = latents_to_rgb(first[0], self._family)
        pixels = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        image = Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())
        image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        # Written aside then renamed: a reader sees the previous preview or this one, whole.
        partial = self.path.with_name(self.path.name + ".part")
        image.save(partial, format="PNG")
        os.replace(partial, self.path)
        return str(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
