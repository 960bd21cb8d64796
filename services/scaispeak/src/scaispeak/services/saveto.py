"""Saving synthesized audio to the caller's ScaiDrive (scaispeak.md §9).

- :class:`SaveTo`: the ``save_to`` object of ``POST /speak`` (§4.1), validated.
- :class:`SaveToService`: :meth:`~SaveToService.prepare` runs §9.2 steps 1–5 before anything is
  synthesised; :meth:`~SaveToService.upload` runs steps 7–8 (inline, or in the worker).
- :class:`PreparedSave`: what ``prepare`` learnt, including the exchanged token sealed with
  AES-GCM (platform §13.2); it travels only inside the arq payload. Its views are the
  ``saved_to`` objects of §9.5.
- :func:`open_drive` and :func:`drive_error`: the configured / JWT / exchange checks and the
  ScaiDrive error mapping, shared with the picker and ScaiDrive references.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from scaicommon.errors import ScaiError
from scaicommon.principal import Principal
from scaicommon.runtime import Runtime
from scaicommon.scaidrive import (
    ROOT,
    DriveConflict,
    DriveError,
    DriveFile,
    DriveForbidden,
    DriveNotFound,
    DriveQuotaExceeded,
    DriveTooLarge,
    ScaiDriveClient,
)
from scaicommon.scaikey import (
    SCAIDRIVE_SCOPES,
    ExchangedToken,
    TokenExchangeError,
    TokenExchanger,
    TokenExchangeRequiresJwt,
    seal_token,
    unseal_token,
)
from scaispeak.deps import SpeakDeps

SAVE_TO_FIELDS = ("share_id", "folder_id", "filename", "overwrite")
MAX_FILENAME_CHARS = 255

#: Which twin of the JWT and exchange codes a caller reports (platform §13.2).
Flavor = Literal["save_to", "scaidrive"]
_REQUIRES_JWT = {
    "save_to": "SCAISPEAK_SAVE_TO_REQUIRES_JWT",
    "scaidrive": "SCAISPEAK_SCAIDRIVE_REQUIRES_JWT",
}
_EXCHANGE_FAILED = {
    "save_to": "SCAISPEAK_SAVE_TO_EXCHANGE_FAILED",
    "scaidrive": "SCAISPEAK_SCAIDRIVE_EXCHANGE_FAILED",
}


# ----- the save_to object -------------------------------------------------------------


def filename_problem(name: str) -> str | None:
    """Why ``name`` cannot be a ScaiDrive file name, or ``None`` when it can."""
    if not 1 <= len(name) <= MAX_FILENAME_CHARS:
        return f"must be 1 to {MAX_FILENAME_CHARS} characters"
    if "/" in name or "\\" in name:
        return "must not contain / or \\"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "must not contain control characters"
    if name in (".", ".."):
        return "must not be . or .."
    return None


@dataclass(frozen=True)
class SaveTo:
    """Where to save: share, folder (``None`` = share root), file name and ``overwrite``."""

    share_id: str
    folder_id: str | None
    filename: str
    overwrite: bool = False

    @staticmethod
    def parse(value: object) -> SaveTo:
        """Validate a decoded ``save_to`` JSON value.

        Raises ``VALIDATION_ERROR`` with one ``details`` entry per problem, each on
        ``save_to.<field>`` (unknown fields included).
        """
        if not isinstance(value, dict):
            raise _invalid([("save_to", "must be an object")])
        problems: list[tuple[str, str]] = [
            (f"save_to.{name}", "unknown field") for name in value if name not in SAVE_TO_FIELDS
        ]
        share_id = value.get("share_id")
        if not isinstance(share_id, str) or not share_id:
            problems.append(("save_to.share_id", "required, a non-empty string"))
        folder_id = value.get("folder_id")
        if folder_id is not None and (not isinstance(folder_id, str) or not folder_id):
            problems.append(("save_to.folder_id", "must be a non-empty string or null"))
        filename = value.get("filename")
        if not isinstance(filename, str):
            problems.append(("save_to.filename", "required, a string"))
        else:
            problem = filename_problem(filename)
            if problem:
                problems.append(("save_to.filename", problem))
        overwrite = value.get("overwrite", False)
        if not isinstance(overwrite, bool):
            problems.append(("save_to.overwrite", "must be true or false"))
        if problems:
            raise _invalid(problems)
        assert isinstance(share_id, str) and isinstance(filename, str)
        return SaveTo(
            share_id=share_id,
            folder_id=None if folder_id in (None, ROOT) else str(folder_id),
            filename=filename,
            overwrite=bool(overwrite),
        )


def _invalid(problems: list[tuple[str, str]]) -> ScaiError:
    message = "; ".join(f"{f}: {m}" for f, m in problems)
    return ScaiError(
        "VALIDATION_ERROR", message, details=[{"field": f, "message": m} for f, m in problems]
    )


# ----- shared ScaiDrive access --------------------------------------------------------


def exchanger_of(runtime: Runtime) -> TokenExchanger:
    """The process's token exchanger (its answer cache is per process, platform §13.2)."""
    return runtime.cached(
        "scaicommon.scaikey.exchanger",
        lambda: TokenExchanger.from_settings(runtime.settings, runtime.http),
    )


