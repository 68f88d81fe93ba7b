"""Engine logging: one stream on stderr, and every line logged during a job names that job."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_job_id: ContextVar[str] = ContextVar("atelier_job_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [job %(job_id)s] %(message)s"
# Set by the bot when its own log is JSON (`[logging] format = "json"`).
FORMAT_VARIABLE = "ATELIER_LOG_FORMAT"


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag every record logged inside, libraries' included, with `job_id`."""
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class _JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = _job_id.get()
        return True


class _NoiseFilter(logging.Filter):
    # diffusers warns about modules that "should be kept in float32" even when
    # the list it names is empty.
    def filter(self, record: logging.LogRecord) -> bool:
        return "should be kept in float32: []" not in record.getMessage()


class _JsonFormatter(logging.Formatter):
    """One object per line, the bot's JSON fields, so both processes ship alike."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", "-")
        if job_id != "-":
            line["job_id"] = job_id
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_JobIdFilter())
    handler.addFilter(_NoiseFilter())
    json_lines = os.environ.get(FORMAT_VARIABLE) == "json"
    handler.setFormatter(_JsonFormatter() if json_lines else logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    # torchsde compares float32 times with float64 bounds and warns on rounding
    # (google-research/torchsde#152); the DPM++ SDE samples are unaffected.
    warnings.filterwarnings(
        "ignore", message=r"Should have t[ab]", category=UserWarning, module=r"torchsde\."
    )


def quiet_libraries() -> None:
    """Send diffusers' and transformers' logs through our handler, without tqdm bars.

    Imported here rather than at the top: these take seconds to import, and
    the engine answers a bad handshake before paying for them.
    """
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging
    from huggingface_hub.utils.tqdm import disable_progress_bars as disable_hub_bars

    for library in (diffusers_logging, transformers_logging):
        library.disable_default_handler()
        library.enable_propagation()
        library.disable_progress_bar()
    disable_hub_bars()
