"""Replies to a result's message: where a job made outside Discord from a result (Vary
(Region) in the browser editor) is shown. The core's ResultReplies (bot.core.editor):
its placeholder is a reply to the result that mentions the member, and delivery edits
it as the job goes, as it does the bot's replies to a member's sketch."""

from __future__ import annotations

import contextlib
import logging

import discord

from ..core.views import Job

log = logging.getLogger(__name__)


class ResultReply:
    """The Messages (bot.core.door) of a job answered under `result`'s message."""

    def __init__(self, client: discord.Client, result: Job, member_id: int) -> None:
        self._client = client
        self._result = result
        self._member_id = member_id

    async def placeholders(self, count: int) -> list[int | None]:
        """One reply to the result per job; none where the result has no message in a
        channel (a private result, or one sent by DM): those jobs go by DM."""
        result = self._result
        if result.channel_id is None or result.message_id is None:
            return [None] * count
        channel = self._client.get_partial_messageable(result.channel_id)
        made: list[int | None] = []
        for _ in range(count):
            try:
                sent = await channel.get_partial_message(result.message_id).reply(
                    f"<@{self._member_id}> ⏳ Vary (Region) of job `{result.id}`: queued…",
                    allowed_mentions=discord.AllowedMentions(
                        users=[discord.Object(self._member_id)], replied_user=False
                    ),
                )
            except discord.HTTPException as error:
                log.info("job %s: could not reply under its result (%s)", result.id, error)
                made.append(None)
                continue
            made.append(sent.id)
        return made

    async def discard(self, message_ids: list[int | None]) -> None:
        if self._result.channel_id is None:
            return
        channel = self._client.get_partial_messageable(self._result.channel_id)
        for message_id in message_ids:
            if message_id is not None:
                with contextlib.suppress(discord.HTTPException):
                    await channel.get_partial_message(message_id).delete()


class ResultReplies:
    """bot.core.editor.ResultReplies on the bot's Discord client."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client

    def to(self, job: Job, member_id: int) -> ResultReply:
        return ResultReply(self._client, job, member_id)
