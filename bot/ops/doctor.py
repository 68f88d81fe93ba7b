"""`atelier doctor`: check what a newcomer gets wrong, one line each, with what to do.

The token's shape and whether Discord takes it, the intents and the invite
link, every configured model source, CUDA and the torch build (asked of a
child interpreter: the bot never imports torch), free disk and the database
revision. A check that cannot run offline is skipped with a note. Exit code
1 when any check fails, else 0.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import aiohttp
import discord

from ..config import Config, looks_local
from ..discord.bot import INTENTS
from ..families import SDXL_SINGLE_FILE_KEY, safetensors_keys
from .discord_http import unreachable
from .downloads import hub_cache, repo_folder
from .gpu import TorchBuild, nvidia_gpus, probe_torch
from .health import GB, free_bytes

TOKEN_PORTAL = "https://discord.com/developers/applications"
INVITE = "https://discord.com/oauth2/authorize"
# What the bot needs in a channel: see it, answer, embed results, attach images,
# and read the reply it edits.
PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)
SCOPES = "bot applications.commands"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)
# A bot token: the bot's id in base64, a time stamp, an HMAC; dot-separated.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{17,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}")
# Application flags that grant a privileged intent (Discord's docs, "Application Flags").
_INTENT_FLAGS = {
    "presences": (1 << 12) | (1 << 13),
    "members": (1 << 14) | (1 << 15),
    "message_content": (1 << 18) | (1 << 19),
}
_SDXL_UNET_KEY = "add_embedding."  # a diffusers-layout SDXL UNet's extra embedding


class Verdict(StrEnum):
    OK = "ok"
    WARN = "warn"  # works, but worth knowing
    SKIP = "skip"  # could not be checked (offline)
    FAIL = "fail"


MARKS = {Verdict.OK: "✔", Verdict.WARN: "!", Verdict.SKIP: "-", Verdict.FAIL: "✘"}


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: Verdict
    detail: str
    advice: str = ""

    def line(self) -> str:
        advice = f" — {self.advice}" if self.advice else ""
        return f"{MARKS[self.verdict]} {self.check}: {self.detail}{advice}"


# -- token, Discord, intents, invite ----------------------------------------------------------


def token_shape(token: str, source: str) -> Finding:
    check = "token format"
    if not token:
        return Finding(
            check,
            Verdict.FAIL,
            f"no token in {source}",
            f"copy it from {TOKEN_PORTAL} → your application → Bot → Reset Token",
        )
    if token.lower().startswith("bot "):
        return Finding(
            check,
            Verdict.FAIL,
            'the token starts with "Bot "',
            "give the token alone; the bot adds the prefix",
        )
    if token[0] in "'\"" or token[-1] in "'\"" or any(c.isspace() for c in token):
        return Finding(
            check,
            Verdict.FAIL,
            "the token contains quotes or spaces",
            "paste the token alone, without quotes",
        )
    if _TOKEN.fullmatch(token) is None:
        if re.fullmatch(r"[A-Za-z0-9_-]{32}", token):
            what = "this looks like the OAuth2 client secret"
        elif re.fullmatch(r"[0-9a-f]{64}", token):
            what = "this looks like the application's public key"
        elif token.isdigit():
            what = "this looks like an application or user id"
        else:
            what = "this is not shaped like a bot token (three parts separated by dots)"
        return Finding(
            check,
            Verdict.FAIL,
            what,
            f"copy the token from {TOKEN_PORTAL} → your application → Bot",
        )
    app_id = application_id_of(token)
    detail = "shaped like a bot token" + (f" of application {app_id}" if app_id else "")
    return Finding(check, Verdict.OK, detail)


def application_id_of(token: str) -> int | None:
    """The bot's id, which a token carries in base64 before its first dot."""
    head = token.partition(".")[0]
    try:
        decoded = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(decoded) if decoded.isdigit() else None


def invite_url(application_id: int) -> str:
    scopes = SCOPES.replace(" ", "+")
    return f"{INVITE}?client_id={application_id}&scope={scopes}&permissions={PERMISSIONS.value}"


