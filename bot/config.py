"""Atelier's configuration: one TOML file, validated once at start.

Every key is documented in config.example.toml; with no file at all the bot
runs on the built-in defaults (bot.defaults). Secrets never live here: the
Discord token comes from the DISCORD_TOKEN environment variable (or a file
that `[discord] token_file` names).
"""

from __future__ import annotations

import re
import sqlite3
import tomllib
from pathlib import Path
from typing import Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from engine.protocol import (
    MAX_IMAGES_PER_BATCH,
    Attention,
    CompileMode,
    EngineSpeed,
    Family,
    LoraSpec,
    ModelSpec,
    Precision,
)

from .families import family_of
from .jobs.prompt_language import DEFAULT_MAX_PERMUTATIONS, Style
from .moderation.images import ImageModerationConfig

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL = "wss://gateway.discord.gg/"
_STYLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# Images per batch on a CUDA GPU when `[engine] max_batch_images` is not set.
CUDA_BATCH_IMAGES = 8


# The store's upserts and the delivery's compare-and-set read rows back with RETURNING.
MIN_SQLITE = (3, 35)


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
    token_env: str = Field(
        "DISCORD_TOKEN", min_length=1, description="environment variable holding the bot token"
    )
    token_file: Path | None = Field(
        None, description="file holding the bot token (e.g. a systemd credential); beats token_env"
    )
    allowed_guild_ids: list[int] = Field(
        default_factory=list, description="serve only in these servers; empty: in every one"
    )
    allowed_channel_ids: list[int] = Field(
        default_factory=list, description="serve only in these channels; empty: in every one"
    )


class S3Config(Section):
    """An S3-compatible bucket (AWS S3, MinIO, Ceph, R2...). Credentials come from the
    environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), never from
    this file."""

    bucket: str = Field(min_length=1, description="the bucket's name")
    endpoint: str | None = Field(
        None, description="the server's URL (MinIO, R2...); unset: AWS for `region`"
    )
    region: str | None = Field(None, description="the bucket's region; unset: AWS_REGION")
    prefix: str = Field("", description="keys go under this folder of the bucket")


class StorageConfig(Section):
    data_dir: Path = Field(Path("data"), description="images and the default SQLite database")
    backend: Literal["local", "s3"] = Field(
        "local", description="where images and uploads are kept: data_dir, or [storage.s3]"
    )
    s3: S3Config | None = None
    min_free_gb: float = Field(
        2.0, ge=0, description="free disk under data_dir below which /healthz fails and alerts"
    )
    retention_days: float | None = Field(
        None, gt=0, description="delete stored images and inputs older than this; unset: keep"
    )

    @model_validator(mode="after")
    def _s3_has_a_bucket(self) -> Self:
        if self.backend == "s3" and self.s3 is None:
            raise ValueError('storage: backend = "s3" needs a [storage.s3] section with a bucket')
        return self


class DatabaseConfig(Section):
    url: str | None = Field(None, description="SQLAlchemy async URL; default data_dir/atelier.db")


class EngineConfig(Section):
    devices: list[str] = Field(
        default_factory=lambda: ["cuda:0"],
        description="one engine each; [] runs none (a front door to `atelier worker` hosts)",
    )
    default_model: str
    job_timeout: float = Field(
        600.0, gt=0, description="seconds a job may run before its engine is restarted"
    )
    model_memory_gb: float | None = Field(
        None, gt=0, description="memory for resident checkpoints, evicted least recently used"
    )
    max_batch_images: int | None = Field(
        None,
        ge=1,
        le=MAX_IMAGES_PER_BATCH,
        description="images of compatible jobs run in one pipeline call; unset: by device",
    )

    # Speed (engine.speed; README "Performance"): what the diffusers guides recommend.
    dtype: Precision = Field("auto", description="auto: fp16 on CUDA, fp32 elsewhere")
    attention: Attention = Field("sdpa", description="sdpa: PyTorch's fused attention")
    channels_last: bool = Field(True, description="UNet and VAE in channels-last memory format")
    fuse_qkv: bool = Field(True, description="one matmul for each attention's q, k and v")
    sdxl_vae: str | None = Field(
        None, description="VAE for SDXL models that set none, e.g. an fp16-safe one"
    )
    compile: bool = Field(
        False, description="torch.compile the UNet and VAE decoder, warmed up at engine start"
    )
    compile_mode: CompileMode = "max-autotune"

    def batch_images(self, device: str) -> int:
        """How many images one batch on `device` may make: the configured value, else
        CUDA_BATCH_IMAGES on a CUDA GPU and 1 elsewhere (on a CPU a batch saves nothing).
        """
        if self.max_batch_images is not None:
            return self.max_batch_images
        return CUDA_BATCH_IMAGES if device.split(":")[0] == "cuda" else 1

    @model_validator(mode="after")
    def _speed_fits_devices(self) -> Self:
        cpus = [device for device in self.devices if device.split(":")[0] == "cpu"]
        if self.dtype == "fp16" and cpus:
            raise ValueError(
                'engine.dtype: "fp16" needs a GPU, and devices include "cpu" (PyTorch\'s CPU'
                ' kernels run half precision slowly or not at all); use "auto" or "fp32"'
            )
        if self.fuse_qkv and self.attention != "sdpa":
            raise ValueError(
                "engine.fuse_qkv: fused projections run on SDPA attention;"
                ' set attention = "sdpa" or fuse_qkv = false'
            )
        return self

    def speed(self) -> EngineSpeed:
        """The speed options every engine process gets; with compile on, the default
        model is warmed up at engine start, alone and at the largest batch."""
        warmup = sorted({1, *(self.batch_images(device) for device in self.devices)})
        return EngineSpeed(
            dtype=self.dtype,
            attention=self.attention,
            channels_last=self.channels_last,
            fuse_qkv=self.fuse_qkv,
            sdxl_vae=self.sdxl_vae,
            compile=self.compile,
            compile_mode=self.compile_mode,
            warmup_model=self.default_model if self.compile else None,
            warmup_batch_images=warmup,
        )


