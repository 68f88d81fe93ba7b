"""The job lifecycle end to end: fair order, crashes, a locked database, Discord failures."""

from __future__ import annotations

import asyncio
import io
import json
import re
import sqlite3

import psutil
import pytest
from PIL import Image

from tests.discord_server import InteractionHandle, Message

from .conftest import CRASH_FAULT, Launch, RunningBot
from .test_imagine import finished

WEBHOOK_MESSAGES = r"^/webhooks/\d+/[^/]+/messages/"
# Jobs of 50 steps (a preview at each), long enough to be cut off mid-run, may take
# minutes on a busy machine: their attempts must not end by the engine timeout instead.
LONG_JOBS = "job_timeout = 900"


async def imagine(
    bot: RunningBot, prompt: str, user_id: int | None = None, **options: object
) -> InteractionHandle:
    ix = await bot.server.send_slash_command(
        "imagine", {"prompt": prompt, **options}, user_id=user_id
    )
    assert (await ix.wait_for_callback(timeout=3)).type == 5  # deferred
    return ix


def on_the_engine(message: Message) -> bool:
    """A progress edit ("step 3/150"), not the queued reply (which names the step count)."""
    return re.search(r"step \d+/\d+", message.content) is not None


def delivered_once(bot: RunningBot) -> None:
    """Every job is finished, delivered and audited as delivered exactly once, and
    each succeeded job is charged exactly once."""
    jobs = bot.rows("select id, state, delivered_at from jobs")
    assert jobs and all(job["delivered_at"] is not None for job in jobs), jobs
    delivered = bot.rows("select target from audit_log where action = 'job.delivered'")
    assert sorted(row["target"] for row in delivered) == sorted(job["id"] for job in jobs)
    succeeded = sorted(job["id"] for job in jobs if job["state"] == "succeeded")
    charged = bot.rows("select job_id from usage_ledger")
    assert sorted(row["job_id"] for row in charged) == succeeded
    assert bot.rows("select * from quota_reservations") == []


async def rows_soon(bot: RunningBot, sql: str) -> list[dict[str, object]]:
    """The query's rows once there are any, polled for up to 3 minutes (an engine's
    first start, with its model load, can take most of a minute on a busy machine)."""
    for _ in range(180 * 4):
        if found := bot.rows(sql):
            return found
        await asyncio.sleep(0.25)
    raise AssertionError(f"no rows for {sql!r}: {bot.rows('select * from jobs')}")


async def all_delivered(bot: RunningBot, count: int) -> None:
    for _ in range(180 * 4):
        rows = bot.rows("select count(*) as n from jobs where delivered_at is not null")
        if rows[0]["n"] >= count:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not all {count} jobs delivered: {bot.rows('select * from jobs')}")


def results(bot: RunningBot) -> list[Message]:
    """The visible result messages, in the channel (replies edited into results included)."""
    return [m for m in bot.server.channel_messages() if "images are ready" in m.content]


async def test_a_second_members_job_waits_behind_at_most_one_of_the_firsts(
    launch_bot: Launch,
) -> None:
    bot = await launch_bot(extra="[quota]\njobs_queued = 20\n[moderation]\nmember_burst = 0")
    member_b = bot.server.add_member(name="b")
    # The first job is slow enough to still run while the others arrive.
    for n in range(10):
        await imagine(bot, f"flood {n}", seed=n, steps=30 if n == 0 else 4)
    await imagine(bot, "just one", user_id=member_b, seed=99)
    await all_delivered(bot, 11)
    order = bot.rows("select user_id from jobs order by started_at, id")
    assert member_b in [row["user_id"] for row in order[:2]]
    delivered_once(bot)


async def test_commands_acknowledged_before_a_kill_are_completed_after_the_restart(
    running_bot: RunningBot,
) -> None:
    handles = [await imagine(running_bot, f"kept {n}", seed=n) for n in range(3)]
    await running_bot.kill()  # right after Discord saw the deferrals
    await running_bot.start()
    await all_delivered(running_bot, 3)
    delivered_once(running_bot)
    assert len(running_bot.rows("select id from jobs")) == 3
    for handle in handles:  # each member's own "thinking" reply became the result
        assert handle.original is not None and handle.original.embeds
    assert len(results(running_bot)) == 3


async def test_a_job_cut_off_by_a_kill_runs_again_and_is_delivered_once(
    launch_bot: Launch,
) -> None:
    running_bot = await launch_bot(engine=LONG_JOBS)
    ix = await imagine(running_bot, "interrupted", seed=5, steps=50)
    await ix.wait_for_original(on_the_engine, timeout=60)
    await running_bot.kill()  # while the job runs on the engine
    await running_bot.start()
    await all_delivered(running_bot, 1)
    delivered_once(running_bot)
    (job,) = running_bot.rows("select state, attempts from jobs")
    assert job == {"state": "succeeded", "attempts": 2}


