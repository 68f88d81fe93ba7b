"""What can be done to a job: one registry, from which each door derives its surface.

Each Action is one entry: its name (the HTTP route's `{action}`), its key in a
button's custom id, its button (label, emoji, row), the job states it applies to,
its spec transform and config strength for an action that makes a new job, and
whether only the job's owner may use it. The Discord buttons and their click
handling, the replay of a click journaled before a restart, and the HTTP route
`POST /v1/jobs/{id}/actions/{action}` are all read from `ACTIONS`; adding a
button is one entry here (plus, where it needs one, an engine mode). See
docs/adding-an-action.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from engine.protocol import Mode, ModelSpec

from ..config import GenerationConfig
from ..jobs.prompt_language import Style
from ..jobs.spec import (
    BadInput,
    Growth,
    InputImage,
    JobSpec,
    available_model,
    derived_spec,
    enhanced_spec,
    outpainted_spec,
    random_seed,
    remixed_spec,
    rerolled_spec,
)
from ..moderation.service import ScreenedText, TextKind
from ..store.models import JobState


class ActionName(StrEnum):
    VARIATION = "variation"
    STRONG = "strong"
    UPSCALE = "upscale"
    REROLL = "reroll"
    REMIX = "remix"
    RECREATE = "recreate"
    DELETE = "delete"
    CANCEL = "cancel"
    ZOOM_OUT_15 = "zoom_out_1_5"
    ZOOM_OUT_2 = "zoom_out_2"
    CUSTOM_ZOOM = "custom_zoom"
    MAKE_SQUARE = "make_square"
    PAN_LEFT = "pan_left"
    PAN_RIGHT = "pan_right"
    PAN_UP = "pan_up"
    PAN_DOWN = "pan_down"
    VARY_REGION = "vary_region"
    ENHANCE = "enhance"


class ButtonStyle(StrEnum):
    SECONDARY = "secondary"
    DANGER = "danger"


@dataclass(frozen=True, kw_only=True)
class Button:
    """How an action is drawn under a job's message."""

    # A per-image action's label is followed by the image number ("V" -> V1, V2…), unless
    # the action is only drawn for a single image.
    label: str | None
    emoji: str | None = None
    row: int | None = None
    style: ButtonStyle = ButtonStyle.SECONDARY
    numbered: bool = True


@dataclass(frozen=True, kw_only=True)
class Source:
    """The job an action reads, and for a per-image action the image, as stored."""

    job_id: str
    spec: JobSpec
    number: int | None = None  # 1-based, as on the buttons
    image: InputImage | None = None
    image_seed: int | None = None


@dataclass(frozen=True, kw_only=True)
class Words:
    """A new prompt (and negative prompt) for an action that takes words (✏️ Remix), and
    for one that also takes a zoom factor (Custom Zoom) that factor."""

    prompt: str
    negative: str = ""
    zoom: float | None = None


@dataclass(frozen=True, kw_only=True)
class Tweak:
    """What an action's transform may use besides its source."""

    strength: float | None
    words: Words | None
    models: Mapping[str, ModelSpec]
    styles: Mapping[str, Style]
    # The region to repaint (white), for an action that takes a mask (Vary (Region)).
    mask: InputImage | None = None


Transform = Callable[[Source, Tweak], JobSpec]


def _image_of(source: Source) -> InputImage:
    if source.image is None or source.number is None:
        raise BadInput("Say which image of the job to use.")
    return source.image


def _variation(source: Source, tweak: Tweak) -> JobSpec:
    assert tweak.strength is not None
    image = _image_of(source)
    key = (source.job_id, source.number or 1)
    return derived_spec(source.spec, key, image, Mode.VARIATION, tweak.strength, random_seed())


def _upscale(source: Source, tweak: Tweak) -> JobSpec:
    assert tweak.strength is not None
    image = _image_of(source)
    # An upscale keeps the image's own seed, so it redraws the same picture larger; a
    # draft's is made at full quality (as Enhance makes it), not as a larger draft.
    seed = source.image_seed if source.image_seed is not None else source.spec.seed
    key = (source.job_id, source.number or 1)
    original = _enhance(source, tweak) if source.spec.draft else source.spec
    larger = derived_spec(original, key, image, Mode.UPSCALE, tweak.strength, seed)
    if (larger.width, larger.height) == (image.width, image.height):
        raise BadInput(f"Image {source.number} is already as large as Atelier makes images.")
    return larger


# A pan grows the canvas by half the picture on one side, as Midjourney's does.
PAN_GROWTH = 0.5


