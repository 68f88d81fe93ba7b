"""The result cache: never run the same work twice.

A job whose seed its member named makes the same pixels each time it runs (on one
device), so an identical request of the same member is answered from the stored images
of their earlier job: a new job, succeeded at once, marked as cached from that one, with
no GPU time and nothing charged. An identical request whose twin is still queued or
running waits for it (it is not claimed meanwhile) and is answered from its result; if
that one ends without images it can use, it runs itself. A drawn seed is never cached.

The result key (`result_key`) is a hash of the spec as canonical JSON, every field but
those that only say where an input came from, with each input image named by its
sha256 rather than its path, the model's configured weights with each local weight
file's (or folder's) names, sizes and mtimes, and each LoRA it uses by the sha256 of its
file (or folder), so that a checkpoint or LoRA file replaced under the same name answers
nothing from results made with the old one. A field added to
JobSpec (or an input image added to `JobSpec.input_paths`) joins the key by itself.

Hits stay within one member: a result is never shown to another member, so /forget-me
(which deletes the member's images and moves their jobs to a pseudonym) leaves nothing
another member could be answered from. Each answer gets its own copies of the images in
the blob store (under its own job's folder), so deleting either job leaves the other's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from weakref import WeakValueDictionary

from engine.protocol import LoraSpec, ModelSpec, Progress

from ..blobs import Blobs, job_folder
from ..store.cache import CacheStore, Copied
from ..store.jobs import NewJob, NewOutput
from ..store.models import Job, JobState, Output
from .events import JobEvents
from .spec import JobSpec
from .weights import WeightHashes

log = logging.getLogger(__name__)

# Spec fields that say where an input came from, not what it is: the input's own bytes
# are in the key (two variations of one image, from two jobs, make the same pixels).
PROVENANCE = frozenset({"source_job", "source_image"})
# Spec fields that list input images: each image is in `input_paths` (by its sha256).
IMAGE_LISTS = frozenset({"references"})
# A model's settings that are only defaults for specs, which carry the values they use;
# and its preview decoder, which never touches a result.
MODEL_DEFAULTS = frozenset({"width", "height", "steps", "cfg", "sampler", "preview_decoder"})
# The draft LoRA's name among a job's LoRAs' identities (a configured name is one word of
# letters, digits, - and _: none is this).
DRAFT_LORA = "<draft>"


def result_key(
    spec: JobSpec,
    model: ModelSpec,
    inputs_sha256: Mapping[str, str],
    loras: Mapping[str, str],
    weights: Mapping[str, str],
) -> str:
    """The hash of everything that decides a job's pixels: the spec (but its PROVENANCE),
    its input images by their sha256 (`inputs_sha256`, by field, as `spec.input_paths`),
    the model's weights as configured and by their files' stamps (`weights`, by role, as
    `weight_sources`), and the LoRAs it uses by their files' identity (`loras`, by name,
    the draft LoRA as DRAFT_LORA; bot.jobs.weights)."""
    paths = spec.input_paths
    described = {
        "spec": spec.model_dump(mode="json", exclude=set(PROVENANCE | IMAGE_LISTS | paths.keys())),
        "inputs": {name: inputs_sha256[name] for name in sorted(paths)},
        "model": model.model_dump(mode="json", exclude=set(MODEL_DEFAULTS)),
        "loras": dict(loras),
        "weights": dict(weights),
    }
    canonical = json.dumps(described, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def weight_sources(model: ModelSpec) -> dict[str, str]:
    """The model's weights that may make a job's pixels, by role (its preview decoder
    never does; its draft LoRA is among a draft's LoRAs)."""
    roles = {
        "source": model.source,
        "vae": model.vae,
        "inpaint": model.inpaint,
        "ip_adapter": model.ip_adapter,
        "image_encoder": model.image_encoder,
    } | {f"controlnet:{kind.value}": source for kind, source in model.controlnets.items()}
    return {role: source for role, source in roles.items() if source is not None}


@dataclass(frozen=True)
class Plan:
    """What the cache makes of one job of a request."""

    key: str | None = None  # None: not cacheable (its inputs or model are gone)
    answered: Job | None = None  # the member's earlier result that answers it
    waits_for: str | None = None  # or the identical job in flight it waits for

    @property
    def source(self) -> str | None:
        return self.answered.id if self.answered is not None else self.waits_for


NOT_CACHED = Plan()


class ResultCache:
    """The cache's rules over its store; a JobListener, so that the jobs waiting for a
    job are answered (or let run) as it ends. Owned by intake: `start`, then `stop`."""

    def __init__(
        self,
        *,
        store: CacheStore,
        models: Mapping[str, ModelSpec],
        blobs: Blobs,
        events: JobEvents,
        wake: Callable[[], None],
        loras: Mapping[str, LoraSpec] | None = None,
    ) -> None:
        self._store = store
        self._models = models
        self._loras = loras or {}
        self._weights = WeightHashes()
        self._blobs = blobs
        self._events = events
        # Tells the workers that released jobs wait (bot.jobs.intake.Workers.jobs_queued).
        self._wake = wake
        self._tasks: set[asyncio.Task[None]] = set()
        # Each member's admission under way (`admitting`); gone when none holds it.
        self._admissions: WeakValueDictionary[int, asyncio.Lock] = WeakValueDictionary()

    @contextlib.asynccontextmanager
    async def admitting(self, user_id: int) -> AsyncIterator[None]:
        """Held while a member's request is planned and admitted, so that an identical
        one arriving meanwhile (a double click, two clients at once) is planned once this
        one's jobs are rows: it finds them in flight and waits for their result instead
        of running too. Within this process; two front doors admitting the same member's
        identical request at the same instant may both run it."""
        lock = self._admissions.setdefault(user_id, asyncio.Lock())
        async with lock:
            yield

    async def plans(self, specs: Sequence[JobSpec], user_id: int) -> list[Plan]:
        """For each job: its key, and the member's result or job in flight that answers it."""
        return [await self._plan(spec, user_id) for spec in specs]

    async def answer(self, new: Sequence[NewJob], sources: Sequence[Job]) -> list[Job] | None:
        """The jobs of one command answered from `sources` (one each): written succeeded,
        with copies of the sources' images. None when a source's images cannot be used
        any more (deleted meanwhile): the command then goes to the queue."""
        copies = []
        try:
            for asked, source in zip(new, sources, strict=True):
                outputs = await self._copy(source, asked.job_id)
                if outputs is None:
                    await self._discard([n.job_id for n in new])
                    return None
                copies.append(Copied(asked, source, outputs))
            jobs = await self._store.create_cached(copies)
        except BaseException:
            await self._discard([n.job_id for n in new])
            raise
        for job in jobs:
            log.info("job %s: answered from the cache (job %s)", job.id, job.cached_from)
            self._events.finished(job)
        return jobs

    async def settle(self, source_id: str) -> list[Job]:
        """The jobs waiting for `source_id`, once it ended: answered from its images
        (returned, and their listeners told), or, when it has none they can use, let run.
        Nothing while it is still queued or running."""
        source = await self._store.job(source_id)
        if source is None or source.state in (JobState.QUEUED, JobState.RUNNING):
            return []
        answered: list[Job] = []
        for waiter in await self._store.waiters(source_id):
            outputs = await self._copy(source, waiter.id) if _usable(source) else None
            if outputs is None:
                break
            job = await self._store.answer_waiter(waiter, source, outputs)
            if job is None:
                # Cancelled meanwhile, or answered by a settle of the same twin running
                # alongside (whose copies are these very files): only a cancelled job's go.
                if (await self._store.job(waiter.id) or waiter).state is not JobState.SUCCEEDED:
                    await self._discard([waiter.id])
                continue
            log.info("job %s: answered from job %s, which it waited for", job.id, source_id)
            self._events.finished(job)
            answered.append(job)
        if released := await self._store.release(source_id):
            log.info("jobs %s: job %s left no result to share; they run", released, source_id)
            self._wake()
        return answered

    async def start(self) -> None:
        """At start: the jobs that wait for a job that ended meanwhile are settled."""
        for source_id in await self._store.sources_waited_for():
            await self.settle(source_id)

    async def settling(self) -> None:
        """Until the settles under way (set off by jobs that ended) are done."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the JobListener: a job that others may wait for ended -----------------------------

    def job_started(self, job: Job) -> None:
        return None

    def job_progress(self, job_id: str, progress: Progress) -> None:
        return None

    def job_finished(self, job: Job) -> None:
        if job.result_key is not None and job.cached_from is None:
            self._spawn(self._settle_quietly(job.id), f"cache-settle-{job.id}")

    # -- inside ------------------------------------------------------------------------------

    async def _plan(self, spec: JobSpec, user_id: int) -> Plan:
        model = self._models.get(spec.model)
        if model is None:
            return NOT_CACHED
        inputs = await self._inputs_sha256(spec)
        if inputs is None:
            return NOT_CACHED
        loras = await self._loras_identity(spec, model)
        if loras is None:
            return NOT_CACHED
        weights = {
            role: await self._weights.stamp(source)
            for role, source in weight_sources(model).items()
        }
        key = result_key(spec, model, inputs, loras, weights)
        earlier = await self._store.succeeded(user_id, key)
        if earlier is not None and _usable(earlier) and await self._present(earlier):
            return Plan(key, answered=earlier)
        return Plan(key, waits_for=await self._store.in_flight(user_id, key))

    async def _inputs_sha256(self, spec: JobSpec) -> dict[str, str] | None:
        """Each input image's sha256, by field; None when one is gone."""
        hashes = {}
        for name, key in spec.input_paths.items():
            data = await self._blobs.read(key)
            if data is None:
                return None
            hashes[name] = await asyncio.to_thread(_sha256, data)
        return hashes

    async def _loras_identity(self, spec: JobSpec, model: ModelSpec) -> dict[str, str] | None:
        """Each LoRA the job uses by its file's identity, by name; None when one is not
        configured (the engine refuses the job)."""
        sources = {}
        for use in spec.loras:
            lora = self._loras.get(use.name)
            if lora is None:
                return None
            sources[use.name] = lora.source
        if spec.draft:
            if model.draft_lora is None:
                return None
            sources[DRAFT_LORA] = model.draft_lora
        return {name: await self._weights.identity(source) for name, source in sources.items()}

    async def _present(self, job: Job) -> bool:
        return all([await self._blobs.exists(output.path) for output in job.outputs])

    async def _copy(self, source: Job, job_id: str) -> list[NewOutput] | None:
        """Copies of the source's images in the job's own folder; None when one is gone."""
        copies = []
        for output in source.outputs:
            data = await self._blobs.read(output.path)
            if data is None:
                return None
            key = f"{job_folder(job_id)}/{PurePosixPath(output.path).name}"
            await self._blobs.put(key, data)
            copies.append(_copy_of(output, key))
        return copies

    async def _discard(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            await self._blobs.delete_under(job_folder(job_id))

    async def _settle_quietly(self, source_id: str) -> None:
        try:
            await self.settle(source_id)
        except Exception:
            # The waiters stay queued, settled at the next start; logged with its job id.
            log.exception("job %s: its waiting twins could not be settled", source_id)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _usable(job: Job) -> bool:
    """Whether a job's images may answer another: it succeeded with every image it was
    asked for, none flagged by moderation (whose treatment depends on where it is shown)."""
    return (
        job.state is JobState.SUCCEEDED
        and len(job.outputs) == len(job.seeds)
        and not any(output.flags for output in job.outputs)
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _copy_of(output: Output, key: str) -> NewOutput:
    """An image's row for its copy at `key`: the same pixels, seed and recipe."""
    return NewOutput(
        index=output.index,
        path=key,
        sha256=output.sha256,
        seed=output.seed,
        width=output.width,
        height=output.height,
        recipe=output.recipe,
        flags=dict(output.flags),
    )