async def shown_on_the_engine(ix: InteractionHandle, after: int) -> None:
    """Until a version of the reply after the first `after` shows a denoising step."""
    for _ in range(180 * 4):
        if any(on_the_engine(message) for message in ix.edits[after:]):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"no step shown after version {after}: {ix.edits[after:]}")


@pytest.mark.timeout(900)  # four starts of the bot and its engine, on a slow CPU
async def test_three_graceful_stops_mid_job_requeue_it_uncounted_and_it_is_delivered_once(
    launch_bot: Launch,
) -> None:
    # The engine holds the job at its third step, so every stop arrives while it runs
    # however slow or fast the machine is; the last start lets it finish.
    bot = await launch_bot(
        engine=LONG_JOBS,
        extra="[queue]\nstop_grace_seconds = 0",
        fault=f"{CRASH_FAULT};hang_at_step=3@patient",
    )
    ix = await imagine(bot, "patient through restarts", seed=13, steps=30)
    for start in range(3):  # e.g. `systemctl restart`, three times while the job runs
        await shown_on_the_engine(ix, len(ix.edits))
        assert await bot.stop() == 0, bot.log.read_text(errors="replace")
        (job,) = bot.rows("select state, attempts from jobs")
        assert job == {"state": "queued", "attempts": 0}
        if start == 2:
            bot.fault = CRASH_FAULT
        await bot.start()
    assert (await ix.wait_for_original(finished, timeout=240)).embeds
    await all_delivered(bot, 1)
    delivered_once(bot)
    (job,) = bot.rows("select state, attempts from jobs")
    assert job == {"state": "succeeded", "attempts": 1}
    requeued = bot.rows(
        "select id from audit_log where action = 'job.queued' and outcome = 'requeued'"
    )
    assert len(requeued) == 3


async def test_a_finished_job_not_yet_delivered_is_delivered_after_a_kill(
    running_bot: RunningBot,
) -> None:
    server = running_bot.server
    outage = server.inject("PATCH", WEBHOOK_MESSAGES, 503, {"message": "down"}, times=10_000)
    await imagine(running_bot, "finished in the dark", seed=6)
    await rows_soon(running_bot, "select id from jobs where state = 'succeeded'")
    assert running_bot.rows("select delivered_at from jobs") == [{"delivered_at": None}]
    await running_bot.kill()  # after the engine finished, before Discord took the result
    outage.remaining = 0
    await running_bot.start()
    await all_delivered(running_bot, 1)
    delivered_once(running_bot)
    assert len(results(running_bot)) == 1


async def test_an_engine_killed_mid_job_is_restarted_and_the_job_retried(
    launch_bot: Launch,
) -> None:
    running_bot = await launch_bot(engine=LONG_JOBS)
    ix = await imagine(running_bot, "survivor", seed=7, steps=50)
    await ix.wait_for_original(on_the_engine, timeout=60)
    assert running_bot.process is not None
    (engine,) = [
        child
        for child in psutil.Process(running_bot.process.pid).children()
        if "engine" in child.cmdline()
    ]
    engine.kill()
    result = await ix.wait_for_original(finished, timeout=180)
    assert result.embeds, result.content
    await all_delivered(running_bot, 1)  # recorded just after Discord took the result
    (job,) = running_bot.rows("select state, attempts from jobs")
    assert job == {"state": "succeeded", "attempts": 2}
    delivered_once(running_bot)


async def test_a_job_that_kills_the_engine_twice_is_failed_refunded_and_audited(
    running_bot: RunningBot,
) -> None:
    ix = await imagine(running_bot, "[crash] a poisoned prompt", seed=8)
    result = await ix.wait_for_original(finished, timeout=180)
    assert "failed" in result.content and "not retried" in result.content
    (job,) = running_bot.rows("select id, state, attempts from jobs")
    assert (job["state"], job["attempts"]) == ("failed", 2)
    # The registry's 🔁 Try again is the one button under a failed job.
    assert result.custom_ids == [f"atelier:recreate:{job['id']}"]
    trail = running_bot.rows(
        "select action, outcome from audit_log where target = :id order by id", id=job["id"]
    )
    actions = [row["action"] for row in trail]
    assert actions.count("job.running") == 2 and "job.queued" in actions[1:]
    assert "quota.refund" in actions
    await all_delivered(running_bot, 1)
    delivered_once(running_bot)
    # The next job still runs.
    after = await imagine(running_bot, "a calm one", seed=9)
    assert (await after.wait_for_original(finished, timeout=180)).embeds


