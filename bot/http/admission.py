"""From a parsed body to a queued job through the core's door (bot.core.door): the engine a
request names, its images saved, the body's Draft, and the door's answer, a job or a
Refusal rendered by bot.http.refusals (a blocked prompt on a generation route is
recorded as a blocked job, which Stability's clients read as content-filtered)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import secrets
import shutil
from pathlib import Path

from ..blobs import INPUTS
from ..core.door import NO_INPUTS, Draft, InputSource, Origin, SavedInputs
from ..core.drafts import OptionsDraft
from ..core.refusals import Refusal, RefusalKind
from ..core.views import Job, KeyHolder, Requester, utcnow
from ..jobs.inputs import CheckedImage, inputs_by_role, read_image, save_checked
from ..jobs.service import Submitted
from ..jobs.spec import BadInput, InputImage, Inputs
from .errors import ApiError
from .models import GenerationOptions, JobRequest, MaskSource, TextPrompt
from .refusals import api_error
from .services import ApiServices
from .translate import RequestError, options_for, save_request_images

# The door's lines keep the logger name they had before the door was split up.
log = logging.getLogger("bot.http.server")

# A generation request's name in the audit and the moderation strikes.
COMMAND = "http"


class DoorRefused(Exception):
    """The core's door refused the request: `refusal` says why."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def engine_named(services: ApiServices, engine_id: str) -> str:
    models = services.config.models
    if engine_id not in models:
        known = ", ".join(sorted(models))
        raise ApiError(
            404,
            "not_found",
            f"engine_id: the specified engine (ID {engine_id}) was not found; engines: {known}",
        )
    return engine_id


def default_engine(services: ApiServices, personal_model: object) -> str:
    if isinstance(personal_model, str) and personal_model in services.config.models:
        return personal_model
    return services.config.engine.default_model


async def save_images(
    services: ApiServices,
    init_image: bytes,
    mask_image: bytes | None = None,
    mask_source: MaskSource | None = None,
) -> SavedInputs:
    """The request's images, checked and saved in a folder of their own (removed by the
    door if the request is refused)."""
    config = services.config
    data_dir = config.storage.data_dir
    folder = data_dir / "inputs" / secrets.token_hex(8)
    max_bytes = int(config.generation.max_attachment_mb * 2**20)
    try:
        inputs = await asyncio.to_thread(
            save_request_images,
            init_image,
            mask_image,
            mask_source,
            folder,
            data_dir,
            max_bytes,
        )
    except RequestError as error:
        raise ApiError(400, error.name, str(error)) from None
    return SavedInputs(inputs, folder)


def _decoded(encoded: str, field: str) -> bytes:
    """An image sent as base64 (a data URL too: a canvas's `toDataURL`), or a 400."""
    _, _, data = encoded.rpartition(",")
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise ApiError(400, "bad_request", f"{field}: not base64 (send a PNG, base64)") from None


async def save_references(services: ApiServices, encoded: list[str]) -> SavedInputs:
    """A body's reference images (base64), checked as attachments are and saved in a
    folder of their own, in order (removed by the door if the request is refused)."""
    images = [_decoded(image, f"reference_images[{n}]") for n, image in enumerate(encoded)]
    config = services.config
    data_dir = config.storage.data_dir
    folder = data_dir / "inputs" / secrets.token_hex(8)
    max_bytes = int(config.generation.max_attachment_mb * 2**20)
    try:
        inputs = await asyncio.to_thread(_save_references, images, folder, data_dir, max_bytes)
    except BadInput as error:
        raise ApiError(400, "bad_request", f"reference_images: {error}") from None
    return SavedInputs(inputs, folder)


def _save_references(images: list[bytes], folder: Path, data_dir: Path, max_bytes: int) -> Inputs:
    # Roles image1, image2, ...: bot.jobs.inputs.REFERENCE_ROLES, in order.
    roles = [f"image{n}" for n in range(1, len(images) + 1)]
    checked = {
        role: read_image(data, role, max_bytes) for role, data in zip(roles, images, strict=True)
    }
    return save_checked(checked, folder, data_dir)


def with_references(draft: OptionsDraft, body: JobRequest) -> OptionsDraft:
    """The draft with the body's style references (found by the core's door), reference
    mode and style weight."""
    update = {
        "references": tuple(body.style_references),
        "reference_mode": body.mode,
        "style_weight": body.style_weight,
    }
    return dataclasses.replace(draft, options=draft.options.model_copy(update=update))


