"""LoRAs and draft mode: adapters loaded into a model's shared modules for one batch.

A batch's LoRAs (its `loras`, and with `draft` the model's few-step draft LoRA) are
loaded into the pipeline's UNet and text encoders through diffusers' PEFT
integration just before the batch runs, and unloaded however it ends. The modules
are the checkpoint's, shared by every mode of the model (from_pipe) and by the
next batch: unloading removes the adapter layers and leaves the base weights as
they were, bit for bit (nothing is fused). The files are read again per batch
(from the operating system's cache after the first time) rather than kept in
memory beside the models.
"""

# diffusers leaves many public functions unannotated; their results are typed here.
# mypy: untyped-calls-exclude=diffusers

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from engine.checkpoints import Family, Source
from engine.errors import BadRequest, JobFailure
from engine.protocol import LoraSpec, ModelSpec, SharedParams

log = logging.getLogger(__name__)

# The adapter name of a model's draft LoRA; a configured LoRA is named `lora:<name>`, so
# no configured name can take it.
DRAFT_ADAPTER = "draft"


@dataclass(frozen=True)
class Adapter:
    """One LoRA to load for a batch: its adapter name, weights and weight."""

    name: str
    source: Source
    weight: float


def adapters_for(
    params: SharedParams, family: Family, model: ModelSpec, loras: Mapping[str, LoraSpec]
) -> list[Adapter]:
    """The LoRAs a batch loads on a model of `family` (configured as `model`); BadRequest
    for an unknown LoRA, one made for another family, or --draft on a model with no
    draft LoRA."""
    adapters = []
    for use in params.loras:
        spec = loras.get(use.name)
        if spec is None:
            known = ", ".join(sorted(loras)) or "none"
            raise BadRequest(f"unknown LoRA {use.name!r}; configured LoRAs: {known}")
        if spec.family is not family:
            raise BadRequest(
                f"LoRA {use.name!r} is made for {spec.family} models and model"
                f" {params.model!r} is {family}"
            )
        adapters.append(Adapter(f"lora:{use.name}", _source(spec.source), use.weight))
    if params.draft:
        if model.draft_lora is None:
            raise BadRequest(
                f"model {params.model!r} has no draft mode: set draft_lora in"
                f" [models.{params.model}]"
            )
        adapters.append(Adapter(DRAFT_ADAPTER, _source(model.draft_lora), 1.0))
    return adapters


def _source(location: str) -> Source:
    try:
        return Source(location)
    except FileNotFoundError as missing:
        raise JobFailure(f"LoRA weights not found: {missing}") from missing


@contextmanager
def applied(pipeline: DiffusionPipeline, adapters: list[Adapter]) -> Iterator[None]:
    """While the batch runs, `adapters` loaded into the pipeline's UNet and text encoders at
    their weights; unloaded after (finished, cancelled or failed), even when one failed
    to load."""
    if not adapters:
        yield
        return
    # The LoRA loader mixin's methods (load_lora_weights, ...) are on the family's
    # pipeline classes, not on DiffusionPipeline.
    loader = cast(Any, pipeline)
    try:
        for adapter in adapters:
            log.info("loading LoRA %s from %s", adapter.name, adapter.source.location)
            try:
                with warnings.catch_warnings():
                    # PEFT warns on every adapter after the first in a model: several LoRAs
                    # at once are what a batch asks for.
                    warnings.filterwarnings("ignore", "Already found a `peft_config`")
                    loader.load_lora_weights(adapter.source.location, adapter_name=adapter.name)
            except (OSError, ValueError, KeyError) as error:
                raise JobFailure(
                    f"LoRA {adapter.name.removeprefix('lora:')!r} could not be loaded"
                    f" ({type(error).__name__}: {error}); check it was made for this model"
                ) from error
        loader.set_adapters(
            [adapter.name for adapter in adapters],
            adapter_weights=[adapter.weight for adapter in adapters],
        )
        yield
    finally:
        loader.unload_lora_weights()