def _outpaint(growth_of: Callable[[InputImage], Growth]) -> Transform:
    """A transform that puts one image on a canvas grown by `growth_of(image)`, the model
    painting the new border; a new seed, so each click paints another border."""

    def transform(source: Source, tweak: Tweak) -> JobSpec:
        assert tweak.strength is not None
        image = _image_of(source)
        model = available_model(source.spec.model, tweak.models)
        return outpainted_spec(
            source.spec,
            (source.job_id, source.number or 1),
            image,
            growth_of(image),
            model.width * model.height,
            tweak.strength,
            random_seed(),
        )

    return transform


# Custom Zoom's factors, as Midjourney's: from just above 1 (a sliver of new border) to 2.
MIN_CUSTOM_ZOOM, MAX_CUSTOM_ZOOM = 1.05, 2.0


def _custom_zoom(source: Source, tweak: Tweak) -> JobSpec:
    """Zoom out by the member's factor, with their words for the new job (as a remix)."""
    assert tweak.strength is not None
    words = tweak.words
    if (
        words is None
        or words.zoom is None
        or not (MIN_CUSTOM_ZOOM <= words.zoom <= MAX_CUSTOM_ZOOM)
    ):
        raise BadInput(
            f"Custom Zoom needs a factor from {MIN_CUSTOM_ZOOM:g} to {MAX_CUSTOM_ZOOM:g}, e.g. 1.5."
        )
    reworded = _remix(source, tweak)
    model = tweak.models[reworded.model]  # remixed_spec refused an unknown model
    return outpainted_spec(
        reworded,
        (source.job_id, source.number or 1),
        _image_of(source),
        Growth.zoom(words.zoom),
        model.width * model.height,
        tweak.strength,
        random_seed(),
    )


def _square(image: InputImage) -> Growth:
    if image.width == image.height:
        raise BadInput("This image is already square.")
    return Growth.square(image.width, image.height)


def _reroll(source: Source, tweak: Tweak) -> JobSpec:
    return rerolled_spec(source.spec, random_seed())


def _remix(source: Source, tweak: Tweak) -> JobSpec:
    if tweak.words is None:
        raise BadInput("A remix needs the new prompt.")
    words = tweak.words
    return remixed_spec(
        source.spec, words.prompt, words.negative, dict(tweak.models), dict(tweak.styles)
    )


def _enhance(source: Source, tweak: Tweak) -> JobSpec:
    return enhanced_spec(source.spec, dict(tweak.models))


def _recreate(source: Source, tweak: Tweak) -> JobSpec:
    return source.spec


def _vary_region(source: Source, tweak: Tweak) -> JobSpec:
    """One image with the part its mask paints white made again from the new words (the
    rest kept): inpainting from scratch there, as /imagine's `mask` does, a new seed."""
    image = _image_of(source)
    mask = tweak.mask
    if mask is None:
        raise BadInput("Vary (Region) needs the region to repaint: paint it in the editor.")
    if (mask.width, mask.height) != (image.width, image.height):
        raise BadInput(
            f"The mask is {mask.width}×{mask.height} pixels but image {source.number} is"
            f" {image.width}×{image.height}: paint it on the image itself."
        )
    reworded = _remix(source, tweak)
    key = (source.job_id, source.number or 1)
    repainted = derived_spec(reworded, key, image, Mode.INPAINT, 1.0, random_seed())
    return repainted.model_copy(update={"mask_image": mask.path})


FINISHED = frozenset({JobState.SUCCEEDED})
FAILED = frozenset({JobState.FAILED})
ENDED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
UNFINISHED = frozenset({JobState.QUEUED, JobState.RUNNING})


