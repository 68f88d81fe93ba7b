"""Members: bans, personal defaults, and forget-me."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.jobs.spec import JobSpec
from bot.store.audit import Actor, AuditEntry
from bot.store.commands import CommandStore, NewCommand
from bot.store.jobs import Requester
from bot.store.models import Job, JobState, Output, ReceivedCommand, UsageEntry, User, utcnow
from bot.store.users import REDACTED, Standing, UnfinishedJobs
from tests.stores import Stores, spec

DANA = Requester(user_id=444, user_name="dana", guild_id=10, channel_id=20)
ERIN = Requester(user_id=555, user_name="erin", guild_id=10, channel_id=20)
ADMIN = Actor(user_id=1, guild_id=10)


async def test_ban_reason_is_none_for_unknown_and_unbanned_members(stores: Stores) -> None:
    assert await stores.users.ban_reason(DANA.user_id) is None
    await stores.users.ban(DANA.user_id, "raids", ADMIN)
    assert await stores.users.ban_reason(DANA.user_id) == "raids"
    assert not await stores.users.unban(ERIN.user_id, ADMIN)


async def test_standing_reads_ban_pause_and_defaults_at_once(stores: Stores) -> None:
    users = stores.users
    assert await users.standing(DANA.user_id) == Standing(None, None, {})
    await users.set_defaults(DANA.user_id, "dana", {"private": True}, Actor(DANA.user_id))
    until = utcnow() + timedelta(minutes=5)
    await users.pause(DANA.user_id, until, "3 blocked prompts", ADMIN)
    assert await users.standing(DANA.user_id) == Standing(None, until, {"private": True})
    await users.pause(DANA.user_id, utcnow() - timedelta(seconds=1), "over", ADMIN)
    await users.ban(DANA.user_id, "", ADMIN)
    # A pause that has ended is no pause; a ban without a reason still says why.
    assert await users.standing(DANA.user_id) == Standing("banned", None, {"private": True})


async def test_personal_defaults_are_stored_and_replaced(stores: Stores) -> None:
    assert await stores.users.defaults(DANA.user_id) == {}
    mine = {
        "model": "tiny",
        "sampler": "Euler a",
        "aspect": "16:9",
        "steps": 20,
        "cfg": 6.5,
        "negative": "blurry",
    }
    await stores.users.set_defaults(DANA.user_id, "dana", mine, Actor(DANA.user_id))
    assert await stores.users.defaults(DANA.user_id) == mine
    await stores.users.set_defaults(DANA.user_id, "dana", {}, Actor(DANA.user_id))
    assert await stores.users.defaults(DANA.user_id) == {}


async def test_forget_me_deletes_images_prompts_and_defaults_and_keeps_totals(
    stores: Stores,
) -> None:
    data_dir = stores.config.storage.data_dir
    await stores.run_job("dana1", DANA, 2.0, count=2)
    await stores.run_job("erin1", ERIN, 1.0)
    for job_id, count in (("dana1", 2), ("erin1", 1)):
        for index in range(count):
            path = data_dir / "images" / job_id / f"{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"png")
    await stores.users.set_defaults(DANA.user_id, "dana", {"steps": 9}, Actor(DANA.user_id))

    forgotten = await stores.users.forget(DANA.user_id, Actor(DANA.user_id))

    assert (forgotten.jobs, forgotten.images) == (1, 2)
    assert not (data_dir / "images" / "dana1").exists()
    assert (data_dir / "images" / "erin1" / "0.png").exists()
    async with stores.sessions() as session:
        job = await session.get(Job, "dana1")
        assert job is not None
        assert (job.spec.prompt, job.spec.negative_prompt) == (REDACTED, REDACTED)
        assert job.user_id < 0  # the pseudonym
        assert await session.get(User, DANA.user_id) is None
        assert await session.scalar(select(func.count()).select_from(Output)) == 1  # Erin's
        total = await session.scalar(select(func.sum(UsageEntry.gpu_seconds)))
        assert total == pytest.approx(3.0)
        pseudonymous = await session.scalar(
            select(func.sum(UsageEntry.gpu_seconds)).where(UsageEntry.user_id == job.user_id)
        )
        assert pseudonymous == pytest.approx(2.0)
        mentions = (
            await session.scalars(
                select(AuditEntry).where(
                    (AuditEntry.actor_id == DANA.user_id)
                    | (AuditEntry.target == f"user:{DANA.user_id}")
                )
            )
        ).all()
    # Only the record that she asked to be forgotten still names her.
    assert [(e.action, e.params) for e in mentions] == [
        ("user.forget", {"jobs": 1, "images": 2, "inputs": 0, "shared_inputs": 0, "messages": 0})
    ]
    assert await stores.users.defaults(DANA.user_id) == {}


async def test_forget_me_waits_for_unfinished_jobs_and_a_ban_survives_it(stores: Stores) -> None:
    await stores.quotas.admit("queued", DANA, spec(), "tiny", [1])
    with pytest.raises(UnfinishedJobs, match="1 job"):
        await stores.users.forget(DANA.user_id, Actor(DANA.user_id))
    assert (await stores.jobs.get("queued")).spec.prompt == "a red fox"
    page = await stores.audit.query(action="user.forget")
    assert [e.outcome for e in page.entries] == ["refused"]

    await stores.jobs.transition("queued", JobState.QUEUED, JobState.CANCELLED, outcome="cancelled")
    await stores.users.ban(DANA.user_id, "raids", ADMIN)
    await stores.users.forget(DANA.user_id, ADMIN)
    assert await stores.users.ban_reason(DANA.user_id) == "raids"


async def test_forget_me_deletes_uploads_and_hands_back_the_result_messages(
    stores: Stores,
) -> None:
    data_dir = stores.config.storage.data_dir
    uploads = data_dir / "inputs" / "dana-upload"
    uploads.mkdir(parents=True)
    for name in ("image.png", "mask.png"):
        (uploads / name).write_bytes(b"png")
    theirs = data_dir / "images" / "erin1" / "0.png"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"png")
    await stores.run_job("erin1", ERIN, 1.0)
    inpaint = spec(
        init_image="inputs/dana-upload/image.png", mask_image="inputs/dana-upload/mask.png"
    )
    # A variation of Erin's image: its source is her output, which must stay.
    variation = spec(init_image="images/erin1/0.png")
    await stores.quotas.admit("dana1", DANA, inpaint, "tiny", [1])
    await stores.quotas.admit("dana2", DANA, variation, "tiny", [2])
    for job_id, message_id in (("dana1", 901), ("dana2", 902)):
        await stores.jobs.record_message(job_id, message_id)
        await stores.jobs.transition(job_id, JobState.QUEUED, JobState.CANCELLED, "cancelled")

    journal = CommandStore(stores.sessions)
    for interaction_id, user in ((71, DANA), (72, ERIN)):
        await journal.receive(
            NewCommand(
                interaction_id=interaction_id,
                command="imagine",
                user_id=user.user_id,
                user_name=user.user_name,
                guild_id=10,
                channel_id=20,
                token="t",
                options={"given": {"prompt": "my secret fox"}},
                role_ids=[],
                upload_limit=None,
            )
        )
        await journal.settle(interaction_id, "queued")

    forgotten = await stores.users.forget(DANA.user_id, Actor(DANA.user_id))

    async with stores.sessions() as session:
        kept = (await session.scalars(select(ReceivedCommand.user_id))).all()
    assert kept == [ERIN.user_id]  # her journal row, with what she typed, is gone
    assert forgotten.inputs == 2 and not uploads.exists()
    async with stores.sessions() as session:
        dana1 = await session.get(Job, "dana1")
        assert dana1 is not None and dana1.user_id == forgotten.pseudonym
    assert theirs.exists()
    assert sorted(forgotten.messages) == [(DANA.channel_id, 901), (DANA.channel_id, 902)]
    async with stores.sessions() as session:
        job = await session.get(Job, "dana1")
        assert job is not None and job.message_id is None


SHARED = "inputs/dana-upload/image.png"


@pytest.mark.parametrize(
    "reading",
    [spec(init_image=SHARED), spec(references=(SHARED,))],
    ids=["init_image", "references"],
)
async def test_forget_me_keeps_an_upload_another_members_job_uses_until_it_is_forgotten_too(
    stores: Stores, reading: JobSpec
) -> None:
    """An init image, or a reference image (a blend's, a --sref's copy of a result)."""
    upload = stores.config.storage.data_dir / SHARED
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"png")
    await stores.quotas.admit("dana1", DANA, reading, "tiny", [1])
    # Erin re-rolled Dana's result: her job's spec is a copy, upload path included.
    await stores.quotas.admit("erin1", ERIN, reading, "tiny", [2])
    for job_id in ("dana1", "erin1"):
        await stores.jobs.transition(job_id, JobState.QUEUED, JobState.CANCELLED, "cancelled")

    erin = await stores.users.forget(ERIN.user_id, Actor(ERIN.user_id))

    assert upload.exists()  # Dana's job still reads it
    assert (erin.inputs, erin.shared_inputs) == (0, 1)
    page = await stores.audit.query(action="user.forget")
    assert page.entries[0].params["shared_inputs"] == 1

    # Erin's job is forgotten: it holds the upload for nobody.
    dana = await stores.users.forget(DANA.user_id, Actor(DANA.user_id))
    assert (dana.inputs, dana.shared_inputs) == (1, 0)
    assert not upload.parent.exists()


async def test_a_timed_pause_is_stored_audited_and_survives_forget_me(stores: Stores) -> None:
    assert await stores.users.cooldown_until(DANA.user_id) is None
    until = utcnow() + timedelta(minutes=30)
    await stores.users.pause(DANA.user_id, until, "3 blocked prompts", Actor(None, 10))
    assert await stores.users.cooldown_until(DANA.user_id) == until
    await stores.users.forget(DANA.user_id, Actor(DANA.user_id))
    assert await stores.users.cooldown_until(DANA.user_id) is not None
    page = await stores.audit.query(action="user.cooldown")
    assert [e.params["reason"] for e in page.entries] == ["3 blocked prompts"]
    await stores.users.pause(ERIN.user_id, utcnow() - timedelta(seconds=1), "over", ADMIN)
    assert await stores.users.cooldown_until(ERIN.user_id) is None  # a pause in the past
