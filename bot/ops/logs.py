"""The bot's logging: one line per event, as text or JSON, with secrets taken out.

Every line passes through a redactor before it is written: the bot token (and
any other secret given at start), the interaction tokens inside webhook and
callback URLs (credentials for a member's reply) and the tokens of Vary (Region)
editor links (bot.core.editor) become `[redacted]`, in the message and in
tracebacks alike. In JSON each line is one object with `time`,
`level`, `logger`, `message`, and `job_id` when the line is about a job (the
bot's lines say "job <id>: ..."), so a log shipper can index by job.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from ..config import LoggingConfig

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "[redacted]"
# An interaction token is the path segment after the application or interaction id.
_URL_TOKENS = re.compile(r"((?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]{20,}")
# An editor link's token is the path segment after /edit/ (bot.core.editor.EDITOR_PATH).
_EDITOR_LINKS = re.compile(r"(/edit/)[^/\s?#\"']+")
_JOB_ID = re.compile(r"\bjob `?([0-9a-f]{10})\b")
# The environment variable the engine reads to log in the same format.
ENGINE_FORMAT_VARIABLE = "ATELIER_LOG_FORMAT"
# Libraries whose INFO lines are noise for an admin.
_NOISY = ("discord", "alembic.runtime.plugins", "aiohttp.access")


# Environment variables whose values are credentials by their name.
_SECRET_NAMES = re.compile(r"(TOKEN|API_KEY|APIKEY|SECRET|PASSWORD)$", re.IGNORECASE)


def secrets_in(environment: Mapping[str, str]) -> list[str]:
    """Values of the environment's credential-named variables (DISCORD_TOKEN, *_API_KEY...)."""
    return [value for name, value in environment.items() if _SECRET_NAMES.search(name)]


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return without_links(_URL_TOKENS.sub(rf"\1{REDACTED}", text))


def without_links(text: str) -> str:
    """`text` with every editor link's token taken out: the link is the credential that
    opens the editor, so no log line, audit entry or error message may hold one."""
    return _EDITOR_LINKS.sub(rf"\1{REDACTED}", text)


def job_id_of(record: logging.LogRecord, message: str) -> str | None:
    explicit = getattr(record, "job_id", None)
    if isinstance(explicit, str):
        return explicit
    found = _JOB_ID.search(message)
    return found.group(1) if found else None


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback is the `exc` field, never extra lines."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if (job_id := job_id_of(record, message)) is not None:
            line["job_id"] = job_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return self._redact(json.dumps(line, ensure_ascii=False))


def setup_logging(
    config: LoggingConfig | None, verbose: bool = False, secrets: Iterable[str] = ()
) -> None:
    """Send every logger to stderr in the configured format, secrets redacted."""
    config = config or LoggingConfig()
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(redact) if config.format == "json" else TextFormatter(redact)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else config.level)
    logging.captureWarnings(True)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
