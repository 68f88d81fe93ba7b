"""Tells members how their jobs go: queue position, live progress, the result, exactly once.

Each job's reply is edited through its interaction's webhook (the stored token)
while the token lives (15 minutes), also after a restart. After that, or when
Discord refuses the token, the result is posted in the job's channel with a
mention, and as a DM when the bot cannot post there. Channel posts carry a
nonce Discord enforces, so a retried post cannot appear twice. The image policy
applies where the answer goes: a DM is never age-restricted, so flagged images
shown in an age-restricted channel are withheld from DMs (a member who asked for
results by DM gets such a job in its reply or channel instead).

A job is `delivered` only once Discord accepted its answer. Transient failures
(5xx, network, timeouts) are retried with backoff; what is still undelivered
is delivered at the next start. Nothing here ever blocks or fails a GPU job:
the job service only calls the non-blocking `job_*` methods, and every
Discord call runs in a task this class owns, cancels and awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import discord
from sqlalchemy.exc import OperationalError

from engine.protocol import Progress

from ..blobs import Blobs
from ..core.deliveries import Deliveries
from ..core.views import Job, JobState, utcnow
from ..jobs.failures import member_failure
from ..jobs.service import QueuePlace
from ..moderation.images import dm_notice, public_notice, spoiler_name, withheld_in_dm
from ..render import GRID_NAME, grid_jpeg, output_name, pack_uploads, progress_bar, result_fields
from .components import progress_view, result_view
from .moderation import ModerationNotices, withheld_by_filter
from .webhooks import ORIGINAL, interaction_webhook

log = logging.getLogger(__name__)

RESULT_COLOUR = discord.Colour.blurple()
PREVIEW_NAME = "preview.png"
# Interaction tokens live 15 minutes; stop using one a little before.
TOKEN_LIFETIME = timedelta(minutes=14, seconds=30)
DEFAULT_UPLOAD_LIMIT = 10 * 2**20
# Discord error codes after which the reply cannot be edited: unknown webhook,
# unknown message, invalid webhook token (expired interaction).
GONE_CODES = {10015, 10008, 50027}
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


def result_embed(job: Job, image_name: str) -> discord.Embed:
    layout = result_fields(job)
    embed = discord.Embed(title=layout.title, colour=RESULT_COLOUR)
    for name, value, inline in layout.fields:
        embed.add_field(name=name, value=value, inline=inline)
    embed.set_image(url=f"attachment://{image_name}")
    embed.set_footer(text=layout.footer)
    return embed


def failure_text(job: Job) -> str:
    """One friendly sentence by kind; the stored error (exception text, paths) stays for
    admins and the log."""
    return member_failure(job.id, job.state, job.error)


def is_transient(error: BaseException) -> bool:
    """A failure worth retrying: Discord's 5xx, the network, a timeout."""
    return isinstance(
        error, discord.DiscordServerError | aiohttp.ClientError | OSError | TimeoutError
    )


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes

    def file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), self.name)  # a File is single-use


@dataclass(frozen=True)
class Answer:
    """A finished job's answer: the first message (text, embed, view) and its files,
    then any further messages of files that did not fit the upload limit."""

    content: str
    embed: discord.Embed | None
    view: discord.ui.View | None
    messages: list[list[Upload]]


