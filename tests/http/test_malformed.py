"""Malformed requests: each is a 4xx in Stability's error shape, never a 500, and no
answer carries a traceback, a path or the text of an exception; the log keeps that."""

from __future__ import annotations

import gzip
import logging
from typing import Any

import pytest
import requests

from tests.bot.test_inputs import handmade_png

from .conftest import Member, RunningApi, png
from .test_stability import error_of

pytestmark = pytest.mark.asyncio(loop_scope="package")

TEXT_TO_IMAGE = "/v1/generation/tiny/text-to-image"
IMAGE_TO_IMAGE = "/v1/generation/tiny/image-to-image"
MASKING = "/v1/generation/tiny/image-to-image/masking"
BOUNDARY = "atelier-test-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
# What a traceback, a source path or an exception's repr looks like in an answer.
LEAKS = ("Traceback", 'File "', ".py", "/tmp", "/work", "Error(", "b'", "\\x")


def refused(response: requests.Response, status: int) -> dict[str, Any]:
    """The answer is `status` with Stability's JSON error, and leaks nothing."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = error_of(response)
    assert not [leak for leak in LEAKS if leak in response.text], response.text
    return error


def part(headers: bytes, content: bytes) -> bytes:
    return f"--{BOUNDARY}\r\n".encode() + headers + b"\r\n\r\n" + content + b"\r\n"


def form(*parts: bytes) -> bytes:
    """A multipart body written by hand, so a part's header can hold any bytes."""
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def prompt_part() -> bytes:
    return part(b'Content-Disposition: form-data; name="text_prompts[0][text]"', b"a dog")


def image_part(name: str = "init_image", extra: bytes = b"") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"; filename="i.png"'.encode()
    return part(disposition + b"\r\nContent-Type: image/png" + extra, png(64, 64))


async def post(
    api: RunningApi, member: Member, path: str, body: bytes, content_type: str, **headers: str
) -> requests.Response:
    return await api.call(
        "POST",
        path,
        data=body,
        headers={**member.headers, "Content-Type": content_type, **headers},
    )


