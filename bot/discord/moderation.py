"""What Discord is told when the image filter withholds a job (bot.moderation.images).

The job's reply, which others may see, says only that the job was withheld;
the member is told why in one private sentence (an ephemeral follow-up while
the interaction lives, else a direct message); the admins' `[moderation]
log_channel_id` gets one line with the job, the member, the channel and the
classifier's top scores, never the image. Delivery (bot.discord.delivery)
calls these once it has answered in the job's reply.
"""

from __future__ import annotations

import logging

import discord

from ..core.views import Job, JobState
from ..moderation.images import member_notice, top_scores
from .admin_log import AdminLog
from .webhooks import interaction_webhook

log = logging.getLogger(__name__)

# A prompt quoted in the admins' log is cut to this many characters.
LOGGED_PROMPT = 200


def withheld_by_filter(job: Job) -> bool:
    """A job the image filter withheld (not one refused at the door for its words)."""
    return job.state is JobState.BLOCKED and bool(job.moderation)


def private_sentence(job: Job) -> str:
    record = job.moderation or {}
    return member_notice(job.id, bool(record.get("charged")), upload="inputs" in record)


def admin_line(job: Job) -> str:
    record = job.moderation or {}
    where = f"<#{job.channel_id}>" if job.channel_id else f"the {job.client} API"
    prompt = job.spec.prompt[:LOGGED_PROMPT].replace("`", "'")
    what = "an uploaded image" if "inputs" in record else "its images"
    return (
        f"🚫 Image filter: job `{job.id}` by <@{job.user_id}> in {where} — {what} withheld"
        f" ({top_scores(record)}; threshold {record.get('threshold')}); prompt: `{prompt}`"
    )


class ModerationNotices:
    """Tells the member privately and the admins' log channel about withheld jobs."""

    def __init__(self, client: discord.Client, admin_log: AdminLog) -> None:
        self._client = client
        self._admin_log = admin_log

    async def withheld(self, job: Job, token_fresh: bool) -> None:
        """Both notices of a withheld job; a failure is logged, never raised (the job's
        answer is delivered already). The admins' line goes out once per job: its
        nonce makes a retried delivery's post the same message."""
        await self._tell_member(job, token_fresh)
        self._admin_log(admin_line(job), nonce=f"{job.id}-moderation")

    async def _tell_member(self, job: Job, token_fresh: bool) -> None:
        text = private_sentence(job)
        none = discord.AllowedMentions.none()
        try:
            if token_fresh and job.interaction_token:
                webhook = interaction_webhook(self._client, job.interaction_token)
                await webhook.send(text, ephemeral=True, allowed_mentions=none)
                return
            if job.client == "discord":
                user = await self._client.fetch_user(job.user_id)
                await user.send(text, allowed_mentions=none)
        except discord.HTTPException as error:
            log.info("job %s: could not tell the member privately (%s)", job.id, error)
