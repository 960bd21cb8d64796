"""Reading the caller's ScaiDrive: the picker listings and file references (scaispeak.md §9.6).

- :class:`DrivePicker`: ``GET /scaidrive/shares`` and ``GET /scaidrive/shares/{id}/folders``.
- :func:`fetch_reference`: the file named by ``reference_scaidrive_json`` /
  ``consent_scaidrive_json`` on ``POST /voices``, downloaded with a ``files:read`` token.

Both use the ``SCAISPEAK_SCAIDRIVE_`` twins of the JWT and exchange codes.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from scaicommon.errors import ScaiError
from scaicommon.principal import Principal
from scaicommon.scaidrive import ROOT, DownloadTooLarge, DriveError, DriveForbidden
from scaicommon.scaikey import SCAIDRIVE_READ_SCOPES, SCAIDRIVE_SCOPES
from scaispeak.deps import SpeakDeps
from scaispeak.services.saveto import drive_error, open_drive

REFERENCE_KEYS = ("file_id", "mcp_uri", "share_url")
_FILE_ID = re.compile(r"^fil_[A-Za-z0-9_-]{1,200}$")
_SHARE_URL_PARAMS = ("file_id", "file", "id")


# ----- references ---------------------------------------------------------------------


def _invalid(field: str, message: str) -> ScaiError:
    return ScaiError(
        "VALIDATION_ERROR", f"{field}: {message}", details=[{"field": field, "message": message}]
    )


def _segments(path: str) -> list[str]:
    return [unquote(part) for part in path.split("/") if part]


def file_id_from_mcp_uri(uri: str) -> str | None:
    """``scaidrive://…/{file_id}``: the last segment, when it is a ``fil_`` id."""
    parts = urlsplit(uri.strip())
    if parts.scheme.lower() != "scaidrive":
        return None
    segments = [unquote(parts.netloc), *_segments(parts.path)] if parts.netloc else []
    segments = segments or _segments(parts.path)
    last = segments[-1] if segments else ""
    return last if _FILE_ID.match(last) else None


def file_id_from_share_url(url: str) -> str | None:
    """An http(s) ScaiDrive link: a ``file_id``/``file``/``id`` query value, else the last
    ``fil_`` path segment."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    query = parse_qs(parts.query)
    for name in _SHARE_URL_PARAMS:
        for value in query.get(name, []):
            if _FILE_ID.match(value):
                return value
    for segment in reversed(_segments(parts.path)):
        if _FILE_ID.match(segment):
            return segment
    for segment in reversed(_segments(parts.fragment)):
        if _FILE_ID.match(segment):
            return segment
    return None


def resolve_reference(raw_json: str, field: str) -> str:
    """The ScaiDrive file id named by a ``*_scaidrive_json`` form value.

    The JSON must be an object with exactly one of ``file_id``, ``mcp_uri`` or ``share_url``;
    anything else, or a value that names no file, is a ``VALIDATION_ERROR`` on ``field``.
    """
    try:
        value: Any = json.loads(raw_json)
    except ValueError:
        raise _invalid(field, "must be JSON text") from None
    if not isinstance(value, dict):
        raise _invalid(field, 'must be a JSON object such as {"file_id": "fil_…"}')
    unknown = sorted(k for k in value if k not in REFERENCE_KEYS)
    if unknown:
        raise _invalid(field, f"unknown key {unknown[0]!r}; use file_id, mcp_uri or share_url")
    given = [k for k in REFERENCE_KEYS if k in value]
    if len(given) != 1:
        raise _invalid(field, "needs exactly one of file_id, mcp_uri or share_url")
    key = given[0]
    raw = value[key]
    if not isinstance(raw, str) or not raw.strip():
        raise _invalid(field, f"{key} must be a non-empty string")
    if key == "file_id":
        if "/" in raw or raw.strip() in (".", ".."):
            raise _invalid(field, "file_id is not a ScaiDrive file id")
        return raw.strip()
    resolved = file_id_from_mcp_uri(raw) if key == "mcp_uri" else file_id_from_share_url(raw)
    if resolved is None:
        raise _invalid(field, f"{key} does not name a ScaiDrive file")
    return resolved


async def fetch_reference(
    deps: SpeakDeps, principal: Principal, raw_json: str, field: str
) -> tuple[bytes, str | None]:
    """Download the ScaiDrive file named by ``raw_json`` (form field ``field``).

    Returns the bytes and the file's name. Raises 422 ``VALIDATION_ERROR`` (bad reference),
    404 ``SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE``, 403 ``SCAISPEAK_SCAIDRIVE_REQUIRES_JWT``, 502
    ``SCAISPEAK_SCAIDRIVE_EXCHANGE_FAILED``, 404 ``SCAISPEAK_SCAIDRIVE_NOT_FOUND``, 403
    ``SCAISPEAK_SCAIDRIVE_FORBIDDEN``, 413 ``PAYLOAD_TOO_LARGE`` (over
    ``SCAISPEAK_MAX_UPLOAD_BYTES``) or 502 ``SCAISPEAK_SCAIDRIVE_UPLOAD_FAILED``.
    """
    file_id = resolve_reference(raw_json, field)
    client, _ = await open_drive(deps, principal, scopes=SCAIDRIVE_READ_SCOPES, flavor="scaidrive")
    limit = deps.settings.max_upload_bytes
    try:
        download = await client.download(file_id, max_bytes=limit)
    except DownloadTooLarge:
        raise ScaiError(
            "PAYLOAD_TOO_LARGE",
            f"{field}: the ScaiDrive file is larger than {limit} bytes",
            details=[{"field": field, "message": f"larger than {limit} bytes"}],
        ) from None
    except DriveError as exc:
        raise drive_error(exc) from None
    return download.data, download.name


# ----- picker -------------------------------------------------------------------------


class DrivePicker:
    """The caller's writable shares and a share's folders, for choosing a ``save_to``."""

    def __init__(self, deps: SpeakDeps) -> None:
        self.deps = deps

    async def shares(self, principal: Principal) -> list[dict[str, Any]]:
        """Shares where the caller is ``owner``, ``admin`` or ``contributor``."""
        client, _ = await open_drive(
            self.deps, principal, scopes=SCAIDRIVE_SCOPES, flavor="scaidrive"
        )
        try:
            shares = await client.list_my_shares()
        except DriveError as exc:
            raise drive_error(exc) from None
        return [
            {"share_id": s.id, "name": s.name, "type": s.type, "role": s.role}
            for s in shares
            if s.writable
        ]

    async def folders(
        self, principal: Principal, share_id: str, parent_id: str | None
    ) -> dict[str, Any]:
        """Sub-folders of ``parent_id`` (``None`` or ``"root"`` = share root) with its path.

        A share the caller is not a member of is reported like an unknown one (404, §1.8).
        """
        client, _ = await open_drive(
            self.deps, principal, scopes=SCAIDRIVE_SCOPES, flavor="scaidrive"
        )
        parent_id = None if parent_id in (None, "", ROOT) else parent_id
        try:
            listing = await client.list_children(share_id, parent_id)
        except DriveForbidden:
            raise ScaiError(
                "SCAISPEAK_SCAIDRIVE_NOT_FOUND", f"ScaiDrive share {share_id} not found"
            ) from None
        except DriveError as exc:
            raise drive_error(exc) from None
        return {
            "share_id": share_id,
            "parent_id": parent_id,
            "path": listing.path or "/",
            "items": [{"folder_id": i.id, "name": i.name} for i in listing.items if i.is_folder],
        }
