"""A job as one direct diffusers pipeline call in this process: the yardstick of the bot path.

The pipeline is loaded with diffusers' own `from_pretrained` and given the same
module settings the engine applies (engine.speed), so that the difference from
a job through the bot is the bot's path, not a different computation.
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from diffusers.pipelines.auto_pipeline import AutoPipelineForText2Image
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler

from engine import speed
from engine.protocol import EngineSpeed


class DirectPipeline:
    def __init__(self, source: Path, width: int, height: int, steps: int, cfg: float = 7.0) -> None:
        self.pipeline: Any = AutoPipelineForText2Image.from_pretrained(
            str(source), dtype=torch.float32
        )
        self.pipeline.set_progress_bar_config(disable=True)
        speed.apply(self.pipeline, [], EngineSpeed())
        self.config = self.pipeline.scheduler.config
        self.width, self.height, self.steps, self.cfg = width, height, steps, cfg

    def run(self, prompt: str, seed: int) -> float:
        """Seconds to make one image (Euler, like the bot's jobs here)."""
        started = time.perf_counter()
        self.pipeline.scheduler = EulerDiscreteScheduler.from_config(self.config)
        call = cast(Callable[..., Any], self.pipeline)
        call(
            prompt=prompt,
            num_inference_steps=self.steps,
            guidance_scale=self.cfg,
            width=self.width,
            height=self.height,
            generator=[torch.Generator("cpu").manual_seed(seed)],
        )
        return time.perf_counter() - started