class Delivery:
    """The JobListener for Discord: one instance, built in bot.app."""

    def __init__(
        self,
        *,
        client: discord.Client,
        deliveries: Deliveries,
        blobs: Blobs,
        interval: float,
        queue_place: Callable[[str], Awaitable[QueuePlace | None]],
        prefers_dm: Callable[[int], Awaitable[bool]],
        moderation: ModerationNotices,
    ) -> None:
        self._client = client
        # Who else hears of a job the image filter withheld (the member, privately; admins).
        self._moderation = moderation
        # Whether a member asked (/settings delivery:DM) for results by DM.
        self._prefers_dm = prefers_dm
        self._deliveries = deliveries
        self._blobs = blobs
        self._interval = interval
        self._queue_place = queue_place
        self._tasks: set[asyncio.Task[None]] = set()
        self._followers: dict[str, asyncio.Task[None]] = {}
        self._latest: dict[str, str] = {}
        # A queued job's line, with {where} for its current queue position.
        self._queued: dict[str, str] = {}
        # A running job's latest preview: a path on this host or a blob key (_preview_file).
        self._preview: dict[str, str] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._delivering: set[str] = set()
        # Deliveries retried after a transient failure, for the metrics.
        self.retries = 0

    # -- what the job service calls (never blocks) --------------------------------------------

    def job_started(self, job: Job) -> None:
        self._queued.pop(job.id, None)
        self._show(job, f"🎨 Job `{job.id}` is starting…")

    def job_progress(self, job_id: str, progress: Progress) -> None:
        bar = progress_bar(progress.step, progress.total)
        text = f"🎨 Job `{job_id}`: step {progress.step}/{progress.total} `{bar}`"
        if progress.preview:
            self._preview[job_id] = progress.preview
        self._latest[job_id] = text
        if job_id in self._changed:
            self._changed[job_id].set()

    def job_finished(self, job: Job) -> None:
        self._spawn(self._deliver(job), f"deliver-{job.id}")

    # -- queueing and start ---------------------------------------------------------------

    async def announce_queued(self, job: Job, place: QueuePlace, template: str) -> None:
        """Show the queued job with its Cancel button, remember the reply's message id
        (to edit it later, also after a restart), and follow the job from now on.

        `template` holds `{where}`, kept current with the job's place in the queue.
        """
        text = template.format(where=_where(place))
        if job.id not in self._latest:  # not started yet: its start or end drops this
            self._queued[job.id] = template
        shown = ""
        try:
            message = await self._edit_status(job, content=text, view=progress_view(job.id))
            shown = text
            if job.message_id is None:
                await self._deliveries.showing(job.id, message.id)
        except discord.HTTPException as error:
            log.info("job %s: could not show it queued (%s)", job.id, error)
        except OperationalError as error:  # only a shortcut for later edits: "@original" works
            log.warning("job %s: could not record its message id (%s)", job.id, error)
        # A slow edit (Discord rate limits) can outlast a short job, delivered meanwhile.
        if job.id in self._queued:
            self._show(job, text, shown)

    async def redeliver(self) -> None:
        """At start: deliver every finished job Discord has not accepted yet. Each is read
        again as its delivery starts: one the start itself finished may have been
        delivered since this search."""
        for job in await self._deliveries.undelivered():
            self._spawn(self._deliver(job, reread=True), f"deliver-{job.id}")

    async def drain(self, within: float) -> None:
        """At stop: let deliveries under way finish, then stop following jobs."""
        deliveries = [t for t in self._tasks if t.get_name().startswith("deliver-")]
        if deliveries:
            await asyncio.wait(deliveries, timeout=within)
        await self.close()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- following a job ------------------------------------------------------------------

    def _show(self, job: Job, text: str, shown: str = "") -> None:
        """Make `text` the job's status line; its follower edits the reply at a bounded rate.
        `shown`: what the reply already says (a new follower does not edit it again)."""
        self._latest[job.id] = text
        if not self.reaches(job):  # another front door's (another shard's) to show
            return
        if job.id not in self._followers and (job.interaction_token or _own_message(job)):
            self._changed[job.id] = asyncio.Event()
            if text != shown:
                self._changed[job.id].set()
            self._followers[job.id] = self._spawn(self._follow(job, shown), f"follow-{job.id}")
        elif job.id in self._changed:
            self._changed[job.id].set()

    async def _follow(self, job: Job, shown: str) -> None:
        """Edit the reply with the newest status, at most once per interval; a failed
        edit is logged and skipped (the result is delivered all the same)."""
        changed = self._changed[job.id]
        while self._token_fresh(job) or _own_message(job):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(self._interval * 5, 5.0))
            changed.clear()
            text = await self._with_position(job.id, self._latest.get(job.id, ""))
            preview = self._preview.pop(job.id, None)
            if text != shown or preview is not None:
                files = await _preview_file(self._blobs, preview) if preview else []
                try:
                    await self._edit_status(
                        job, content=text, attachments=files, view=progress_view(job.id)
                    )
                    shown = text
                except (discord.HTTPException, aiohttp.ClientError, OSError) as error:
                    log.info("job %s: progress edit failed (%s)", job.id, error)
            await asyncio.sleep(self._interval)

    async def _with_position(self, job_id: str, text: str) -> str:
        """A queued job's line keeps its position current."""
        template = self._queued.get(job_id)
        if template is None:
            return text
        place = await self._queue_place(job_id)
        return text if place is None else template.format(where=_where(place))

    async def _stop_following(self, job_id: str) -> None:
        follower = self._followers.pop(job_id, None)
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        self._latest.pop(job_id, None)
        self._queued.pop(job_id, None)
        self._preview.pop(job_id, None)
        self._changed.pop(job_id, None)

    def reaches(self, job: Job) -> bool:
        """Whether this front door can answer where the job was asked: a DM, or a server
        its connection serves (with shards, each server is one shard's)."""
        return job.guild_id is None or self._client.get_guild(job.guild_id) is not None

    # -- delivering the answer ------------------------------------------------------------

    async def _deliver(self, job: Job, reread: bool = False) -> None:
        """Deliver `job` as read by the transaction that finished it, which happens once
        per job (no later change matters to its answer); with `reread`, as stored now."""
        await self._stop_following(job.id)
        if job.id in self._delivering:
            return
        self._delivering.add(job.id)
        try:
            if reread:
                job = await self._deliveries.job(job.id)
            if job.delivered_at is not None:
                return
            # With several front doors, the one that reaches the job's server and claims
            # it first delivers it; the others leave it.
            if not self.reaches(job) or not await self._deliveries.claim(job):
                return
            for delay in (*RETRY_DELAYS, None):
                try:
                    message_id, how = await self._send(job)
                except Exception as error:
                    if delay is None or not is_transient(error):
                        log.error(
                            "job %s: not delivered (%s); it is retried at the next start",
                            job.id,
                            error,
                        )
                        return
                    log.warning(
                        "job %s: delivery failed (%s); retrying in %g s", job.id, error, delay
                    )
                    self.retries += 1
                    await asyncio.sleep(delay)
                    continue
                await self._deliveries.delivered(job.id, message_id, how)
                log.info("job %s: delivered (%s)", job.id, how)
                if withheld_by_filter(job):
                    await self._moderation.withheld(job, self._token_fresh(job))
                return
        finally:
            self._delivering.discard(job.id)

    async def _send(self, job: Job) -> tuple[int | None, str]:
        # The images are read from the store while the member's choice is read.
        images, by_dm = await asyncio.gather(self._images(job), self._prefers_dm(job.user_id))
        answer = await asyncio.to_thread(self._answer, job, images)
        direct = _direct(job, answer)
        # A member's wish for DMs yields to the image policy: images withheld from a DM
        # go where the job was asked for, where they may be shown.
        if by_dm and direct is answer:
            try:
                return await self._send_dm(job, answer), "dm"
            except discord.Forbidden as error:
                log.info("job %s: the member takes no DMs (%s); replying instead", job.id, error)
        if job.interaction_token and self._token_fresh(job):
            try:
                return await self._edit_reply(job, answer), "reply"
            except discord.HTTPException as error:
                if is_transient(error) or not _gone(error):
                    raise
                log.info(
                    "job %s: the reply cannot be edited (%s); posting in channel", job.id, error
                )
        if _own_message(job):
            try:
                return await self._edit_own_message(job, answer), "message"
            except (discord.NotFound, discord.Forbidden) as error:
                log.info(
                    "job %s: its message cannot be edited (%s); posting in channel", job.id, error
                )
        if job.channel_id is not None:
            channel = self._client.get_partial_messageable(job.channel_id)
            try:
                return await self._post(job, channel, answer), "channel"
            except discord.Forbidden as error:
                log.info("job %s: cannot post in its channel (%s); sending a DM", job.id, error)
        user = await self._client.fetch_user(job.user_id)
        return await self._post(job, user, direct), "dm" if direct is answer else "dm-withheld"

    async def _send_dm(self, job: Job, answer: Answer) -> int:
        """The answer by DM, and the reply (while it can be edited) says where it went."""
        message_id = await self._post(job, await self._client.fetch_user(job.user_id), answer)
        if (job.interaction_token and self._token_fresh(job)) or _own_message(job):
            with contextlib.suppress(discord.HTTPException):
                await self._edit_status(
                    job, content=f"📬 Job `{job.id}`: sent to your DMs.", attachments=[], view=None
                )
        return message_id

    async def _edit_reply(self, job: Job, answer: Answer) -> int:
        webhook = self._webhook(job)
        first, *more = answer.messages or [[]]
        message = await webhook.edit_message(
            job.message_id or ORIGINAL,
            content=answer.content,
            embed=answer.embed,
            attachments=[upload.file() for upload in first],
            view=answer.view or discord.ui.View(),
        )
        if more and job.channel_id is not None:
            await self._post_more(job, self._client.get_partial_messageable(job.channel_id), more)
        return message.id

    async def _edit_own_message(self, job: Job, answer: Answer) -> int:
        """The answer edited into the bot's own message showing the job (a reply to a
        member's message)."""
        assert job.channel_id is not None and job.message_id is not None
        channel = self._client.get_partial_messageable(job.channel_id)
        first, *more = answer.messages or [[]]
        message = await channel.get_partial_message(job.message_id).edit(
            content=answer.content,
            embed=answer.embed,
            attachments=[upload.file() for upload in first],
            view=answer.view or discord.ui.View(),
        )
        await self._post_more(job, channel, more)
        return message.id

    async def _edit_status(self, job: Job, **fields: Any) -> discord.Message:
        """Edit the message showing a running job: the interaction's reply (or follow-up)
        through its token, or the bot's own message (a reply to a member's message)."""
        if job.interaction_token:
            return await self._webhook(job).edit_message(job.message_id or ORIGINAL, **fields)
        assert job.channel_id is not None and job.message_id is not None
        channel = self._client.get_partial_messageable(job.channel_id)
        return await channel.get_partial_message(job.message_id).edit(**fields)

    async def _post(self, job: Job, target: discord.abc.Messageable, answer: Answer) -> int:
        """The answer as new messages in a channel or a DM, each with a nonce Discord
        enforces, so a retry returns the message already posted instead of a second one."""
        first, *more = answer.messages or [[]]
        message = await target.send(
            content=answer.content,
            embed=answer.embed or discord.utils.MISSING,
            files=[upload.file() for upload in first],
            view=answer.view or discord.utils.MISSING,
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
            nonce=f"{job.id}-0",
        )
        await self._post_more(job, target, more)
        return message.id

    async def _post_more(
        self, job: Job, target: discord.abc.Messageable, messages: list[list[Upload]]
    ) -> None:
        """Images that did not fit the first message."""
        for number, uploads in enumerate(messages, start=1):
            await target.send(
                content=f"Job `{job.id}`, more images:",
                files=[upload.file() for upload in uploads],
                nonce=f"{job.id}-{number}",
            )

    async def _images(self, job: Job) -> list[bytes]:
        """The job's images as the answer shows them (none for a withheld or failed job)."""
        if withheld_by_filter(job) or job.state is not JobState.SUCCEEDED:
            return []
        images = []
        for output in job.outputs:
            data = await self._blobs.read(output.path)
            if data is None:  # a delivery failure, retried as a missing file was
                raise FileNotFoundError(f"image {output.path} is not in the store")
            images.append(data)
        return images

    def _answer(self, job: Job, images: list[bytes]) -> Answer:
        """The answer's text and files, fitted to the upload limit (runs in a thread)."""
        if withheld_by_filter(job):
            return Answer(public_notice(job.id), None, None, [])
        if job.state is not JobState.SUCCEEDED:  # 🔁 Try again, where the registry offers it
            return Answer(failure_text(job), None, result_view(job), [])
        # Flagged images shown in an age-restricted channel set to "spoiler" (the grid too).
        spoilers = [bool(output.flags.get("spoiler")) for output in job.outputs]
        uploads = [
            Upload(_named(output_name(job.id, index), spoiler), data)
            for index, (data, spoiler) in enumerate(zip(images, spoilers, strict=True))
        ]
        if len(images) > 1:
            uploads.insert(0, Upload(_named(GRID_NAME, any(spoilers)), grid_jpeg(images)))
        limit = job.upload_limit or DEFAULT_UPLOAD_LIMIT
        messages, too_large = pack_uploads([len(u.data) for u in uploads], limit)
        content = f"✅ <@{job.user_id}>'s images are ready."
        if too_large:
            names = ", ".join(uploads[i].name for i in too_large)
            content += f" ({names} exceed Discord's upload limit; use the U/V buttons.)"
        embed = result_embed(job, uploads[messages[0][0]].name) if messages else None
        if embed is not None and any(spoilers):
            embed.set_image(url=None)  # an embed's image would show it without the spoiler
        return Answer(content, embed, result_view(job), [[uploads[i] for i in m] for m in messages])

    def _webhook(self, job: Job) -> discord.Webhook:
        assert job.interaction_token is not None
        return interaction_webhook(self._client, job.interaction_token)

    @staticmethod
    def _token_fresh(job: Job) -> bool:
        if job.interaction_id is None:
            return False
        created = discord.utils.snowflake_time(job.interaction_id)
        return utcnow() - created < TOKEN_LIFETIME

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())