class GenerationConfig(Section):
    preview_every: int = Field(
        5, ge=0, description="a live preview every k denoising steps; 0 turns previews off"
    )
    variation_strength: float = Field(
        0.6, ge=0.05, le=1.0, description="how far a V button's variation strays"
    )
    strong_variation_strength: float = Field(
        0.85, ge=0.05, le=1.0, description="how far the Vary (strong) button's variation strays"
    )
    upscale_strength: float = Field(
        0.3, ge=0.05, le=1.0, description="how much a U button's 2x upscale repaints"
    )
    outpaint_strength: float = Field(
        0.95,
        ge=0.05,
        le=1.0,
        description=(
            "how freely Zoom Out, Make Square and Pan paint the new border"
            " (below 1 it keeps a trace of the picture's edge colours it starts from)"
        ),
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


class CacheConfig(Section):
    """The result cache: a member's request with a seed they named, identical to an
    earlier one of theirs, is answered from its stored images (bot.jobs.cache)."""

    enabled: bool = Field(
        True, description="answer identical seeded requests from stored results, free"
    )


class WorkerConfig(Section):
    """How a process that runs engines (`atelier run`, `atelier worker`) holds its claims
    on a shared queue (docs/operations.md, "Several GPU hosts")."""

    lease_seconds: float = Field(
        30.0,
        ge=1,
        description=(
            "a claimed batch is this worker's for this long, renewed every third of it"
            " while it runs; a worker silent longer (killed, cut off) loses it to the reaper"
        ),
    )
    switch_after_seconds: float = Field(
        0.0,
        ge=0,
        description=(
            "an engine keeps to the models it has loaded while they have jobs, unless"
            " another model's oldest job has waited this long; 0: fair order alone"
        ),
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


def fold_term(typed: str) -> str:
    """A blocked term as stored and compared: white space folded, case folded."""
    return " ".join(typed.split()).casefold()


class ModerationConfig(ImageModerationConfig):
    """`[moderation]`: the prompt blocklist, rate limits, what happens to members who keep
    tripping them, and the image classifier's keys (bot.moderation.images)."""

    blocklist: list[str] = Field(
        default_factory=list, description="terms refused everywhere, besides those admins add"
    )
    log_channel_id: int | None = Field(
        None,
        description="a channel where the bot tells admins about moderation decisions"
        " (pauses, withheld images); unset: nobody is told",
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
    strike_window_minutes: float = Field(
        10.0, gt=0, description="minutes over which blocked prompts count as strikes"
    )
    strike_cooldown_minutes: float = Field(
        30.0, gt=0, description="how long a member who reached `strikes` is paused"
    )

    @field_validator("blocklist")
    @classmethod
    def _terms_are_words(cls, terms: list[str]) -> list[str]:
        cleaned = [fold_term(term) for term in terms]
        if any(not term for term in cleaned):
            raise ValueError("a blocked term cannot be empty")
        return list(dict.fromkeys(cleaned))


class HttpConfig(Section):
    """The Stability-compatible HTTP API, served inside the bot (or alone: `atelier serve`)."""

    enabled: bool = Field(False, description="serve the HTTP API with the bot (`atelier run`)")
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one")
    max_body_mb: float = Field(
        25.0, gt=0, description="largest request body; a larger one is refused with 413"
    )
    requests_per_minute: int = Field(
        120, ge=0, description="requests one API key may make per minute; 0: no limit"
    )
    wait_seconds: float = Field(
        300.0,
        gt=0,
        description="how long a request that waits for its job (the generation routes,"
        " POST /v1/jobs?wait=true) waits; after it, 202 with the job id to poll",
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="the address members' browsers reach this server at (behind its proxy);"
        " unset: no Vary (Region) editor links",
    )
    editor_link_minutes: float = Field(
        10.0, gt=0, le=1440, description="how long a Vary (Region) editor link works"
    )
    link_secret_env: str = Field(
        "ATELIER_LINK_SECRET",
        description="environment variable holding the key that signs editor links;"
        " unset: a key generated once in data_dir",
    )


class MetricsConfig(Section):
    """The Prometheus endpoint (/metrics) and the health check (/healthz)."""

    enabled: bool = Field(False, description="serve /metrics and /healthz over HTTP")
    host: str = Field("127.0.0.1", description="address to listen on; loopback by default")
    port: int = Field(9464, ge=0, le=65535, description="TCP port (0: any free port)")


class AlertsConfig(Section):
    """Posts to a Discord channel when the service degrades, and once when it recovers."""

    channel_id: int | None = Field(None, description="channel for alerts; unset: no alerts")
    min_success_rate: float = Field(
        0.99, ge=0, le=1, description="alert when fewer of the last `success_window` jobs succeed"
    )
    success_window: int = Field(100, ge=1, description="jobs the success rate is taken over")
    max_mean_seconds: float = Field(
        180.0, gt=0, description="alert when the mean queued-to-delivered time is longer"
    )
    mean_window_minutes: float = Field(
        15.0, gt=0, description="minutes the mean queued-to-delivered time is taken over"
    )
    max_engine_restarts_per_hour: int = Field(
        3, ge=0, description="alert when the engines restart more often in an hour"
    )
    check_seconds: float = Field(60.0, gt=0, description="how often the conditions are checked")
    repeat_minutes: float = Field(
        60.0, ge=0, description="an alert that fires again is posted at most this often"
    )


class LoggingConfig(Section):
    format: Literal["text", "json"] = Field(
        "text", description='"text" for people, "json" (one object per line) for log shippers'
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class FamilyConfig(Section):
    """`[families.<sd|sdxl>]`: weights every model of the family uses unless its own
    `[models.<name>]` section sets the same key (IP-Adapter weights fit a family, not one
    checkpoint)."""

    ip_adapter: str | None = Field(
        None, description="--sref and /blend: the family's IP-Adapter weights"
    )
    image_encoder: str | None = Field(
        None, description="the CLIP image encoder that IP-Adapter was trained with"
    )


# The keys a [families.<name>] section gives its models, and how a model writes them.
FAMILY_KEYS = ("ip_adapter", "image_encoder")


class Config(Section):
    discord: DiscordConfig = DiscordConfig()
    storage: StorageConfig = StorageConfig()
    database: DatabaseConfig = DatabaseConfig()
    engine: EngineConfig
    generation: GenerationConfig = GenerationConfig()
    billing: BillingConfig = BillingConfig()
    quota: QuotaConfig = QuotaConfig()
    queue: QueueConfig = QueueConfig()
    cache: CacheConfig = CacheConfig()
    worker: WorkerConfig = WorkerConfig()
    admin: AdminConfig = AdminConfig()
    moderation: ModerationConfig = ModerationConfig()
    http: HttpConfig = HttpConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    logging: LoggingConfig = LoggingConfig()
    models: dict[str, ModelSpec] = Field(min_length=1)
    styles: dict[str, Style] = Field(
        default_factory=dict, description="presets a prompt applies with --style <name>"
    )
    loras: dict[str, LoraSpec] = Field(
        default_factory=dict, description="LoRAs a prompt applies with <lora:name:weight>"
    )
    families: dict[Family, FamilyConfig] = Field(
        default_factory=dict, description="defaults for every model of a family"
    )

    @field_validator("families", mode="before")
    @classmethod
    def _families_are_known(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            if name not in {family.value for family in Family}:
                raise ValueError(
                    f"families.{name}: a family is sd (SD 1.x/2.x) or sdxl, so name the"
                    " section [families.sd] or [families.sdxl]"
                )
        return value

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
        for name in self.loras:
            if not _STYLE_NAME.fullmatch(name):
                raise ValueError(
                    f"loras.{name}: a LoRA name is one word (letters, digits, - and _),"
                    " as members type it in <lora:name:0.8>"
                )
        return self

    @model_validator(mode="after")
    def _sqlite_is_new_enough(self) -> Self:
        if self.database_url.startswith("sqlite") and sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ValueError(
                f"database: this Python's SQLite is {sqlite3.sqlite_version}, and the bot needs"
                f" {'.'.join(map(str, MIN_SQLITE))} or newer (RETURNING): use a Python built"
                " with a newer SQLite, or PostgreSQL (database.url)"
            )
        return self

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite+aiosqlite:///{self.storage.data_dir / 'atelier.db'}"


def looks_local(source: str) -> bool:
    """A source is a path (not a hub repo id) when it is absolute, relative or a file."""
    return source.startswith(("/", ".", "~")) or source.endswith((".safetensors", ".ckpt"))


def _resolve_source(key: str, source: str, base: Path, must_exist: bool = True) -> str:
    """A local source as an absolute path that exists; a hub repo id unchanged."""
    if not looks_local(source):
        return source
    path = (base / Path(source).expanduser()).resolve()
    if must_exist and not path.exists():
        raise ConfigError(f"{key}: {source!r} does not exist ({path})")
    return str(path)


def _family_keys(
    key: str, section: ModelSpec | FamilyConfig, base: Path, must_exist: bool
) -> dict[str, str]:
    """The FAMILY_KEYS `section` sets, local paths resolved. An IP-Adapter's file may lie
    in a hub repo (`h94/IP-Adapter/models/x.safetensors`): only what is written as a path
    (/, ., ~) is local."""
    return {
        field: (
            _resolve_source(f"{key}.{field}", value, base, must_exist)
            if value.startswith(("/", ".", "~"))
            else value
        )
        for field in FAMILY_KEYS
        if (value := getattr(section, field)) is not None
    }


def _check_model_sources(config: Config, base: Path, must_exist: bool = True) -> Config:
    """Resolve every local weight source against the config file's folder, and give each
    model its family's keys where it sets none of its own."""
    families = {
        family: _family_keys(f"families.{family}", section, base, must_exist)
        for family, section in config.families.items()
    }
    models = {}
    for name, spec in config.models.items():
        key = f"models.{name}"
        extras = {
            field: _resolve_source(f"{key}.{field}", value, base, must_exist)
            for field in ("inpaint", "vae", "preview_decoder", "draft_lora")
            if (value := getattr(spec, field)) is not None
        }
        own = _family_keys(key, spec, base, must_exist)
        controlnets = {
            kind: _resolve_source(f"{key}.controlnets.{kind}", source, base, must_exist)
            for kind, source in spec.controlnets.items()
        }
        source = _resolve_source(f"{key}.source", spec.source, base, must_exist)
        family = spec.family or (family_of(source) if looks_local(source) else None)
        inherited = families.get(family, {}) if family is not None else {}
        extras |= inherited | own
        models[name] = spec.model_copy(
            update={"source": source, "controlnets": controlnets, "family": family, **extras}
        )
    loras = {
        name: lora.model_copy(
            update={
                "source": _resolve_source(f"loras.{name}.source", lora.source, base, must_exist)
            }
        )
        for name, lora in config.loras.items()
    }
    data_dir = (base / config.storage.data_dir.expanduser()).resolve()
    engine = config.engine
    if engine.sdxl_vae is not None:
        engine = engine.model_copy(
            update={"sdxl_vae": _resolve_source("engine.sdxl_vae", engine.sdxl_vae, base)}
        )
    discord = config.discord
    if discord.token_file is not None:
        token_file = (base / discord.token_file.expanduser()).resolve()
        discord = discord.model_copy(update={"token_file": token_file})
    return config.model_copy(
        update={
            "models": models,
            "loras": loras,
            "families": {
                family: FamilyConfig.model_validate(keys) for family, keys in families.items()
            },
            "engine": engine,
            "storage": config.storage.model_copy(update={"data_dir": data_dir}),
            "discord": discord,
        }
    )


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{key}: unknown key (see config.example.toml for every key)"
    if first["type"] == "missing":
        return f"{key}: required key is missing"
    message = first["msg"].removeprefix("Value error, ")
    if message.startswith((f"{key}:", f"{key}.")) or not first["loc"]:
        return message
    return f"{key}: {message} (got {first.get('input')!r})"


def load_config(path: Path, check_sources: bool = True) -> Config:
    """Read and validate a config file; raises ConfigError with one readable line.

    `check_sources` False leaves a missing local model path for the caller to
    report (`atelier doctor` checks every source and names each one missing).
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file (`atelier init` writes one; or leave out --config"
            " to run on the built-in defaults)"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return config_from_dict(raw, path.parent.resolve(), str(path), check_sources)


def config_from_dict(
    raw: dict[str, Any], base: Path, origin: str, check_sources: bool = True
) -> Config:
    """Validate a config given as TOML's dict; relative paths are taken from `base`."""
    try:
        config = Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{origin}: {_describe(error)}") from None
    return _check_model_sources(config, base, check_sources)
