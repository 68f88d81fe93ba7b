"""Tells members how their jobs go: queue position, live progress, the result.

The interaction that asked for a job is edited while its token lives. After a
restart, or once Discord refuses the token (it expires after 15 minutes), the
result goes to the job's channel as a new message instead, so it is never lost.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from pathlib import Path

import discord

from engine.protocol import Progress

from ..render import GRID_NAME, grid_png, output_name, progress_bar, result_fields
from ..store.jobs import JobStore
from ..store.models import Job, JobState
from .components import progress_view, result_view

log = logging.getLogger(__name__)

RESULT_COLOUR = discord.Colour.blurple()
PREVIEW_NAME = "preview.png"


def result_embed(job: Job, image_name: str) -> discord.Embed:
    layout = result_fields(job)
    embed = discord.Embed(title=layout.title, colour=RESULT_COLOUR)
    for name, value, inline in layout.fields:
        embed.add_field(name=name, value=value, inline=inline)
    embed.set_image(url=f"attachment://{image_name}")
    embed.set_footer(text=layout.footer)
    return embed


def failure_text(job: Job) -> str:
    if job.state is JobState.CANCELLED:
        return f"🛑 Job `{job.id}` was cancelled."
    return f"❌ Job `{job.id}` failed: {job.error or 'unknown error'}"


class Delivery:
    """The JobListener for Discord: one instance, owned by the client."""

    def __init__(self, client: discord.Client, store: JobStore, data_dir: Path, interval: float):
        self._client = client
        self._store = store
        self._data_dir = data_dir
        self._interval = interval
        self._interactions: dict[str, discord.Interaction] = {}
        self._last_edit: dict[str, float] = {}

    async def announce_queued(
        self, job_id: str, interaction: discord.Interaction, content: str
    ) -> None:
        """Say the job is queued, with its Cancel button, and follow it from now on."""
        self._interactions[job_id] = interaction
        await self._edit_progress(job_id, content)

    async def job_started(self, job: Job) -> None:
        await self._edit_progress(job.id, f"🎨 Job `{job.id}` is starting…")

    async def job_progress(self, job_id: str, progress: Progress) -> None:
        # Edits are rate limited by Discord; show the newest step at a bounded rate.
        now = time.monotonic()
        if now - self._last_edit.get(job_id, 0.0) < self._interval:
            return
        self._last_edit[job_id] = now
        bar = progress_bar(progress.step, progress.total)
        await self._edit_progress(
            job_id,
            f"🎨 Job `{job_id}`: step {progress.step}/{progress.total} `{bar}`",
            Path(progress.preview) if progress.preview else None,
        )

    async def _edit_progress(self, job_id: str, content: str, preview: Path | None = None) -> None:
        interaction = self._interactions.get(job_id)
        if interaction is None:
            return
        files = []
        if preview is not None:
            try:  # the engine replaces the file atomically; opening it pins this version
                files.append(discord.File(preview, PREVIEW_NAME))
            except FileNotFoundError:
                log.info("job %s: preview %s is gone", job_id, preview)
        try:
            await interaction.edit_original_response(
                content=content, attachments=files, view=progress_view(job_id)
            )
        except discord.HTTPException as error:
            log.info("job %s: progress edit failed (%s); result will still be delivered",
                     job_id, error)  # fmt: skip

    async def job_finished(self, job: Job) -> None:
        interaction = self._interactions.pop(job.id, None)
        self._last_edit.pop(job.id, None)
        content, embed, files = await self._result_message(job)
        message_id: int | None = None
        if interaction is not None:
            try:
                message = await interaction.edit_original_response(
                    content=content, embed=embed, attachments=files, view=self._view(job)
                )
                message_id = message.id
            except discord.HTTPException as error:
                log.warning("job %s: reply edit failed (%s); posting in channel", job.id, error)
                content, embed, files = await self._result_message(job)  # files are single-use
        if message_id is None:
            message_id = await self._post_in_channel(job, content, embed, files)
        await self._store.mark_delivered(job.id, message_id)

    async def _result_message(
        self, job: Job
    ) -> tuple[str, discord.Embed | None, list[discord.File]]:
        if job.state is not JobState.SUCCEEDED:
            return failure_text(job), None, []
        paths = [self._data_dir / output.path for output in job.outputs]
        files = [
            discord.File(path, filename=output_name(job.id, index))
            for index, path in enumerate(paths)
        ]
        if len(paths) > 1:
            grid = await asyncio.to_thread(grid_png, paths)
            files.insert(0, discord.File(io.BytesIO(grid), GRID_NAME))
        embed = result_embed(job, files[0].filename or GRID_NAME)
        return f"✅ <@{job.user_id}>'s images are ready.", embed, files

    async def _post_in_channel(
        self, job: Job, content: str, embed: discord.Embed | None, files: list[discord.File]
    ) -> int | None:
        if job.channel_id is None:
            log.error("job %s: no interaction and no channel to deliver to", job.id)
            return None
        channel = self._client.get_partial_messageable(job.channel_id)
        message = await channel.send(
            content=content,
            embed=embed if embed is not None else discord.utils.MISSING,
            files=files,
            view=self._view(job) or discord.utils.MISSING,
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
        )
        return message.id

    @staticmethod
    def _view(job: Job) -> discord.ui.View | None:
        """V/U buttons under a result; None clears the Cancel button from a failure."""
        return result_view(job) if job.state is JobState.SUCCEEDED else None
