"""Bad things thrown at the running bot through the local Discord-compatible server.

Each is answered with a clear private message, leaves an audit entry, shows the
member no traceback or path, and the next normal job still succeeds. One bot per
test function (the tiny model takes a while to load), many cases in each.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.discord_server import InteractionHandle, Message

from .conftest import Launch, RunningBot
from .test_imagine import finished

# What must never reach a member: exception text, stack frames, file system paths.
INTERNALS = re.compile(
    r"Traceback|File \"|Errno|Exception|Error\b|\.py\b|/tmp/|/root/|/home/|/srv/|site-packages"
)
NO_LIMITS = """
[moderation]
blocklist = ["gore"]
member_burst = 0
guild_burst = 0
strikes = 0

[styles.grim]
prompt = "{prompt}, gore everywhere"
"""
LOG_CHANNEL = 777_000_000_000_000_001
STUDIO = 777_000_000_000_000_002
LIMITS = f"""
[moderation]
blocklist = ["gore"]
log_channel_id = {LOG_CHANNEL}
member_burst = 5
member_per_minute = 10
strikes = 3
strike_window_minutes = 10
strike_cooldown_minutes = 30
"""


def image_bytes(image: Image.Image, image_format: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png(size: tuple[int, int] = (64, 64), colour: str = "red") -> bytes:
    return image_bytes(Image.new("RGB", size, colour))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb(side: int = 60000, depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG that declares side x side pixels (RGB unless told) in a few KB (the start of
    its zeros)."""
    header = struct.pack(">IIBBBBB", side, side, depth, colour_type, 0, 0, 0)
    zeros = zlib.compress(b"\0" * (3 * side + 1) * 8, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zeros)
        + (png_chunk(b"IEND", b""))
    )


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue")]
    return image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


def sixteen_bit_png() -> bytes:
    """A 16-bit greyscale gradient, dark to mid-grey (a naive conversion makes it white)."""
    ramp = np.tile(np.linspace(0, 30000, 64, dtype=np.uint16), (64, 1))
    return image_bytes(Image.fromarray(ramp))


def attached(name: str, data: bytes, content_type: str) -> dict[str, tuple[str, bytes, str]]:
    return {"image": (name, data, content_type)}


def seen_by_member(ix: InteractionHandle) -> list[str]:
    """Every text the member was shown for this interaction: the answer, edits, follow-ups."""
    texts = []
    if ix.callback is not None and ix.callback.data:
        texts.append(str(ix.callback.data.get("content", "")))
    for message in [*ix.edits, *ix.followups]:
        texts.append(message.content)
        texts += [str(embed) for embed in message.embeds]
    return texts


def shows_nothing_internal(ix: InteractionHandle, data_dir: Path) -> None:
    for text in seen_by_member(ix):
        assert INTERNALS.search(text) is None, text
        assert str(data_dir) not in text, text


async def private_answer(ix: InteractionHandle) -> str:
    """The refusal the member alone sees: the ephemeral answer (before the deferral) or the
    ephemeral follow-up (after it, with the public "thinking" reply removed)."""
    callback = await ix.wait_for_callback(timeout=3)
    if callback.type == 4:
        assert callback.data["flags"] & 64, callback.data
        return str(callback.data["content"])
    refusal = await ix.wait_for_followup(lambda m: "⚠️" in m.content, timeout=30)
    assert refusal.ephemeral, refusal
    assert ix.original is None or ix.original.deleted or ix.original.ephemeral
    return refusal.content


async def refusals_of(bot: RunningBot, user_id: int, count: int) -> None:
    """Wait until `count` refusals of the member are audited."""
    for _ in range(200):
        rows = bot.rows(
            "select count(*) as n from audit_log where actor_id = :user"
            " and action like '%.refused'",
            user=user_id,
        )
        if rows[0]["n"] >= count:
            assert rows[0]["n"] == count, rows
            return
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"{count} refusals of {user_id} not audited: {bot.rows('select * from audit_log')}"
    )


