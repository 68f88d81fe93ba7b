"""A job's spec in the store: a JobSpec in, a JobSpec out, over the JSON every version wrote."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from bot.jobs.spec import JobSpec, stored_batch_key
from bot.store.audit import Actor
from bot.store.jobs import Requester
from bot.store.users import REDACTED
from engine.protocol import ControlType, Mode
from tests.stores import Stores, spec

DANA = Requester(user_id=444, user_name="dana", guild_id=10, channel_id=20)
# The spec as the first release stored it: no mode, input images, chaos, stop or blend.
OLDEST_SHAPE = {
    "prompt": "a lighthouse",
    "negative_prompt": "fog",
    "model": "tiny",
    "width": 512,
    "height": 512,
    "steps": 30,
    "cfg": 7.0,
    "sampler": "Euler",
    "seed": 7,
    "count": 1,
}


async def stored_json(stores: Stores, job_id: str) -> Any:
    async with stores.sessions() as session:
        # As text: PostgreSQL's driver would decode a json column itself.
        stored = await session.scalar(
            text("SELECT CAST(spec AS TEXT) FROM jobs WHERE id = :id"), {"id": job_id}
        )
    return json.loads(str(stored))


async def test_the_store_takes_a_job_spec_gives_it_back_and_stores_the_same_json(
    stores: Stores,
) -> None:
    asked = spec(count=2, init_image="inputs/ab12/image.png", blend=[["a fox", 2.0]])
    await stores.quotas.admit("job", DANA, asked, "tiny", [1, 2])

    job = await stores.jobs.get("job")
    assert isinstance(job.spec, JobSpec) and job.spec == asked
    assert job.spec.input_paths == {"init_image": "inputs/ab12/image.png"}
    # The column holds the JSON earlier versions wrote from the same spec: no migration.
    assert await stored_json(stores, "job") == asked.model_dump(mode="json")
    (waiting,), _ = await stores.jobs.waiting_snapshot(timedelta(hours=1))
    assert (waiting.model, waiting.batch_key, waiting.images) == (
        asked.model,
        stored_batch_key(asked),
        2,
    )


async def test_a_spec_stored_in_the_oldest_shape_loads_and_is_forgotten(stores: Stores) -> None:
    await stores.run_job("old", DANA, 1.0)
    async with stores.sessions.begin() as session:
        await session.execute(
            text("UPDATE jobs SET spec = :spec WHERE id = 'old'"),
            {"spec": json.dumps(OLDEST_SHAPE)},
        )

    old = (await stores.jobs.get("old")).spec
    assert old == JobSpec.model_validate(OLDEST_SHAPE)
    assert (old.mode, old.control_type, old.chaos, old.stop) == (
        Mode.TXT2IMG,
        ControlType.CANNY,
        0,
        100,
    )
    assert (old.input_paths, old.blend) == ({}, ())

    await stores.users.forget(DANA.user_id, Actor(DANA.user_id))

    forgotten = (await stores.jobs.get("old")).spec
    assert (forgotten.prompt, forgotten.negative_prompt) == (REDACTED, REDACTED)
    assert forgotten.model_dump(exclude={"prompt", "negative_prompt"}) == old.model_dump(
        exclude={"prompt", "negative_prompt"}
    )
    assert (await stored_json(stores, "old"))["prompt"] == REDACTED
