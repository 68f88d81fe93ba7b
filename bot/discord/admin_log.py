"""The admins' log channel (`[moderation] log_channel_id`): moderation decisions posted there.

Posting never blocks or fails the command that caused it: each post runs in a
task this class owns, and a failure (no such channel, no permission, Discord
down) is logged, never raised.
"""

from __future__ import annotations

import asyncio
import logging

import discord

log = logging.getLogger(__name__)

# Discord's message length limit.
MAX_LENGTH = 2000


class AdminLog:
    def __init__(self, client: discord.Client, channel_id: int | None) -> None:
        self._client = client
        self._channel_id = channel_id
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, text: str, nonce: str | None = None) -> None:
        """Post `text` in the log channel, in the background; nothing when none is set.

        With a `nonce`, posting the same decision again (a retried delivery) makes the
        same message, not a second one."""
        if self._channel_id is None:
            log.info("for the admins (no [moderation] log_channel_id set): %s", text)
            return
        task = asyncio.create_task(
            self._post(self._channel_id, text[:MAX_LENGTH], nonce), name="admin-log"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, channel_id: int, text: str, nonce: str | None) -> None:
        try:
            channel = self._client.get_partial_messageable(channel_id)
            none = discord.AllowedMentions.none()
            if nonce is None:
                await channel.send(text, allowed_mentions=none)
            else:
                await channel.send(text, allowed_mentions=none, nonce=nonce)
        except Exception as error:
            log.warning("could not post in the admins' log channel %d: %s", channel_id, error)

    async def close(self) -> None:
        """Let posts under way finish (briefly), then cancel the rest."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=5)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
