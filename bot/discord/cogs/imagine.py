"""/imagine, its two message context menus and the reply-with-a-sketch listener.

/imagine: check the input, journal it, defer, save attachments, queue the jobs.
Before the deferral the command is written to the journal (bot.store.commands),
one short insert; everything slow (downloads, decoding) comes after it. A bot
killed at any instant after Discord shows "thinking" completes the command at
its next start (`replay_pending`), through the same `_complete`.

"Imagine from sketch" and "Imagine from image" (message context menus) open a
modal, then run as an /imagine whose attachment is the message's image. A
member's reply to a result (or a message mentioning the bot) with an image
attached runs ControlNet from it, answered as a reply to their message; such a
message is not an interaction, so it has no journal row and no token.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from engine.protocol import (
    MAX_CONTROL_SCALE,
    MAX_IMAGES_PER_JOB,
    MAX_SEED,
    MAX_STEPS,
    MIN_STRENGTH,
    SAMPLER_NAMES,
    ControlType,
    ReferenceMode,
)

from ...core.door import Checked, Origin
from ...core.drafts import OptionsDraft
from ...core.refusals import Refusal, RefusalKind
from ...core.views import ReceivedCommand, Requester
from ...jobs.download import download_attachments
from ...jobs.inputs import ACCEPTED, inputs_by_role, save_inputs
from ...jobs.prompt_language import MAX_STYLE_WEIGHT, read_lora_list
from ...jobs.spec import ASPECTS, BadInput, InputImage, Inputs, Options
from ..common import (
    Followup,
    Reply,
    Services,
    age_restricted,
    journal_then_defer,
    lora_choices,
    model_choices,
    refuse,
    requester_from_journal,
    requester_of,
    settled_on_error,
    tell_privately,
)
from ..queueing import admit_and_show
from ..refusals import sentence
from .scope import channel_ids, out_of_scope

log = logging.getLogger(__name__)

COMMAND = "imagine"
# /blend is an /imagine of a blend, journaled and audited under its own name.
BLEND = "blend"


@dataclass(frozen=True)
class AttachmentRef:
    """An attachment as Discord described it: enough to check it and fetch it later."""

    url: str
    size: int
    width: int | None
    height: int | None
    content_type: str | None

    @classmethod
    def of(cls, attachment: discord.Attachment) -> AttachmentRef:
        return cls(
            attachment.url,
            attachment.size,
            attachment.width,
            attachment.height,
            attachment.content_type,
        )


@dataclass(frozen=True)
class Ticket:
    """One /imagine as journaled: who asked, the options as given, the attachments."""

    requester: Requester
    token: str
    options: dict[str, Any]
    attachments: dict[str, AttachmentRef]
    # How it came in (the slash command or a menu's form), audited with a refusal.
    origin: Origin = Origin.SLASH

    def journal_options(self, origin: Origin) -> dict[str, Any]:
        return {
            "given": self.options,
            "attachments": {role: vars(ref) for role, ref in self.attachments.items()},
            "origin": origin.value,
        }

    @classmethod
    def from_journal(cls, row: ReceivedCommand) -> Ticket:
        attachments = {
            role: AttachmentRef(**ref) for role, ref in row.options["attachments"].items()
        }
        # Rows journaled before the origin was kept were slash commands or menu forms alike.
        origin = Origin(row.options.get("origin", Origin.SLASH))
        return cls(
            requester_from_journal(row),
            row.token or "",
            row.options["given"],
            attachments,
            origin,
        )


def _declared_inputs(attachments: dict[str, AttachmentRef], max_bytes: int) -> Inputs:
    """Inputs as Discord describes the attachments, to refuse before downloading anything."""
    declared = {}
    for role, attachment in attachments.items():
        if attachment.size > max_bytes:
            raise BadInput(
                f"The `{role}` attachment is {attachment.size / 2**20:.1f} MB;"
                f" the limit is {max_bytes / 2**20:g} MB."
            )
        is_image = (attachment.content_type or "").startswith("image/")
        if not is_image or not attachment.width or not attachment.height:
            raise BadInput(f"The `{role}` attachment is not an image; please attach {ACCEPTED}.")
        declared[role] = InputImage("", attachment.width, attachment.height)
    return inputs_by_role(declared)


class Attachments:
    """A command's attachments as an InputSource (bot.core.door): described by Discord
    first, downloaded, checked and stored once the command passed the door's checks."""

    def __init__(self, refs: dict[str, AttachmentRef], max_bytes: int, data_dir: Path) -> None:
        self.refs = refs
        self.max_bytes = max_bytes
        self.data_dir = data_dir
        self.folder: Path | None = None

    def declared(self) -> Inputs:
        return _declared_inputs(self.refs, self.max_bytes)

    async def save(self) -> Inputs:
        if not self.refs:
            return Inputs()
        data = await download_attachments(
            {role: ref.url for role, ref in self.refs.items()}, self.max_bytes
        )
        self.folder = self.data_dir / "inputs" / secrets.token_hex(8)
        return await asyncio.to_thread(
            save_inputs, data, self.folder, self.data_dir, self.max_bytes
        )

    async def discard(self) -> None:
        if self.folder is not None:
            await asyncio.to_thread(shutil.rmtree, self.folder, True)