def drive_client(deps: SpeakDeps, token: ExchangedToken) -> ScaiDriveClient:
    """A ScaiDrive client acting with ``token``."""
    settings = deps.settings
    return ScaiDriveClient(
        settings.scaidrive_url,
        token.access_token,
        http=deps.runtime.http,
        timeout_s=settings.scaidrive_timeout_s,
    )


def require_drive(deps: SpeakDeps) -> None:
    """404 ``SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE`` when ``SCAISPEAK_SCAIDRIVE_URL`` is empty."""
    if not deps.settings.scaidrive_url:
        raise ScaiError(
            "SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE", "ScaiDrive is not configured on this deployment"
        )


async def open_drive(
    deps: SpeakDeps, principal: Principal, *, scopes: Iterable[str], flavor: Flavor
) -> tuple[ScaiDriveClient, ExchangedToken]:
    """The §9.1/§9.6 checks in order, then a client with the exchanged token.

    ScaiDrive not configured → 404 ``SCAISPEAK_SCAIDRIVE_NOT_AVAILABLE``; not a JWT → 403
    ``…_REQUIRES_JWT``; exchange refused or impossible → 502 ``…_EXCHANGE_FAILED`` with
    ``reason`` (and ``upstream_message``). ``flavor`` picks the ``SAVE_TO_`` or ``SCAIDRIVE_``
    twin.
    """
    require_drive(deps)
    if principal.auth_kind != "jwt":
        raise _requires_jwt(flavor)
    try:
        token = await exchanger_of(deps.runtime).exchange(
            principal, audience=deps.settings.scaidrive_audience, scopes=scopes
        )
    except TokenExchangeRequiresJwt:
        raise _requires_jwt(flavor) from None
    except TokenExchangeError as exc:
        raise ScaiError(
            _EXCHANGE_FAILED[flavor],
            f"ScaiKey did not exchange the token for ScaiDrive: {exc.message}",
            **exc.extras(),
        ) from None
    return drive_client(deps, token), token


def _requires_jwt(flavor: Flavor) -> ScaiError:
    what = "save_to" if flavor == "save_to" else "ScaiDrive access"
    return ScaiError(
        _REQUIRES_JWT[flavor],
        f"{what} needs a ScaiKey JWT; an API key cannot be exchanged for ScaiDrive",
    )


def drive_error(exc: DriveError) -> ScaiError:
    """The ScaiSpeak error of a ScaiDrive failure (§9.2 step 8, platform §13.3)."""
    detail = f": {exc.message}" if exc.message else ""
    if isinstance(exc, DriveForbidden):
        return ScaiError("SCAISPEAK_SCAIDRIVE_FORBIDDEN", f"ScaiDrive refused access{detail}")
    if isinstance(exc, DriveNotFound):
        return ScaiError("SCAISPEAK_SCAIDRIVE_NOT_FOUND", f"not found in ScaiDrive{detail}")
    if isinstance(exc, DriveConflict):
        return ScaiError("SCAISPEAK_SCAIDRIVE_CONFLICT", f"name conflict in ScaiDrive{detail}")
    if isinstance(exc, DriveTooLarge):
        return ScaiError(
            "SCAISPEAK_SCAIDRIVE_FILE_TOO_LARGE", f"ScaiDrive refused the file size{detail}"
        )
    if isinstance(exc, DriveQuotaExceeded):
        return ScaiError(
            "SCAISPEAK_SCAIDRIVE_QUOTA_EXCEEDED", f"ScaiDrive quota would be exceeded{detail}"
        )
    return ScaiError("SCAISPEAK_SCAIDRIVE_UPLOAD_FAILED", f"ScaiDrive failed{detail}")


# ----- prepared saves -----------------------------------------------------------------


