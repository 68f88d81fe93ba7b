"""Admission: the quota check and the reservation happen in one transaction."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from bot.quota import Limits
from bot.store.audit import Actor
from bot.store.commands import AlreadyHandled, CommandStore, NewCommand
from bot.store.jobs import NewJob, Requester
from bot.store.models import AuditEntry, Job, JobState, Lane, QuotaScope, Reservation
from bot.store.quotas import OverQuotaError, UserBanned
from tests.stores import Stores, spec

OpenStores = Callable[..., AbstractAsyncContextManager[Stores]]
ALICE_ID = 111
PATRON_ROLE = 500
ADMIN = Actor(user_id=1, guild_id=10, channel_id=20)
# 10 GPU seconds (the default estimate of a 512x512, 30-step image) cost 0.01.
BILLING = "[billing]\nprice_per_gpu_hour = 3.6\ncurrency = 'EUR'\n"


def alice(*role_ids: int) -> Requester:
    return Requester(
        user_id=ALICE_ID, user_name="alice", guild_id=10, channel_id=20, role_ids=role_ids
    )


@pytest.mark.parametrize(
    ("quota", "fits"),
    [
        ("images_per_day = 5", 5),
        ("jobs_queued = 3", 3),
        ("gpu_seconds_per_day = 35.0", 3),
        ("cost_per_day = 0.055", 5),
    ],
)
async def test_simultaneous_enqueues_never_overspend_a_tight_quota(
    stores_with: OpenStores, quota: str, fits: int
) -> None:
    async with stores_with(f"{BILLING}[quota]\n{quota}\n") as stores:
        # 20 commands at once, each in its own session and connection.
        results = await asyncio.gather(
            *(stores.quotas.admit(f"job{n}", alice(), spec(), "tiny", [n]) for n in range(20)),
            return_exceptions=True,
        )
        admitted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, OverQuotaError)]
        assert (len(admitted), len(refused)) == (fits, 20 - fits)
        assert await stores.count(Job) == fits
        assert await stores.count(Reservation) == fits
        assert await stores.count(AuditEntry, AuditEntry.action == "job.refused") == 20 - fits


async def test_over_quota_says_which_limit_what_is_left_and_when_it_resets(
    stores_with: OpenStores,
) -> None:
    async with stores_with("[quota]\nimages_per_day = 5\ntimezone = 'Europe/Paris'\n") as stores:
        await stores.quotas.admit("first", alice(), spec(count=4), "tiny", [1, 2, 3, 4])
        with pytest.raises(OverQuotaError) as refused:
            await stores.quotas.admit("second", alice(), spec(count=2), "tiny", [5, 6])
    over = refused.value.over
    assert over.limit == "daily limit of 5 images"
    assert over.left == "1 left today, this job needs 2"
    assert over.resets_at is not None
    local = over.resets_at.astimezone(stores.config.quota.zone)
    assert (local.hour, local.minute) == (0, 0)  # midnight in the configured zone
    assert refused.value.message == (
        "This would go over your daily limit of 5 images: 1 left today, this job needs 2."
        " It resets {until}."  # each door shows `resets_at` in its own format
    )


async def test_relax_mode_queues_over_quota_jobs_in_the_relax_lane(
    stores_with: OpenStores,
) -> None:
    quota = "[quota]\nimages_per_day = 1\njobs_queued = 3\nover_quota = 'relax'\n"
    async with stores_with(quota) as stores:
        lanes = [
            (await stores.quotas.admit(f"job{n}", alice(), spec(), "tiny", [n])).lane
            for n in range(3)
        ]
        assert lanes == [Lane.NORMAL, Lane.RELAX, Lane.RELAX]
        assert (await stores.jobs.get("job2")).lane is Lane.RELAX
        # The queued-jobs limit guards against floods: relax does not lift it.
        with pytest.raises(OverQuotaError, match="limit of 3 queued job"):
            await stores.quotas.admit("job3", alice(), spec(), "tiny", [3])


async def test_a_role_override_beats_the_default_and_a_user_override_beats_roles(
    stores_with: OpenStores,
) -> None:
    async with stores_with("[quota]\nimages_per_day = 1\njobs_queued = 2\n") as stores:
        quotas = stores.quotas
        await quotas.set_policy(QuotaScope.ROLE, PATRON_ROLE, Limits(images_per_day=50), ADMIN)
        assert (await quotas.status(ALICE_ID, [PATRON_ROLE])).limits == Limits(
            images_per_day=50, jobs_queued=2
        )
        await quotas.set_policy(QuotaScope.USER, ALICE_ID, Limits(images_per_day=3), ADMIN)
        assert (await quotas.status(ALICE_ID, [PATRON_ROLE])).limits.images_per_day == 3
        assert await quotas.policy(QuotaScope.USER, ALICE_ID) == Limits(images_per_day=3)
        assert await quotas.reset_policy(QuotaScope.USER, ALICE_ID, ADMIN)
        assert not await quotas.reset_policy(QuotaScope.USER, ALICE_ID, ADMIN)
        assert await quotas.policy(QuotaScope.USER, ALICE_ID) is None
        assert [p.subject_id for p in await quotas.policies()] == [PATRON_ROLE]
        # Alice's Patron role lets a 4-image job in; without it the default refuses.
        await quotas.admit("big", alice(PATRON_ROLE), spec(count=4), "tiny", [1, 2, 3, 4])
        with pytest.raises(OverQuotaError):
            await quotas.admit("small", alice(), spec(), "tiny", [5])
        page = await stores.audit.query(action="quota", limit=None)
        by_admin = [(e.action, e.target, e.outcome) for e in page.entries if e.actor_id == 1]
    assert by_admin == [
        ("quota.reset", f"user:{ALICE_ID}", "no-op"),
        ("quota.reset", f"user:{ALICE_ID}", "ok"),
        ("quota.set", f"user:{ALICE_ID}", "ok"),
        ("quota.set", f"role:{PATRON_ROLE}", "ok"),
    ]


async def test_the_estimate_scales_the_models_recent_gpu_time_by_pixels_steps_and_count(
    stores: Stores,
) -> None:
    first = await stores.quotas.admit("first", alice(), spec(), "tiny", [1])
    assert first.estimate.gpu_seconds == pytest.approx(10.0)  # the config default
    await stores.jobs.transition("first", JobState.QUEUED, JobState.RUNNING)
    await stores.jobs.succeed("first", 4.0, [])  # 512x512, 30 steps, 1 image took 4 s
    bigger = await stores.quotas.admit(
        "bigger", alice(), spec(count=2, width=1024, steps=15), "tiny", [1, 2]
    )
    assert bigger.estimate.gpu_seconds == pytest.approx(4.0 * 2 * 2 * 0.5)
    assert bigger.estimate.images == 2


async def test_a_banned_member_is_refused_politely_and_the_refusal_is_audited(
    stores: Stores,
) -> None:
    await stores.users.ban(ALICE_ID, "spamming the channel", ADMIN)
    assert await stores.users.ban_reason(ALICE_ID) == "spamming the channel"
    with pytest.raises(UserBanned) as refused:
        await stores.quotas.admit("job", alice(), spec(), "tiny", [1])
    assert refused.value.message == "You cannot use this bot here: spamming the channel"
    assert await stores.count(Job) == 0
    page = await stores.audit.query(user_id=ALICE_ID)
    assert [(e.action, e.outcome) for e in page.entries] == [
        ("job.refused", "banned"),
        ("user.ban", "ok"),
    ]
    assert await stores.users.unban(ALICE_ID, ADMIN)
    assert await stores.users.ban_reason(ALICE_ID) is None
    await stores.quotas.admit("job", alice(), spec(), "tiny", [1])


def jobs_of(*names: str, count: int = 1) -> list[NewJob]:
    return [NewJob(name, alice(), spec(count=count), "tiny", list(range(count))) for name in names]


async def test_the_jobs_of_one_command_are_admitted_together_or_not_at_all(
    stores_with: OpenStores,
) -> None:
    async with stores_with(f"{BILLING}[quota]\nimages_per_day = 5\n") as stores:
        two = await stores.quotas.admit_many(jobs_of("a", "b", count=2))
        assert [a.job.id for a in two] == ["a", "b"]
        assert [a.estimate.images for a in two] == [2, 2]
        # One image is left: the first of these two would fit, the pair does not.
        with pytest.raises(OverQuotaError, match="1 left today, this job needs 2") as refused:
            await stores.quotas.admit_many(jobs_of("c", "d"))
        assert "makes 2 jobs, queued together or not at all" in refused.value.message
        assert await stores.count(Job) == 2
        assert await stores.count(Reservation) == 2
        (refusal,) = (await stores.audit.query(action="job.refused")).entries
        assert refusal.params["jobs"] == 2


async def test_the_jobs_of_one_command_count_against_the_queued_jobs_limit_each(
    stores_with: OpenStores,
) -> None:
    relax = "[quota]\njobs_queued = 2\nimages_per_day = 1\nover_quota = 'relax'\n"
    async with stores_with(relax) as stores:
        with pytest.raises(OverQuotaError, match="limit of 2 queued job"):
            await stores.quotas.admit_many(jobs_of("a", "b", "c"))
        assert await stores.count(Job) == 0
        # Over the image limit, the second goes to the relax lane; both are queued.
        lanes = [a.lane for a in await stores.quotas.admit_many(jobs_of("a", "b"))]
        assert lanes == [Lane.NORMAL, Lane.RELAX]


async def test_a_journaled_command_of_several_jobs_settles_once(stores: Stores) -> None:
    commands = CommandStore(stores.sessions)
    await commands.receive(
        NewCommand(
            interaction_id=77,
            command="imagine",
            user_id=ALICE_ID,
            user_name="alice",
            guild_id=10,
            channel_id=20,
            token="t",
            options={},
        )
    )
    journaled = dataclasses.replace(alice(), command_id=77)
    new = [NewJob(name, journaled, spec(), "tiny", [1]) for name in ("x", "y")]
    await stores.quotas.admit_many(new)
    assert await commands.pending() == []
    with pytest.raises(AlreadyHandled):  # a replay after a crash queues nothing twice
        await stores.quotas.admit_many([NewJob(n, journaled, spec(), "tiny", [1]) for n in "zw"])
    assert await stores.count(Job) == 2
