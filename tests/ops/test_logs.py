"""Logs: one line per event, JSON on demand, the job id as a field, no secret ever."""

from __future__ import annotations

import json
import logging

from bot.ops.logs import JsonFormatter, Redactor, TextFormatter, secrets_in

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.8qgalw.YYSEpl777F98RsMzTiEX2DNpdHMC4UKJzJV6gQ"
INTERACTION = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpzZWNyZXR0b2tlbmhlcmU"


def record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    info = None
    if exc:
        try:
            raise RuntimeError(f"login with {TOKEN} failed")
        except RuntimeError:
            import sys

            info = sys.exc_info()
    return logging.LogRecord("bot.test", logging.ERROR, __file__, 1, message, args, info)


def test_the_token_and_interaction_tokens_are_redacted_in_messages_and_tracebacks() -> None:
    redact = Redactor([TOKEN])
    line = record(
        "PATCH https://discord.com/api/v10/webhooks/123/%s/messages/@original: %s",
        INTERACTION,
        TOKEN,
        exc=True,
    )
    for formatter in (TextFormatter(redact), JsonFormatter(redact)):
        text = formatter.format(line)
        assert TOKEN not in text and INTERACTION not in text
        assert "webhooks/123/[redacted]/messages" in text


def test_json_lines_are_one_object_with_the_job_id_and_the_traceback_inside() -> None:
    text = JsonFormatter(Redactor()).format(
        record("job %s: engine error %s", "0123456789", "boom", exc=True)
    )
    assert "\n" not in text
    line = json.loads(text)
    assert line["job_id"] == "0123456789"
    assert line["message"] == "job 0123456789: engine error boom"
    assert line["level"] == "ERROR" and line["logger"] == "bot.test"
    assert "RuntimeError" in line["exc"]


def test_a_line_about_no_job_has_no_job_id() -> None:
    line = json.loads(JsonFormatter(Redactor()).format(record("commands synced")))
    assert "job_id" not in line


def test_credential_named_variables_are_secrets() -> None:
    found = secrets_in({"DISCORD_TOKEN": "a", "STABILITY_API_KEY": "b", "HOME": "/root"})
    assert sorted(found) == ["a", "b"]
