"""Atelier's configuration: one TOML file, validated once at start.

Every key is documented in config.example.toml. Secrets never live here: the
Discord token comes from the DISCORD_TOKEN environment variable.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.protocol import ModelSpec

from .jobs.prompt_language import DEFAULT_MAX_PERMUTATIONS, Style

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL = "wss://gateway.discord.gg/"
_STYLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class ConfigError(Exception):
    """A config problem, worded as one line a person can act on."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DiscordConfig(Section):
    api_base: str = DISCORD_API_BASE
    gateway_url: str = DISCORD_GATEWAY_URL
    guild_ids: list[int] = Field(
        default_factory=list,
        description="sync commands to these guilds at once (global sync can take an hour)",
    )
    progress_interval: float = Field(
        2.0, gt=0, description="seconds between progress edits of a reply"
    )
    allowed_guild_ids: list[int] = Field(
        default_factory=list, description="serve only in these servers; empty: in every one"
    )
    allowed_channel_ids: list[int] = Field(
        default_factory=list, description="serve only in these channels; empty: in every one"
    )


class StorageConfig(Section):
    data_dir: Path = Path("data")
    retention_days: float | None = Field(
        None, gt=0, description="delete stored images and inputs older than this; unset: keep"
    )


class DatabaseConfig(Section):
    url: str | None = Field(None, description="SQLAlchemy async URL; default data_dir/atelier.db")


class EngineConfig(Section):
    devices: list[str] = Field(default_factory=lambda: ["cuda:0"], min_length=1)
    default_model: str
    job_timeout: float = Field(
        600.0, gt=0, description="seconds a job may run before its engine is restarted"
    )
    model_memory_gb: float | None = Field(
        None, gt=0, description="memory for resident checkpoints, evicted least recently used"
    )
    max_batch_images: int | None = Field(
        None, ge=1, description="images one engine request may carry; unset: 8 on CUDA, 1 on CPU"
    )

    @property
    def batch_images(self) -> int:
        if self.max_batch_images is not None:
            return self.max_batch_images
        return 8 if all(device.startswith("cuda") for device in self.devices) else 1


class GenerationConfig(Section):
    preview_every: int = Field(
        5, ge=0, description="a live preview every k denoising steps; 0 turns previews off"
    )
    variation_strength: float = Field(
        0.6, ge=0.05, le=1.0, description="how far a V button's variation strays"
    )
    upscale_strength: float = Field(
        0.3, ge=0.05, le=1.0, description="how much a U button's 2x upscale repaints"
    )
    max_attachment_mb: float = Field(
        20.0, gt=0, description="largest image attachment /imagine accepts"
    )
    max_permutations: int = Field(
        DEFAULT_MAX_PERMUTATIONS,
        ge=1,
        description="most prompts one prompt's {a, b} choices may make, each its own job",
    )


class QueueConfig(Section):
    """How the shared GPU queue is ordered, bounded and stopped."""

    max_length: int = Field(200, ge=1, description="jobs waiting at once, all members together")
    priority_role_ids: list[int] = Field(
        default_factory=list, description="members with one of these roles go first"
    )
    fair_share_minutes: float = Field(
        60.0, gt=0, description="how far back a member's GPU time counts for fair share"
    )
    stop_grace_seconds: float = Field(
        30.0, ge=0, description="at SIGTERM, how long a running batch may finish before requeue"
    )


class BillingConfig(Section):
    price_per_gpu_hour: float = Field(
        0.0, ge=0, description="what one hour of GPU time costs; a job costs its share"
    )
    currency: str = Field("USD", min_length=1, max_length=8)


