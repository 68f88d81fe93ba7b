"""A click journaled just before a kill is queued at the next start, for every registered
action that makes a job: the list comes from the registry, so a new action is covered."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import discord
from PIL import Image, ImageDraw

from bot.config import load_config
from bot.core.actions import ACTIONS, Source, Tweak, Words
from bot.jobs.spec import InputImage, JobSpec, draft_settings
from bot.store.models import utcnow

from .conftest import Launch
from .test_imagine import finished
from .test_lifecycle import all_delivered, delivered_once

# Older than an interaction token lives: the replayed jobs answer in the channel.
CLICKED_AGO = timedelta(minutes=20)


async def test_a_journaled_click_of_every_action_is_replayed_after_a_kill(
    launch_bot: Launch,
) -> None:
    # Every replayed job is the same member's, queued at once.
    running_bot = await launch_bot(extra="[quota]\njobs_queued = 20\n")
    server = running_bot.server
    # Not square, so Make Square has a border to paint.
    made = await server.send_slash_command(
        "imagine", {"prompt": "a lighthouse", "seed": 7, "aspect": "3:2"}
    )
    await made.wait_for_original(finished, timeout=120)
    (source_row,) = running_bot.rows("select id, spec from jobs")
    (image,) = running_bot.rows(
        "select path, width, height, seed from outputs where job_id = :id", id=source_row["id"]
    )
    await running_bot.kill()

    # What each click would have journaled, written as the killed bot left it: received,
    # acknowledged to Discord, no job queued yet.
    config = load_config(running_bot.config)
    source = Source(
        job_id=str(source_row["id"]),
        spec=JobSpec.model_validate_json(str(source_row["spec"])),
        number=1,
        image=InputImage(str(image["path"]), int(image["width"]), int(image["height"])),
        image_seed=int(image["seed"]),
    )
    clicked = discord.utils.time_snowflake(utcnow() - CLICKED_AGO)
    # Vary (Region)'s mask, saved as the editor's submission saves it: the top half repainted.
    mask = InputImage("inputs/replayed/mask.png", source.image.width, source.image.height)
    painted = Image.new("L", (mask.width, mask.height), "black")
    ImageDraw.Draw(painted).rectangle((0, 0, mask.width, mask.height // 2), fill="white")
    (running_bot.data_dir / mask.path).parent.mkdir(parents=True)
    painted.save(running_bot.data_dir / mask.path)
    # Enhance's source is the same job as a --draft (the tiny model has a draft LoRA).
    drafted = source.spec.model_copy(update=draft_settings(source.spec.model, config.models))
    journaled: dict[int, dict[str, object]] = {}
    for n, action in enumerate(a for a in ACTIONS if a.makes_job):
        assert action.transform is not None
        tweak = Tweak(
            strength=action.strength_in(config.generation),
            words=(
                Words(
                    prompt="a lighthouse at dusk --seed 5",
                    zoom=1.5 if action.takes_zoom else None,
                )
                if action.takes_words
                else None
            ),
            models=config.models,
            styles=config.styles,
            mask=mask if action.takes_mask else None,
        )
        clicked_on = replace(source, spec=drafted) if action.drafts_only else source
        spec = action.transform(clicked_on, tweak).model_dump(mode="json")
        interaction_id = clicked + n
        journaled[interaction_id] = spec
        running_bot.execute(
            "insert into received_commands (interaction_id, command, state, user_id,"
            " user_name, guild_id, channel_id, role_ids, token, options, received_at)"
            " values (:id, :command, 'received', :user, 'member', :guild, :channel, '[]',"
            " 'expired-token', :options, :at)",
            id=interaction_id,
            command=action.command,
            user=server.user_id,
            guild=server.guild_id,
            channel=server.channel_id,
            options=json.dumps({"spec": spec, "private": False}),
            at=utcnow().replace(tzinfo=None).isoformat(sep=" "),
        )

    await running_bot.start()
    await all_delivered(running_bot, 1 + len(journaled))

    states = running_bot.rows("select interaction_id, state from received_commands")
    replayed = {
        row["interaction_id"]: row["state"] for row in states if row["interaction_id"] in journaled
    }
    assert replayed == dict.fromkeys(journaled, "handled")
    queued = running_bot.rows(
        "select spec, interaction_id from jobs where id != :id", id=source.job_id
    )
    assert sorted(json.dumps(json.loads(str(row["spec"])), sort_keys=True) for row in queued) == (
        sorted(json.dumps(spec, sort_keys=True) for spec in journaled.values())
    )
    delivered_once(running_bot)
