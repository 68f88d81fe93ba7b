"""Sampler names map to fresh diffusers schedulers, as in the A1111 table."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler

from engine import protocol
from engine.errors import BadRequest
from engine.models import ModelRegistry
from engine.pipelines import generate
from engine.protocol import SAMPLER_NAMES
from engine.samplers import SAMPLERS, SCHEDULER_TABLE, find_sampler

from .conftest import make_request, only_result


def test_names_are_found_ignoring_case_and_keep_their_display_name() -> None:
    assert find_sampler("dpm++ 2m karras").name == "DPM++ 2M Karras"
    assert find_sampler("  EULER A ").name == "Euler a"


def test_unknown_sampler_error_lists_the_valid_names() -> None:
    with pytest.raises(BadRequest) as caught:
        find_sampler("Euler b")
    assert isinstance(caught.value, ValueError)
    for name in SAMPLER_NAMES:
        assert name in str(caught.value)


def test_karras_and_sde_variants_set_their_scheduler_options(registry: ModelRegistry) -> None:
    config = registry.get("tiny").scheduler_config
    scheduler = find_sampler("DPM++ 2M SDE Karras").build(config, [1])
    assert isinstance(scheduler, DPMSolverMultistepScheduler)
    assert scheduler.config.use_karras_sigmas is True
    assert scheduler.config.algorithm_type == "sde-dpmsolver++"


def test_a_models_own_karras_setting_does_not_leak_into_plain_samplers(
    registry: ModelRegistry,
) -> None:
    karras_config = (
        find_sampler("DPM++ 2M Karras").build(registry.get("tiny").scheduler_config, [1]).config
    )
    scheduler = find_sampler("Euler").build(karras_config, [1])
    assert isinstance(scheduler, EulerDiscreteScheduler)
    assert scheduler.config.use_karras_sigmas is False


def test_each_job_gets_its_own_scheduler(registry: ModelRegistry) -> None:
    config = registry.get("tiny").scheduler_config
    sampler = find_sampler("DPM++ 2M")
    assert sampler.build(config, [1]) is not sampler.build(config, [1])


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_sampler_runs_two_steps(name: str, registry: ModelRegistry, tmp_path: Path) -> None:
    steps: list[tuple[int, int]] = []
    request = make_request(tmp_path, sampler=name, steps=2)
    outcomes = generate(request, registry, lambda step, total, _: steps.append((step, total)))
    result = only_result(outcomes)
    assert result.sampler == name
    assert len(result.images) == 1
    assert steps and steps[-1][0] == steps[-1][1]


def test_the_scheduler_table_covers_exactly_the_protocols_sampler_names() -> None:
    assert tuple(SCHEDULER_TABLE) == protocol.SAMPLER_NAMES
    assert tuple(sampler.name for sampler in SAMPLERS) == protocol.SAMPLER_NAMES