def _direct(job: Job, answer: Answer) -> Answer:
    """`answer` as a DM may carry it: the image policy applies where the images go, and a
    DM is never age-restricted (bot.moderation.images.withheld_in_dm)."""
    if job.state is JobState.SUCCEEDED and withheld_in_dm(o.flags for o in job.outputs):
        return Answer(dm_notice(job.id), None, None, [])
    return answer


def _named(name: str, spoiler: bool) -> str:
    return spoiler_name(name) if spoiler else name


def _own_message(job: Job) -> bool:
    """A job shown in a message the bot posted itself (a reply to a member's message),
    not in an interaction's reply: edited through the channel, without a token."""
    return (
        job.interaction_id is None
        and job.interaction_token is None
        and job.message_id is not None
        and job.channel_id is not None
        and job.delivered_at is None
    )


def _gone(error: discord.HTTPException) -> bool:
    """The reply is beyond editing: the token expired or was revoked, or it is gone."""
    return error.status in (401, 403, 404) or error.code in GONE_CODES


def _where(place: QueuePlace) -> str:
    if place.position <= 1:
        return "next in line"
    minutes = math.ceil(place.eta_seconds / 60)
    start = "starts in under a minute" if minutes <= 1 else f"starts in about {minutes} min"
    return f"position {place.position} in queue, {start}"


async def _preview_file(blobs: Blobs, preview: str) -> list[discord.File]:
    """The preview as an attachment: the engine's file when the job runs in this process
    (an absolute path, read in a thread), else the copy its worker stored (a blob key,
    bot.jobs.relay); none once it is gone (its job just ended) or cannot be read."""
    data = await _read_preview(blobs, preview)
    return [] if data is None else [discord.File(io.BytesIO(data), PREVIEW_NAME)]


async def _read_preview(blobs: Blobs, preview: str) -> bytes | None:
    path = Path(preview)
    if path.is_absolute():
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError:
            return None
    try:
        return await blobs.read(preview)
    # A preview only adorns a progress edit: whatever the store answers (obstore's own
    # errors included), the step is shown without it.
    except Exception as error:
        log.info("preview %s could not be read (%s)", preview, error)
        return None
