"""scaicommon.uploads: multipart bodies streamed to disk under hard limits, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import select
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from scaicommon.envelope import error_response, success
from scaicommon.errors import ScaiError
from scaicommon.testing.inloop import serving
from scaicommon.uploads import read_multipart

MiB = 1 << 20


class BodyCounter:
    """ASGI wrapper recording how many body bytes the app pulled for each request."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.received: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        index = len(self.received)
        self.received.append(0)

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received[index] += len(message.get("body", b""))
            return message

        await self.app(scope, counting_receive, send)


async def upload(request: Request) -> Response:
    """Parse the form, check the files on disk, report everything, then delete the files."""
    query = request.query_params
    max_file = query.get("max_file_bytes")
    try:
        form = await read_multipart(
            request,
            max_bytes=int(query.get("max_bytes", str(8 * MiB))),
            max_field_bytes=int(query.get("max_field_bytes", "1024")),
            max_file_bytes=int(max_file) if max_file else None,
        )
    except ScaiError as exc:
        return error_response(exc)
    async with form:
        files: dict[str, Any] = {}
        for name, part in form.files.items():
            files[name] = {
                "size": part.size,
                "sha256": part.sha256,
                "disk_sha256": hashlib.sha256(part.read_bytes()).hexdigest(),
                "disk_size": part.path.stat().st_size,
                "head": part.head.hex(),
                "filename": part.filename,
                "content_type": part.content_type,
                "in_directory": part.path.parent == form.directory,
            }
        directory = str(form.directory)
        existed = exists(directory)
    return success(
        {
            "fields": form.fields,
            "multi": form.multi,
            "files": files,
            "directory": directory,
            "directory_existed": existed,
        }
    )


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private temp root, so a test sees every directory the uploads leave behind."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, BodyCounter]]:
    """The upload app served over real HTTP."""
    app = BodyCounter(Starlette(routes=[Route("/upload", upload, methods=["POST"])]))
    async with serving(app) as base:
        yield base, app


def exists(path: str | Path) -> bool:
    """Whether ``path`` exists (sync, for use in assertions)."""
    return Path(path).exists()


def leftovers(root: Path) -> list[Path]:
    """What the uploads left under the temp root."""
    return list(root.iterdir())


def port_of(base: str) -> int:
    """The port of a served base URL."""
    return int(base.rsplit(":", 1)[1])