def first_image(message: discord.Message) -> discord.Attachment | None:
    return next(
        (a for a in message.attachments if (a.content_type or "").startswith("image/")), None
    )


class MessageReply:
    """Answers to a member's message (a reply with a sketch): replies to it that mention
    only its author. A Reply (bot.discord.common) whose placeholders are such replies,
    one per job, edited by delivery as the jobs go."""

    def __init__(self, client: discord.Client, message: discord.Message) -> None:
        self.client = client
        self.message = message

    async def refuse(self, reason: str) -> None:
        await self._reply(f"⚠️ {reason}")

    async def notice(self, text: str) -> None:
        await self._reply(text)

    async def placeholders(self, count: int) -> list[int | None]:
        made: list[int | None] = []
        for number in range(1, count + 1):
            part = f" (job {number} of {count})" if count > 1 else ""
            sent = await self._reply(f"⏳ On it{part}…")
            if sent is None:
                raise BadInput("I could not answer in this channel.")
            made.append(sent.id)
        return made

    async def discard(self, message_ids: list[int | None]) -> None:
        channel = self.client.get_partial_messageable(self.message.channel.id)
        for message_id in message_ids:
            if message_id is not None:
                with contextlib.suppress(discord.HTTPException):
                    await channel.get_partial_message(message_id).delete()

    async def _reply(self, text: str) -> discord.Message | None:
        author = self.message.author
        try:
            return await self.message.reply(
                f"{author.mention} {text}",
                allowed_mentions=discord.AllowedMentions(users=[author], replied_user=True),
            )
        except discord.HTTPException as error:
            log.warning("could not answer message %s: %s", self.message.id, error)
            return None


class ImagineModal(discord.ui.Modal):
    """The modal of "Imagine from sketch" (prompt, control type) and "Imagine from image"
    (prompt, strength), over the image of the message the menu was used on."""

    def __init__(self, cog: ImagineCog, kind: str, image: AttachmentRef, prompt: str) -> None:
        super().__init__(title=MENUS[kind], timeout=1800)
        self.cog = cog
        self.kind = kind
        self.image = image
        self.prompt: discord.ui.TextInput[ImagineModal] = discord.ui.TextInput(
            label="Prompt (flags work: --ar 16:9 --no text)",
            style=discord.TextStyle.paragraph,
            default=prompt[:4000] or None,
            max_length=4000,
            custom_id="prompt",
        )
        self.setting: discord.ui.TextInput[ImagineModal]
        if kind == SKETCH:
            self.setting = discord.ui.TextInput(
                label="Read it as: auto, canny, scribble, lineart",
                default="auto",
                required=False,
                max_length=12,
                custom_id="control_type",
            )
        else:
            self.setting = discord.ui.TextInput(
                label=f"Strength, {MIN_STRENGTH:g}-1 (how much to change it)",
                default="0.75",
                required=False,
                max_length=6,
                custom_id="strength",
            )
        self.add_item(self.prompt)
        self.add_item(self.setting)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.from_modal(
            interaction, self.kind, self.image, self.prompt.value, self.setting.value
        )


