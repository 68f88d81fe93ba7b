"""Layer 2 of moderation, the bot's half: what becomes of images the engine's classifier flags.

The engine (engine.safety) classifies every input, preview and output image and
reports each verdict; this module decides, as pure functions, what the bot does
with them. In channels Discord marks age-restricted, `[moderation]
nsfw_channels` says: `allow` shows flagged images, `spoiler` shows them behind
a spoiler, `block` withholds them. Everywhere else (and for the HTTP API and
direct messages) flagged images are withheld: the job is recorded as `blocked`
with the classifier's scores, the member is told privately, admins are told in
`[moderation] log_channel_id`, the files are deleted unless `keep_blocked`, and
`charge_blocked` decides whether the GPU time is charged. The policy holds where
the images are delivered too: a job shown in an age-restricted channel that is
delivered by DM (the member's setting, a private reply that expired, a channel the
bot cannot post in) has its flagged images withheld there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.protocol import (
    DEFAULT_IMAGE_THRESHOLD,
    EXPLICIT_LABELS,
    NUDENET_LABELS,
    ClassifierSettings,
    ImageVerdict,
    JobResult,
    NsfwPolicy,
)

# Where the bot keeps what members uploaded (bot.discord.cogs.imagine, bot.http): a
# flagged upload is deleted with the job's images; an earlier output used as an input
# (V and U buttons) belongs to its own job and is left alone.
UPLOADS_FOLDER = "inputs"


class ImageModerationConfig(BaseModel):
    """The image classifier's keys of `[moderation]` (bot.config ModerationConfig)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    classify_images: bool = Field(
        True, description="run the image classifier on every input, preview and output"
    )
    image_threshold: float = Field(
        DEFAULT_IMAGE_THRESHOLD,
        ge=0.0,
        le=1.0,
        description="an image is flagged when a counted label scores this or more (0: every image)",
    )
    image_labels: list[str] = Field(
        default_factory=lambda: list(EXPLICIT_LABELS),
        min_length=1,
        description="the classifier's labels that count (NudeNet's names)",
    )
    nsfw_channels: NsfwPolicy = Field(
        NsfwPolicy.SPOILER,
        description="flagged images in age-restricted channels: allow, spoiler or block",
    )
    keep_blocked: bool = Field(
        False, description="keep the files of withheld images (for review) instead of deleting"
    )
    charge_blocked: bool = Field(
        False, description="charge a job whose images were withheld; false: refunded"
    )

    @field_validator("image_labels")
    @classmethod
    def _labels_are_known(cls, labels: list[str]) -> list[str]:
        unknown = [label for label in labels if label not in NUDENET_LABELS]
        if unknown:
            raise ValueError(
                f"unknown label(s) {', '.join(unknown)}; the classifier knows"
                f" {', '.join(NUDENET_LABELS)}"
            )
        return labels

    def classifier(self) -> ClassifierSettings:
        """What every engine process is set up with."""
        return ClassifierSettings(
            enabled=self.classify_images, threshold=self.image_threshold, labels=self.image_labels
        )

    def policy(self, nsfw_channel: bool) -> NsfwPolicy:
        """What a job's flagged images meet: `nsfw_channels` in an age-restricted channel,
        else they are withheld."""
        return self.nsfw_channels if nsfw_channel else NsfwPolicy.BLOCK


@dataclass(frozen=True)
class Screened:
    """A finished job's images after the policy: withheld (the job is blocked), or shown,
    with the indexes of the flagged ones (spoilered where the policy says so)."""

    withheld: bool
    flagged: tuple[int, ...]
    record: dict[str, Any] | None  # None: the classifier saw none of the images (it is off)
    reason: str | None = None

    def flags(self, index: int, policy: NsfwPolicy) -> dict[str, Any]:
        """The stored flags of shown image `index` (bot.store.models Output.flags)."""
        if index not in self.flagged:
            return {}
        return {"nsfw": True, "spoiler": policy is NsfwPolicy.SPOILER}


def screen(result: JobResult, policy: NsfwPolicy, threshold: float) -> Screened:
    """Apply `policy` to a job's output verdicts; any flagged image withholds the whole
    job where flagged images are blocked (its images share a prompt, and one flagged
    image says what the prompt made)."""
    verdicts = [image.verdict for image in result.images]
    flagged = tuple(i for i, verdict in enumerate(verdicts) if verdict and verdict.flagged)
    seen = any(verdict is not None for verdict in verdicts)
    record = moderation_record(policy, threshold, outputs=verdicts) if seen else None
    if flagged and policy is NsfwPolicy.BLOCK:
        return Screened(True, flagged, record, withheld_reason(verdicts, threshold))
    return Screened(False, flagged, record)