@dataclass(frozen=True, kw_only=True)
class Action:
    name: ActionName
    # The action's part of a button's custom id (`atelier:<key>:<job>[:<image>]`): stored in
    # messages already sent, so it never changes.
    key: str
    summary: str
    states: frozenset[JobState]
    button: Button | None = None
    per_image: bool = False
    # Drawn only under a job of exactly one image (Vary (strong)).
    single_image: bool = False
    transform: Transform | None = None
    # The `[generation]` strength it uses, read when it is used (a changed config applies).
    strength: Callable[[GenerationConfig], float] | None = None
    # The states its button is drawn in, where fewer than those it applies to.
    drawn_in: frozenset[JobState] | None = None
    # Drawn only under a `--draft` job (Enhance); its transform refuses any other.
    drafts_only: bool = False
    takes_words: bool = False
    # Its form also asks for a zoom factor (Words.zoom).
    takes_zoom: bool = False
    # It repaints a region the member marks (Tweak.mask): Discord's button answers with a
    # link to the browser editor (bot.core.editor); over HTTP the body carries the mask.
    takes_mask: bool = False
    # Only the job's owner (or an admin where the door has admins) may use it.
    owner_only: bool = False

    @property
    def makes_job(self) -> bool:
        return self.transform is not None

    @property
    def command(self) -> str:
        """Its audit and journal name: `button.<name>` (`.refused` for a refusal)."""
        return f"button.{self.name}"

    def strength_in(self, config: GenerationConfig) -> float | None:
        return self.strength(config) if self.strength is not None else None

    def shown_for(self, state: JobState, images: int, draft: bool = False) -> bool:
        """Whether its button is drawn under a job in `state` with `images` images (a
        `draft` one: made with --draft)."""
        if self.button is None or state not in (self.drawn_in or self.states):
            return False
        if self.drafts_only and not draft:
            return False
        return not self.single_image or images == 1

    def typed(self, words: Words | None) -> list[ScreenedText]:
        """The words the member typed for it, screened before the spec is built."""
        if words is None:
            return []
        return [
            ScreenedText(TextKind.PROMPT, words.prompt),
            ScreenedText(TextKind.NEGATIVE, words.negative),
        ]

    def added(self, source: Source, spec: JobSpec, words: Words | None) -> list[ScreenedText]:
        """The words the new job takes that the member did not type now: the source's own
        (against today's blocklist), or what a --style added to new words."""
        if words is None:
            reused = f"{source.spec.prompt}\n{source.spec.negative_prompt}"
            return [ScreenedText(TextKind.SOURCE, reused)]
        return [ScreenedText(TextKind.STYLE, f"{spec.prompt}\n{spec.negative_prompt}")]