async def succeeds(ix: InteractionHandle) -> Message:
    result = await ix.wait_for_original(finished, timeout=180)
    assert result.embeds, result.content
    return result


async def test_hostile_files_and_prompts_are_refused_privately_and_audited(
    launch_bot: Launch,
) -> None:
    bot = await launch_bot(extra=NO_LIMITS)
    server, member = bot.server, bot.server.user_id
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    jpeg = image_bytes(Image.fromarray(noise), "JPEG", quality=95)
    cases: list[tuple[str, dict[str, object], dict[str, tuple[str, bytes, str]], str]] = [
        (
            "a 60000x60000 PNG of a few KB",
            {},
            attached("bomb.png", decompression_bomb(), "image/png"),
            "is 60000×60000 pixels; the limit is 4096 pixels a side",
        ),
        (
            "a 16-bit RGBA 4096x4096 PNG of a few KB",
            {},
            attached("deep.png", decompression_bomb(4096, 16, 6), "image/png"),
            "is a 16-bit 4096×4096 image, more than I can read; save it with 8 bits per channel"
            " or at most 2896×2896 pixels.",
        ),
        (
            "a 30 MB file",
            {},
            attached("huge.png", png() + bytes(30 * 2**20), "image/png"),
            "attachment is 30.0 MB; the limit is 20 MB",
        ),
        (
            "a text file named .png",
            {},
            attached("notes.png", b"hello, world\n" * 40, "image/png"),
            "is not an image; please attach a PNG, JPEG, WebP or GIF image",
        ),
        (
            "a PDF",
            {},
            attached(
                "paper.pdf",
                b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
                "application/pdf",
            ),
            "is not an image",
        ),
        (
            "an SVG",
            {},
            attached(
                "logo.svg",
                b'<svg xmlns="http://www.w3.org/2000/svg" width="64"'
                b' height="64"><rect width="64" height="64"/></svg>',
                "image/svg+xml",
            ),
            "is not an image",
        ),
        (
            "a truncated JPEG",
            {},
            attached("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"),
            "is damaged or cut short",
        ),
        (
            "a 1x1 image",
            {},
            attached("dot.png", png((1, 1)), "image/png"),
            "is 1×1 pixels; each side must be at least 16 pixels",
        ),
        (
            "a TIFF",
            {},
            attached("scan.tiff", image_bytes(Image.new("RGB", (64, 64)), "TIFF"), "image/tiff"),
            "is not an image",
        ),
        (
            "an all-black mask",
            {},
            {
                "image": ("photo.png", png(), "image/png"),
                "mask": ("mask.png", png(colour="black"), "image/png"),
            },
            "The `mask` has no white in it",
        ),
        (
            "a mask without an image",
            {},
            {"mask": ("mask.png", png(colour="white"), "image/png")},
            "A `mask` needs the `image` it applies to",
        ),
        (
            "a 100 000-character prompt",
            {"prompt": "a fox " * 16_667},
            {},
            "characters; the limit is 1,500",
        ),
        ("an empty prompt", {"prompt": " \u200b\t "}, {}, "The prompt is empty"),
        ("an empty prompt but flags", {"prompt": "--ar 16:9 --seed 4"}, {}, "The prompt is empty"),
    ]
    disguises = [
        "g o r e",
        "g0re",
        "g.o.r.e",
        "gorë",
        "gоre",
        "g\u200bore",
        "GORE",
        "gor e",
        "g*o*r*e",
        "ｇｏｒｅ",
        "g-o-r-e",
        "gooooore",
    ]
    cases += [
        (
            f"blocked term hidden as {text!r}",
            {"prompt": f"a {text} scene"},
            {},
            "Your prompt contains `gore`, which this server does not allow.",
        )
        for text in disguises
    ]
    cases.append(
        (
            "blocked term in the negative",
            {"prompt": "a field", "negative": "g 0 r e"},
            {},
            "Your negative prompt contains `gore`",
        )
    )
    for number, (what, options, attachments, expected) in enumerate(cases, start=1):
        ix = await server.send_slash_command(
            "imagine", {"prompt": "a fox", **options}, attachments=attachments
        )
        text = await private_answer(ix)
        assert expected in text, (what, text)
        await refusals_of(bot, member, number)
        shows_nothing_internal(ix, bot.data_dir)
    blocked = bot.rows("select params from audit_log where action = 'moderation.blocked'")
    assert len(blocked) == len(disguises) + 1  # each disguise, and the negative, audited
    # Nothing anyone else sees names a blocked term; no job was made for any of it.
    public = " ".join(m.content for m in server.channel_messages())
    assert "gore" not in public.casefold()
    assert bot.rows("select count(*) as n from jobs") == [{"n": 0}]

    # Innocent look-alikes pass, and odd but valid images are used, each as it should be.
    innocent = await server.send_slash_command("imagine", {"prompt": "a gorgeous Gorey nudibranch"})
    gif = await server.send_slash_command(
        "imagine",
        {"prompt": "a fox", "strength": 0.5},
        attachments=attached("moving.gif", animated_gif(), "image/gif"),
    )
    cmyk = await server.send_slash_command(
        "imagine",
        {"prompt": "a fox", "strength": 0.5},
        attachments=attached(
            "print.jpg",
            image_bytes(Image.new("CMYK", (64, 64), (0, 200, 200, 0)), "JPEG"),
            "image/jpeg",
        ),
    )
    deep = await server.send_slash_command(
        "imagine",
        {"prompt": "a fox", "strength": 0.5},
        attachments=attached("deep.png", sixteen_bit_png(), "image/png"),
    )
    for ix in (innocent, gif, cmyk, deep):
        await succeeds(ix)
        shows_nothing_internal(ix, bot.data_dir)
    notice = await gif.wait_for_followup(lambda m: "first frame" in m.content, timeout=10)
    assert notice.ephemeral and "animated" in notice.content
    saved = {
        row["id"]: row["spec"]
        for row in bot.rows("select id, json_extract(spec, '$.init_image') as spec from jobs")
    }
    inputs = [bot.data_dir / path for path in saved.values() if path]
    assert len(inputs) == 3 and all(path.is_file() for path in inputs)
    grey = [np.asarray(Image.open(path).convert("L")) for path in inputs]
    assert any(10 < image.mean() < 100 and image.std() > 5 for image in grey)  # 16-bit kept
    red = [np.asarray(Image.open(path).convert("RGB")).mean(axis=(0, 1)) for path in inputs]
    assert any(r > 150 and g < 120 for r, g, _ in red)  # CMYK (0, 200, 200, 0) read as red

    # Every other text a job uses is screened too, against today's list: a style's words,
    # the member's own default negative prompt, and the prompt behind a V/U button.
    styled = await server.send_slash_command("imagine", {"prompt": "a fox --style grim"})
    assert "The style you chose adds `gore`" in await private_answer(styled)
    defaults = await server.send_slash_command("defaults", {"negative": "lowres"})
    assert "lowres" in (await defaults.wait_for_callback(timeout=3)).data["content"]
    for term in ("lowres", "nudibranch"):
        add = await server.send_slash_command(
            "admin blocklist add", {"term": term}, user_id=server.owner_id
        )
        assert (
            "are refused in this server" in (await add.wait_for_callback(timeout=3)).data["content"]
        )
    own = await server.send_slash_command("imagine", {"prompt": "a fox"})
    assert "Your own default negative prompt contains `lowres`" in await private_answer(own)
    source = innocent.original
    assert source is not None
    (innocent_job,) = bot.rows("select id from jobs where spec like '%nudibranch%'")
    click = await server.click_button(source, f"atelier:v:{innocent_job['id']}:1")
    assert (
        "The prompt of that image contains `nudibranch`, which this server no longer allows."
        in (await private_answer(click))
    )
    wheres = [
        row["w"]
        for row in bot.rows(
            "select json_extract(params, '$.where') as w from audit_log"
            " where action = 'moderation.blocked' order by id desc limit 3"
        )
    ]
    assert wheres == ["source", "defaults", "style"]
    listing = await server.send_slash_command("admin blocklist list", user_id=server.owner_id)
    listed = (await listing.wait_for_callback(timeout=3)).data["content"]
    assert "gore" in listed and "config file" in listed and "nudibranch" in listed
    assert bot.rows("select count(*) as n from jobs") == [{"n": 4}]

    # forget-me takes the uploads and the bot's result messages with it, and says so.
    results = [ix.original_message_id for ix in (innocent, gif, cmyk, deep)]
    await bot.wait_for_rows("select n from (select count(delivered_at) as n from jobs) where n = 4")
    ask = await server.send_slash_command("forget-me")
    prompt = await ask.wait_for_original(timeout=5)
    (button,) = prompt.custom_ids
    confirm = await server.click_button(prompt, button)
    await confirm.wait_for_callback(timeout=3)
    done = await ask.wait_for_original(lambda m: "Done" in m.content, timeout=30)
    assert "4 image(s) deleted, with 3 image(s) you uploaded" in done.content
    assert "4 of my message(s)" in done.content
    assert not any(path.exists() for path in inputs)
    for message_id in results:
        assert message_id is not None
        latest = server.message(message_id)
        assert latest is not None and latest.deleted
    audit = bot.rows("select actor_id, params from audit_log where action = 'forget-me.messages'")
    assert audit and '"deleted": 4' in str(audit[0]["params"])
    assert audit[0]["actor_id"] != member  # recorded under the pseudonym
    assert bot.rows(
        "select count(*) as n from audit_log where actor_id = :m and action not in ('user.forget')",
        m=member,
    ) == [{"n": 0}]