def moderation_record(
    policy: NsfwPolicy,
    threshold: float,
    outputs: Sequence[ImageVerdict | None] = (),
    inputs: Mapping[str, ImageVerdict] | None = None,
) -> dict[str, Any]:
    """What the job row keeps (jobs.moderation): the policy, the threshold and every
    verdict with its scores; an output the classifier did not see is null."""
    record: dict[str, Any] = {"policy": str(policy), "threshold": threshold}
    if outputs:
        record["outputs"] = [None if v is None else v.model_dump() for v in outputs]
    if inputs:
        record["inputs"] = {name: v.model_dump() for name, v in inputs.items()}
    return record


def withheld_reason(verdicts: Iterable[ImageVerdict | None], threshold: float) -> str:
    """The job's `error` (and audit reason): how many images, the top label and score."""
    flagged = [v for v in verdicts if v is not None and v.flagged]
    label, score = max((v.top for v in flagged), key=lambda top: top[1], default=("", 0.0))
    return (
        f"withheld by the image filter: {len(flagged)} image(s) flagged"
        f" (top {label} {score:.2f}, threshold {threshold:g})"
    )


def input_reason(verdicts: Mapping[str, ImageVerdict], threshold: float) -> str:
    names = ", ".join(name for name, verdict in verdicts.items() if verdict.flagged)
    label, score = max((v.top for v in verdicts.values() if v.flagged), key=lambda t: t[1])
    return (
        f"withheld by the image filter: input {names} flagged"
        f" (top {label} {score:.2f}, threshold {threshold:g})"
    )


def flagged_uploads(inputs: Mapping[str, str], verdicts: Mapping[str, ImageVerdict]) -> list[str]:
    """The stored paths (relative to the data folder) of flagged inputs a member uploaded
    for this job, from its input images by field name (JobSpec.input_paths); earlier
    outputs used as inputs are not the job's to delete."""
    paths = []
    for name, verdict in verdicts.items():
        path = inputs.get(name)
        if verdict.flagged and path is not None and Path(path).parts[:1] == (UPLOADS_FOLDER,):
            paths.append(path)
    return paths


def remove_files(data_dir: Path, relative: Iterable[str]) -> int:
    """Delete stored files (a missing one is fine); how many were there."""
    removed = 0
    for name in relative:
        path = data_dir / name
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


def member_notice(job_id: str, charged: bool, upload: bool = False) -> str:
    """The one private sentence a member whose images were withheld is told."""
    what = "your uploaded image was" if upload else "your images were"
    cost = "it counts against your quota" if charged else "you were not charged"
    return (
        f"🚫 Job `{job_id}`: {what} withheld because this server's image filter flagged"
        f" {'it' if upload else 'them'} as explicit; {cost}."
    )


def public_notice(job_id: str) -> str:
    """What replaces a withheld job's reply where others may see it: nothing of the image."""
    return f"🚫 Job `{job_id}`: withheld by the image filter."


def withheld_in_dm(flags: Iterable[Mapping[str, Any]]) -> bool:
    """Whether a shown job's images (their stored flags) are withheld from a direct
    message. A DM is never age-restricted, so the policy there is `block`: an image
    flagged, yet shown in the age-restricted channel the job was asked in, withholds
    them all (as `screen` does where flagged images are blocked)."""
    return any(flag.get("nsfw") for flag in flags)


def dm_notice(job_id: str) -> str:
    """What a DM says instead of images withheld there."""
    return (
        f"🚫 Job `{job_id}`: its images were flagged by the image filter and are never sent"
        " by direct message; ask for them in an age-restricted channel instead."
    )


def spoiler_name(name: str) -> str:
    """Discord shows an attachment named SPOILER_... behind a spoiler."""
    return name if name.startswith("SPOILER_") else f"SPOILER_{name}"


def top_scores(record: Mapping[str, Any], count: int = 3) -> str:
    """The highest scores of a moderation record, for the admins' log: "LABEL 0.91, ..."."""
    verdicts = [v for v in record.get("outputs") or [] if v] + list(
        (record.get("inputs") or {}).values()
    )
    best: dict[str, float] = {}
    for verdict in verdicts:
        if verdict.get("flagged"):
            for label, score in verdict["scores"].items():
                best[label] = max(best.get(label, 0.0), float(score))
    ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)[:count]
    return ", ".join(f"{label} {score:.2f}" for label, score in ranked) or "none"