async def read_mask(services: ApiServices, encoded: str) -> BodyMask:
    """A mask sent as base64 PNG (a data URL too: a canvas's `toDataURL`), checked as any
    mask (it repaints something, not everything); stored when the door admits it."""
    image = _decoded(encoded, "mask")
    max_bytes = int(services.config.generation.max_attachment_mb * 2**20)
    try:
        checked = await asyncio.to_thread(read_image, image, "mask", max_bytes)
    except BadInput as error:
        raise ApiError(400, "bad_request", f"mask: {error}") from None
    return BodyMask(checked, services.jobs.blobs.spool)


class BodyMask:
    """A body's mask, checked, as an InputSource (bot.core.door): written to the blob
    store's spool only once the request passed the door's checks, so the door publishes
    it to the store ([storage] backend) before its job is queued."""

    def __init__(self, checked: CheckedImage, spool: Path) -> None:
        self._checked = checked
        self._spool = spool
        self._folder: Path | None = None

    def declared(self) -> Inputs:
        image = self._checked.image
        return inputs_by_role({"mask": InputImage("", image.width, image.height)})

    async def save(self) -> Inputs:
        self._folder = self._spool / INPUTS / secrets.token_hex(8)
        return await asyncio.to_thread(
            save_checked, {"mask": self._checked}, self._folder, self._spool
        )

    async def discard(self) -> None:
        if self._folder is not None:
            await asyncio.to_thread(shutil.rmtree, self._folder, True)


async def draft_of(
    services: ApiServices,
    body: GenerationOptions,
    prompts: list[TextPrompt],
    engine: str,
    *,
    inputs: InputSource = NO_INPUTS,
    size: tuple[int | None, int | None] = (None, None),
    strength: float | None = None,
    stop: int = 100,
) -> OptionsDraft:
    """The body as the core's options (its prompts read as plain text); a field it cannot
    use is a 400, and the request's saved `inputs` are removed."""
    config = services.config
    try:
        options = options_for(
            body,
            prompts,
            engine,
            config.models,
            config.styles,
            inputs=inputs.declared(),
            size=size,
            strength=strength,
            stop=stop,
        )
    except RequestError as error:
        await inputs.discard()
        raise ApiError(400, error.name, str(error)) from None
    return OptionsDraft(command=COMMAND, options=options, catalog=services.core.catalog, plain=True)


def requester(holder: KeyHolder, synchronous: bool) -> Requester:
    return Requester.over_http(
        user_id=holder.user_id,
        user_name=holder.user_name,
        guild_id=holder.guild_id,
        role_ids=holder.role_ids,
        api_key_id=holder.key_id,
        synchronous=synchronous,
    )


async def queued(
    services: ApiServices,
    holder: KeyHolder,
    draft: Draft,
    inputs: InputSource = NO_INPUTS,
    *,
    synchronous: bool = False,
) -> Submitted:
    """The request through the door (rate, standing, moderation, spec, inputs, admission,
    audit): its job, or DoorRefused."""
    accepted = await services.core.door.submit(
        requester(holder, synchronous), draft, inputs, Origin.HTTP
    )
    if isinstance(accepted, Refusal):
        raise DoorRefused(accepted)
    (submitted,) = accepted.jobs  # a plain draft makes one job; HTTP journals nothing
    return submitted


async def blocked_job(
    services: ApiServices, holder: KeyHolder, draft: Draft, inputs: InputSource, refusal: Refusal
) -> Job:
    """A generation request's refusal: a blocked prompt is recorded as a blocked job, never
    queued or charged (Stability answers it as content-filtered images); any other is
    raised as its ApiError."""
    if refusal.kind is not RefusalKind.BLOCKED:
        raise api_error(refusal, utcnow())
    # The job as it was asked for: its size and seeds are what the answer shows.
    personal = await services.users.defaults(holder.user_id)
    try:
        (spec,) = await draft.build(personal, inputs.declared())
    except BadInput as error:
        raise ApiError(400, "bad_request", str(error)) from None
    job = await services.jobs.store.create_blocked(
        secrets.token_hex(5),
        requester(holder, synchronous=False),
        spec,
        spec.model,
        spec.seeds,
        refusal.plain(),
    )
    log.info("job %s: blocked at the HTTP door (key %d)", job.id, holder.key_id)
    return job
