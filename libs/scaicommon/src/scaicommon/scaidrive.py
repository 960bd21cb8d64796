"""ScaiDrive client (platform §13.3): shares, folder listings, upload, delete and download.

A :class:`ScaiDriveClient` acts with one exchanged token (``Authorization: Bearer …``) over
the process's shared ``httpx.AsyncClient``; it is cheap to build per request. Failures raise
a :class:`DriveError` subclass carrying the HTTP status (``None`` for transport failures):

==========================  ============================================================
``DriveForbidden``          401, 403
``DriveNotFound``           404
``DriveConflict``           409 or ``NAME_CONFLICT``
``DriveTooLarge``           413 or ``PAYLOAD_TOO_LARGE``
``DriveQuotaExceeded``      507 or ``QUOTA_EXCEEDED``
``DriveUnavailable``        anything else: 5xx, timeout, connect error, unreadable answer
==========================  ============================================================

GET requests are retried once on ``DriveUnavailable``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog

from scaicommon.requestid import current_request_id
from scaicommon.scaikey import PeerError, parse_peer_error
from scaicommon.tracing import inject_trace_headers

log = structlog.get_logger("scaicommon.scaidrive")

ROOT = "root"
WRITE_ROLES = frozenset({"owner", "admin", "contributor"})
PAGE_SIZE = 200
MAX_PAGES = 500
DEFAULT_TIMEOUT_S = 30.0
_RETRY_PAUSE_S = 0.2

T = TypeVar("T")


# ----- errors -------------------------------------------------------------------------


class DriveError(Exception):
    """A ScaiDrive failure: ``status`` (``None`` when no answer came), ``code`` and message."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class DriveForbidden(DriveError):
    """401 or 403: the token or the caller's membership does not allow this."""


class DriveNotFound(DriveError):
    """404: share, folder or file unknown (or in another tenant)."""


class DriveConflict(DriveError):
    """409 / ``NAME_CONFLICT``: something with that name already exists in the folder."""


class DriveTooLarge(DriveError):
    """413 / ``PAYLOAD_TOO_LARGE``: ScaiDrive refused the file size."""


class DriveQuotaExceeded(DriveError):
    """507 / ``QUOTA_EXCEEDED``: the share's quota would be exceeded."""


class DriveUnavailable(DriveError):
    """Any other failure: 5xx, timeout, connect error or an unreadable answer."""


class DownloadTooLarge(DriveError):
    """A download is larger than the caller's limit (``limit`` bytes); nothing was kept."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"the file is larger than {limit} bytes")
        self.size = size
        self.limit = limit


def error_for(peer: PeerError) -> DriveError:
    """The exception of a non-2xx answer (§13.3 error mapping)."""
    status, code = peer.status, (peer.code or "").upper()
    message = peer.message or f"ScaiDrive answered {status}"
    kind: type[DriveError]
    if status in (401, 403):
        kind = DriveForbidden
    elif status == 404:
        kind = DriveNotFound
    elif status == 409 or code == "NAME_CONFLICT":
        kind = DriveConflict
    elif status == 413 or code == "PAYLOAD_TOO_LARGE":
        kind = DriveTooLarge
    elif status == 507 or code == "QUOTA_EXCEEDED":
        kind = DriveQuotaExceeded
    else:
        kind = DriveUnavailable
    return kind(message, status=status, code=peer.code)


# ----- results ------------------------------------------------------------------------


def _str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise DriveUnavailable(f"ScaiDrive answered without {name}")
    return value


def _opt_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _opt_int(data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class DriveShare:
    """A share of the caller, with the caller's ``role`` in it."""

    id: str
    name: str
    type: str
    role: str
    owner_id: str | None = None
    quota_bytes: int | None = None
    used_bytes: int | None = None

    @property
    def writable(self) -> bool:
        """Whether the role may upload (``owner``, ``admin`` or ``contributor``)."""
        return self.role in WRITE_ROLES

    @classmethod
    def parse(cls, data: object) -> DriveShare:
        """One entry of ``/users/me/shares``."""
        if not isinstance(data, dict):
            raise DriveUnavailable("a share entry is not an object")
        return cls(
            id=_str(data, "id"),
            name=_opt_str(data, "name") or "",
            type=_opt_str(data, "type") or "",
            role=_opt_str(data, "role") or "",
            owner_id=_opt_str(data, "owner_id"),
            quota_bytes=_opt_int(data, "quota_bytes"),
            used_bytes=_opt_int(data, "used_bytes"),
        )


