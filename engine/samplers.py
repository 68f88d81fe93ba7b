"""Sampler names users know from other Stable Diffusion tools, mapped to diffusers schedulers.

The mapping follows the "A1111" table of diffusers' scheduler overview. A
scheduler is stateful and `from_pipe` shares it between pipelines, so every
job builds a fresh one from the model's own scheduler config.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Imported from their defining modules: mypy reads diffusers' top-level names as
# its dummy placeholder classes.
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_dpmsolver_sde import DPMSolverSDEScheduler
from diffusers.schedulers.scheduling_euler_ancestral_discrete import (
    EulerAncestralDiscreteScheduler,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from diffusers.schedulers.scheduling_heun_discrete import HeunDiscreteScheduler
from diffusers.schedulers.scheduling_k_dpm_2_ancestral_discrete import (
    KDPM2AncestralDiscreteScheduler,
)
from diffusers.schedulers.scheduling_k_dpm_2_discrete import KDPM2DiscreteScheduler
from diffusers.schedulers.scheduling_lcm import LCMScheduler
from diffusers.schedulers.scheduling_lms_discrete import LMSDiscreteScheduler
from diffusers.schedulers.scheduling_pndm import PNDMScheduler
from diffusers.schedulers.scheduling_tcd import TCDScheduler
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from engine.errors import BadRequest
from engine.protocol import SAMPLER_NAMES

# A model's own config may switch one of these on (many ship "DPM++ 2M Karras");
# a sampler name means exactly one schedule, so each is reset unless named.
_SIGMA_SCHEDULES = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


class SchedulerClass(Protocol):
    """A diffusers scheduler class (the constructor's parameters are its options)."""

    def __call__(self, **options: Any) -> SchedulerMixin: ...

    def from_config(self, config: Mapping[str, Any], **options: object) -> SchedulerMixin: ...


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: SchedulerClass
    options: Mapping[str, object] = field(default_factory=dict)

    def build(self, model_config: Mapping[str, Any], seeds: Sequence[int]) -> SchedulerMixin:
        """A fresh scheduler for one job whose image i uses `seeds[i]`."""
        accepted = inspect.signature(self.scheduler_class).parameters
        options: dict[str, object] = {key: False for key in _SIGMA_SCHEDULES if key in accepted}
        options.update(self.options)
        if self.scheduler_class is DPMSolverSDEScheduler:
            # Its Brownian-tree noise is seeded apart from the generators: one
            # seed per image keeps image i of a batch equal to a single run.
            options["noise_sampler_seed"] = list(seeds)
        return self.scheduler_class.from_config(model_config, **options)


_KARRAS: dict[str, object] = {"use_karras_sigmas": True}
_DPMPP: dict[str, object] = {"algorithm_type": "dpmsolver++"}
_DPMPP_SDE: dict[str, object] = {"algorithm_type": "sde-dpmsolver++"}

# Scheduler and options for each of protocol.SAMPLER_NAMES, the one list of names.
SCHEDULER_TABLE: dict[str, tuple[SchedulerClass, Mapping[str, object]]] = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "Heun": (HeunDiscreteScheduler, {}),
    "DPM2": (KDPM2DiscreteScheduler, {}),
    "DPM2 a": (KDPM2AncestralDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, _DPMPP),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, _DPMPP | _KARRAS),
    "DPM++ 2M SDE": (DPMSolverMultistepScheduler, _DPMPP_SDE),
    "DPM++ 2M SDE Karras": (DPMSolverMultistepScheduler, _DPMPP_SDE | _KARRAS),
    "DPM++ SDE": (DPMSolverSDEScheduler, {}),
    "DPM++ SDE Karras": (DPMSolverSDEScheduler, _KARRAS),
    "DDIM": (DDIMScheduler, {}),
    # PLMS as SD 1.5 ships it; the Runge-Kutta warm-up steps fail below 3 steps.
    "PNDM": (PNDMScheduler, {"skip_prk_steps": True}),
    "UniPC": (UniPCMultistepScheduler, {}),
    "LMS": (LMSDiscreteScheduler, {}),
    "LMS Karras": (LMSDiscreteScheduler, _KARRAS),
    "LCM": (LCMScheduler, {}),
    # Made for TCD and Hyper-SD LoRAs (draft mode), as LCM is for an LCM-LoRA.
    "TCD": (TCDScheduler, {}),
}

# In the protocol's order; a name missing from the table fails here, at import.
SAMPLERS: tuple[Sampler, ...] = tuple(
    Sampler(name, *SCHEDULER_TABLE[name]) for name in SAMPLER_NAMES
)

_BY_KEY = {sampler.name.casefold(): sampler for sampler in SAMPLERS}


def find_sampler(name: str) -> Sampler:
    """The sampler called `name`, ignoring case and surrounding spaces."""
    try:
        return _BY_KEY[name.strip().casefold()]
    except KeyError:
        raise BadRequest(
            f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLER_NAMES)}"
        ) from None
