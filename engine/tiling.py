"""Seamless textures (--tile): a pipeline's convolutions padded circularly for one batch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline


def convolutions(pipeline: DiffusionPipeline) -> list[torch.nn.Conv2d]:
    """Every 2-D convolution of the pipeline's models (UNet, VAE, ControlNet) that pads
    its input, each once."""
    found = {
        module: None
        for component in pipeline.components.values()
        if isinstance(component, torch.nn.Module)
        for module in component.modules()
        if isinstance(module, torch.nn.Conv2d)
        # A convolution that pads nothing (1x1) would only gain a copy from circular mode.
        and module.padding not in ((0, 0), "valid")
    }
    return list(found)


@contextmanager
def seamless(pipeline: DiffusionPipeline, enabled: bool) -> Iterator[None]:
    """While the batch runs, pad every convolution circularly when `enabled`: a feature
    at the image's right edge then sees the left edge as its neighbour (and the bottom
    the top), so the image repeats without a seam.

    The models are shared by every job of the checkpoint (and by its other modes through
    from_pipe), so each convolution's own padding mode is put back however the batch
    ends: finished, cancelled or failed.
    """
    if not enabled:
        yield
        return
    padded = convolutions(pipeline)
    modes = [conv.padding_mode for conv in padded]
    for conv in padded:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv, mode in zip(padded, modes, strict=True):
            conv.padding_mode = mode