ACTIONS: tuple[Action, ...] = (
    Action(
        name=ActionName.VARIATION,
        key="v",
        summary="A subtle variation of one image: same prompt and size, a new seed.",
        states=FINISHED,
        button=Button(label="V", row=0),
        per_image=True,
        transform=_variation,
        strength=lambda generation: generation.variation_strength,
    ),
    Action(
        name=ActionName.UPSCALE,
        key="u",
        summary="One image redrawn at twice the width and height, from its own seed.",
        states=FINISHED,
        button=Button(label="U", row=1),
        per_image=True,
        transform=_upscale,
        strength=lambda generation: generation.upscale_strength,
    ),
    Action(
        name=ActionName.REROLL,
        key="reroll",
        summary="The same job again with a new seed.",
        states=FINISHED,
        button=Button(label=None, emoji="🔄", row=2),
        transform=_reroll,
    ),
    Action(
        name=ActionName.STRONG,
        key="s",
        summary="A strong variation of one image: it may change its composition.",
        states=FINISHED,
        button=Button(label="Vary (strong)", row=2, numbered=False),
        per_image=True,
        single_image=True,
        transform=_variation,
        strength=lambda generation: generation.strong_variation_strength,
    ),
    Action(
        name=ActionName.VARY_REGION,
        key="vr",
        summary="One image with a region painted in the browser editor made again from new"
        " words (inpainting), the rest kept.",
        states=FINISHED,
        button=Button(label="Vary (Region)", emoji="🖌️", row=2, numbered=False),
        per_image=True,
        single_image=True,
        transform=_vary_region,
        takes_words=True,
        takes_mask=True,
    ),
    Action(
        name=ActionName.REMIX,
        key="remix",
        summary="The job again with new words (flags work) and the same seeds.",
        states=FINISHED,
        button=Button(label="Remix", emoji="✏️", row=2),
        transform=_remix,
        takes_words=True,
    ),
    Action(
        name=ActionName.ZOOM_OUT_2,
        key="z2",
        summary="One image at half its size in the middle of a new one, the rest painted.",
        states=FINISHED,
        button=Button(label="Zoom Out 2x", emoji="🔍", row=3, numbered=False),
        per_image=True,
        single_image=True,
        transform=_outpaint(lambda image: Growth.zoom(2.0)),
        strength=lambda generation: generation.outpaint_strength,
    ),
    Action(
        name=ActionName.ZOOM_OUT_15,
        key="z15",
        summary="One image at two thirds of its size in the middle of a new one, the rest painted.",
        states=FINISHED,
        button=Button(label="Zoom Out 1.5x", emoji="🔍", row=3, numbered=False),
        per_image=True,
        single_image=True,
        transform=_outpaint(lambda image: Growth.zoom(1.5)),
        strength=lambda generation: generation.outpaint_strength,
    ),
    Action(
        name=ActionName.MAKE_SQUARE,
        key="sq",
        summary="One image made square: its short sides grown, the new border painted.",
        states=FINISHED,
        button=Button(label="Make Square", emoji="↔️", row=3, numbered=False),
        per_image=True,
        single_image=True,
        transform=_outpaint(_square),
        strength=lambda generation: generation.outpaint_strength,
    ),
    Action(
        name=ActionName.CUSTOM_ZOOM,
        key="zc",
        summary="One image zoomed out by a factor from 1.05 to 2, with new words (flags work).",
        states=FINISHED,
        button=Button(label="Custom Zoom", emoji="🔍", row=3, numbered=False),
        per_image=True,
        single_image=True,
        transform=_custom_zoom,
        strength=lambda generation: generation.outpaint_strength,
        takes_words=True,
        takes_zoom=True,
    ),
    Action(
        name=ActionName.PAN_LEFT,
        key="pl",
        summary="One image extended by half its width to the left, the new part painted.",
        states=FINISHED,
        button=Button(label=None, emoji="⬅️", row=4, numbered=False),
        per_image=True,
        single_image=True,
        transform=_outpaint(lambda image: Growth(left=PAN_GROWTH)),
        strength=lambda generation: generation.outpaint_strength,
    ),
    Action(
        name=ActionName.PAN_RIGHT,
        key="pr",
        summary="One image extended by half its width to the right, the new part painted.",
        states=FINISHED,
        button=Button(label=None, emoji="➡️", row=4, numbered=False),
        per_image=True,
        single_image=True,
        transform=_outpaint(lambda image: Growth(right=PAN_GROWTH)),
        strength=lambda generation: generation.outpaint_strength,
    ),
    Action(
        name=ActionName.PAN_UP,
        key="pu",
        summary="One image extended by half its height upwards, the new part painted.",
        states=FINISHED,
        button=Button(label=None, emoji="⬆️", row=4, numbered=False),
        per_image=True,
        single_image=True,
        transform=_outpaint(lambda image: Growth(top=PAN_GROWTH)),
        strength=lambda generation: generation.outpaint_strength,
    ),
    Action(
        name=ActionName.PAN_DOWN,
        key="pd",
        summary="One image extended by half its height downwards, the new part painted.",
        states=FINISHED,
        button=Button(label=None, emoji="⬇️", row=4, numbered=False),
        per_image=True,
        single_image=True,
        transform=_outpaint(lambda image: Growth(bottom=PAN_GROWTH)),
        strength=lambda generation: generation.outpaint_strength,
    ),
    Action(
        name=ActionName.ENHANCE,
        key="enh",
        summary="A --draft job made again at full quality: the same prompt, seeds, size and"
        " LoRAs, with the model's own steps, sampler and cfg.",
        states=FINISHED,
        # Beside the U buttons (at most four under a grid), the other full-quality redraw.
        button=Button(label="Enhance", emoji="✨", row=1),
        drafts_only=True,
        transform=_enhance,
    ),
    Action(
        name=ActionName.DELETE,
        key="delete",
        summary="Delete the job's images (and, in Discord, its message); its usage stays.",
        states=FINISHED,
        button=Button(label=None, emoji="🗑️", row=2),
        owner_only=True,
    ),
    Action(
        name=ActionName.RECREATE,
        key="recreate",
        summary="A job that ended, made again from its recipe (the same seeds and settings).",
        states=ENDED,
        # A button under a failed job only; /recreate (and HTTP) reach any ended one.
        drawn_in=FAILED,
        button=Button(label="Try again", emoji="🔁", row=0),
        transform=_recreate,
    ),
    Action(
        name=ActionName.CANCEL,
        key="cancel",
        summary="Cancel a queued or running job.",
        states=UNFINISHED,
        button=Button(label="Cancel", style=ButtonStyle.DANGER),
        owner_only=True,
    ),
)

BY_NAME: Mapping[str, Action] = {action.name.value: action for action in ACTIONS}
BY_KEY: Mapping[str, Action] = {action.key: action for action in ACTIONS}


def journaled_commands() -> frozenset[str]:
    """The journal names of every action that queues a job: replayed after a restart."""
    return frozenset(action.command for action in ACTIONS if action.makes_job)


def buttons_for(
    state: JobState, images: int, draft: bool = False
) -> list[tuple[Action, int | None]]:
    """The buttons under a job in `state` with `images` images (`draft`: a --draft job),
    in registry order within each row: (action, image number or None)."""
    drawn: list[tuple[Action, int | None]] = []
    for action in ACTIONS:
        if not action.shown_for(state, images, draft):
            continue
        if action.per_image:
            numbers: Sequence[int] = [1] if action.single_image else range(1, images + 1)
            drawn += [(action, number) for number in numbers]
        else:
            drawn.append((action, None))
    return sorted(drawn, key=lambda pair: _row_of(pair[0]))


def _row_of(action: Action) -> int:
    assert action.button is not None
    return action.button.row if action.button.row is not None else 0