def privileged_intents() -> list[str]:
    return [name for name in _INTENT_FLAGS if getattr(INTENTS, name)]


def intents_finding(application: dict[str, Any] | None) -> Finding:
    needed = privileged_intents()
    if not needed:
        return Finding("intents", Verdict.OK, "Atelier needs no privileged intent (only Guilds)")
    if application is None:
        return Finding("intents", Verdict.SKIP, f"needs {', '.join(needed)}; not checked offline")
    flags = int(application.get("flags") or 0)
    missing = [name for name in needed if not flags & _INTENT_FLAGS[name]]
    if missing:
        return Finding(
            "intents",
            Verdict.FAIL,
            f"{', '.join(missing)} intent not enabled",
            f"enable it at {TOKEN_PORTAL} → Bot → Privileged Gateway Intents",
        )
    return Finding("intents", Verdict.OK, f"{', '.join(needed)} enabled")


async def discord_findings(config: Config, token: str, offline: bool) -> list[Finding]:
    """Whether Discord takes the token, the intents, and the invite link."""
    app_id = application_id_of(token) if token else None
    application: dict[str, Any] | None = None
    if offline or not token:
        why = "--offline" if offline else "no token"
        found = [Finding("Discord login", Verdict.SKIP, f"not asked ({why})")]
    else:
        found = []
        base = config.discord.api_base.rstrip("/")
        headers = {"Authorization": f"Bot {token}"}
        try:
            async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT, headers=headers) as http:
                async with http.get(f"{base}/users/@me") as answer:
                    status, me = answer.status, await _json(answer)
                if status == 200:
                    async with http.get(f"{base}/oauth2/applications/@me") as answer:
                        if answer.status == 200:
                            application = await _json(answer)
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            # `atelier run` would stop at the same place (--offline skips this check).
            what, _, check = unreachable(base, error).partition(": ")
            found.append(Finding("Discord login", Verdict.FAIL, what, check))
        else:
            if status == 200:
                name = me.get("username", "?")
                found.append(
                    Finding(
                        "Discord login",
                        Verdict.OK,
                        f"Discord accepts the token: bot {name} ({me.get('id')})",
                    )
                )
                app_id = int(me.get("id") or app_id or 0) or app_id
            elif status == 401:
                found.append(
                    Finding(
                        "Discord login",
                        Verdict.FAIL,
                        "Discord refused the token",
                        f"reset it at {TOKEN_PORTAL} → Bot and export the new one",
                    )
                )
            else:
                found.append(
                    Finding(
                        "Discord login",
                        Verdict.FAIL,
                        f"Discord answered {status} to /users/@me",
                        "try again later; see discordstatus.com",
                    )
                )
        if application is not None and application.get("id"):
            app_id = int(application["id"])
    found.append(intents_finding(application))
    if app_id:
        found.append(
            Finding(
                "invite",
                Verdict.OK,
                invite_url(app_id),
                f"open it to add the bot with the scopes {SCOPES}",
            )
        )
    else:
        found.append(
            Finding(
                "invite",
                Verdict.SKIP,
                "no application id (no valid token)",
                f"in {TOKEN_PORTAL} → OAuth2 → URL Generator tick {SCOPES} and"
                f" permissions value {PERMISSIONS.value}",
            )
        )
    return found


