"""Running it, end to end: no config file, the metrics endpoint, /healthz, /admin status and
alerts, with the real bot (JSON logs) against the local Discord-compatible server."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.discord_server import LocalDiscord, Message

from .conftest import RunningBot, bot_config, check_finished_bot
from .test_imagine import finished


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ops_config(port: int, extra: str = "") -> str:
    return f"""
[metrics]
enabled = true
port = {port}

[logging]
format = "json"
{extra}"""


class OpsBot:
    """A running bot with metrics on `port` and JSON logs."""

    def __init__(self, bot: RunningBot, port: int) -> None:
        self.bot = bot
        self.server = bot.server
        self.port = port

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.port}{path}") as answer,
        ):
            return answer.status, await answer.text()

    async def health(self, ok: bool) -> tuple[int, dict[str, object]]:
        """/healthz once it is `ok` (200) or not (non-200), polled for 10 s."""
        for _ in range(100):
            status, body = await self.get("/healthz")
            if (status == 200) == ok:
                break
            await asyncio.sleep(0.1)
        return status, json.loads(body)

    async def metrics(self) -> Samples:
        """Every sample by (name, sorted labels), parsed by prometheus-client's own parser."""
        status, text = await self.get("/metrics")
        assert status == 200
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def imagine(self, prompt: str, **options: object) -> Message:
        ix = await self.server.send_slash_command("imagine", {"prompt": prompt, **options})
        return await ix.wait_for_original(finished, timeout=120)


@pytest.fixture
async def ops_bot(
    tmp_path: Path, tiny_model_set: dict[str, Path], request: pytest.FixtureRequest
) -> AsyncIterator[OpsBot]:
    server = LocalDiscord()
    await server.start()
    port = free_port()
    extra = getattr(request, "param", "")
    if "{alerts_channel}" in extra:
        extra = extra.replace("{alerts_channel}", str(server.add_channel("alerts")))
    config = bot_config(tmp_path, server, tiny_model_set, ops_config(port, extra))
    bot = RunningBot(server, config, tmp_path / "data", tmp_path / "bot.log")
    code: int | None = None
    try:
        await bot.start()
        yield OpsBot(bot, port)
    finally:
        if bot.process is not None:
            code = await bot.stop()
        await server.stop()
    check_finished_bot(bot, code, json_lines=True)


def cancelled(message: Message) -> bool:
    return "cancelled" in message.content


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


