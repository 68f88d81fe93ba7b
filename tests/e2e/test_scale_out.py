"""Scale-out end to end on PostgreSQL and the local S3 server (issue #20, "How it is
tested"): two front doors (`atelier run` with `[engine] devices = []` for Discord, and
`atelier serve` for HTTP, both without engines) and three `atelier worker` processes on
the CPU: one serving the tiny SD 1.5 model, one the tiny SDXL model, one both. 60 jobs
from 6 members (four over the local Discord server, two over HTTP), 2 steps at 64x64:

- every job is delivered exactly once (Discord: one `job.delivered` each; HTTP: the
  client reads its image) and charged once;
- every job ran on a worker that serves its model (`jobs.claimed_by` names the worker);
- the first worker is killed with SIGKILL in the middle of a batch of four jobs (after
  its first step): each of
  them runs once more elsewhere (attempts 2, one `requeued` naming the dead worker);
- fair order holds across the workers: no member's first job of their backlog starts
  after the whole backlog (three or more jobs) another member had waiting when it was
  queued;
- a long job cancelled with /cancel at the Discord front door stops on its worker before
  its end, soon after the request;
- /forget-me deletes the member's images from the bucket, and only theirs.

Full size (60 jobs): about 2 CPU minutes in all; 3.5 minutes of wall time on 2 cores
shared with other test runs (load 4-8).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from bot.config import load_config
from tests.buckets import Bucket

from .conftest import Launch, RunningBot
from .test_apikey import KEY, free_port
from .test_imagine import finished
from .test_lifecycle import all_delivered, imagine
from .test_studio import job_id_of
from .test_workers import LEASE_SECONDS, RunningWorker, job_row

pytestmark = [pytest.mark.postgresql_only, pytest.mark.timeout(600)]

MEMBERS, JOBS_EACH = 6, 10
DISCORD_MEMBERS = 4  # the others send theirs over HTTP
STEPS = 2
# Every member may queue all their jobs at once, as fast as the test sends them.
LIMITS = f"""
[quota]
jobs_queued = 20

[moderation]
member_burst = 0
guild_burst = 0

[worker]
lease_seconds = {LEASE_SECONDS}
"""
# A batch holding a job whose prompt says "[hang]" stops at its second (last) step.
HANG = "hang_at_step=2@[hang]"


def model_section(name: str, source: Path) -> str:
    return f"""
[models.{name}]
source = "{source}"
width = 64
height = 64
steps = {STEPS}
sampler = "Euler"
"""


@dataclass(frozen=True)
class Cluster:
    """The processes' shared sections: one database, one bucket."""

    url: str
    bucket: Bucket
    models: dict[str, Path]

    def worker(self, folder: Path, serves: Sequence[str], fault: str = "") -> RunningWorker:
        """`atelier worker` with one CPU engine, batches of up to 4, serving `serves`;
        its local spool is a folder of its own, as on another host."""
        folder.mkdir()
        sections = "".join(model_section(name, self.models[name]) for name in serves)
        config = folder / "worker.toml"
        config.write_text(
            f'[database]\nurl = "{self.url}"\n{self.bucket.toml()}{LIMITS}\n'
            f'[engine]\ndevices = ["cpu"]\ndefault_model = "{serves[0]}"\n'
            f"max_batch_images = 4\njob_timeout = 120\n{sections}"
        )
        return RunningWorker(config, folder / "worker.log", fault, ready=": serving ")


async def api_key(front: RunningBot, user_id: int) -> str:
    """A member's HTTP key, made with /apikey at the Discord front door."""
    ix = await front.server.send_slash_command("apikey create", {"name": "cli"}, user_id=user_id)
    if (await ix.wait_for_callback(timeout=10)).type == 5:  # deferred: a follow-up
        answer = await ix.wait_for_followup(lambda m: not m.loading, timeout=30)
    else:
        answer = await ix.wait_for_original(timeout=10)
    found = KEY.search(answer.content)
    assert found is not None, answer.content
    return found.group()