@dataclass(frozen=True)
class PreparedSave:
    """A checked ``save_to`` plus its sealed ScaiDrive token (only ever in the arq payload)."""

    share_id: str
    folder_id: str | None
    filename: str
    overwrite: bool
    sealed_token: str = field(repr=False)
    token_expires_at: float

    def to_payload(self) -> dict[str, Any]:
        """A JSON-safe dict for the job payload; the token stays sealed."""
        return {
            "share_id": self.share_id,
            "folder_id": self.folder_id,
            "filename": self.filename,
            "overwrite": self.overwrite,
            "sealed_token": self.sealed_token,
            "token_expires_at": self.token_expires_at,
        }

    @staticmethod
    def from_payload(data: dict[str, Any]) -> PreparedSave:
        """Rebuild from :meth:`to_payload`; raises ``ValueError`` on a malformed payload."""
        try:
            folder_id = data["folder_id"]
            return PreparedSave(
                share_id=str(data["share_id"]),
                folder_id=None if folder_id is None else str(folder_id),
                filename=str(data["filename"]),
                overwrite=bool(data["overwrite"]),
                sealed_token=str(data["sealed_token"]),
                token_expires_at=float(data["token_expires_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed save_to payload: {exc}") from None

    def _view(self, state: str, **values: Any) -> dict[str, Any]:
        view: dict[str, Any] = {
            "state": state,
            "share_id": self.share_id,
            "folder_id": self.folder_id,
            "file_id": None,
            "name": self.filename,
            "size_bytes": None,
            "error": None,
        }
        view.update(values)
        return view

    def pending_view(self) -> dict[str, Any]:
        """``saved_to`` of an async job not yet uploaded (§9.5)."""
        return self._view("pending")

    def saved_view(self, file: DriveFile, size_bytes: int) -> dict[str, Any]:
        """``saved_to`` after a successful upload (§9.5)."""
        return self._view("saved", file_id=file.id, size_bytes=size_bytes)

    def failed_view(self, error: ScaiError) -> dict[str, Any]:
        """``saved_to`` of a failed upload: ``error`` is ``{code, message}`` (§9.4, §9.5)."""
        return self._view("failed", error={"code": error.code, "message": error.message})


# ----- the service --------------------------------------------------------------------


class SaveToService:
    """§9.2 steps 1–5 (:meth:`prepare`) and 7–8 (:meth:`upload`)."""

    def __init__(self, deps: SpeakDeps) -> None:
        self.deps = deps

    async def prepare(self, principal: Principal, save_to: SaveTo) -> PreparedSave:
        """Check configuration, caller, exchange, share, folder and name before synthesis."""
        client, token = await open_drive(
            self.deps, principal, scopes=SCAIDRIVE_SCOPES, flavor="save_to"
        )
        try:
            shares = await client.list_my_shares()
            share = next((s for s in shares if s.id == save_to.share_id), None)
            if share is None:
                raise ScaiError(
                    "SCAISPEAK_SCAIDRIVE_NOT_FOUND",
                    f"ScaiDrive share {save_to.share_id} not found",
                )
            if not share.writable:
                raise ScaiError(
                    "SCAISPEAK_SCAIDRIVE_FORBIDDEN",
                    f"your role {share.role!r} in share {share.id} cannot upload files",
                )
            existing = await client.find_child(share.id, save_to.folder_id, save_to.filename)
        except DriveError as exc:
            raise drive_error(exc) from None
        if existing is not None and (existing.is_folder or not save_to.overwrite):
            raise _conflict(save_to.filename, folder=existing.is_folder)
        return PreparedSave(
            share_id=save_to.share_id,
            folder_id=save_to.folder_id,
            filename=save_to.filename,
            overwrite=save_to.overwrite,
            sealed_token=seal_token(token, self.deps.settings.scaikey_client_secret),
            token_expires_at=token.expires_at,
        )

    async def upload(
        self, prepared: PreparedSave, data: bytes, content_type: str
    ) -> dict[str, Any]:
        """Re-check the name, replace when ``overwrite``, upload; return ``saved_to``.

        Raises the mapped ScaiError (§9.2 step 8); an expired or unreadable sealed token is
        ``SCAISPEAK_SCAIDRIVE_UPLOAD_FAILED``.
        """
        require_drive(self.deps)
        try:
            token = unseal_token(prepared.sealed_token, self.deps.settings.scaikey_client_secret)
        except ValueError:
            raise ScaiError(
                "SCAISPEAK_SCAIDRIVE_UPLOAD_FAILED",
                "the ScaiDrive credentials of this save cannot be read",
            ) from None
        if token.expired(now=time.time()):
            raise ScaiError(
                "SCAISPEAK_SCAIDRIVE_UPLOAD_FAILED",
                "the ScaiDrive token expired before the upload ran; repeat the request",
            )
        client = drive_client(self.deps, token)
        try:
            existing = await client.find_child(
                prepared.share_id, prepared.folder_id, prepared.filename
            )
            if existing is not None:
                if existing.is_folder or not prepared.overwrite:
                    raise _conflict(prepared.filename, folder=existing.is_folder)
                await client.delete_file(existing.id, missing_ok=True)
            saved = await client.upload(
                prepared.share_id,
                prepared.folder_id,
                prepared.filename,
                data,
                content_type,
                overwrite=prepared.overwrite,
            )
        except DriveError as exc:
            raise drive_error(exc) from None
        return prepared.saved_view(saved, saved.size if saved.size is not None else len(data))


def _conflict(name: str, *, folder: bool) -> ScaiError:
    if folder:
        message = f"a folder named {name!r} exists in the destination; pick another filename"
    else:
        message = (
            f"a file named {name!r} exists in the destination; pass overwrite: true or pick "
            "another filename"
        )
    return ScaiError("SCAISPEAK_SCAIDRIVE_CONFLICT", message)
