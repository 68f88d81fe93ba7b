"""An interaction's webhook from its stored token: how replies are edited and followed up,
by a live interaction and after a restart alike (tokens live 15 minutes)."""

from __future__ import annotations

from typing import cast

import discord

# Discord's alias for an interaction's original response in webhook message routes.
ORIGINAL = cast(int, "@original")


def interaction_webhook(client: discord.Client, token: str) -> discord.Webhook:
    application_id = client.application_id
    assert application_id is not None, "only after login"
    webhook = discord.Webhook.partial(application_id, token, client=client)
    # An application (interaction) webhook, so follow-ups may be ephemeral.
    webhook.type = discord.WebhookType.application
    return webhook