@dataclass(frozen=True)
class DriveItem:
    """A child of a folder: ``type`` is ``folder`` or ``file``."""

    id: str
    name: str
    type: str
    size: int | None = None
    mime_type: str | None = None
    modified_at: str | None = None

    @property
    def is_folder(self) -> bool:
        """Whether the item is a folder."""
        return self.type == "folder"

    @property
    def is_file(self) -> bool:
        """Whether the item is a file."""
        return self.type == "file"

    @classmethod
    def parse(cls, data: object) -> DriveItem:
        """One entry of a folder's ``items``."""
        if not isinstance(data, dict):
            raise DriveUnavailable("a folder item is not an object")
        return cls(
            id=_str(data, "id"),
            name=_str(data, "name"),
            type=_opt_str(data, "type") or "file",
            size=_opt_int(data, "size"),
            mime_type=_opt_str(data, "mime_type"),
            modified_at=_opt_str(data, "modified_at"),
        )


@dataclass(frozen=True)
class DriveListing:
    """A folder's children and its path (``"/"`` for the share root when ScaiDrive says so)."""

    items: tuple[DriveItem, ...]
    path: str | None
    total: int


@dataclass(frozen=True)
class DriveFile:
    """A file object as ScaiDrive returns it; ``raw`` keeps every field."""

    id: str
    share_id: str | None
    folder_id: str | None
    name: str
    path: str | None
    mime_type: str | None
    size: int | None
    checksum_sha256: str | None
    version: int | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, data: object) -> DriveFile:
        """A file object (``POST /files`` or ``GET /files/{id}``), also wrapped in ``data``."""
        if isinstance(data, dict) and isinstance(data.get("data"), dict) and "id" not in data:
            data = data["data"]
        if not isinstance(data, dict):
            raise DriveUnavailable("the file object is not an object")
        return cls(
            id=_str(data, "id"),
            share_id=_opt_str(data, "share_id"),
            folder_id=_opt_str(data, "folder_id"),
            name=_opt_str(data, "name") or "",
            path=_opt_str(data, "path"),
            mime_type=_opt_str(data, "mime_type"),
            size=_opt_int(data, "size"),
            checksum_sha256=_opt_str(data, "checksum_sha256"),
            version=_opt_int(data, "version"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class DriveDownload:
    """A downloaded file: its bytes, name and content type."""

    data: bytes = field(repr=False)
    name: str | None
    content_type: str | None


# ----- the client ---------------------------------------------------------------------


def _segment(item_id: str) -> str:
    """An id as one URL path segment; an id that cannot name anything is ``DriveNotFound``."""
    if item_id in ("", ".", ".."):
        raise DriveNotFound(f"no ScaiDrive item {item_id!r}", status=None)
    return quote(item_id, safe="")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise DriveUnavailable(
            "ScaiDrive answered with something unreadable", status=response.status_code
        ) from None


def _read_children(response: httpx.Response) -> tuple[list[DriveItem], str | None, int | None]:
    """One page of a folder listing: its items, the folder path and the total."""
    body = _json(response)
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body = body["data"]
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        raise DriveUnavailable("ScaiDrive answered without items")
    items = [DriveItem.parse(i) for i in body["items"]]
    return items, _opt_str(body, "path"), _opt_int(body, "total")


class ScaiDriveClient:
    """ScaiDrive calls made with one exchanged ``access_token``."""

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        http: httpx.AsyncClient,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = access_token
        self._http = http
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"ScaiDriveClient({self.base_url!r})"

    # ----- transport ------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "X-Request-ID": current_request_id(),
        }
        inject_trace_headers(headers)
        return headers

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; raises the mapped :class:`DriveError` on failure."""
        try:
            response = await self._http.request(
                method,
                self.base_url + path,
                headers=self._headers(),
                timeout=self.timeout_s,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            log.warning("scaidrive_unreachable", method=method, error=type(exc).__name__)
            raise DriveUnavailable(f"ScaiDrive cannot be reached ({type(exc).__name__})") from None
        if response.is_success:
            return response
        error = error_for(parse_peer_error(response.status_code, response.content))
        log.info(
            "scaidrive_error",
            method=method,
            status=response.status_code,
            code=error.code,
            kind=type(error).__name__,
        )
        raise error

    async def _get(self, path: str, read: Callable[[httpx.Response], T], **kwargs: Any) -> T:
        """A GET, retried once on :class:`DriveUnavailable` (reading the answer included)."""
        return await self._retrying(lambda: self._send("GET", path, **kwargs), read)

    @staticmethod
    async def _retrying(
        call: Callable[[], Awaitable[httpx.Response]], read: Callable[[httpx.Response], T]
    ) -> T:
        try:
            return read(await call())
        except DriveUnavailable:
            await asyncio.sleep(_RETRY_PAUSE_S)
        return read(await call())

    async def _content(self, file_id: str, max_bytes: int | None) -> tuple[bytes, str | None]:
        """Stream a file's content, stopping as soon as it passes ``max_bytes``."""
        url = f"{self.base_url}/api/v1/files/{_segment(file_id)}/content"
        try:
            async with self._http.stream(
                "GET", url, headers=self._headers(), timeout=self.timeout_s
            ) as response:
                if not response.is_success:
                    body = await response.aread()
                    raise error_for(parse_peer_error(response.status_code, body))
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise DownloadTooLarge(size, max_bytes)
                    chunks.append(chunk)
                return b"".join(chunks), response.headers.get("content-type")
        except httpx.HTTPError as exc:
            log.warning("scaidrive_unreachable", method="GET", error=type(exc).__name__)
            raise DriveUnavailable(f"ScaiDrive cannot be reached ({type(exc).__name__})") from None

    # ----- operations -----------------------------------------------------------------

    async def list_my_shares(self) -> list[DriveShare]:
        """``GET /api/v1/users/me/shares``: the caller's shares (bare or wrapped in ``data``)."""

        def read(response: httpx.Response) -> list[DriveShare]:
            body = _json(response)
            if isinstance(body, dict) and isinstance(body.get("data"), dict):
                body = body["data"]
            shares = body.get("shares") if isinstance(body, dict) else None
            if not isinstance(shares, list):
                raise DriveUnavailable("ScaiDrive answered without shares")
            return [DriveShare.parse(s) for s in shares]

        return await self._get("/api/v1/users/me/shares", read)

    async def list_children(self, share_id: str, folder_id: str | None = ROOT) -> DriveListing:
        """Every child of ``folder_id`` (``None``/``"root"`` = share root), paging by 200."""
        folder = _segment(folder_id or ROOT)
        items: list[DriveItem] = []
        path: str | None = None
        total = 0
        for page in range(MAX_PAGES):
            params = {"share_id": share_id, "limit": PAGE_SIZE, "offset": len(items)}

            batch, page_path, page_total = await self._get(
                f"/api/v1/folders/{folder}/children", _read_children, params=params
            )
            if page == 0:
                path = page_path
            items.extend(batch)
            total = page_total if page_total is not None else len(items)
            if len(batch) < PAGE_SIZE or len(items) >= total:
                break
        return DriveListing(tuple(items), path, max(total, len(items)))

    async def find_child(self, share_id: str, folder_id: str | None, name: str) -> DriveItem | None:
        """The child named exactly ``name`` (case-sensitive), or ``None``."""
        listing = await self.list_children(share_id, folder_id)
        for item in listing.items:
            if item.name == name:
                return item
        return None

    async def upload(
        self,
        share_id: str,
        folder_id: str | None,
        name: str,
        data: bytes,
        content_type: str,
        *,
        overwrite: bool = False,
    ) -> DriveFile:
        """``POST /api/v1/files`` (multipart). With ``overwrite``, a same-named file is replaced.

        Replacing: on :class:`DriveConflict` the same-named file is deleted and the upload
        tried once more; a same-named folder, or a second conflict, raises
        :class:`DriveConflict`.
        """
        try:
            return await self._upload_once(share_id, folder_id, name, data, content_type)
        except DriveConflict:
            if not overwrite:
                raise
        existing = await self.find_child(share_id, folder_id, name)
        if existing is not None:
            if not existing.is_file:
                raise DriveConflict(f"a folder named {name!r} already exists", status=409)
            await self.delete_file(existing.id, missing_ok=True)
        return await self._upload_once(share_id, folder_id, name, data, content_type)

    async def _upload_once(
        self, share_id: str, folder_id: str | None, name: str, data: bytes, content_type: str
    ) -> DriveFile:
        fields = {"share_id": share_id, "name": name}
        if folder_id and folder_id != ROOT:
            fields["folder_id"] = folder_id
        response = await self._send(
            "POST", "/api/v1/files", data=fields, files={"file": (name, data, content_type)}
        )
        return DriveFile.parse(_json(response))

    async def delete_file(self, file_id: str, *, missing_ok: bool = False) -> None:
        """``DELETE /api/v1/files/{file_id}`` (200 or 204); ``missing_ok`` ignores a 404."""
        try:
            await self._send("DELETE", f"/api/v1/files/{_segment(file_id)}")
        except DriveNotFound:
            if not missing_ok:
                raise

    async def file_info(self, file_id: str) -> DriveFile:
        """``GET /api/v1/files/{file_id}``."""
        return await self._get(
            f"/api/v1/files/{_segment(file_id)}", lambda response: DriveFile.parse(_json(response))
        )

    async def download(self, file_id: str, *, max_bytes: int | None = None) -> DriveDownload:
        """The file's content (``GET /api/v1/files/{file_id}/content``) with its name and type.

        Raises :class:`DownloadTooLarge` when the file is larger than ``max_bytes``.
        """
        info = await self.file_info(file_id)
        if max_bytes is not None and info.size is not None and info.size > max_bytes:
            raise DownloadTooLarge(info.size, max_bytes)
        try:
            data, content_type = await self._content(file_id, max_bytes)
        except DriveUnavailable:
            await asyncio.sleep(_RETRY_PAUSE_S)
            data, content_type = await self._content(file_id, max_bytes)
        return DriveDownload(data, info.name or None, content_type or info.mime_type)
