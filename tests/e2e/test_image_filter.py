"""The image filter end to end: the real bot, the real engine running NudeNet's ONNX
detector on generated images, and the local Discord server with an age-restricted
channel. A threshold of 0 flags every image."""

from __future__ import annotations

import json

from tests.discord_server import InteractionHandle, Message

from .conftest import Launch
from .test_lifecycle import all_delivered

LOG_CHANNEL = 990_000_000_000_000_001
FLAG_ALL = f"""
[moderation]
image_threshold = 0.0
nsfw_channels = "spoiler"
log_channel_id = {LOG_CHANNEL}

[quota]
images_per_day = 20
"""


def withheld(message: Message) -> bool:
    return "withheld by the image filter" in message.content


async def test_flagged_images_are_never_shown_outside_age_restricted_channels(
    launch_bot: Launch,
) -> None:
    bot = await launch_bot(extra=FLAG_ALL)
    server = bot.server
    server.add_channel("mod-log", channel_id=LOG_CHANNEL)
    ix = await server.send_slash_command("imagine", {"prompt": "a red barn", "count": 2})
    queued = await ix.wait_for_original(lambda m: "queued" in m.content, timeout=10)
    job_id = queued.content.split("`")[1]

    answer = await ix.wait_for_original(withheld, timeout=120)
    assert answer.content == f"🚫 Job `{job_id}`: withheld by the image filter."
    assert not answer.embeds and not answer.components
    # Not one version of the reply ever carried an image: no result, no preview.
    assert all(not version.attachments for version in ix.edits)

    # The member hears why, privately, in one sentence.
    notice = await ix.wait_for_followup(lambda m: job_id in m.content, timeout=10)
    assert notice.ephemeral
    assert notice.content == (
        f"🚫 Job `{job_id}`: your images were withheld because this server's image filter"
        " flagged them as explicit; you were not charged."
    )
    # The admins' log channel hears of it, pinging nobody.
    logged = await server.wait_for_channel_message(
        lambda m: job_id in m.content, channel_id=LOG_CHANNEL, timeout=10
    )
    assert f"<@{server.user_id}>" in logged.content and "a red barn" in logged.content
    assert "threshold 0.0" in logged.content and not logged.attachments
    posts = server.requests_matching("POST", rf"/channels/{LOG_CHANNEL}/messages")
    assert isinstance(posts[0].body, dict)
    assert posts[0].body["allowed_mentions"] == {"parse": []}

    row = bot.job_row(job_id)
    assert row["state"] == "blocked"
    assert '"flagged": true' in str(row["moderation"])
    assert not list((bot.data_dir / "images" / job_id).glob("*.png"))
    assert bot.rows("select id from outputs where job_id = :id", id=job_id) == []
    assert bot.rows("select id from usage_ledger where job_id = :id", id=job_id) == []
    audit = bot.rows(
        "select action, outcome from audit_log where target = :id order by id", id=job_id
    )
    assert {"action": "job.blocked", "outcome": "blocked"} in audit
    assert {"action": "quota.refund", "outcome": "ok"} in audit


async def test_flagged_images_are_spoilered_in_an_age_restricted_channel_set_to_spoiler(
    launch_bot: Launch,
) -> None:
    bot = await launch_bot(extra=FLAG_ALL)
    server = bot.server
    server.add_channel("mod-log", channel_id=LOG_CHANNEL)
    after_dark = server.add_channel("after-dark", nsfw=True)
    ix = await server.send_slash_command(
        "imagine", {"prompt": "a red barn", "count": 2, "seed": 7}, channel_id=after_dark
    )
    queued = await ix.wait_for_original(lambda m: "queued" in m.content, timeout=10)
    job_id = queued.content.split("`")[1]
    result = await ix.wait_for_original(lambda m: bool(m.embeds), timeout=120)

    names = [attachment.filename for attachment in result.attachments]
    assert names == [
        "SPOILER_grid.jpg",
        f"SPOILER_atelier-{job_id}-1.png",
        f"SPOILER_atelier-{job_id}-2.png",
    ]
    # An embed's image would show the picture unspoilered: the embed has none.
    assert "image" not in result.embeds[0]
    assert bot.job_row(job_id)["state"] == "succeeded"
    flags = bot.rows('select flags from outputs where job_id = :id order by "index"', id=job_id)
    assert [json.loads(str(row["flags"])) for row in flags] == [{"nsfw": True, "spoiler": True}] * 2
    assert server.channel_messages(LOG_CHANNEL) == []


async def test_a_dm_never_gets_flagged_images_shown_in_an_age_restricted_channel(
    launch_bot: Launch,
) -> None:
    bot = await launch_bot(extra=FLAG_ALL.replace('"spoiler"', '"allow"'))
    server, member = bot.server, bot.server.user_id
    after_dark = server.add_channel("after-dark", nsfw=True)

    async def imagine(prompt: str, expire: bool = False, **options: object) -> InteractionHandle:
        ix = await server.send_slash_command(
            "imagine", {"prompt": prompt, **options}, channel_id=after_dark
        )
        await ix.wait_for_callback(timeout=10)
        if expire:  # the reply outlives its token: the answer goes elsewhere
            server.expire_interaction(ix)
        return ix

    async def job_id_of(ix: InteractionHandle) -> str:
        sql = "select id from jobs where interaction_id = :i"
        (row,) = await bot.wait_for_rows(sql, i=ix.id)
        return str(row["id"])

    # The age-restricted channel set to "allow" shows the flagged image as it is.
    shown = await imagine("a red barn", seed=1)
    result = await shown.wait_for_original(lambda m: bool(m.embeds), timeout=120)
    assert [a.filename for a in result.attachments] == [f"atelier-{await job_id_of(shown)}-1.png"]

    # Asked for by DM, the job is answered in its reply instead: never in the DM.
    await (await server.send_slash_command("settings", {"delivery": "dm"})).wait_for_callback()
    preferred = await imagine("a blue barn", seed=2)
    result = await preferred.wait_for_original(lambda m: bool(m.embeds), timeout=120)
    assert len(result.attachments) == 1
    await (await server.send_slash_command("settings", {"clear": True})).wait_for_callback()

    # A private reply whose token expired, and a channel the bot may no longer post in,
    # fall back to a DM: it says the images were withheld, and shows none of them.
    lapsed = await imagine("a green barn", expire=True, seed=3, private=True)
    missing_access = {"message": "Missing Access", "code": 50001}
    server.inject("POST", rf"/channels/{after_dark}/messages", 403, missing_access)
    walled = await imagine("a grey barn", expire=True, seed=4)
    jobs = [await job_id_of(lapsed), await job_id_of(walled)]
    await all_delivered(bot, 4)
    messages = server.dm_messages(member)
    assert sorted(m.content for m in messages) == sorted(
        f"🚫 Job `{job}`: its images were flagged by the image filter and are never sent by"
        " direct message; ask for them in an age-restricted channel instead."
        for job in jobs
    )
    assert not any(m.attachments or m.embeds or m.components for m in messages)
    for job in jobs:
        assert bot.job_row(job)["state"] == "succeeded"
        (delivered,) = bot.rows(
            "select params from audit_log where action = 'job.delivered' and target = :id", id=job
        )
        assert '"how": "dm-withheld"' in str(delivered["params"])
