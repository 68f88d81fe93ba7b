"""Point discord.py at Discord (or, in tests, a local Discord-compatible server).

discord.py 2.7 has no constructor option for this, so the two class
attributes it reads are set once, at start, from `[discord]` config.
"""

from __future__ import annotations

import discord.gateway
import discord.http
import yarl

from ..config import DiscordConfig


def use_endpoints(config: DiscordConfig) -> None:
    discord.http.Route.BASE = config.api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(config.gateway_url)
