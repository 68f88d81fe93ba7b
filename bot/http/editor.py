"""Vary (Region)'s browser editor, served to the holder of a signed link (bot.core.editor):
the page (plain files in bot/http/static, no build step, nothing from elsewhere), the
image and words it edits, and its submission. The link is the credential: these routes
take no API key. A link that does not open the editor gets a page saying what to do.

- GET  /edit/{token}        the editor page
- GET  /edit/{token}/job    the job's words and the image's size (JSON)
- GET  /edit/{token}/image  the image (PNG)
- POST /edit/{token}        {prompt, negative_prompt, mask}: queue the Vary (Region)
- GET  /editor/{file}       the page's script and style sheet
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

from ..core.actions import Words
from ..core.editor import Opened
from ..core.refusals import Refusal, RefusalKind
from ..core.views import utcnow
from . import admission
from .bodies import read_json
from .errors import ApiError
from .models import EditorSubmission
from .openapi import PNG
from .refusals import RENDERINGS, api_error
from .services import services_of

STATIC = Path(__file__).parent / "static"
# The token is in the page's address: no other site gets it as a referrer, no cache
# keeps the page, and the page runs only its own files.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:;"
    " frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}


def add_editor_routes(app: web.Application) -> list[web.AbstractRoute]:
    """The editor's routes, added to `app`: all public (the link is the credential)."""
    router = app.router
    resources = [
        router.add_get("/edit/{token}", page).resource,
        router.add_post("/edit/{token}", submit).resource,
        router.add_get("/edit/{token}/job", job).resource,
        router.add_get("/edit/{token}/image", image).resource,
        router.add_static("/editor/", STATIC),
    ]
    return [route for resource in resources if resource is not None for route in resource]


async def page(request: web.Request) -> web.StreamResponse:
    opened = await _opened(request)
    if isinstance(opened, Refusal):
        return refusal_page(opened)
    return web.FileResponse(STATIC / "editor.html", headers=HEADERS)


async def job(request: web.Request) -> web.Response:
    opened = await _opened(request)
    if isinstance(opened, Refusal):
        raise api_error(opened, utcnow())
    source = opened.source
    assert source.image is not None
    return web.json_response(
        {
            "job_id": source.job_id,
            "image": source.number,
            "width": source.image.width,
            "height": source.image.height,
            "prompt": source.spec.prompt,
            "negative_prompt": source.spec.negative_prompt,
            "expires_at": opened.link.expires_at.isoformat(),
        },
        headers=HEADERS,
    )


async def image(request: web.Request) -> web.StreamResponse:
    opened = await _opened(request)
    if isinstance(opened, Refusal):
        raise api_error(opened, utcnow())
    assert opened.source.image is not None
    # From the blob store, wherever [storage] keeps it (the data folder or a bucket).
    data = await services_of(request).jobs.output_bytes(opened.source.image.path)
    if data is None:  # deleted since the link was opened
        raise api_error(GONE, utcnow())
    return web.Response(body=data, content_type=PNG, headers=HEADERS)


GONE = Refusal(
    kind=RefusalKind.GONE,
    reason="This image is no longer stored: it cannot be edited any more.",
)


async def submit(request: web.Request) -> web.Response:
    """Queue the Vary (Region); its answer goes to Discord as a reply to the image."""
    services = services_of(request)
    opened = await services.core.editor.open(request.match_info["token"])
    if isinstance(opened, Refusal):
        raise api_error(opened, utcnow())
    try:
        body = await read_json(request, EditorSubmission)
        mask = await admission.read_mask(services, body.mask)
    except ApiError as error:
        # No API key names the member here: the link does, and the core audits it.
        await services.core.editor.unreadable(opened.link, error.message)
        error.audited = True
        raise
    words = Words(prompt=body.prompt, negative=body.negative_prompt)
    outcome = await services.core.editor.submit(opened, words, mask)
    if isinstance(outcome, Refusal):
        raise api_error(outcome, utcnow())
    (queued,) = outcome.jobs
    message = (
        f"Queued as job {queued.job.id}: the new image will appear in Discord as a reply to"
        " the original. You can close this page."
    )
    return web.json_response(
        {"job_id": queued.job.id, "message": message}, status=202, headers=HEADERS
    )


def refusal_page(refusal: Refusal) -> web.Response:
    """A page with the refusal's one sentence, in the status its kind has over HTTP."""
    status = RENDERINGS[refusal.kind].status
    body = REFUSED_PAGE.replace("{reason}", html.escape(refusal.plain()))
    return web.Response(text=body, status=status, content_type="text/html", headers=HEADERS)


REFUSED_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Vary (Region) · Atelier</title>
<link rel="stylesheet" href="/editor/editor.css">
</head>
<body>
<main class="refused">
<h1>Vary (Region)</h1>
<p id="reason">{reason}</p>
</main>
</body>
</html>
"""


async def _opened(request: web.Request) -> Opened | Refusal:
    return await services_of(request).core.editor.open(request.match_info["token"])