class QuotaConfig(Section):
    """Default limits for every member; admins override them per role and per user."""

    timezone: str = Field("UTC", description="the zone whose midnight resets the daily limits")
    images_per_day: int | None = Field(None, ge=0, description="unset: unlimited")
    gpu_seconds_per_day: float | None = Field(None, ge=0, description="unset: unlimited")
    cost_per_day: float | None = Field(None, ge=0, description="unset: unlimited")
    jobs_queued: int | None = Field(
        5, ge=1, description="jobs a member may have waiting or running at once; unset: no limit"
    )
    over_quota: Literal["refuse", "relax"] = "refuse"
    default_gpu_seconds: float = Field(
        10.0, gt=0, description="estimate for a 512x512, 30-step image of a model with no history"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (e.g. UTC, Europe/Paris)") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class AdminConfig(Section):
    role_ids: list[int] = Field(
        default_factory=list, description="members with any of these roles are admins"
    )
    user_ids: list[int] = Field(default_factory=list, description="these members are admins")


class ModerationConfig(Section):
    """The prompt blocklist, rate limits, and what happens to members who keep tripping them."""

    blocklist: list[str] = Field(
        default_factory=list, description="terms refused everywhere, besides those admins add"
    )
    log_channel_id: int | None = Field(
        None, description="a channel where the bot tells admins about moderation decisions"
    )
    member_burst: int = Field(
        5, ge=0, description="jobs one member may ask for in a row; 0: no limit"
    )
    member_per_minute: float = Field(
        10.0, gt=0, description="then this many per minute (the burst refills at this pace)"
    )
    guild_burst: int = Field(
        30, ge=0, description="jobs one server may ask for in a row; 0: no limit"
    )
    guild_per_minute: float = Field(120.0, gt=0, description="then this many per minute")
    strikes: int = Field(
        3,
        ge=0,
        description="blocked prompts within strike_window_minutes that pause a member; 0: never",
    )
    strike_window_minutes: float = Field(10.0, gt=0)
    strike_cooldown_minutes: float = Field(
        30.0, gt=0, description="how long a member who reached `strikes` is paused"
    )

    @field_validator("blocklist")
    @classmethod
    def _terms_are_words(cls, terms: list[str]) -> list[str]:
        cleaned = [" ".join(term.split()).casefold() for term in terms]
        if any(not term for term in cleaned):
            raise ValueError("a blocked term cannot be empty")
        return list(dict.fromkeys(cleaned))


class Config(Section):
    discord: DiscordConfig = DiscordConfig()
    storage: StorageConfig = StorageConfig()
    database: DatabaseConfig = DatabaseConfig()
    engine: EngineConfig
    generation: GenerationConfig = GenerationConfig()
    billing: BillingConfig = BillingConfig()
    quota: QuotaConfig = QuotaConfig()
    queue: QueueConfig = QueueConfig()
    admin: AdminConfig = AdminConfig()
    moderation: ModerationConfig = ModerationConfig()
    models: dict[str, ModelSpec] = Field(min_length=1)
    styles: dict[str, Style] = Field(
        default_factory=dict, description="presets a prompt applies with --style <name>"
    )

    @model_validator(mode="after")
    def _default_model_is_configured(self) -> Self:
        if self.engine.default_model not in self.models:
            known = ", ".join(sorted(self.models))
            raise ValueError(
                f"engine.default_model: {self.engine.default_model!r} is not a [models.<name>]"
                f" section (configured: {known})"
            )
        return self

    @model_validator(mode="after")
    def _style_names_are_words(self) -> Self:
        for name in self.styles:
            if not _STYLE_NAME.fullmatch(name):
                raise ValueError(
                    f"styles.{name}: a style name is one word (letters, digits, - and _),"
                    " as members type it after --style"
                )
        return self

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.storage.data_dir / 'atelier.db'}"


def _looks_local(source: str) -> bool:
    """A source is a path (not a hub repo id) when it is absolute, relative or a file."""
    return source.startswith(("/", ".", "~")) or source.endswith((".safetensors", ".ckpt"))


def _resolve_source(key: str, source: str, base: Path) -> str:
    """A local source as an absolute path that exists; a hub repo id unchanged."""
    if not _looks_local(source):
        return source
    path = (base / Path(source).expanduser()).resolve()
    if not path.exists():
        raise ConfigError(f"{key}: {source!r} does not exist ({path})")
    return str(path)


def _check_model_sources(config: Config, base: Path) -> Config:
    """Resolve every local weight source against the config file's folder."""
    models = {}
    for name, spec in config.models.items():
        key = f"models.{name}"
        extras = {
            field: _resolve_source(f"{key}.{field}", value, base)
            for field in ("inpaint", "vae", "preview_decoder")
            if (value := getattr(spec, field)) is not None
        }
        controlnets = {
            kind: _resolve_source(f"{key}.controlnets.{kind}", source, base)
            for kind, source in spec.controlnets.items()
        }
        source = _resolve_source(f"{key}.source", spec.source, base)
        models[name] = spec.model_copy(
            update={"source": source, "controlnets": controlnets, **extras}
        )
    data_dir = base / config.storage.data_dir.expanduser()
    storage = config.storage.model_copy(update={"data_dir": data_dir.resolve()})
    return config.model_copy(update={"models": models, "storage": storage})


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key (see config.example.toml for every key)"
    if first["type"] == "missing":
        return f"{key}: required key is missing"
    message = first["msg"].removeprefix("Value error, ")
    if message.startswith(f"{key}:") or not first["loc"]:
        return message
    return f"{key}: {message} (got {first.get('input')!r})"


def load_config(path: Path) -> Config:
    """Read and validate a config file; raises ConfigError with one readable line."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (copy config.example.toml)") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{path}: {_describe(error)}") from None
    return _check_model_sources(config, path.parent.resolve())
