"""Prometheus metrics: what the bot did (counters and histograms, fed as jobs end and as
Discord answers) and how it is now (gauges read from the database and the engines
when Prometheus scrapes).

Each `Metrics` has its own registry (no process-global state), is a JobListener
(sync, non-blocking: it only increments numbers), and is refreshed by the
HTTP handler right before the text is rendered, so a scrape always sees the
queue and the engines as they are.

Refusals are read from the audit log, where every refusal is already
recorded (by the door, the quota check or the admin check), from the highest
entry id at start onwards: a counter, like the others, that starts at zero.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.protocol import Progress, Status

from ..jobs.engine_client import EngineProcess
from ..store.models import Job, JobState, Lane
from .facts import OpsQueries

PREFIX = "atelier"
# Queue waits and run times: from a busy minute on a fast GPU to a stuck half hour.
SECONDS_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
IMAGES_WINDOW = 300.0  # seconds the images-per-second gauge averages over


@dataclass
class Snapshot:
    """The gauges of one scrape."""

    queue_depth: dict[Lane, int] = field(default_factory=dict)
    jobs: dict[JobState, int] = field(default_factory=dict)
    engines: list[tuple[EngineProcess, Status | None]] = field(default_factory=list)


class Metrics:
    def __init__(
        self,
        queries: OpsQueries,
        engines: Sequence[EngineProcess],
        delivery_retries: Callable[[], int] = lambda: 0,
        discord_connected: Callable[[], bool] = lambda: False,
        disk_free_bytes: Callable[[], int] = lambda: 0,
    ) -> None:
        self._queries = queries
        self._engines = list(engines)
        self._delivery_retries = delivery_retries
        self._discord_connected = discord_connected
        self._disk_free_bytes = disk_free_bytes
        self._snapshot = Snapshot()
        self._refreshing = asyncio.Lock()
        self._audit_cursor: int | None = None
        self._images: deque[tuple[float, int]] = deque()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs_finished = Counter(
            f"{PREFIX}_jobs_finished",
            "Jobs that ended, by outcome and model",
            ["outcome", "model"],
            registry=r,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_job_queue_wait_seconds",
            "Seconds from queued to started",
            ["model", "mode"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            f"{PREFIX}_job_run_seconds",
            "Seconds from started to finished",
            ["model", "mode"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.gpu_seconds = Counter(
            f"{PREFIX}_gpu_seconds",
            "GPU seconds the engines measured, by model",
            ["model"],
            registry=r,
        )
        self.images = Counter(
            f"{PREFIX}_images",
            "Images delivered by succeeded jobs, by model",
            ["model"],
            registry=r,
        )
        self.refusals = Counter(
            f"{PREFIX}_refusals",
            "Requests refused, by kind: moderation (blocklist),"
            " rate_limited, paused, out_of_scope, quota, banned, queue_full, not_admin, input",
            ["kind"],
            registry=r,
        )
        self.moderation_refusals = Counter(
            f"{PREFIX}_moderation_refusals", "Prompts refused by the blocklist", registry=r
        )
        self.moderation_blocks = Counter(
            f"{PREFIX}_moderation_blocks",
            "Finished jobs whose images moderation withheld",
            registry=r,
        )
        self.discord_requests = Counter(
            f"{PREFIX}_discord_requests",
            "Discord REST requests, by route",
            ["method", "route"],
            registry=r,
        )
        self.discord_errors = Counter(
            f"{PREFIX}_discord_api_errors",
            "Discord REST errors (4xx other than 429, 5xx, network), by route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.discord_rate_limits = Counter(
            f"{PREFIX}_discord_rate_limits",
            "Discord 429 answers, by route",
            ["method", "route"],
            registry=r,
        )
        r.register(_SnapshotCollector(self))

    # -- JobListener ---------------------------------------------------------------------

    def job_started(self, job: Job) -> None:
        pass

    def job_progress(self, job_id: str, progress: Progress) -> None:
        pass

    def job_finished(self, job: Job) -> None:
        mode = str(job.spec.mode)
        self.jobs_finished.labels(str(job.state), job.model).inc()
        if job.started_at is not None:
            self.queue_wait.labels(job.model, mode).observe(
                max(0.0, (job.started_at - job.created_at).total_seconds())
            )
            if job.finished_at is not None:
                self.run_time.labels(job.model, mode).observe(
                    max(0.0, (job.finished_at - job.started_at).total_seconds())
                )
        if job.gpu_seconds:
            self.gpu_seconds.labels(job.model).inc(job.gpu_seconds)
        if job.state is JobState.SUCCEEDED:
            self.images.labels(job.model).inc(len(job.seeds))
            self._images.append((time.monotonic(), len(job.seeds)))
        elif job.state is JobState.BLOCKED:
            self.moderation_blocks.inc()

    # -- Discord's HTTP answers (bot.ops.discord_http) -----------------------------------------

    def discord_response(self, method: str, route: str, status: int | None) -> None:
        """One Discord REST answer; `status` None for a network failure."""
        self.discord_requests.labels(method, route).inc()
        if status == 429:
            self.discord_rate_limits.labels(method, route).inc()
        elif status is None or status >= 400:
            label = "network" if status is None else str(status)
            self.discord_errors.labels(method, route, label).inc()

    # -- scrape ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Refusals count from now on (the audit log's newest entry)."""
        self._audit_cursor = await self._queries.last_audit_id()

    async def refresh(self) -> None:
        async with self._refreshing:
            if self._audit_cursor is None:
                await self.start()
            assert self._audit_cursor is not None
            for refusal in await self._queries.refusals_after(self._audit_cursor):
                self._audit_cursor = refusal.id
                self.refusals.labels(refusal.kind).inc()
                if refusal.kind == "moderation":
                    self.moderation_refusals.inc()
            statuses = await asyncio.gather(*(engine.status() for engine in self._engines))
            self._snapshot = Snapshot(
                queue_depth=await self._queries.queue_depth(),
                jobs=await self._queries.jobs_by_state(),
                engines=list(zip(self._engines, statuses, strict=True)),
            )

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)

    def images_per_second(self) -> float:
        now = time.monotonic()
        while self._images and self._images[0][0] < now - IMAGES_WINDOW:
            self._images.popleft()
        return sum(count for _, count in self._images) / IMAGES_WINDOW

    def gauges(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        depth = GaugeMetricFamily(f"{PREFIX}_queue_depth", "Jobs waiting, by lane", labels=["lane"])
        for lane, count in snapshot.queue_depth.items():
            depth.add_metric([str(lane)], count)
        yield depth
        jobs = GaugeMetricFamily(
            f"{PREFIX}_jobs", "Jobs in the database, by state", labels=["state"]
        )
        for state, count in snapshot.jobs.items():
            jobs.add_metric([str(state)], count)
        yield jobs
        yield GaugeMetricFamily(
            f"{PREFIX}_images_per_second",
            f"Images made per second over the last {IMAGES_WINDOW:g} s",
            value=self.images_per_second(),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_discord_connected",
            "1 while the gateway connection is up",
            value=1 if self._discord_connected() else 0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_disk_free_bytes",
            "Free disk in the data folder",
            value=self._disk_free_bytes(),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_delivery_retries",
            "Deliveries retried after a transient Discord failure",
            value=self._delivery_retries(),
        )
        yield from self._engine_gauges(snapshot.engines)

    def _engine_gauges(
        self, engines: list[tuple[EngineProcess, Status | None]]
    ) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}_engine_up", "1 while the engine process answers", labels=["device"]
        )
        restarts = CounterMetricFamily(
            f"{PREFIX}_engine_restarts",
            "Engine processes started after the first",
            labels=["device"],
        )
        used = GaugeMetricFamily(
            f"{PREFIX}_gpu_memory_used_bytes",
            "Device memory in use (NVML: all processes; else the engine's own)",
            labels=["device"],
        )
        free = GaugeMetricFamily(
            f"{PREFIX}_gpu_memory_free_bytes", "Device memory free", labels=["device"]
        )
        busy = GaugeMetricFamily(
            f"{PREFIX}_gpu_utilization_percent",
            "Percent of time a kernel ran (NVML)",
            labels=["device"],
        )
        loaded = GaugeMetricFamily(
            f"{PREFIX}_engine_loaded_model_bytes",
            "Models resident in an engine, by size",
            labels=["device", "model", "family"],
        )
        for engine, status in engines:
            device = engine.device
            up.add_metric([device], 1 if status is not None else 0)
            restarts.add_metric([device], max(0, engine.starts - 1))
            if status is None:
                continue
            memory = gpu_memory(status)
            if memory is not None:
                used.add_metric([device], memory[0])
                free.add_metric([device], memory[1])
            if status.gpu_utilization is not None:
                busy.add_metric([device], status.gpu_utilization)
            for model in status.loaded:
                loaded.add_metric([device, model.name, model.family], model.memory_bytes)
        yield from (up, restarts, used, free, busy, loaded)


def gpu_memory(status: Status) -> tuple[int, int] | None:
    """(used, free) bytes: NVML's whole-GPU view when the engine has it, else its own."""
    if status.gpu_memory_used_bytes is not None and status.gpu_memory_free_bytes is not None:
        return status.gpu_memory_used_bytes, status.gpu_memory_free_bytes
    if status.memory_used_bytes is not None and status.memory_total_bytes is not None:
        return status.memory_used_bytes, status.memory_total_bytes - status.memory_used_bytes
    return None


class _SnapshotCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics.gauges()
