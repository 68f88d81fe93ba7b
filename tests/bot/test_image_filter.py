"""The image filter through the job service: the real engine classifies real images
(NudeNet's ONNX detector on the tiny model's outputs), and the bot applies the policy."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from sqlalchemy import select

from bot.jobs.inputs import save_inputs
from bot.jobs.spec import Inputs, Options, build_spec
from bot.store.jobs import Requester
from bot.store.models import AuditEntry, Job, JobState, Output, Reservation, UsageEntry
from bot.wiring import build_engines, build_service
from engine.protocol import EXPLICIT_LABELS
from tests.stores import Stores, open_stores

from .conftest import Recorder

MEMBER = Requester(user_id=77, user_name="ivy", guild_id=1, channel_id=2)
IN_NSFW_CHANNEL = Requester(
    user_id=78, user_name="oak", guild_id=1, channel_id=3, nsfw_channel=True
)
QUOTA = """[billing]
price_per_gpu_hour = 3.6
[quota]
images_per_day = 50
"""
# A threshold every image reaches: every image is flagged.
FLAG_ALL = QUOTA + "[moderation]\nimage_threshold = 0.0\n"


async def run_jobs(stores: Stores, *jobs: tuple[Options, Requester, Inputs]) -> list[Job]:
    """Submit the jobs to a service on the real engine and wait until each has finished."""
    config = stores.config
    service = build_service(config, stores.sessions, stores.quotas, build_engines(config))
    recorder = Recorder()
    service.add_listener(recorder)
    await service.start()
    service.start_workers()
    try:
        submitted = []
        for options, requester, inputs in jobs:
            spec = build_spec(options, config.models, "tiny", inputs)
            submitted.append(await service.submit(spec, requester))
        await recorder.wait_finished(len(jobs))
    finally:
        await service.stop()
    return [await stores.jobs.get(s.job.id) for s in submitted]


def upload(stores: Stores) -> Inputs:
    """A member's init image, stored as /imagine stores uploads."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 150, 120)).save(buffer, format="PNG")
    data_dir = stores.config.storage.data_dir
    return save_inputs({"image": buffer.getvalue()}, data_dir / "inputs" / "up1", data_dir, 2**20)


async def audit_actions(stores: Stores, job_id: str) -> list[tuple[str, str]]:
    return [(entry.action, entry.outcome) for entry in await stores.jobs.audit_trail(job_id)]


async def test_flagged_images_are_withheld_refunded_and_audited_outside_nsfw_channels(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with open_stores(tmp_path, FLAG_ALL, tiny_model_dir) as stores:
        data_dir = stores.config.storage.data_dir
        inputs = upload(stores)
        assert inputs.image is not None
        withheld, spoilered, uploaded = await run_jobs(
            stores,
            (Options(prompt="a red barn", seed=1, count=2), MEMBER, Inputs()),
            (Options(prompt="a red barn", seed=1, count=2), IN_NSFW_CHANNEL, Inputs()),
            (Options(prompt="a red barn", seed=1, strength=0.5), MEMBER, inputs),
        )

        # Outside an age-restricted channel: blocked, with every image's scores.
        assert withheld.state is JobState.BLOCKED
        assert withheld.error is not None and "withheld by the image filter" in withheld.error
        assert withheld.moderation is not None
        assert withheld.moderation["policy"] == "block" and not withheld.moderation["charged"]
        verdicts = withheld.moderation["outputs"]
        assert [v["flagged"] for v in verdicts] == [True, True]
        assert all(set(v["scores"]) == set(EXPLICIT_LABELS) for v in verdicts)
        # Its files are deleted and no output row points at them; nothing is charged.
        assert withheld.outputs == []
        assert list((data_dir / "images" / withheld.id).glob("*.png")) == []
        assert await audit_actions(stores, withheld.id) == [
            ("job.queued", "ok"),
            ("quota.reserve", "ok"),
            ("job.running", "ok"),
            ("job.blocked", "blocked"),
            ("quota.refund", "ok"),
        ]

        # In an age-restricted channel set to "spoiler": shown, each image flagged.
        assert spoilered.state is JobState.SUCCEEDED
        assert [o.flags for o in spoilered.outputs] == [{"nsfw": True, "spoiler": True}] * 2
        assert all((data_dir / o.path).is_file() for o in spoilered.outputs)
        assert spoilered.moderation is not None and spoilered.moderation["policy"] == "spoiler"

        # A flagged upload stops its job before any GPU work; the upload is deleted.
        assert uploaded.state is JobState.BLOCKED
        assert uploaded.moderation is not None
        assert uploaded.moderation["inputs"]["init_image"]["flagged"] is True
        assert "outputs" not in uploaded.moderation
        assert uploaded.gpu_seconds == 0.0
        assert not (data_dir / inputs.image.path).exists()

        async with stores.sessions() as session:
            charged = (await session.scalars(select(UsageEntry.job_id))).all()
        assert charged == [spoilered.id]
        assert await stores.count(Reservation) == 0


async def test_keep_blocked_keeps_the_files_and_charge_blocked_charges(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    extra = FLAG_ALL + "keep_blocked = true\ncharge_blocked = true\n"
    async with open_stores(tmp_path, extra, tiny_model_dir) as stores:
        (job,) = await run_jobs(stores, (Options(prompt="a barn", seed=4), MEMBER, Inputs()))
        assert job.state is JobState.BLOCKED
        assert job.moderation is not None and job.moderation["charged"] is True
        (output,) = job.outputs
        assert output.flags == {"nsfw": True, "withheld": True}
        assert (stores.config.storage.data_dir / output.path).is_file()
        async with stores.sessions() as session:
            (entry,) = (await session.scalars(select(UsageEntry))).all()
        assert (entry.job_id, entry.images) == (job.id, 1)
        assert job.gpu_seconds is not None and entry.gpu_seconds == job.gpu_seconds > 0


async def test_an_ordinary_threshold_lets_a_plain_image_through(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with open_stores(tmp_path, QUOTA, tiny_model_dir) as stores:
        (job,) = await run_jobs(stores, (Options(prompt="a barn", seed=4), MEMBER, Inputs()))
        assert job.state is JobState.SUCCEEDED
        (output,) = job.outputs
        assert output.flags == {}
        assert job.moderation is not None
        (verdict,) = job.moderation["outputs"]
        assert verdict["flagged"] is False
        assert all(0.0 <= score < 0.5 for score in verdict["scores"].values())
        async with stores.sessions() as session:
            blocked = await session.scalar(
                select(AuditEntry).where(AuditEntry.action == "job.blocked")
            )
            assert blocked is None
            assert len((await session.scalars(select(Output))).all()) == 1