async def test_run_with_no_config_file_on_the_tiny_model_by_flag_connects(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    async with LocalDiscord() as server:
        bot = RunningBot(
            server,
            tmp_path / "config.toml",
            tmp_path / "data",
            tmp_path / "bot.log",
            arguments=["--model", str(tiny_model_dir)],
            cwd=tmp_path,
        )
        os.environ["ATELIER_DISCORD_API_BASE"] = server.api_base
        os.environ["ATELIER_DISCORD_GATEWAY_URL"] = server.gateway_url
        try:
            await bot.start()  # waits for IDENTIFY and the command sync
        finally:
            del os.environ["ATELIER_DISCORD_API_BASE"], os.environ["ATELIER_DISCORD_GATEWAY_URL"]
            code = await bot.stop()
        assert not (tmp_path / "config.toml").exists()
        assert (tmp_path / "data" / "atelier.db").is_file()  # SQLite under ./data
        logged = bot.log.read_text()
        assert "no config file: built-in defaults, engine on cpu" in logged
        assert "the engine runs on the CPU" in logged  # the speed warning
        assert {c["name"] for c in server.commands} >= {"imagine", "admin"}
        check_finished_bot(bot, code)


@pytest.mark.timeout(900)  # several jobs, engine restarts included, on a slow CPU
async def test_metrics_count_a_known_sequence_of_jobs_exactly(ops_bot: OpsBot) -> None:
    server = ops_bot.server
    block = await server.send_slash_command(
        "admin blocklist add", {"term": "kettle"}, user_id=server.owner_id
    )
    await block.wait_for_callback(timeout=3)
    # The first progress edit is rate-limited once; discord.py waits and retries.
    server.inject_rate_limit("PATCH", r"^/webhooks/\d+/[^/]+/messages/@original$")

    assert (await ops_bot.imagine("a vase", seed=1)).embeds  # succeeded
    failed = await ops_bot.imagine("[crash] a vase", seed=2)  # the engine dies, twice
    assert "failed" in failed.content
    long = await server.send_slash_command("imagine", {"prompt": "slow", "steps": 150})
    preview = await long.wait_for_original(
        lambda m: any(a.filename == "preview.png" for a in m.attachments), timeout=120
    )
    long_id = preview.content.split("`")[1]
    cancel = await server.click_button(preview, f"atelier:cancel:{long_id}")
    await cancel.wait_for_callback(timeout=3)
    assert "was cancelled" in (await long.wait_for_original(cancelled, timeout=60)).content
    for prompt in ("x" * 100_000, "a Kettle"):  # refused: too long; blocked word
        ix = await server.send_slash_command("imagine", {"prompt": prompt})
        assert "⚠️" in (await ix.wait_for_callback(timeout=3)).data["content"]
    # The refusal is answered first, then audited: the metrics read the audit log.
    await ops_bot.bot.wait_for_rows(
        "select id from audit_log where params like '%moderation%' and outcome = 'refused'"
    )

    samples = await ops_bot.metrics()
    finished_total = "atelier_jobs_finished_total"
    assert value(samples, finished_total, outcome="succeeded", model="tiny") == 1
    assert value(samples, finished_total, outcome="failed", model="tiny") == 1
    assert value(samples, finished_total, outcome="cancelled", model="tiny") == 1
    assert total(samples, finished_total) == 3
    assert value(samples, "atelier_refusals_total", kind="input") == 1
    assert value(samples, "atelier_refusals_total", kind="moderation") == 1
    assert total(samples, "atelier_refusals_total") == 2
    assert value(samples, "atelier_moderation_refusals_total") == 1
    assert value(samples, "atelier_images_total", model="tiny") == 1
    # Waits and run times of the three jobs, each observed once (the crashed one too).
    assert total(samples, "atelier_job_queue_wait_seconds_count") == 3
    assert value(samples, "atelier_job_run_seconds_count", model="tiny", mode="txt2img") == 3
    assert value(samples, "atelier_gpu_seconds_total", model="tiny") > 0
    assert value(samples, "atelier_engine_restarts_total", device="cpu") == 2
    assert value(samples, "atelier_engine_up", device="cpu") == 1
    loaded = "atelier_engine_loaded_model_bytes"
    assert value(samples, loaded, device="cpu", model="tiny", family="sd") > 0
    assert value(samples, "atelier_queue_depth", lane="normal") == 0
    assert value(samples, "atelier_jobs", state="succeeded") == 1
    assert value(samples, "atelier_jobs", state="cancelled") == 1
    assert value(samples, "atelier_discord_connected") == 1
    route = "/webhooks/{id}/{token}/messages/@original"
    assert value(samples, "atelier_discord_rate_limits_total", method="PATCH", route=route) == 1
    assert value(samples, "atelier_discord_requests_total", method="PATCH", route=route) > 1
    assert value(samples, "atelier_disk_free_bytes") > 0

    # /admin status: the same facts in an embed, and the 24-hour chart.
    ix = await server.send_slash_command("admin status", user_id=server.owner_id)
    reply = await ix.wait_for_original(lambda m: bool(m.embeds), timeout=30)
    assert reply.ephemeral
    fields = {field["name"]: field["value"] for field in reply.embeds[0]["fields"]}
    failed_id = failed.content.split("`")[1]
    assert f"`{failed_id}`" in fields["Last failures"]
    assert "3 jobs finished" in fields["Last hour"] and "success rate 50.0%" in fields["Last hour"]
    assert "p50" in fields["Queue wait (last hour)"]
    assert "tiny (sd" in fields["Engine cpu"] and "restarts: 2" in fields["Engine cpu"]
    (chart,) = reply.attachments
    with Image.open(io.BytesIO(chart.data)) as image:
        assert image.format == "PNG" and image.width >= 400


@pytest.mark.timeout(900)  # several jobs, engine restarts included, on a slow CPU
async def test_healthz_fails_while_the_engine_is_dead_and_passes_after_it_restarts(
    ops_bot: OpsBot,
) -> None:
    status, report = await ops_bot.health(ok=True)  # once the gateway is connected
    assert status == 200, report
    assert report["checks"]["engine cpu"]["detail"].startswith("not started yet")  # type: ignore[index]
    assert (await ops_bot.imagine("a bell", seed=1)).embeds
    pid = int(re.findall(r"engine on cpu ready \(pid (\d+)\)", ops_bot.bot.log.read_text())[-1])
    os.kill(pid, signal.SIGKILL)

    status, report = await ops_bot.health(ok=False)
    assert status == 503
    assert report["failing"] == ["engine cpu"]
    checks: dict[str, dict[str, object]] = report["checks"]  # type: ignore[assignment]
    assert "exited (code -9)" in str(checks["engine cpu"]["detail"])
    assert checks["database"]["ok"] and checks["discord"]["ok"]

    assert (await ops_bot.imagine("a bell", seed=2)).embeds  # the next job restarts it
    status, report = await ops_bot.get("/healthz")
    assert status == 200, report


ALERTS = """
[alerts]
channel_id = {alerts_channel}
min_success_rate = 0.5
success_window = 2
check_seconds = 0.2
max_engine_restarts_per_hour = 100
"""


@pytest.mark.timeout(900)  # several jobs, engine restarts included, on a slow CPU
@pytest.mark.parametrize("ops_bot", [ALERTS], indirect=True)
async def test_an_alert_fires_once_on_failing_jobs_and_once_on_recovery(
    ops_bot: OpsBot,
) -> None:
    server = ops_bot.server
    alerts_channel = int(re.findall(r"channel_id = (\d+)", ops_bot.bot.config.read_text())[0])
    for seed in (1, 2):
        assert "failed" in (await ops_bot.imagine("[crash] a lamp", seed=seed)).content
    for seed in (3, 4):
        assert (await ops_bot.imagine("a lamp", seed=seed)).embeds
    await asyncio.sleep(1.0)  # several more checks: nothing more is posted

    posted = [m.content for m in server.channel_messages(alerts_channel)]
    assert len(posted) == 2, posted
    assert posted[0].startswith("⚠️ Only 0% of the last") and "Latest failures" in posted[0]
    assert posted[1].startswith("✅ Jobs succeed again")
    rows = ops_bot.bot.rows(
        "select action, target, outcome from audit_log where action like 'alert.%'"
    )
    assert rows == [
        {"action": "alert.fired", "target": "alert:success_rate", "outcome": "posted"},
        {"action": "alert.recovered", "target": "alert:success_rate", "outcome": "posted"},
    ]