SKETCH, IMAGE = "sketch", "image"
MENUS = {SKETCH: "Imagine from sketch", IMAGE: "Imagine from image"}


def given_options(prompt: str, **given: Any) -> dict[str, Any]:
    """/imagine's options as journaled, for a command that sets only some of them."""
    keys = (
        "negative",
        "count",
        "seed",
        "steps",
        "cfg",
        "aspect",
        "model",
        "sampler",
        "strength",
        "control_type",
        "control_scale",
        "sw",
        "lora",
        "draft",
        "private",
    )
    return {"prompt": prompt, **dict.fromkeys(keys), **given}


def command_of(given: dict[str, Any]) -> str:
    """The name a request's journal row and audit entries carry: /blend's or /imagine's."""
    return BLEND if given.get("reference_mode") == ReferenceMode.BLEND.value else COMMAND


def _private(given: dict[str, Any], defaults: Mapping[str, object]) -> bool:
    """Whether only the member sees the reply: the option, else their setting."""
    chosen = given.get("private")
    return bool(defaults.get("private") if chosen is None else chosen)


class ImagineCog(commands.Cog, name="Imagine"):
    """/imagine, the context menus and replies with sketches: the member's ways in."""

    def __init__(self, bot: commands.Bot, services: Services) -> None:
        self.bot = bot
        self.services = services
        self._menus = [
            app_commands.ContextMenu(name=MENUS[SKETCH], callback=self.imagine_from_sketch),
            app_commands.ContextMenu(name=MENUS[IMAGE], callback=self.imagine_from_image),
        ]

    async def cog_load(self) -> None:
        for menu in self._menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self._menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    @app_commands.command(name="imagine", description="Make images from a text prompt")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --no text",
        negative="What to keep out of the image",
        count=f"How many images (1-{MAX_IMAGES_PER_JOB})",
        seed="Seed of the first image; image n uses seed + n - 1",
        steps="Denoising steps (more is slower, often finer)",
        cfg="How closely to follow the prompt (about 4-12)",
        aspect="Shape of the image (default: the attached image's shape, else square)",
        model="Which model to use",
        sampler="Sampler, named as in other Stable Diffusion tools",
        image="Start from this image (image-to-image)",
        mask="With image: white = repaint, black = keep (inpainting)",
        strength=f"With image: how much to change it ({MIN_STRENGTH:g}-1.0)",
        control="A sketch or photo the composition follows (ControlNet)",
        control_type="How to read the control image (default canny)",
        control_scale=f"How strongly to follow the control image (0-{MAX_CONTROL_SCALE:g})",
        sref="A style reference: the image's style, not its content (also --sref <job id>)",
        sw=f"How strongly to take the style reference's style (0-{MAX_STYLE_WEIGHT}, 100)",
        lora="LoRAs with weights, e.g. ink:0.8, glow (also <lora:ink:0.8> in the prompt)",
        draft="A fast few-step draft; ✨ Enhance makes it at full quality (also --draft)",
        private="Only you see the reply and its images (default: your /settings)",
    )
    @app_commands.choices(
        aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS],
        sampler=[app_commands.Choice(name=n, value=n) for n in SAMPLER_NAMES],
        control_type=[app_commands.Choice(name=f"{t.value}", value=t.value) for t in ControlType],
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: str,
        negative: str | None = None,
        count: app_commands.Range[int, 1, MAX_IMAGES_PER_JOB] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, MAX_STEPS] | None = None,
        cfg: app_commands.Range[float, 0.0, 30.0] | None = None,
        aspect: str | None = None,
        model: str | None = None,
        sampler: str | None = None,
        image: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        strength: app_commands.Range[float, MIN_STRENGTH, 1.0] | None = None,
        control: discord.Attachment | None = None,
        control_type: str | None = None,
        control_scale: app_commands.Range[float, 0.0, MAX_CONTROL_SCALE] | None = None,
        sref: discord.Attachment | None = None,
        sw: app_commands.Range[int, 0, MAX_STYLE_WEIGHT] | None = None,
        lora: app_commands.Range[str, 1, 200] | None = None,
        draft: bool | None = None,
        private: bool | None = None,
    ) -> None:
        given = {
            "prompt": prompt,
            "negative": negative,
            "count": count,
            "seed": seed,
            "steps": steps,
            "cfg": cfg,
            "aspect": aspect,
            "model": model,
            "sampler": sampler,
            "strength": strength,
            "control_type": control_type,
            "control_scale": control_scale,
            "sw": sw,
            "lora": lora,
            "draft": draft,
            "private": private,
        }
        attachments = {
            role: AttachmentRef.of(attachment)
            for role, attachment in (
                ("image", image),
                ("mask", mask),
                ("control", control),
                ("sref", sref),
            )
            if attachment is not None
        }
        await self.start(interaction, given, attachments)

    @app_commands.command(name="blend", description="Blend 2 to 5 images into a new one")
    @app_commands.describe(
        image1="An image to blend",
        image2="An image to blend",
        image3="Another image (optional)",
        image4="Another image (optional)",
        image5="Another image (optional)",
        prompt="Words to steer the blend (optional). Flags work: --ar 3:2 --seed 42",
        aspect="Shape of the image (default square)",
        model="Which model to use (one with an IP-Adapter)",
        sw=f"How strongly the images steer it (0-{MAX_STYLE_WEIGHT}, 100)",
        seed="Seed of the image",
        private="Only you see the reply and its images (default: your /settings)",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS])
    async def blend(
        self,
        interaction: discord.Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        prompt: str | None = None,
        aspect: str | None = None,
        model: str | None = None,
        sw: app_commands.Range[int, 0, MAX_STYLE_WEIGHT] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        private: bool | None = None,
    ) -> None:
        """An /imagine whose attachments are the images of a blend (ReferenceMode.BLEND):
        journaled, replayed and refused as one is, under the name `blend`."""
        images = (image1, image2, image3, image4, image5)
        attachments = {
            f"image{number}": AttachmentRef.of(image)
            for number, image in enumerate(images, 1)
            if image is not None
        }
        given = given_options(
            prompt or "",
            aspect=aspect,
            model=model,
            sw=sw,
            seed=seed,
            private=private,
            reference_mode=ReferenceMode.BLEND.value,
        )
        await self.start(interaction, given, attachments)

    async def start(
        self,
        interaction: discord.Interaction,
        given: dict[str, Any],
        attachments: dict[str, AttachmentRef],
        origin: Origin = Origin.SLASH,
    ) -> None:
        """Check, journal, defer and complete one /imagine (or a context menu's modal,
        which is an /imagine with its attachment taken from a message)."""
        requester = requester_of(interaction)
        ticket = Ticket(requester, interaction.token, given, attachments)
        draft, inputs = self._draft(given), self._inputs(attachments)
        checked = await self._check(requester, draft, inputs, origin, rated=True)
        if isinstance(checked, Refusal):
            await tell_privately(interaction, sentence(checked))  # within Discord's 3 s
            await self.services.door.refused(requester, command_of(given), origin, checked)
            return
        journaled = await journal_then_defer(
            self.services,
            interaction,
            command_of(given),
            ticket.journal_options(origin),
            ephemeral=_private(given, checked.personal),
        )
        await self._complete(
            Ticket(journaled, ticket.token, given, attachments), origin, checked=checked
        )

    # -- context menus --------------------------------------------------------------------

    async def imagine_from_sketch(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        await self._open_modal(interaction, message, SKETCH)

    async def imagine_from_image(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        await self._open_modal(interaction, message, IMAGE)

    async def _open_modal(
        self, interaction: discord.Interaction, message: discord.Message, kind: str
    ) -> None:
        """The modal for a menu used on `message` (any member's); its prompt is filled in
        with the result's when the message is one of the bot's."""
        picture = first_image(message)
        if picture is None:
            reason = "That message has no image attached; use the menu on a message with one."
            await refuse(interaction, self.services.store, COMMAND, reason)
            return
        job = await self.services.core.queries.by_message(message.id)
        prompt = job.spec.prompt if job is not None else ""
        await interaction.response.send_modal(
            ImagineModal(self, kind, AttachmentRef.of(picture), prompt)
        )

    async def from_modal(
        self,
        interaction: discord.Interaction,
        kind: str,
        image: AttachmentRef,
        prompt: str,
        setting: str,
    ) -> None:
        """A context menu's modal sent: an /imagine with the message's image."""
        value = setting.strip().lower()
        if kind == SKETCH:
            kinds = [kind.value for kind in ControlType]
            if value not in ("", "auto", *kinds):
                reason = f"Read the image as `auto` or one of {', '.join(kinds)}, not `{value}`."
                await refuse(interaction, self.services.store, COMMAND, reason)
                return
            read_as = {"control_auto": True} if value in ("", "auto") else {"control_type": value}
            options = given_options(prompt, **read_as)
            await self.start(interaction, options, {"control": image}, Origin.MENU)
            return
        try:
            strength = float(value) if value else None
        except ValueError:
            strength = -1.0
        if strength is not None and not MIN_STRENGTH <= strength <= 1.0:
            reason = f"Strength is a number from {MIN_STRENGTH:g} to 1, not `{setting.strip()}`."
            await refuse(interaction, self.services.store, COMMAND, reason)
            return
        options = given_options(prompt, strength=strength)
        await self.start(interaction, options, {"image": image}, Origin.MENU)

    # -- replies with a sketch ----------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """A member's reply to one of the bot's messages, or a message mentioning the bot,
        with an image attached: ControlNet from it (other messages are not read)."""
        me = self.bot.user
        if me is None or message.author.bot or message.guild is None:
            return
        where = channel_ids(message.channel.id, message.channel)
        if out_of_scope(self.services.config.discord, COMMAND, message.guild.id, where) is not None:
            return  # not where the bot serves: no answer at all
        reference = message.reference
        replied = reference.resolved if reference is not None else None
        to_me = isinstance(replied, discord.Message) and replied.author.id == me.id
        if not to_me and all(user.id != me.id for user in message.mentions):
            return
        picture = first_image(message)
        if picture is None:
            return  # talk, not a sketch
        await self.reply_with_sketch(
            message, picture, replied if to_me and isinstance(replied, discord.Message) else None
        )

    async def reply_with_sketch(
        self, message: discord.Message, picture: discord.Attachment, replied: discord.Message | None
    ) -> None:
        """ControlNet from the member's image, with their words or else the prompt of the
        result they replied to; their job, answered as a reply to their message."""
        services = self.services
        me = self.bot.user
        assert me is not None
        reply = MessageReply(self.bot, message)
        text = " ".join(re.sub(rf"<@!?{me.id}>", " ", message.content).split())
        job = await services.core.queries.by_message(replied.id) if replied is not None else None
        # A reply is public (as the member's message is); `private` does not apply.
        if text:
            given = given_options(text, control_auto=True, private=False)
        elif job is not None:
            given = given_options(
                job.spec.prompt,
                negative=job.spec.negative_prompt or None,
                model=job.spec.model,
                control_auto=True,
                private=False,
            )
        else:
            await reply.notice(
                f"Tell me what to draw with your sketch: {me.mention} a castle on a hill"
                " (flags work too, e.g. `--control canny`)."
            )
            return
        author = message.author
        requester = Requester.on_discord(
            user_id=author.id,
            user_name=author.name,
            guild_id=message.guild.id if message.guild else None,
            channel_id=message.channel.id,
            role_ids=(role.id for role in getattr(author, "roles", [])),
            nsfw_channel=age_restricted(message.channel),
        )
        log.info("message %s: a sketch from user %d", message.id, author.id)
        ticket = Ticket(requester, "", given, {"control": AttachmentRef.of(picture)})
        await self._complete(ticket, Origin.SKETCH, reply, rated=True)

    # -- journal --------------------------------------------------------------------------

    async def replay_pending(self) -> None:
        """At start: complete every /imagine and /blend acknowledged by a previous run but
        not handled."""
        for row in await self.services.commands.pending():
            if row.command in (COMMAND, BLEND):
                log.info(
                    "completing /%s %s received before the restart", row.command, row.interaction_id
                )
                async with settled_on_error(self.services, row):
                    ticket = Ticket.from_journal(row)
                    await self._complete(ticket, ticket.origin)

    async def _complete(
        self,
        ticket: Ticket,
        origin: Origin,
        reply: Reply | None = None,
        *,
        checked: Checked | None = None,
        rated: bool = False,
    ) -> None:
        """After the deferral: the door's admission (attachments fetched, checked and
        saved, the jobs queued), answered through the interaction's reply or `reply`.
        `checked`: the door's checks, when they were made just before the deferral; else
        they are made here (`rated`: with a rate-limit token; a command replayed from the
        journal took its token before the restart)."""
        services = self.services
        requester = ticket.requester
        draft, inputs = self._draft(ticket.options), self._inputs(ticket.attachments)
        if checked is None:
            decided = await self._check(requester, draft, inputs, origin, rated=rated)
            personal = decided.personal if isinstance(decided, Checked) else {}
        else:
            decided, personal = checked, checked.personal
        private = _private(ticket.options, personal)
        reply = reply or Followup(self.bot, ticket.token, ephemeral=private)
        if isinstance(decided, Refusal):
            await reply.refuse(sentence(decided))
            await services.door.refused(requester, command_of(ticket.options), origin, decided)
            return
        if private:
            # No channel: after its token expires, a private result goes by DM.
            requester = dataclasses.replace(requester, channel_id=None)
        assert isinstance(draft, OptionsDraft)  # a draft that failed to parse was refused
        await admit_and_show(services, requester, draft, inputs, origin, decided, reply)

    async def _check(
        self,
        requester: Requester,
        draft: OptionsDraft | Refusal,
        inputs: Attachments,
        origin: Origin,
        *,
        rated: bool,
    ) -> Checked | Refusal:
        """The door's checks of a parsed command (an unparsable one is refused); the caller
        answers the member, then audits a refusal."""
        if isinstance(draft, Refusal):
            return draft
        return await self.services.door.check(requester, draft, inputs, origin, rated=rated)

    def _draft(self, given: dict[str, Any]) -> OptionsDraft | Refusal:
        try:
            options = self._options(given)
        except BadInput as error:
            return Refusal(kind=RefusalKind.BAD_INPUT, reason=str(error))
        return OptionsDraft(
            command=command_of(given),
            options=options,
            catalog=self.services.core.catalog,
            control_auto=bool(given.get("control_auto")),
        )

    def _inputs(self, attachments: dict[str, AttachmentRef]) -> Attachments:
        return Attachments(attachments, self._max_bytes, self.services.config.storage.data_dir)

    @property
    def _max_bytes(self) -> int:
        return int(self.services.config.generation.max_attachment_mb * 2**20)

    @staticmethod
    def _options(given: dict[str, Any]) -> Options:
        control_type = given["control_type"]
        try:
            kind = ControlType(control_type) if control_type else None
        except ValueError:
            raise BadInput(f"Control type `{control_type}` is not one of the choices.") from None
        return Options(
            prompt=given["prompt"],
            negative_prompt=given["negative"],
            count=given["count"],
            seed=given["seed"],
            steps=given["steps"],
            cfg=given["cfg"],
            aspect=given["aspect"],
            model=given["model"],
            sampler=given["sampler"],
            strength=given["strength"],
            control_type=kind,
            control_scale=given["control_scale"],
            # Journaled before /blend and --sw came: neither.
            style_weight=given.get("sw"),
            reference_mode=given.get("reference_mode"),
            # Journaled before LoRAs and drafts came: neither.
            loras=read_lora_list(given.get("lora") or ""),
            draft=given.get("draft"),
        )

    @imagine.autocomplete("model")
    @blend.autocomplete("model")
    async def model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return model_choices(self.services.config.models, current)

    @imagine.autocomplete("lora")
    async def lora_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        """The LoRAs of the family of the model chosen so far (else the default one)."""
        catalog = self.services.core.catalog
        model = catalog.models.get(interaction.namespace.model or catalog.default_model)
        return lora_choices(catalog.loras, model.family if model else None, current)