def multipart_body(boundary: str, parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """A hand-built multipart body of ``(name, filename or None, content)`` parts."""
    out = bytearray()
    for name, filename, content in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


async def chunked(data: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    """``data`` as a body without Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_big_file_lands_on_disk_with_its_hash(
    server: tuple[str, BodyCounter], temp_root: Path
) -> None:
    base, _ = server
    payload = os.urandom(3 * MiB)
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            base + "/upload",
            files={"file": ("meeting.m4a", payload, "audio/mp4")},
            data={"language_hint": "en"},
        )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    part = data["files"]["file"]
    truth = hashlib.sha256(payload).hexdigest()
    assert part["sha256"] == part["disk_sha256"] == truth
    assert part["size"] == part["disk_size"] == len(payload)
    assert part["head"] == payload[:64].hex()
    assert (part["filename"], part["content_type"]) == ("meeting.m4a", "audio/mp4")
    assert part["in_directory"] is True
    assert data["fields"] == {"language_hint": "en"}
    assert data["directory_existed"] is True
    assert Path(data["directory"]).parent == temp_root
    assert not exists(data["directory"])  # closed after the handler
    assert leftovers(temp_root) == []


def raw_post(port: int, head: bytes, chunks: list[bytes]) -> tuple[int, dict[str, Any], int]:
    """POST over a plain socket, watching for an early answer while the body goes out.

    httpx reads nothing until it has sent the whole body, so it cannot see a server
    that answers (and closes) early; a careful client like this one can. Returns the
    status, the JSON body and how many body bytes were sent.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    answer = bytearray()
    sent = 0
    with sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed; its answer may still be readable
            sent += len(chunk)
            ready, _, _ = select.select([sock], [], [], 0.005)
            if ready:
                break
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(65536):
                answer += data
                header, _, body = bytes(answer).partition(b"\r\n\r\n")
                length = re.search(rb"content-length: *(\d+)", header, re.IGNORECASE)
                if length and len(body) >= int(length.group(1)):
                    break
    header, _, body = bytes(answer).partition(b"\r\n\r\n")
    return int(header.split(b" ")[1]), json.loads(body), sent


def request_head(path: str, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 request line and headers."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_declared_length_over_limit_is_refused_before_reading(
    server: tuple[str, BodyCounter], temp_root: Path
) -> None:
    base, app = server
    head = request_head(
        "/upload?max_bytes=1000",
        {"Content-Type": "multipart/form-data; boundary=B", "Content-Length": str(10 * MiB)},
    )
    # Only the headers are sent: the answer must come without waiting for the body.
    status, body, _ = await asyncio.to_thread(raw_post, port_of(base), head, [])
    assert status == 413
    assert (body["error"]["code"], body["error"]["max_bytes"]) == ("PAYLOAD_TOO_LARGE", 1000)
    assert app.received == [0]
    assert leftovers(temp_root) == []


async def test_chunked_body_over_limit_stops_reading(
    server: tuple[str, BodyCounter], temp_root: Path
) -> None:
    base, app = server
    limit = 64 * 1024
    body = multipart_body("b0und", [("file", "a.wav", os.urandom(4 * MiB))])
    chunks = [
        b"%x\r\n%s\r\n" % (len(piece), piece)
        for piece in (body[i : i + 16 * 1024] for i in range(0, len(body), 16 * 1024))
    ]
    head = request_head(
        f"/upload?max_bytes={limit}",
        {"Content-Type": "multipart/form-data; boundary=b0und", "Transfer-Encoding": "chunked"},
    )
    status, answer, sent = await asyncio.to_thread(raw_post, port_of(base), head, chunks)
    assert status == 413
    assert answer["error"]["max_bytes"] == limit
    assert limit < app.received[0] < len(body)  # stopped soon after passing the limit
    assert sent < len(body)
    assert leftovers(temp_root) == []  # the half-written file went with its directory


async def test_chunked_body_within_limit_is_parsed(
    server: tuple[str, BodyCounter], temp_root: Path
) -> None:
    base, _ = server
    payload = os.urandom(200 * 1024)
    body = multipart_body("xyz", [("model", None, b"whisper-1"), ("file", "b.bin", payload)])
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            base + "/upload",
            content=chunked(body, 7000),
            headers={"Content-Type": 'multipart/form-data; boundary="xyz"'},
        )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["files"]["file"]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert data["fields"] == {"model": "whisper-1"}


async def test_file_part_over_its_own_limit(
    server: tuple[str, BodyCounter], temp_root: Path
) -> None:
    base, _ = server
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            base + "/upload",
            params={"max_file_bytes": str(100 * 1024)},
            files={"file": ("a.wav", os.urandom(300 * 1024), "audio/wav")},
        )
    assert answer.status_code == 413
    assert answer.json()["error"]["max_bytes"] == 100 * 1024
    assert leftovers(temp_root) == []


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "multipart/form-data", "multipart/mixed; boundary=abc", None],
)
async def test_not_multipart_form_data_is_415(
    server: tuple[str, BodyCounter], temp_root: Path, content_type: str | None
) -> None:
    base, _ = server
    headers = {"Content-Type": content_type} if content_type else {}
    async with httpx.AsyncClient() as client:
        answer = await client.post(base + "/upload", content=b'{"a": 1}', headers=headers)
    assert answer.status_code == 415
    assert answer.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert leftovers(temp_root) == []


async def test_repeated_fields_are_all_kept_in_multi(
    server: tuple[str, BodyCounter], temp_root: Path
) -> None:
    base, _ = server
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            base + "/upload",
            data={"timestamp_granularities[]": ["segment", "word"], "model": "whisper-1"},
            files=[("file", ("one.wav", b"first", "audio/wav")), ("file", ("two.wav", b"2nd"))],
        )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["fields"]["timestamp_granularities[]"] == "segment"
    assert data["multi"]["timestamp_granularities[]"] == ["segment", "word"]
    assert data["multi"]["model"] == ["whisper-1"]
    assert data["files"]["file"]["filename"] == "one.wav"
    assert data["files"]["file"]["size"] == 5


async def test_long_text_field_is_422_naming_it(
    server: tuple[str, BodyCounter], temp_root: Path
) -> None:
    base, _ = server
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            base + "/upload",
            params={"max_field_bytes": "16"},
            data={"prompt": "x" * 17},
            files={"file": ("a.wav", b"RIFF", "audio/wav")},
        )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"][0]["field"] == "prompt"
    assert leftovers(temp_root) == []


@pytest.mark.parametrize(
    "body",
    [
        # no closing boundary
        b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nvalue',
        # not a multipart body at all
        b"just some text that is not multipart",
        # a part without a name
        b"--B\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n--B--\r\n",
        # a text field that is not UTF-8
        b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n\xff\xfe\r\n--B--\r\n',
    ],
)
async def test_malformed_multipart_is_422(
    server: tuple[str, BodyCounter], temp_root: Path, body: bytes
) -> None:
    base, _ = server
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            base + "/upload",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=B"},
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
    assert leftovers(temp_root) == []