async def http(method: str, url: str, key: str, body: dict[str, Any] | None = None) -> Any:
    response = await asyncio.to_thread(
        requests.request,
        method,
        url,
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert response.status_code in (200, 202), response.text
    return response.json()


async def http_result(url: str, key: str, job_id: str) -> dict[str, Any]:
    """The job as its HTTP client reads it once it ended (polled for 4 minutes)."""
    for _ in range(240 * 4):
        job: dict[str, Any] = await http("GET", f"{url}/v1/jobs/{job_id}", key)
        if job["status"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.25)
    raise AssertionError(f"HTTP job {job_id} never ended")


def model_of(n: int) -> str:
    return "tiny" if n % 2 == 0 else "xl"


def created(job: dict[str, Any]) -> datetime:
    return job["created_at"]  # type: ignore[no-any-return]


def waited_behind_a_backlog(
    jobs: list[dict[str, Any]], firsts: list[dict[str, Any]]
) -> list[tuple[str, int]]:
    """(job, member) pairs where a member's first job of a backlog (one of `firsts`)
    started only after every job another member had waiting (three or more, of the same
    model) when it was queued. The fair order (by recent GPU time) lets at most one of
    them go first, one more per worker claiming at the same moment; later jobs of a
    member who has had more GPU time may rightly wait longer."""
    found = []
    for job in firsts:
        for other in {row["user_id"] for row in jobs} - {job["user_id"]}:
            waiting = [
                row
                for row in jobs
                if row["user_id"] == other
                and row["model"] == job["model"]
                and row["created_at"] < job["created_at"] < row["started_at"]
            ]
            started: datetime = job["started_at"]
            if len(waiting) >= 3 and all(row["started_at"] < started for row in waiting):
                found.append((job["id"], other))
    return found


async def test_sixty_jobs_over_two_front_doors_and_three_workers_one_killed(
    launch_bot: Launch, bucket: Bucket, tiny_model_set: dict[str, Path], tmp_path: Path
) -> None:
    xl = model_section("xl", tiny_model_set["sdxl"])
    front = await launch_bot(engine="devices = []", extra=bucket.toml() + LIMITS + xl)
    server = front.server
    cluster = Cluster(
        load_config(front.config).database_url,
        bucket,
        {"tiny": tiny_model_set["sd15"], "xl": tiny_model_set["sdxl"]},
    )
    port = free_port()
    serve_config = front.config.with_name("serve.toml")
    serve_config.write_text(front.config.read_text() + f"\n[http]\nenabled = true\nport = {port}\n")
    web = RunningWorker(serve_config, tmp_path / "serve.log", command="serve", ready="listening")
    url = f"http://127.0.0.1:{port}"
    first = cluster.worker(tmp_path / "first", ["tiny"], HANG)
    second = cluster.worker(tmp_path / "second", ["xl"])
    third = cluster.worker(tmp_path / "third", ["tiny", "xl"])
    members = [server.user_id] + [server.add_member(name=f"m{n}") for n in range(1, MEMBERS)]
    try:
        await web.start()
        keys = {user: await api_key(front, user) for user in members[DISCORD_MEMBERS:]}

        # A batch of four (one job from each Discord member) for the first worker, which
        # hangs at its first step; it is killed there, and the batch runs elsewhere.
        queued = []
        for n, user in enumerate(members[:DISCORD_MEMBERS]):
            prompt = "a fox [hang]" if n == 0 else f"a fox {n}"
            ix = await imagine(front, prompt, user_id=user, seed=n, steps=STEPS)
            queued.append(await ix.wait_for_original(lambda m: "queued" in m.content))
        hung = job_id_of(queued[0])
        await first.start()
        first_id = first.worker_id
        # Mid-batch: its first step is done (written by the worker) and it hangs.
        await job_row(front, hung, state="running", claimed_by=first_id, progress_step=1)
        batch = front.rows("select id from jobs where claimed_by = :w", w=first_id)
        assert len(batch) == DISCORD_MEMBERS
        await asyncio.gather(second.start(), third.start())
        await first.kill()
        served = {first_id: {"tiny"}, second.worker_id: {"xl"}, third.worker_id: {"tiny", "xl"}}

        # The rest: each member's backlog in one go, member after member.
        interactions = []
        http_jobs: dict[str, str] = {}  # job id: its member's key
        for user in members:
            start = 1 if user in members[:DISCORD_MEMBERS] else 0
            for n in range(start, JOBS_EACH):
                options = {"seed": 100 + n, "steps": STEPS, "model": model_of(n)}
                if user in keys:
                    body = {"text_prompts": [{"text": f"a hare {n}"}], **options}
                    body["engine_id"] = body.pop("model")
                    job = await http("POST", f"{url}/v1/jobs", keys[user], body)
                    http_jobs[job["id"]] = keys[user]
                else:
                    interactions.append(
                        await imagine(front, f"a hare {n}", user_id=user, **options)
                    )
        for ix in interactions:
            await ix.wait_for_original(finished, timeout=240)
        for job_id, key in http_jobs.items():
            done = await http_result(url, key, job_id)
            assert done["status"] == "succeeded" and len(done["artifacts"]) == 1, done
        await all_delivered(front, MEMBERS * JOBS_EACH)

        jobs = front.rows("select * from jobs")
        assert len(jobs) == MEMBERS * JOBS_EACH
        assert all(job["state"] == "succeeded" for job in jobs), jobs
        # Delivered once: each Discord job's result once, each HTTP job read by its client.
        delivered = front.rows("select target from audit_log where action = 'job.delivered'")
        discord_jobs = sorted(str(job["id"]) for job in jobs if job["client"] == "discord")
        assert sorted(str(row["target"]) for row in delivered) == discord_jobs
        assert len(discord_jobs) + len(http_jobs) == len(jobs)
        results = [m for m in server.channel_messages() if "images are ready" in m.content]
        assert len(results) == len(discord_jobs)
        # Charged once each.
        charged = front.rows("select job_id from usage_ledger")
        assert sorted(str(row["job_id"]) for row in charged) == sorted(
            str(job["id"]) for job in jobs
        )
        assert front.rows("select * from quota_reservations") == []
        # Each on a worker that serves its model; the SDXL-only worker ran some.
        for job in jobs:
            assert job["model"] in served[str(job["claimed_by"])], job
        assert {job["claimed_by"] for job in jobs} >= {second.worker_id}
        # The killed worker's batch: each job ran once more elsewhere.
        trail = front.rows(
            "select target, params from audit_log where outcome = 'requeued' order by id"
        )
        assert sorted(str(row["target"]) for row in trail) == sorted(
            str(row["id"]) for row in batch
        )
        assert all(first_id in str(row["params"]) for row in trail)
        for row in batch:
            retried = front.job_row(str(row["id"]))
            assert retried["attempts"] == 2 and retried["claimed_by"] != first_id
        # Fair order: each member's first job of their backlog, against the others'.
        backlogs = [job for job in jobs if job["id"] not in {row["id"] for row in batch}]
        firsts = [
            min((job for job in backlogs if job["user_id"] == user), key=created)
            for user in members
        ]
        order = sorted((job["started_at"], job["user_id"], job["model"]) for job in jobs)
        assert waited_behind_a_backlog(jobs, firsts) == [], order

        await cancel_on_a_worker(front, set(served) - {first_id})
        await forget_me(front, bucket, members[2])
    finally:
        await stop_all(first, second, third, web)


async def cancel_on_a_worker(front: RunningBot, workers: set[str]) -> None:
    """A long job cancelled at the Discord front door stops on the worker running it,
    before its end and soon after the request."""
    server = front.server
    long = await imagine(front, "a long river", steps=150, seed=7, model="xl")
    running = await long.wait_for_original(lambda m: ": step " in m.content, timeout=120)
    job_id = job_id_of(running)
    at_request = front.job_row(job_id)
    assert at_request["claimed_by"] in workers and at_request["state"] == "running"
    cancel = await server.send_slash_command("cancel", {"job": job_id})
    assert "is cancelled" in (await cancel.wait_for_followup(timeout=60)).content
    await long.wait_for_original(lambda m: "cancelled" in m.content, timeout=60)
    stopped = await job_row(front, job_id, state="cancelled")
    assert stopped["progress_step"] < 150  # type: ignore[operator]
    took = stopped["finished_at"] - stopped["cancel_requested_at"]  # type: ignore[operator]
    assert took.total_seconds() < 5, took


async def forget_me(front: RunningBot, bucket: Bucket, user_id: int) -> None:
    """/forget-me through the front door deletes the member's images from the bucket."""
    server = front.server
    theirs = {
        str(row["id"]) for row in front.rows("select id from jobs where user_id = :u", u=user_id)
    }
    before = bucket.keys()
    images = {key for key in before if re.match(r"images/([^/]+)/", key)}
    mine = {key for key in images if key.split("/")[1] in theirs}
    assert len(mine) == JOBS_EACH
    ask = await server.send_slash_command("forget-me", user_id=user_id)
    question = await ask.wait_for_original(timeout=5)
    (button,) = question.custom_ids
    confirm = await server.click_button(question, button, user_id=user_id)
    await confirm.wait_for_callback(timeout=3)
    await ask.wait_for_original(lambda m: "Done" in m.content, timeout=30)
    assert bucket.keys() == before - mine


async def stop_all(*processes: RunningWorker) -> None:
    """Stop each process still running (SIGTERM) and check it ended cleanly."""
    for process in processes:
        if process.process is None or process.process.returncode is not None:
            continue
        assert await process.stop() == 0, process.log.read_text(errors="replace")
        logged = process.log.read_text(errors="replace")
        assert "Traceback" not in logged, logged