async def test_floods_pauses_bans_quotas_and_other_members_jobs(launch_bot: Launch) -> None:
    bot = await launch_bot(extra=LIMITS, discord=f"allowed_channel_ids = [{STUDIO}]")
    server = bot.server
    server.add_channel("studio", channel_id=STUDIO)
    server.add_channel("mod-log", channel_id=LOG_CHANNEL)
    flooder, other, striker, banned, spender, meddler = (
        server.add_member(name=name)
        for name in ("flooder", "other", "striker", "banned", "spender", "meddler")
    )

    async def imagine(user: int, prompt: str, **options: object) -> InteractionHandle:
        return await server.send_slash_command(
            "imagine", {"prompt": prompt, **options}, user_id=user, channel_id=STUDIO
        )

    # Outside the allowed channel: refused politely, audited; a sketch there is ignored.
    elsewhere = await server.send_slash_command("imagine", {"prompt": "a fox"}, user_id=other)
    assert f"I only work in <#{STUDIO}>" in await private_answer(elsewhere)
    await refusals_of(bot, other, 1)
    sketch = image_bytes(Image.new("RGB", (64, 64), "white"))
    ignored = await server.send_member_message(
        f"<@{server.bot_user_id}> a castle",
        user_id=other,
        attachments=[("castle.png", sketch, "image/png")],
    )

    # 100 /imagine in 10 s from one member; another member's job in the middle of it.
    flood: list[InteractionHandle] = []
    for number in range(100):
        flood.append(await imagine(flooder, f"flood {number}", seed=number))
        if number == 50:
            theirs = await imagine(other, "the other member's fox", seed=7)
        await asyncio.sleep(0.1)
    answers = [await ix.wait_for_callback(timeout=5) for ix in flood]
    accepted = [ix for ix, answer in zip(flood, answers, strict=True) if answer.type == 5]
    refused = [answer for answer in answers if answer.type == 4]
    assert 5 <= len(accepted) <= 8, len(accepted)  # the burst, and what refilled in 10 s
    assert len(refused) == 100 - len(accepted)
    for answer in refused:
        assert answer.data["flags"] & 64
        assert "faster than this server allows; try again in" in answer.data["content"]
    await bot.wait_for_rows(
        "select n from (select count(*) as n from audit_log where actor_id = :u"
        " and action = 'imagine.refused' and params like '%faster than%') where n = :n",
        u=flooder,
        n=len(refused),
    )
    result = await succeeds(theirs)
    assert "other member" in str(result.embeds[0])
    (mine,) = bot.rows("select created_at, started_at from jobs where user_id = :u", u=other)
    ahead = bot.rows(
        "select count(*) as n from jobs where user_id = :u and started_at > :queued"
        " and started_at < :started",
        u=flooder,
        queued=mine["created_at"],
        started=mine["started_at"],
    )
    assert ahead[0]["n"] <= 1  # behind at most one of the flooder's jobs

    # Three blocked prompts in a row: paused, audited, and the admins' channel told.
    for attempt, text in enumerate(("a g0re scene", "g o r e", "gorë again"), start=1):
        answer = await private_answer(await imagine(striker, text))
        assert "Your prompt contains `gore`" in answer
        assert ("paused until <t:" in answer) == (attempt == 3)
    paused = await private_answer(await imagine(striker, "a harmless teapot"))
    assert paused.startswith("⚠️ You are paused until <t:")
    note = await server.wait_for_channel_message(
        lambda m: f"<@{striker}>" in m.content, channel_id=LOG_CHANNEL, timeout=10
    )
    assert "paused for 30 minutes" in note.content
    assert bot.rows("select target from audit_log where action = 'user.cooldown'") == [
        {"target": f"user:{striker}"}
    ]
    await refusals_of(bot, striker, 4)

    # A banned member, and a member over quota (an admin works from any channel).
    for command, options in (
        ("admin ban", {"user": banned, "reason": "raids"}),
        ("admin quota set", {"target": spender, "images_per_day": 0}),
    ):
        admin = await server.send_slash_command(command, options, user_id=server.owner_id)
        assert (await admin.wait_for_callback(timeout=3)).data["flags"] & 64
    assert await private_answer(await imagine(banned, "a fox")) == (
        "⚠️ You cannot use this bot: raids"
    )
    over = await private_answer(await imagine(spender, "a fox"))
    assert "daily limit" in over and "<t:" in over
    await refusals_of(bot, banned, 1)
    await refusals_of(bot, spender, 1)

    # Cancelling another member's job is refused; the job runs on.
    slow = await imagine(other, "a slow fox", steps=12, seed=3)
    queued = await slow.wait_for_original(lambda m: "Cancel" in str(m.components), timeout=30)
    job_id = queued.content.split("`")[1]
    click = await server.click_button(queued, f"atelier:cancel:{job_id}", user_id=meddler)
    answer = await click.wait_for_callback(timeout=3)
    assert answer.data["flags"] & 64
    assert "Only the member who asked for this job" in answer.data["content"]
    await refusals_of(bot, meddler, 1)
    await succeeds(slow)

    for ix in [elsewhere, *flood, theirs, slow]:
        shows_nothing_internal(ix, bot.data_dir)
    # And the next normal job still succeeds.
    await succeeds(await imagine(meddler, "a calm lake", seed=1))
    # By now the sketch outside the allowed channel would have been answered: it was not.
    assert not [
        m
        for m in server.channel_messages(ignored.channel_id)
        if m.author_id == server.bot_user_id
        and (m.payload.get("message_reference") or {}).get("message_id") == str(ignored.id)
    ]
    assert bot.rows("select count(*) as n from jobs where spec like '%castle%'") == [{"n": 0}]
