"""Telling a member no: a short message, an audit entry, nothing lost."""

from __future__ import annotations

import logging

import discord

from ..store.jobs import JobStore

log = logging.getLogger(__name__)


async def refuse(
    interaction: discord.Interaction, store: JobStore, command: str, reason: str
) -> None:
    """Answer `reason` privately (first, within Discord's 3 s), then audit the refusal."""
    message = f"⚠️ {reason}"
    if interaction.response.is_done():
        await interaction.edit_original_response(content=message)
    else:
        await interaction.response.send_message(message, ephemeral=True)
    await store.record_refusal(
        action=f"{command}.refused",
        actor_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        reason=reason,
    )
