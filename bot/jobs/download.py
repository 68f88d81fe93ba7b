"""Attachments downloaded with a byte cap: the transfer stops as soon as the file is too large.

discord.py's `Attachment.read()` reads the whole body whatever its size, and a
declared size (Discord's or the Content-Length header) is only a claim: here
the bytes are counted as they arrive.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp

from .spec import BadInput

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=15, sock_read=30)


async def download_capped(
    session: aiohttp.ClientSession, url: str, role: str, max_bytes: int
) -> bytes:
    """The body at `url`, or BadInput once it is known to pass `max_bytes`.

    The body is taken as sent (no gzip inflation), so a small compressed
    response cannot expand past the cap in memory.
    """
    try:
        async with session.get(
            url, timeout=TIMEOUT, auto_decompress=False, headers={"Accept-Encoding": "identity"}
        ) as response:
            if response.status != 200:
                log.warning("the %s attachment: HTTP %d", role, response.status)
                raise _unavailable(role)
            declared = response.content_length
            if declared is not None and declared > max_bytes:
                response.close()
                raise BadInput(
                    f"The `{role}` attachment is {declared / 2**20:.1f} MB;"
                    f" the limit is {max_bytes / 2**20:g} MB."
                )
            body = bytearray()
            async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                body += chunk
                if len(body) > max_bytes:
                    # Closing drops the connection: the rest is never read.
                    response.close()
                    raise BadInput(
                        f"The `{role}` attachment is over the {max_bytes / 2**20:g} MB limit;"
                        " please attach a smaller file."
                    )
            return bytes(body)
    except (aiohttp.ClientError, TimeoutError) as error:
        # The text of a parser error can quote kilobytes of what the server sent.
        log.warning(
            "the %s attachment could not be downloaded: %s: %.200s",
            role,
            type(error).__name__,
            error,
        )
        raise _unavailable(role) from None


async def download_attachments(urls: Mapping[str, str], max_bytes: int) -> dict[str, bytes]:
    """Each role's attachment from its URL, through one short-lived session, each capped."""
    async with aiohttp.ClientSession() as session:
        return {
            role: await download_capped(session, url, role, max_bytes) for role, url in urls.items()
        }


def _unavailable(role: str) -> BadInput:
    return BadInput(
        f"I could not download the `{role}` attachment from Discord; please attach it again."
    )