@pytest.mark.parametrize("path", [IMAGE_TO_IMAGE, MASKING, "/v1/jobs"])
async def test_control_bytes_in_a_multipart_part_header_are_a_400(
    api: RunningApi, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.http.server")
    member = await api.member()
    body = form(prompt_part(), image_part(extra=b"\r\nX-Note: a\x01b\x7f"))
    error = refused(await post(api, member, path, body, MULTIPART), 400)
    assert error["message"].startswith("body: ")
    logged = [r.getMessage() for r in caplog.records if error["id"] in r.getMessage()]
    assert logged and "InvalidHeader" in caplog.text  # the detail is in the log


async def test_an_authorization_header_that_is_not_utf8_is_a_401(api: RunningApi) -> None:
    for key in (b"Bearer atl_\xff\xfe_secret", b"atl_abc_\xc3\x28", b"Bearer \x80"):
        response = await api.call("GET", "/v1/user/account", headers={"Authorization": key})
        assert refused(response, 401)["name"] == "unauthorized"


async def test_deeply_nested_json_is_a_400(api: RunningApi) -> None:
    member = await api.member()
    for path in (TEXT_TO_IMAGE, "/v1/jobs"):
        for body in (b"[" * 50_000, b'{"a":' * 50_000):
            error = refused(await post(api, member, path, body, "application/json"), 400)
            assert error["message"].startswith("body: ")


UNREADABLE_JSON = [
    ("not utf-8", b'{"text_prompts": [{"text": "\xff"}]}', "application/json", {}),
    ("unknown charset", b"{}", "application/json; charset=klingon", {}),
    ("cut short", b'{"text_prompts": [', "application/json", {}),
    ("broken gzip", b"not gzip at all", "application/json", {"Content-Encoding": "gzip"}),
    ("plain text", b"a dog, please", "text/plain", {}),
    ("xml", b"<prompt>a dog</prompt>", "application/xml", {}),
]


@pytest.mark.parametrize(
    ("case", "body", "content_type", "headers"),
    UNREADABLE_JSON,
    ids=[case for case, *_ in UNREADABLE_JSON],
)
async def test_an_unreadable_json_body_is_a_400(
    api: RunningApi, case: str, body: bytes, content_type: str, headers: dict[str, str]
) -> None:
    member = await api.member()
    for path in (TEXT_TO_IMAGE, "/v1/jobs"):
        response = await post(api, member, path, body, content_type, **headers)
        assert refused(response, 400)["message"].startswith("body: "), case


UNREADABLE_FORMS = [
    ("no boundary", form(prompt_part(), image_part()), "multipart/form-data"),
    ("no first boundary", b"just some bytes", MULTIPART),
    ("cut short", form(prompt_part(), image_part())[:-40], MULTIPART),
    (
        "unknown transfer encoding",
        form(prompt_part(), image_part(extra=b"\r\nContent-Transfer-Encoding: rot13")),
        MULTIPART,
    ),
    (
        "unknown charset",
        form(
            part(
                b'Content-Disposition: form-data; name="text_prompts[0][text]"\r\n'
                b"Content-Type: text/plain; charset=klingon",
                b"a dog",
            ),
            image_part(),
        ),
        MULTIPART,
    ),
    (
        "field not utf-8",
        form(
            part(b'Content-Disposition: form-data; name="text_prompts[0][text]"', b"\xff\xfe"),
            image_part(),
        ),
        MULTIPART,
    ),
    ("part without a name", form(part(b"Content-Type: text/plain", b"x"), image_part()), MULTIPART),
    (
        "nested multipart",
        form(
            prompt_part(),
            part(
                b'Content-Disposition: form-data; name="init_image"\r\n'
                b"Content-Type: multipart/mixed; boundary=inner",
                b"--inner\r\n\r\nx\r\n--inner--",
            ),
        ),
        MULTIPART,
    ),
    ("json to a form endpoint", b'{"text_prompts": [{"text": "a dog"}]}', "application/json"),
]


@pytest.mark.parametrize(
    ("case", "body", "content_type"),
    UNREADABLE_FORMS,
    ids=[case for case, *_ in UNREADABLE_FORMS],
)
async def test_an_unreadable_multipart_body_is_a_400(
    api: RunningApi, case: str, body: bytes, content_type: str
) -> None:
    member = await api.member()
    for path in (IMAGE_TO_IMAGE, MASKING):
        response = await post(api, member, path, body, content_type)
        assert refused(response, 400)["message"].startswith("body: "), case


async def test_a_broken_gzip_multipart_body_is_a_400(api: RunningApi) -> None:
    member = await api.member()
    response = await post(
        api, member, "/v1/jobs", b"\x1f\x8b broken", MULTIPART, **{"Content-Encoding": "gzip"}
    )
    refused(response, 400)


async def test_bodies_over_the_limit_are_a_413_however_they_are_sent(api: RunningApi) -> None:
    member = await api.member()
    big = b'{"text_prompts": [{"text": "' + b"a" * 3 * 2**20 + b'"}]}'
    refused(await post(api, member, TEXT_TO_IMAGE, big, "application/json"), 413)
    # Compressed small, large once inflated: the limit is on what the server reads.
    refused(
        await post(
            api,
            member,
            TEXT_TO_IMAGE,
            gzip.compress(big),
            "application/json",
            **{"Content-Encoding": "gzip"},
        ),
        413,
    )
    chunks = iter([big[: 2**20], big[2**20 :]])
    response = await api.call(
        "POST",
        TEXT_TO_IMAGE,
        data=chunks,
        headers={**member.headers, "Content-Type": "application/json"},
    )
    refused(response, 413)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/jobs/%FF%FE", 404),
        ("DELETE", "/v1/jobs/%C3%28", 404),
        ("GET", "/v1/jobs/" + "a" * 5000, 404),
        ("POST", "/v1/generation/%FF/text-to-image", 404),
    ],
)
async def test_odd_path_parameters_are_a_404(
    api: RunningApi, method: str, path: str, status: int
) -> None:
    member = await api.member()
    body = {"text_prompts": [{"text": "a dog"}]}
    response = await api.call(method, path, headers=member.headers, json=body)
    assert refused(response, status)["name"] == "not_found"


async def test_an_image_too_deep_to_decode_is_refused_from_its_header(api: RunningApi) -> None:
    member = await api.member()
    # 16-bit RGBA, 4096x4096: 128 MiB of samples declared in a few bytes.
    deep = handmade_png(4096, 4096, 16, 6, bytes(4096 * 8 + 1))
    response = await api.call(
        "POST",
        IMAGE_TO_IMAGE,
        headers=member.headers,
        files={"init_image": ("deep.png", deep)},
        data={"text_prompts[0][text]": "a dog"},
    )
    assert refused(response, 400)["message"] == (
        "init_image: The `init_image` is a 16-bit 4096×4096 image, more than I can read; save"
        " it with 8 bits per channel or at most 2896×2896 pixels."
    )
