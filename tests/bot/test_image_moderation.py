"""The image filter's policy: pure rules, no engine, no Discord."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.moderation.images import (
    ImageModerationConfig,
    flagged_uploads,
    member_notice,
    screen,
    spoiler_name,
    top_scores,
)
from engine.protocol import ImageVerdict, JobResult, NsfwPolicy, OutputImage

CLEAN = ImageVerdict(flagged=False, scores={"BUTTOCKS_EXPOSED": 0.01})
FLAGGED = ImageVerdict(flagged=True, scores={"BUTTOCKS_EXPOSED": 0.83, "ANUS_EXPOSED": 0.2})


def result(*verdicts: ImageVerdict | None) -> JobResult:
    images = [
        OutputImage(
            path=f"/d/images/j/j-{i}.png",
            seed=i,
            width=64,
            height=64,
            sha256="0",
            recipe={},
            verdict=verdict,
        )
        for i, verdict in enumerate(verdicts)
    ]
    return JobResult(
        job_id="j",
        images=images,
        gpu_seconds=1.0,
        sampler="Euler",
        batch_id="b",
        batch_jobs=["j"],
        batch_gpu_seconds=1.0,
    )


@pytest.mark.parametrize(
    ("nsfw_channels", "nsfw_channel", "policy"),
    [
        ("allow", True, NsfwPolicy.ALLOW),
        ("spoiler", True, NsfwPolicy.SPOILER),
        ("block", True, NsfwPolicy.BLOCK),
        ("allow", False, NsfwPolicy.BLOCK),
        ("spoiler", False, NsfwPolicy.BLOCK),
    ],
)
def test_flagged_images_are_blocked_everywhere_but_age_restricted_channels(
    nsfw_channels: str, nsfw_channel: bool, policy: NsfwPolicy
) -> None:
    config = ImageModerationConfig.model_validate({"nsfw_channels": nsfw_channels})
    assert config.policy(nsfw_channel) is policy


def test_one_flagged_image_withholds_the_whole_job_where_blocked() -> None:
    screened = screen(result(CLEAN, FLAGGED), NsfwPolicy.BLOCK, 0.5)
    assert screened.withheld and screened.flagged == (1,)
    assert screened.reason == (
        "withheld by the image filter: 1 image(s) flagged"
        " (top BUTTOCKS_EXPOSED 0.83, threshold 0.5)"
    )
    assert screened.record is not None
    assert [v["flagged"] for v in screened.record["outputs"]] == [False, True]


def test_flagged_images_are_shown_spoilered_or_allowed_with_their_flags() -> None:
    spoilered = screen(result(CLEAN, FLAGGED), NsfwPolicy.SPOILER, 0.5)
    assert not spoilered.withheld
    assert spoilered.flags(0, NsfwPolicy.SPOILER) == {}
    assert spoilered.flags(1, NsfwPolicy.SPOILER) == {"nsfw": True, "spoiler": True}
    allowed = screen(result(FLAGGED), NsfwPolicy.ALLOW, 0.5)
    assert not allowed.withheld
    assert allowed.flags(0, NsfwPolicy.ALLOW) == {"nsfw": True, "spoiler": False}


def test_without_the_classifier_nothing_is_recorded_or_withheld() -> None:
    screened = screen(result(None, None), NsfwPolicy.BLOCK, 0.5)
    assert not screened.withheld and screened.record is None


def test_only_the_members_own_flagged_uploads_are_deleted() -> None:
    spec = {"init_image": "inputs/ab12/image.png", "control_image": "images/old/old-0.png"}
    verdicts = {"init_image": FLAGGED, "control_image": FLAGGED}
    assert flagged_uploads(spec, verdicts) == ["inputs/ab12/image.png"]
    assert flagged_uploads(spec, {"init_image": CLEAN}) == []


def test_notices_and_admin_scores() -> None:
    assert member_notice("j1", charged=False) == (
        "🚫 Job `j1`: your images were withheld because this server's image filter flagged"
        " them as explicit; you were not charged."
    )
    assert "uploaded image was" in member_notice("j1", charged=True, upload=True)
    assert spoiler_name("grid.jpg") == "SPOILER_grid.jpg" == spoiler_name("SPOILER_grid.jpg")
    record = {"outputs": [CLEAN.model_dump(), FLAGGED.model_dump()]}
    assert top_scores(record) == "BUTTOCKS_EXPOSED 0.83, ANUS_EXPOSED 0.20"


def test_an_unknown_label_or_threshold_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown label"):
        ImageModerationConfig.model_validate({"image_labels": ["NUDITY"]})
    with pytest.raises(ValidationError):
        ImageModerationConfig.model_validate({"image_threshold": 1.5})