async def _json(answer: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await answer.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
    return body if isinstance(body, dict) else {}


# -- models ---------------------------------------------------------------------------------


def _size(paths: list[Path]) -> str:
    total = sum(p.stat().st_size for p in paths)
    return f"{total / GB:.2f} GB" if total >= 0.1 * GB else f"{total / 1e6:.1f} MB"


def _class_family(class_name: str) -> str:
    if "XL" in class_name:
        return "SDXL"
    if class_name.startswith(("StableDiffusion", "ControlNet", "Autoencoder", "UNet")):
        return "SD 1.x/2.x" if class_name.startswith("StableDiffusion") else class_name
    return class_name


def describe_source(source: str) -> tuple[Verdict, str, str]:
    """(verdict, what it is, advice) for one weight source, read without torch."""
    if not looks_local(source):
        cached = repo_folder(hub_cache(), source)
        if not cached.is_dir():
            return (
                Verdict.OK,
                f"Hugging Face repo {source}, not downloaded yet",
                "downloaded on first use (the log shows progress); check the id on"
                " huggingface.co if it fails",
            )
        blobs = [p for p in (cached / "blobs").glob("*") if p.is_file()]
        indexes = sorted(cached.glob("snapshots/*/model_index.json"))
        family = _family_of_index(indexes[-1]) if indexes else "?"
        return Verdict.OK, f"Hugging Face repo {source}, cached ({_size(blobs)}, {family})", ""
    path = Path(source)
    if not path.exists():
        return Verdict.FAIL, f"{path} does not exist", "fix the path, or use a repo id"
    if path.is_file():
        if path.suffix.lower() == ".safetensors":
            try:
                keys = safetensors_keys(path)
            except (OSError, ValueError, struct.error) as error:
                return (
                    Verdict.FAIL,
                    f"{path.name} is not a readable .safetensors file ({error})",
                    "",
                )
            family = (
                "SDXL" if any(k.startswith(SDXL_SINGLE_FILE_KEY) for k in keys) else "SD 1.x/2.x"
            )
            return Verdict.OK, f"single file {path.name} ({_size([path])}, {family})", ""
        return (
            Verdict.OK,
            f"single file {path.name} ({_size([path])})",
            "a .ckpt's family is read when the engine loads it",
        )
    weights = [p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin", ".ckpt")]
    index = path / "model_index.json"
    if index.is_file():
        family = _family_of_index(index)
    elif (path / "config.json").is_file():
        family = _family_of_config(path / "config.json")
    else:
        return (
            Verdict.FAIL,
            f"{path} has no model_index.json or config.json",
            "point at a diffusers folder (save_pretrained) or a .safetensors file",
        )
    if not weights:
        return Verdict.FAIL, f"{path} holds no weight files", "the download may be incomplete"
    return Verdict.OK, f"folder {path.name} ({_size(weights)}, {family})", ""


def _family_of_index(index: Path) -> str:
    try:
        return _class_family(str(json.loads(index.read_text()).get("_class_name", "?")))
    except (OSError, ValueError):
        return "unreadable model_index.json"


def _family_of_config(config: Path) -> str:
    try:
        return _class_family(str(json.loads(config.read_text()).get("_class_name", "?")))
    except (OSError, ValueError):
        return "unreadable config.json"


def model_findings(config: Config) -> Iterator[Finding]:
    for name, spec in config.models.items():
        sources = {"source": spec.source}
        sources |= {f: v for f in ("inpaint", "vae", "preview_decoder") if (v := getattr(spec, f))}
        sources |= {f"controlnets.{kind}": src for kind, src in spec.controlnets.items()}
        for key, source in sources.items():
            verdict, detail, advice = describe_source(source)
            yield Finding(f"models.{name}.{key}", verdict, detail, advice)


# -- CUDA and torch -------------------------------------------------------------------------


def torch_finding(devices: list[str], gpus: list[str], torch: TorchBuild) -> Finding:
    """The torch build against the GPUs present and the devices configured."""
    check = "torch and CUDA"
    wants_cuda = [d for d in devices if d.startswith("cuda")]
    if torch.error:
        return Finding(
            check,
            Verdict.FAIL,
            f"torch cannot be imported ({torch.error})",
            'install the engine: pip install "atelier-bot[engine]" (first the CUDA build of'
            " torch for your driver: pytorch.org); a front door without engines needs none",
        )
    build = f"torch {torch.version} ({f'CUDA {torch.cuda}' if torch.cuda else 'CPU-only build'})"
    if gpus and not torch.cuda_available:
        return Finding(
            check,
            Verdict.FAIL,
            f"{build}, but this machine has {gpus[0]}",
            "install the CUDA build of torch (pytorch.org: pick your CUDA version),"
            " e.g. pip install torch --index-url https://download.pytorch.org/whl/cu124",
        )
    if wants_cuda and not torch.cuda_available:
        return Finding(
            check,
            Verdict.FAIL,
            f"{build} sees no GPU, but [engine] devices = {devices}",
            'set [engine] devices = ["cpu"] (slow) or fix the GPU',
        )
    for device in wants_cuda:
        index = int(device.partition(":")[2] or 0)
        if index >= len(torch.devices):
            return Finding(
                check,
                Verdict.FAIL,
                f"{device} configured; torch sees {len(torch.devices)} GPU(s)",
                "fix [engine] devices",
            )
    if torch.cuda_available and not wants_cuda:
        return Finding(
            check,
            Verdict.WARN,
            f"{build} sees {torch.devices[0]}, but every engine is on the CPU",
            'set [engine] devices = ["cuda:0"]',
        )
    seen = f", sees {', '.join(torch.devices)}" if torch.devices else ""
    return Finding(check, Verdict.OK, build + seen)


# -- disk and database ----------------------------------------------------------------------


def disk_finding(config: Config) -> Finding:
    free = free_bytes(config.storage.data_dir) / GB
    minimum = config.storage.min_free_gb
    detail = f"{free:.1f} GB free for {config.storage.data_dir} (minimum {minimum:g} GB)"
    if free < minimum:
        return Finding("disk", Verdict.FAIL, detail, "free some space or move [storage] data_dir")
    return Finding("disk", Verdict.OK, detail)


async def database_finding(config: Config) -> Finding:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from ..store.migrate import alembic_config

    url = config.database_url
    parsed = make_url(url)
    is_file = parsed.get_backend_name() == "sqlite" and bool(parsed.database)
    if is_file and not await asyncio.to_thread(Path(str(parsed.database)).exists):
        return Finding(
            "database",
            Verdict.OK,
            f"{parsed.database} not created yet",
            "the bot creates it at first start",
        )
    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    except Exception as error:
        return Finding(
            "database",
            Verdict.FAIL,
            f"cannot open {parsed.render_as_string()}: {error}",
            "check [database] url and the file's permissions",
        )
    finally:
        await engine.dispose()
    if current == head:
        return Finding("database", Verdict.OK, f"at revision {current} (the newest)")
    known = {revision.revision for revision in script.walk_revisions()}
    if current is not None and current not in known:
        return Finding(
            "database",
            Verdict.FAIL,
            f"at revision {current}, unknown to this Atelier (made by a newer version?)",
            "upgrade Atelier",
        )
    return Finding(
        "database",
        Verdict.WARN,
        f"at revision {current}, newest is {head}",
        "the bot migrates at start (keeping a backup); or `atelier db upgrade`",
    )


# -- all of it ------------------------------------------------------------------------------


async def run_checks(config: Config, token: str, token_source: str, offline: bool) -> list[Finding]:
    findings = [token_shape(token, token_source)]
    well_formed = findings[0].verdict is Verdict.OK
    findings += await discord_findings(config, token if well_formed else "", offline)
    findings += model_findings(config)
    gpus, torch = await asyncio.gather(
        asyncio.to_thread(nvidia_gpus), asyncio.to_thread(probe_torch)
    )
    findings.append(torch_finding(config.engine.devices, gpus, torch))
    findings.append(disk_finding(config))
    findings.append(await database_finding(config))
    return findings


async def doctor(config: Config, token: str, token_source: str, offline: bool = False) -> int:
    findings = await run_checks(config, token, token_source, offline)
    for finding in findings:
        print(finding.line())
    failed = [f.check for f in findings if f.verdict is Verdict.FAIL]
    print(f"{len(failed)} problem(s): {', '.join(failed)}" if failed else "all checks passed")
    return 1 if failed else 0
