"""OptionsDraft: a request written as options (a prompt with flags, the slash command's
fields), for bot.core.door. The Discord door's /imagine, its context menus and
sketch replies make one; the HTTP door makes one from a Stability body."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.protocol import ControlType, LoraSpec, ModelSpec

from ..jobs.inputs import looks_like_drawing
from ..jobs.prompt_language import Style, expand_prompt
from ..jobs.spec import (
    MAX_TYPED_CHARS,
    BadInput,
    Inputs,
    JobSpec,
    Options,
    build_specs,
    clean_text,
    parse_prompt_flags,
)
from ..moderation.service import ScreenedText, TextKind

# What a control image may be read as when the member did not say, before it is seen.
ANY_CONTROL = (ControlType.SCRIBBLE, ControlType.LINEART, ControlType.CANNY)


@dataclass(frozen=True, kw_only=True)
class Catalog:
    """What a spec is built against: the models, styles and LoRAs, the limits of the
    config."""

    models: Mapping[str, ModelSpec]
    default_model: str
    styles: Mapping[str, Style]
    max_permutations: int
    data_dir: Path
    loras: Mapping[str, LoraSpec] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class OptionsDraft:
    command: str
    options: Options
    catalog: Catalog
    # A control image to read as it looks (a drawing as scribble, else lineart; a photo as
    # canny) unless the options or flags say how.
    control_auto: bool = False
    # The prompt is plain text, one job (the HTTP API's): flags and {…} choices not read.
    plain: bool = False

    def typed(self) -> Sequence[ScreenedText]:
        texts = [
            ScreenedText(TextKind.PROMPT, self.options.prompt),
            ScreenedText(TextKind.NEGATIVE, self.options.negative_prompt),
        ]
        if sum(len(text.text or "") for text in texts) > 2 * MAX_TYPED_CHARS:
            return []  # refused as too long when built, without reading it all
        return texts

    async def build(self, personal: Mapping[str, object], inputs: Inputs) -> list[JobSpec]:
        """The jobs of the options. A control image to read as seen is tried as each type
        its look suggests, in order, as the lowest-precedence default (a `--control` flag
        still wins); with none the model has, the first one's refusal (which names the
        models that have one) stands."""
        if not self.control_auto or inputs.control is None:
            return self._build(personal, inputs, {})
        refusals = []
        for kind in await self._guesses(inputs):
            try:
                return self._build(personal, inputs, {"control_type": kind})
            except BadInput as refusal:
                refusals.append(refusal)
        raise refusals[0]

    def repeatable(self) -> bool:
        """A seed named by the options (the slash command's, the HTTP body's) or by a
        `--seed` flag in the prompt (read unless it is plain)."""
        if self.options.seed is not None:
            return True
        if self.plain:
            return False
        try:
            return parse_prompt_flags(self.options.prompt).seed is not None
        except BadInput:
            return False  # refused when it is built

    def reference_words(self) -> tuple[str, ...]:
        """The results the options and the prompt's `--sref` name, for the door to find;
        BadInput when the prompt's {…} choices would give its jobs different ones."""
        if self.plain:
            return self.options.references
        if len(self.options.prompt) > MAX_TYPED_CHARS:
            return ()  # refused as too long when built
        prompts = expand_prompt(clean_text(self.options.prompt), self.catalog.max_permutations)
        written = {parse_prompt_flags(prompt).references for prompt in prompts}
        if len(written) > 1:
            raise BadInput("Give `--sref` outside the {…} choices: one set for every job.")
        return self.options.references + written.pop()

    def added(self, personal: Mapping[str, object], specs: Sequence[JobSpec]) -> list[ScreenedText]:
        """The member's default negative prompt, and the words of each job: what a style
        added is named as the style's."""
        made_by = TextKind.STYLE if _styled(self.options.prompt) else TextKind.PROMPT
        return [
            ScreenedText(TextKind.DEFAULTS, str(personal.get("negative_prompt") or "")),
            *(ScreenedText(made_by, f"{spec.prompt}\n{spec.negative_prompt}") for spec in specs),
        ]

    def _build(
        self, personal: Mapping[str, object], inputs: Inputs, read_as: dict[str, object]
    ) -> list[JobSpec]:
        catalog = self.catalog
        return build_specs(
            self.options,
            dict(catalog.models),
            catalog.default_model,
            inputs,
            {**personal, **read_as},
            dict(catalog.styles),
            catalog.max_permutations,
            plain=self.plain,
            loras=catalog.loras,
        )

    async def _guesses(self, inputs: Inputs) -> tuple[ControlType, ...]:
        """How a saved control image reads, by its look; before it is saved, any way."""
        control = inputs.control
        if control is None or not control.path:
            return ANY_CONTROL
        path = self.catalog.data_dir / control.path
        if await asyncio.to_thread(looks_like_drawing, path):
            return (ControlType.SCRIBBLE, ControlType.LINEART)
        return (ControlType.CANNY,)


def _styled(prompt: str) -> bool:
    """Whether the prompt applies a `--style` preset (whose words the job then uses)."""
    try:
        return parse_prompt_flags(prompt).style is not None
    except BadInput:
        return False
