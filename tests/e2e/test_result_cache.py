"""The result cache end to end from Discord: a member's repeat of a seeded /imagine is
answered from their earlier job's images, marked "from cache", free and audited; the same
request sent while the first still runs shares its one run on the engine."""

from __future__ import annotations

from tests.discord_server import InteractionHandle, Message

from .conftest import RunningBot
from .test_imagine import finished
from .test_lifecycle import imagine, pixels

# Enough steps that a second command sent at once finds the first still on the engine.
REQUEST = {"count": 2, "seed": 31, "steps": 8}
PROMPT = "a lighthouse at dusk"


def job_of(message: Message) -> str:
    """The job a result shows, by its first image's name (atelier-<job>-1.png)."""
    return message.attachments[1].filename.removeprefix("atelier-").removesuffix("-1.png")


def fields_of(message: Message) -> dict[str, str]:
    return {field["name"]: field["value"] for field in message.embeds[0]["fields"]}


def engine_runs(bot: RunningBot) -> list[str]:
    """The jobs the engine ran: each run is a job.running entry in the audit log."""
    rows = bot.rows("select target from audit_log where action = 'job.running'")
    return [str(row["target"]) for row in rows]


def ledger(bot: RunningBot) -> list[str]:
    return [str(row["job_id"]) for row in bot.rows("select job_id from usage_ledger")]


def assert_answered_from(bot: RunningBot, result: Message, source: str) -> str:
    """The result is a job of its own, answered from `source`: marked so in its embed,
    no GPU time, audited as job.cached; its id."""
    job_id = job_of(result)
    assert job_id != source
    assert fields_of(result)["From cache"] == f"the images of job `{source}`; free"
    assert result.embeds[0]["footer"]["text"] == f"job {job_id} · from cache (job {source})"
    row = bot.job_row(job_id)
    assert (row["state"], row["cached_from"], row["gpu_seconds"]) == ("succeeded", source, 0)
    (audited,) = bot.rows(
        "select target from audit_log where action = 'job.cached' and target = :id", id=job_id
    )
    assert audited == {"target": job_id}
    return job_id


async def test_a_repeated_seeded_imagine_is_answered_from_the_cache(
    running_bot: RunningBot,
) -> None:
    first = await (await imagine(running_bot, PROMPT, **REQUEST)).wait_for_original(
        finished, timeout=240
    )
    source = job_of(first)
    again = await imagine(running_bot, PROMPT, **REQUEST)
    result = await again.wait_for_original(finished, timeout=30)
    # Answered at once: the deferral became the result, with no queued line before it.
    assert not any("queued" in edit.content for edit in again.edits)
    assert_answered_from(running_bot, result, source)
    assert pixels(result) == pixels(first) and len(pixels(result)) == 2
    assert engine_runs(running_bot) == [source]
    assert ledger(running_bot) == [source]  # the repeat was charged nothing


async def test_the_same_imagine_sent_twice_at_once_runs_once_on_the_engine(
    running_bot: RunningBot,
) -> None:
    handles: list[InteractionHandle] = [
        await imagine(running_bot, PROMPT, **REQUEST),
        await imagine(running_bot, PROMPT, **REQUEST),
    ]
    first, second = [await ix.wait_for_original(finished, timeout=240) for ix in handles]
    source = job_of(first)
    # The second waited in the queue for the first, then was answered from its images.
    assert any("queued" in edit.content for edit in handles[1].edits)
    assert_answered_from(running_bot, second, source)
    assert pixels(second) == pixels(first) and len(pixels(first)) == 2
    assert engine_runs(running_bot) == [source]
    assert ledger(running_bot) == [source]
    assert running_bot.rows("select * from quota_reservations") == []
