"""Several front doors on one PostgreSQL database: a job taken by a front door with no
engine runs in another process; the front door that took it shows its progress from the
job's row and delivers its result, exactly once, and the other leaves it alone."""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest

from tests.databases import Database
from tests.discord_server import LocalDiscord

from .conftest import RunningBot, bot_config, check_finished_bot
from .test_imagine import finished
from .test_lifecycle import all_delivered, delivered_once


async def start_bot(folder: Path, models: dict[str, Path], shared: str, engine: str) -> RunningBot:
    """`atelier run` against a local Discord of its own, on the `shared` sections."""
    server = LocalDiscord()
    await server.start()
    await asyncio.to_thread(folder.mkdir)
    config = bot_config(folder, server, models, shared, engine)
    bot = RunningBot(server, config, folder / "data", folder / "bot.log")
    await bot.start()
    return bot


@pytest.mark.postgresql_only
async def test_a_job_run_by_another_process_is_shown_and_delivered_once_by_its_front_door(
    tmp_path: Path, tiny_model_set: dict[str, Path], database: Database
) -> None:
    bots: list[RunningBot] = []
    with database.fresh() as section:
        # One database and one data folder (the shared blob store) for both processes.
        shared = f'{section}\n[storage]\ndata_dir = "{tmp_path / "shared"}"\n'
        try:
            # The front door the member uses runs no engine; the other front door, in
            # another Discord (it reaches none of the first one's servers), runs jobs.
            door = await start_bot(tmp_path / "door", tiny_model_set, shared, "devices = []")
            bots.append(door)
            runner = await start_bot(tmp_path / "runner", tiny_model_set, shared, "")
            bots.append(runner)

            ix = await door.server.send_slash_command(
                "imagine", {"prompt": "a heron far away", "steps": 30, "seed": 5}
            )
            assert (await ix.wait_for_callback(timeout=3)).type == 5
            result = await ix.wait_for_original(finished, timeout=240)
            assert result.embeds and result.attachments

            (job,) = door.rows("select id, device, claimed_by from jobs")
            assert job["device"] == "cpu"  # the door has no engine: the runner ran it
            # Its progress reached the member through the door, from the job's row.
            steps = [e.content for e in ix.edits if re.search(r"step \d+/30", e.content)]
            assert steps, [e.content for e in ix.edits]
            await all_delivered(door, 1)
            delivered_once(door)
            claims = door.rows("select params from audit_log where action = 'job.delivery_claimed'")
            assert len(claims) == 1
            assert claims[0]["params"] == {"by": f"{socket.gethostname()}:{door.process.pid}"}  # type: ignore[union-attr]
            assert runner.server.channel_messages() == []  # the runner's Discord saw nothing
        finally:
            for bot in bots:
                code = await bot.stop()
                await bot.server.stop()
                check_finished_bot(bot, code)