@pytest.mark.sqlite_only  # another program holding SQLite's one write lock
async def test_a_database_locked_for_six_seconds_does_not_lose_a_finishing_job(
    running_bot: RunningBot,
) -> None:
    ix = await imagine(running_bot, "patient", seed=10, steps=20)
    await ix.wait_for_original(on_the_engine, timeout=60)
    holder = sqlite3.connect(running_bot.data_dir / "atelier.db", timeout=30)
    try:
        holder.execute("begin exclusive")
        await asyncio.sleep(6)  # the job finishes meanwhile and must wait for the lock
    finally:
        holder.rollback()
        holder.close()
    result = await ix.wait_for_original(finished, timeout=120)
    assert result.embeds
    await all_delivered(running_bot, 1)
    delivered_once(running_bot)


async def test_discord_errors_and_rate_limits_never_fail_a_job(running_bot: RunningBot) -> None:
    server = running_bot.server
    server.inject("PATCH", WEBHOOK_MESSAGES, 500, {"message": "oops", "code": 0}, times=6)
    server.inject_rate_limit("PATCH", WEBHOOK_MESSAGES, retry_after=0.3, times=2)
    ix = await imagine(running_bot, "weathered", seed=11, steps=8)
    result = await ix.wait_for_original(finished, timeout=240)
    assert result.embeds, result.content
    await all_delivered(running_bot, 1)
    delivered_once(running_bot)
    assert "cancelled" not in running_bot.log.read_text()  # the engine was never told to stop


async def test_a_result_over_the_upload_limit_arrives_in_full_within_it(
    launch_bot: Launch,
) -> None:
    limit = 96 * 1024  # room for a few 64x64 noise PNGs per message, not all of them
    bot = await launch_bot(upload_limit=limit)
    ix: InteractionHandle = await imagine(bot, "many", seed=12, count=4)
    result = await ix.wait_for_original(finished, timeout=180)
    await all_delivered(bot, 1)
    (job,) = bot.rows("select id from jobs")
    job_id = job["id"]
    names: list[str] = []
    for message in [result, *bot.server.channel_messages()]:
        names += [a.filename for a in message.attachments if a.filename.endswith(".png")]
        assert sum(len(a.data) for a in message.attachments) <= limit
    assert sorted(set(names)) == [f"atelier-{job_id}-{n}.png" for n in range(1, 5)]
    for attachment in result.attachments:
        Image.open(io.BytesIO(attachment.data)).verify()
    assert not [r for r in bot.server.requests if r.status == 413]


def pixels(message: Message) -> list[bytes]:
    return [
        Image.open(io.BytesIO(a.data)).convert("RGB").tobytes()
        for a in message.attachments
        if a.filename.endswith(".png")
    ]


async def test_compatible_jobs_of_two_members_run_as_one_batch(launch_bot: Launch) -> None:
    # The cache off: the batched job is asked for again alone, to run and be compared.
    bot = await launch_bot(engine="max_batch_images = 4", extra="[cache]\nenabled = false")
    member_b = bot.server.add_member(name="b")
    # A slow job of its own kind holds the engine while the four compatible ones queue.
    blocker = await imagine(bot, "blocker", seed=1, steps=30)
    await blocker.wait_for_original(on_the_engine, timeout=120)
    batch = [
        await imagine(bot, f"fox {n}", user_id=member_b if n % 2 else None, seed=10 + n)
        for n in range(4)
    ]
    results_ = [await ix.wait_for_original(finished, timeout=240) for ix in batch]
    # The spec as text on both databases (PostgreSQL's driver would decode its json).
    rows = bot.rows(
        "select id, cast(spec as text) as spec, batch_id from jobs"
        " where cast(spec as text) like '%fox%'"
    )
    assert len({row["batch_id"] for row in rows}) == 1 and rows[0]["batch_id"]
    job_of = {json.loads(str(row["spec"]))["prompt"]: row["id"] for row in rows}
    for n, result in enumerate(results_):  # each member sees only their own job's image
        job_id = job_of[f"fox {n}"]
        assert [a.filename for a in result.attachments] == [f"atelier-{job_id}-1.png"]
    # Alone, the same prompt and seed make the same pixels (within 1/255 per channel).
    alone = await imagine(bot, "fox 0", seed=10)
    single = await alone.wait_for_original(finished, timeout=240)
    assert "GPU s" in single.embeds[0]["footer"]["text"]  # run again, not from the cache
    (batched_pixels,), (single_pixels,) = pixels(results_[0]), pixels(single)
    assert max(abs(a - b) for a, b in zip(batched_pixels, single_pixels, strict=True)) <= 1
