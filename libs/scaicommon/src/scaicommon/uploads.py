"""Multipart uploads streamed to disk under a hard size limit (scaiecho §4.1 step 3).

File parts go to a fresh temporary directory as they arrive, hashed on the way, so an
upload is never held whole in memory. Text fields stay in memory, each under a small
limit. The caller closes the form (or uses ``async with``) to delete the directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Final

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartState, parse_options_header
from starlette.requests import Request

from scaicommon.errors import ScaiError, validation_error

HEAD_BYTES: Final = 64
# Body chunks bigger than this are parsed (and so written) off the event loop.
_THREAD_CHUNK: Final = 1 << 20


@dataclass
class UploadedFile:
    """One file part, stored at ``path``; ``head`` is its first 64 bytes."""

    field: str
    path: Path
    size: int
    sha256: str
    head: bytes
    filename: str | None
    content_type: str | None

    def read_bytes(self) -> bytes:
        """The whole file (synchronous; the caller decides whether it fits in memory)."""
        return self.path.read_bytes()


@dataclass
class MultipartForm:
    """The parsed form: the first value of each text field, every value in ``multi``.

    Only the first file part of a name is kept. ``close()`` deletes the files.
    """

    fields: dict[str, str]
    files: dict[str, UploadedFile]
    multi: dict[str, list[str]] = field(default_factory=dict)
    directory: Path | None = None

    def close(self) -> None:
        """Delete the temporary directory holding the files (idempotent)."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    async def __aenter__(self) -> MultipartForm:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def too_large(max_bytes: int) -> ScaiError:
    """413 ``PAYLOAD_TOO_LARGE`` carrying the limit."""
    return ScaiError("PAYLOAD_TOO_LARGE", "request body too large", max_bytes=max_bytes)


def _malformed(reason: str) -> ScaiError:
    return validation_error("body", reason, summary=f"malformed multipart body: {reason}")


def _boundary(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ScaiError(
            "UNSUPPORTED_MEDIA_TYPE",
            "this route takes multipart/form-data",
            details=[
                {"field": "Content-Type", "message": f"got {content_type[:100] or 'nothing'}"}
            ],
        )
    return boundary


class _Part:
    """The part being parsed: its headers, then its text or its open file."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.header_name = bytearray()
        self.header_value = bytearray()
        self.name = ""
        self.filename: str | None = None
        self.content_type: str | None = None
        self.text: bytearray | None = None
        self.file: IO[bytes] | None = None
        self.path: Path | None = None
        self.hasher = hashlib.sha256()
        self.size = 0
        self.head = bytearray()


class _FormBuilder:
    """python-multipart callbacks that fill a :class:`MultipartForm`."""

    def __init__(
        self, directory: Path, *, max_field_bytes: int, max_file_bytes: int | None
    ) -> None:
        self.form = MultipartForm(fields={}, files={}, multi={}, directory=directory)
        self._directory = directory
        self._max_field_bytes = max_field_bytes
        self._max_file_bytes = max_file_bytes
        self._part = _Part()
        self._count = 0

    def parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    def discard(self) -> None:
        """Close a file left open by an interrupted parse."""
        if self._part.file is not None:
            self._part.file.close()
            self._part.file = None

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.header_value += data[start:end]

    def _on_header_end(self) -> None:
        part = self._part
        name = part.header_name.decode("latin-1").strip().lower()
        part.headers[name] = part.header_value.decode("latin-1").strip()
        part.header_name.clear()
        part.header_value.clear()

    def _on_headers_finished(self) -> None:
        part = self._part
        disposition, options = parse_options_header(part.headers.get("content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise _malformed("a part lacks Content-Disposition: form-data with a name")
        part.name = options[b"name"].decode("utf-8", errors="replace")
        if b"filename" not in options:
            part.text = bytearray()
            return
        part.filename = options[b"filename"].decode("utf-8", errors="replace") or None
        part.content_type = part.headers.get("content-type") or None
        if part.name in self.form.files:
            return  # a repeated file field: only the first one is kept
        self._count += 1
        part.path = self._directory / f"part-{self._count}"
        part.file = part.path.open("xb")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        chunk = data[start:end]
        if part.text is not None:
            if len(part.text) + len(chunk) > self._max_field_bytes:
                raise validation_error(
                    part.name, f"field is longer than {self._max_field_bytes} bytes"
                )
            part.text += chunk
            return
        part.size += len(chunk)
        if self._max_file_bytes is not None and part.size > self._max_file_bytes:
            raise too_large(self._max_file_bytes)
        if part.file is None:
            return
        if len(part.head) < HEAD_BYTES:
            part.head += chunk[: HEAD_BYTES - len(part.head)]
        part.hasher.update(chunk)
        part.file.write(chunk)

    def _on_part_end(self) -> None:
        part = self._part
        if part.text is not None:
            try:
                value = part.text.decode("utf-8")
            except UnicodeDecodeError:
                raise validation_error(part.name, "field is not valid UTF-8") from None
            self.form.fields.setdefault(part.name, value)
            self.form.multi.setdefault(part.name, []).append(value)
        elif part.file is not None and part.path is not None:
            part.file.close()
            part.file = None
            self.form.files[part.name] = UploadedFile(
                field=part.name,
                path=part.path,
                size=part.size,
                sha256=part.hasher.hexdigest(),
                head=bytes(part.head),
                filename=part.filename,
                content_type=part.content_type,
            )
        self._part = _Part()


async def read_multipart(
    request: Request,
    *,
    max_bytes: int,
    max_field_bytes: int = 64 * 1024,
    max_file_bytes: int | None = None,
) -> MultipartForm:
    """Parse a ``multipart/form-data`` body, streaming file parts to a temporary directory.

    - A ``Content-Length`` over ``max_bytes`` is refused before any body byte is read;
      a body without one is refused as soon as more than ``max_bytes`` have arrived
      (``413 PAYLOAD_TOO_LARGE`` with ``max_bytes``). A file part over ``max_file_bytes``
      gets the same error with that limit.
    - Another content type, or no boundary: ``415 UNSUPPORTED_MEDIA_TYPE``.
    - A text field over ``max_field_bytes`` or not UTF-8, or a malformed body:
      ``422 VALIDATION_ERROR``.

    On any error the temporary directory is gone before the error propagates.
    """
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    boundary = _boundary(request.headers.get("content-type", ""))
    directory = Path(tempfile.mkdtemp(prefix="scai-upload-"))
    builder = _FormBuilder(
        directory, max_field_bytes=max_field_bytes, max_file_bytes=max_file_bytes
    )
    try:
        try:
            parser = builder.parser(boundary)
        except FormParserError:
            raise _malformed("the boundary is not usable") from None
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise too_large(max_bytes)
            if len(chunk) > _THREAD_CHUNK:
                await asyncio.to_thread(parser.write, chunk)
            elif chunk:
                parser.write(chunk)
        parser.finalize()
        if parser.state != MultipartState.END:
            raise _malformed("the body ends before the closing boundary")
    except FormParserError as exc:
        builder.discard()
        builder.form.close()
        raise _malformed(str(exc)[:120] or "unparseable") from None
    except BaseException:
        builder.discard()
        builder.form.close()
        raise
    return builder.form
