"""Member commands: /me and /help (usage, limits, settings), /settings (alias /defaults),
/forget-me."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from engine.protocol import MAX_STEPS, SAMPLER_NAMES

from ...core.refusals import paused
from ...core.views import Actor, UnfinishedJobs
from ...jobs.spec import ASPECTS
from ...moderation.service import ScreenedText, TextKind
from ..common import Services, actor_of, model_choices, refuse, roles_of
from ..refusals import sentence

log = logging.getLogger(__name__)

HELP = """**/imagine** `prompt` makes images. Options: `count` 1-4, `seed`, `steps`, `cfg`, \
`aspect`, `model`, `sampler`, `negative`, `private`; flags in the prompt work too \
(`--ar 21:9 --seed 42 --no text --n 2`), and `a {red, blue} fox` makes one job per choice.
Attach an `image` for image-to-image (`strength`), an `image` plus a `mask` (white = repaint) \
for inpainting, or a `control` sketch for ControlNet (`control_type`, `control_scale`).
**Sketch**: reply to a result (or mention me) with a drawing attached, and I draw it with \
that prompt or your words (`--control canny` for a photo's edges). On any message with an \
image, *Apps → Imagine from sketch / Imagine from image*.
Under a result: **V1-V4** vary an image, **U1-U4** upscale it 2x, **Vary (strong)**, \
🔄 re-roll (new seed), ✏️ remix (new words, same seed), 🗑️ delete (yours only).
**/cancel** stops your job, **/queue** shows where it stands, **/history** lists your jobs, \
**/settings** sets your defaults (private replies, results by DM), **/forget-me** deletes \
your images, uploads, prompts and my messages with your results.
**/apikey create** makes a key for the bot's HTTP API (Stability v1 compatible)."""


async def summary(services: Services, interaction: discord.Interaction) -> str:
    """The member's usage today, what is left, when it resets, and their defaults."""
    user_id = interaction.user.id
    status = await services.quotas.status(user_id, roles_of(interaction))
    standing = await services.users.standing(user_id)
    lines = [status.message()]
    if services.quotas.rules.relax_when_over:
        lines.append("Over a limit, your jobs still run in the relax lane when the GPU is free.")
    lines.append(f"**Your settings**: {shown(standing.defaults) or 'none (see /settings)'}")
    if standing.ban_reason:
        lines.append(f"⛔ You cannot use the bot: {standing.ban_reason}")
    if standing.paused_until is not None:
        lines.append(f"⏸️ {sentence(paused(standing.paused_until))}")
    return "\n".join(lines)


SETTING_HELP = {
    "model": "Model for your jobs",
    "sampler": "Sampler for your jobs",
    "aspect": "Shape of your images",
    "steps": "Denoising steps",
    "cfg": "How closely to follow the prompt",
    "negative": "What to keep out of your images",
    "private": "Only you see your replies and images (ephemeral; results go by DM later)",
    "delivery": "Where finished images go: the reply, or a DM",
    "clear": "Forget all your settings first",
}
SETTING_CHOICES: dict[str, list[app_commands.Choice[str]]] = {
    "aspect": [app_commands.Choice(name=a, value=a) for a in ASPECTS],
    "sampler": [app_commands.Choice(name=n, value=n) for n in SAMPLER_NAMES],
    "delivery": [
        app_commands.Choice(name="reply (in the channel)", value="reply"),
        app_commands.Choice(name="DM", value="dm"),
    ],
}


def shown(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key} = {value}" for key, value in sorted(settings.items()))


class ForgetConfirm(discord.ui.View):
    def __init__(self, services: Services, owner_id: int) -> None:
        super().__init__(timeout=300)
        self.services = services
        self._owner_id = owner_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return interaction.user.id == self._owner_id

    @discord.ui.button(label="Delete my images and prompts", style=discord.ButtonStyle.danger)
    async def confirm(
        self, interaction: discord.Interaction, button: discord.ui.Button[ForgetConfirm]
    ) -> None:
        # Deleting messages can take a while (Discord's rate limits): answer after it.
        await interaction.response.defer()
        try:
            forgotten = await self.services.users.forget(interaction.user.id, actor_of(interaction))
        except UnfinishedJobs as error:
            await interaction.edit_original_response(content=f"⚠️ {error}", view=None)
            return
        deleted, kept = await delete_messages(
            interaction.client, interaction.user, forgotten.messages
        )
        # Under the pseudonym: nothing written after forget-me points back to the member.
        pseudonymous = Actor(forgotten.pseudonym, interaction.guild_id, interaction.channel_id)
        await self.services.audit.record_command(
            pseudonymous,
            "forget-me.messages",
            "ok" if not kept else "partial",
            params={"deleted": deleted, "not_deleted": kept},
        )
        lines = [
            f"🧹 Done: {forgotten.images} image(s) deleted, with {forgotten.inputs} image(s)"
            f" you uploaded; the prompts of {forgotten.jobs} job(s) erased; {deleted} of my"
            " message(s) with your results removed from Discord."
        ]
        if forgotten.shared_inputs:
            lines.append(
                f"{forgotten.shared_inputs} upload(s) were kept: another member's job (a"
                " re-roll or remix of yours) uses them."
            )
        if kept:
            lines.append(
                f"{kept} message(s) could not be removed (already gone, or I cannot reach"
                " them); you can delete them yourself or ask an admin."
            )
        lines.append("Usage totals keep only an anonymous id.")
        await interaction.edit_original_response(content=" ".join(lines), view=None)
        self.stop()


async def delete_messages(
    client: discord.Client,
    member: discord.User | discord.Member,
    messages: list[tuple[int | None, int]],
) -> tuple[int, int]:
    """Delete the bot's messages (channel id, message id); how many were and were not.

    A message not in its channel (or with none: a private reply) is looked for in
    the member's DMs, where their setting may have sent the result. A message
    already gone, or in a channel the bot cannot reach any more, is counted, never
    raised.
    """
    deleted = 0
    dm: discord.DMChannel | None = None
    for channel_id, message_id in messages:
        try:
            gone = channel_id is not None and await _delete(
                client.get_partial_messageable(channel_id), message_id
            )
            if not gone:
                dm = dm or await member.create_dm()
                gone = await _delete(dm, message_id)
        except (discord.HTTPException, aiohttp.ClientError, OSError) as error:
            log.info("forget-me: message %d in %s not deleted (%s)", message_id, channel_id, error)
            gone = False
        deleted += gone
    return deleted, len(messages) - deleted


async def _delete(channel: discord.PartialMessageable | discord.DMChannel, message_id: int) -> bool:
    """Delete a message of the bot; False when the channel has no such message."""
    try:
        await channel.get_partial_message(message_id).delete()
    except discord.NotFound:
        return False
    return True


class MemberCog(commands.Cog, name="Member"):
    """/me, /help, /settings (/defaults) and /forget-me: a member's own account."""

    def __init__(self, services: Services) -> None:
        self.services = services

    @app_commands.command(name="me", description="Your usage today, what is left, your defaults")
    async def me(self, interaction: discord.Interaction) -> None:
        await self.services.audit.record_command(actor_of(interaction), "me")
        await interaction.response.send_message(
            await summary(self.services, interaction), ephemeral=True
        )

    @app_commands.command(name="help", description="How to use Atelier, and your usage today")
    async def help_command(self, interaction: discord.Interaction) -> None:
        await self.services.audit.record_command(actor_of(interaction), "help")
        text = f"{HELP}\n\n{await summary(self.services, interaction)}"
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="settings", description="Your own /imagine defaults and replies")
    @app_commands.describe(**SETTING_HELP)
    @app_commands.choices(**SETTING_CHOICES)
    async def settings(
        self,
        interaction: discord.Interaction,
        model: str | None = None,
        sampler: str | None = None,
        aspect: str | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, 0.0, 30.0] | None = None,
        negative: str | None = None,
        private: bool | None = None,
        delivery: str | None = None,
        clear: bool = False,
    ) -> None:
        await self._save(
            interaction,
            clear,
            {
                "model": model,
                "sampler": sampler,
                "aspect": aspect,
                "steps": steps,
                "cfg": cfg,
                "negative_prompt": negative,
                "private": private,
                "delivery": delivery,
            },
        )

    # /defaults, the older name, stays as an alias: the same callback, options and help.
    defaults = app_commands.Command(
        name="defaults",
        description="Your own /imagine defaults (= /settings)",
        callback=settings.callback,
    )

    @settings.autocomplete("model")
    @defaults.autocomplete("model")
    async def model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return model_choices(self.services.config.models, current)

    async def _save(
        self, interaction: discord.Interaction, clear: bool, given: dict[str, Any]
    ) -> None:
        """Store the member's settings: the ones given replace theirs, `clear` forgets all."""
        model = given["model"]
        if model is not None and model not in self.services.config.models:
            known = ", ".join(sorted(self.services.config.models))
            await refuse(
                interaction,
                self.services.store,
                "settings",
                f"Unknown model `{model}`; available: {known}.",
            )
            return
        negative = given["negative_prompt"]
        if negative:
            blocked = await self.services.moderation.screen(
                actor_of(interaction), [ScreenedText(TextKind.DEFAULTS, negative)], "settings"
            )
            if blocked is not None:
                await refuse(
                    interaction, self.services.store, "settings", blocked.message, kind="moderation"
                )
                return
        chosen = {} if clear else await self.services.users.defaults(interaction.user.id)
        chosen.update({key: value for key, value in given.items() if value is not None})
        await self.services.users.set_defaults(
            interaction.user.id, interaction.user.name, chosen, actor_of(interaction)
        )
        await interaction.response.send_message(
            f"Your settings: {shown(chosen) or 'none'}.", ephemeral=True
        )

    @app_commands.command(name="forget-me", description="Delete your stored images and prompts")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        await self.services.audit.record_command(actor_of(interaction), "forget-me.asked")
        await interaction.response.send_message(
            "This deletes every image Atelier stored for you (results and your uploads), the"
            " prompts of your jobs, your defaults, your API keys, and the bot's messages with"
            " your results. An upload another member's job also uses (they re-rolled or"
            " remixed yours) is kept for it. It cannot be undone. Usage totals stay, under an"
            " anonymous id.",
            view=ForgetConfirm(self.services, interaction.user.id),
            ephemeral=True,
        )
