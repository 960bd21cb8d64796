"""ScaiDrive state on local disk: shares, folders and files with membership checks.

Layout under ``data_dir``: ``meta.json`` (all metadata) and ``blobs/<file id>`` (contents).
Every operation takes an exclusive ``flock`` on ``.lock``, reads ``meta.json`` and, when it
changed something, replaces the file atomically. That keeps the admin CLI and a running server
consistent with each other. All methods block; call them from a worker thread in async code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from scaidevstack.scaidrive.errors import (
    ForbiddenError,
    InvalidRequestError,
    NameConflictError,
    NotFoundError,
    QuotaExceededError,
)

MEMBER_ROLES: tuple[str, ...] = ("owner", "admin", "contributor", "reader")
WRITE_ROLES: frozenset[str] = frozenset({"owner", "admin", "contributor"})
ROOT = "root"
MAX_NAME_LEN = 255

Access = Literal["read", "write"]
Record = dict[str, Any]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id(prefix: str) -> str:
    """``<prefix>_`` plus 20 random hex characters."""
    return f"{prefix}_{secrets.token_hex(10)}"


def validate_name(name: str) -> str:
    """Return ``name`` when it is a usable file or folder name, else raise."""
    if not name or len(name) > MAX_NAME_LEN:
        raise InvalidRequestError("name must be 1 to 255 characters")
    if name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise InvalidRequestError(f"invalid name {name!r}")
    return name


def _folder_ref(folder_id: str | None) -> str | None:
    """``None`` for the share root (``None``, ``""`` or ``"root"``), else the folder id."""
    return None if folder_id in (None, "", ROOT) else folder_id


@dataclass(frozen=True)
class Actor:
    """The caller as ScaiDrive sees it: a user inside a tenant."""

    tenant_id: str
    user_id: str


def _empty_meta() -> Record:
    return {"version": 1, "shares": {}, "folders": {}, "files": {}}


class DriveStore:
    """Shares, folders and files under ``data_dir``."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir)
        self.meta_path = self.root / "meta.json"
        self.blob_dir = self.root / "blobs"
        self._lock_path = self.root / ".lock"

    # -- persistence ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Record]:
        """Yield the metadata under the lock; write it back if the block changed it."""
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                meta = self._read()
                before = json.dumps(meta, sort_keys=True)
                yield meta
                if json.dumps(meta, sort_keys=True) != before:
                    self._write(meta)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read(self) -> Record:
        try:
            with open(self.meta_path, encoding="utf-8") as handle:
                data: Record = json.load(handle)
        except FileNotFoundError:
            return _empty_meta()
        return data

    def _write(self, meta: Record) -> None:
        self._atomic_write(self.meta_path, json.dumps(meta, indent=1).encode("utf-8"))

    def _atomic_write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- views ---------------------------------------------------------------------------------

    @staticmethod
    def _used_bytes(meta: Record, share_id: str) -> int:
        return sum(int(f["size"]) for f in meta["files"].values() if f["share_id"] == share_id)

    def _admin_view(self, meta: Record, share: Record) -> Record:
        return {
            "id": share["id"],
            "tenant_id": share["tenant_id"],
            "name": share["name"],
            "type": share["type"],
            "owner_id": share["owner_id"],
            "quota_bytes": share["quota_bytes"],
            "used_bytes": self._used_bytes(meta, share["id"]),
            "members": [{"user_id": u, "role": r} for u, r in share["members"].items()],
            "created_at": share["created_at"],
        }

    def _folder_path(self, meta: Record, folder_id: str | None) -> str:
        parts: list[str] = []
        seen: set[str] = set()
        while folder_id is not None and folder_id not in seen:
            seen.add(folder_id)
            folder = meta["folders"][folder_id]
            parts.append(folder["name"])
            folder_id = folder["parent_id"]
        return "/" + "/".join(reversed(parts))

    def _file_view(self, meta: Record, record: Record) -> Record:
        folder_path = self._folder_path(meta, record["folder_id"])
        return {
            "id": record["id"],
            "share_id": record["share_id"],
            "folder_id": record["folder_id"],
            "name": record["name"],
            "path": folder_path.rstrip("/") + "/" + record["name"],
            "mime_type": record["mime_type"],
            "size": record["size"],
            "checksum_sha256": record["checksum_sha256"],
            "version": record["version"],
            "created_at": record["created_at"],
            "modified_at": record["modified_at"],
            "created_by": record["created_by"],
        }

    def _folder_view(self, meta: Record, record: Record) -> Record:
        return {
            "id": record["id"],
            "share_id": record["share_id"],
            "parent_id": record["parent_id"],
            "name": record["name"],
            "path": self._folder_path(meta, record["id"]),
            "created_at": record["created_at"],
        }

    # -- access checks -------------------------------------------------------------------------

    @staticmethod
    def _share(meta: Record, actor: Actor, share_id: str, access: Access) -> Record:
        share: Record | None = meta["shares"].get(share_id)
        if share is None or share["tenant_id"] != actor.tenant_id:
            raise NotFoundError("Share not found")
        role = share["members"].get(actor.user_id)
        if role is None:
            raise ForbiddenError("You are not a member of this share")
        if access == "write" and role not in WRITE_ROLES:
            raise ForbiddenError(f"Role '{role}' cannot modify this share")
        return share

    @staticmethod
    def _folder(meta: Record, share_id: str, folder_id: str | None) -> str | None:
        if folder_id is None:
            return None
        folder = meta["folders"].get(folder_id)
        if folder is None or folder["share_id"] != share_id:
            raise NotFoundError("Folder not found")
        return folder_id

    def _file(self, meta: Record, actor: Actor, file_id: str, access: Access) -> Record:
        record: Record | None = meta["files"].get(file_id)
        if record is None:
            raise NotFoundError("File not found")
        share = meta["shares"].get(record["share_id"])
        if share is None or share["tenant_id"] != actor.tenant_id:
            raise NotFoundError("File not found")
        self._share(meta, actor, record["share_id"], access)
        return record

    @staticmethod
    def _check_free_name(meta: Record, share_id: str, folder_id: str | None, name: str) -> None:
        for kind in ("folders", "files"):
            parent_key = "parent_id" if kind == "folders" else "folder_id"
            for item in meta[kind].values():
                if (
                    item["share_id"] == share_id
                    and item[parent_key] == folder_id
                    and item["name"] == name
                ):
                    raise NameConflictError(f"An item named '{name}' already exists here")

    # -- admin ---------------------------------------------------------------------------------

    def create_share(
        self,
        *,
        tenant_id: str,
        name: str,
        members: Mapping[str, str],
        quota_bytes: int | None = None,
        share_type: str = "team",
    ) -> Record:
        """Create a share; ``members`` maps user id to role and needs at least one owner."""
        validate_name(name)
        for user, role in members.items():
            if role not in MEMBER_ROLES:
                raise InvalidRequestError(f"role {role!r} of {user} is not one of {MEMBER_ROLES}")
        owners = [u for u, r in members.items() if r == "owner"]
        if not owners:
            raise InvalidRequestError("a share needs at least one owner")
        if quota_bytes is not None and quota_bytes < 0:
            raise InvalidRequestError("quota_bytes must not be negative")
        with self._transaction() as meta:
            share: Record = {
                "id": new_id("shr"),
                "tenant_id": tenant_id,
                "name": name,
                "type": share_type,
                "owner_id": owners[0],
                "quota_bytes": quota_bytes,
                "members": dict(members),
                "created_at": _now_iso(),
            }
            meta["shares"][share["id"]] = share
            return self._admin_view(meta, share)

    def list_shares(self, tenant_id: str | None = None) -> list[Record]:
        """Every share (optionally of one tenant), oldest first, with members."""
        with self._transaction() as meta:
            shares = [s for s in meta["shares"].values() if tenant_id in (None, s["tenant_id"])]
            shares.sort(key=lambda s: s["created_at"])
            return [self._admin_view(meta, s) for s in shares]

    # -- user operations -----------------------------------------------------------------------

    def shares_for(self, actor: Actor) -> list[Record]:
        """The caller's shares in its tenant, with the caller's ``role``."""
        with self._transaction() as meta:
            result = []
            for share in sorted(meta["shares"].values(), key=lambda s: s["created_at"]):
                role = share["members"].get(actor.user_id)
                if share["tenant_id"] != actor.tenant_id or role is None:
                    continue
                result.append(
                    {
                        "id": share["id"],
                        "name": share["name"],
                        "type": share["type"],
                        "role": role,
                        "owner_id": share["owner_id"],
                        "quota_bytes": share["quota_bytes"],
                        "used_bytes": self._used_bytes(meta, share["id"]),
                    }
                )
            return result

    def list_children(
        self, actor: Actor, share_id: str, folder_id: str | None
    ) -> tuple[list[Record], str]:
        """Folders then files directly inside ``folder_id`` (``None``/``"root"`` = root).

        Returns the items, each sorted by name, and the folder's path.
        """
        with self._transaction() as meta:
            self._share(meta, actor, share_id, "read")
            parent = self._folder(meta, share_id, _folder_ref(folder_id))
            folders = [
                {
                    "id": f["id"],
                    "name": f["name"],
                    "type": "folder",
                    "modified_at": f["created_at"],
                }
                for f in meta["folders"].values()
                if f["share_id"] == share_id and f["parent_id"] == parent
            ]
            files = [
                {
                    "id": f["id"],
                    "name": f["name"],
                    "type": "file",
                    "size": f["size"],
                    "mime_type": f["mime_type"],
                    "modified_at": f["modified_at"],
                }
                for f in meta["files"].values()
                if f["share_id"] == share_id and f["folder_id"] == parent
            ]
            folders.sort(key=lambda i: i["name"])
            files.sort(key=lambda i: i["name"])
            return folders + files, self._folder_path(meta, parent)

    def create_folder(
        self, actor: Actor, share_id: str, parent_id: str | None, name: str
    ) -> Record:
        """Create a folder; a same-named sibling is a :class:`NameConflictError`."""
        validate_name(name)
        with self._transaction() as meta:
            self._share(meta, actor, share_id, "write")
            parent = self._folder(meta, share_id, _folder_ref(parent_id))
            self._check_free_name(meta, share_id, parent, name)
            record: Record = {
                "id": new_id("fld"),
                "share_id": share_id,
                "parent_id": parent,
                "name": name,
                "created_at": _now_iso(),
                "created_by": actor.user_id,
            }
            meta["folders"][record["id"]] = record
            return self._folder_view(meta, record)

    def add_file(
        self,
        actor: Actor,
        share_id: str,
        folder_id: str | None,
        name: str,
        data: bytes,
        mime_type: str,
    ) -> Record:
        """Store a new file; name conflicts and quota overruns raise."""
        validate_name(name)
        with self._transaction() as meta:
            share = self._share(meta, actor, share_id, "write")
            folder = self._folder(meta, share_id, _folder_ref(folder_id))
            self._check_free_name(meta, share_id, folder, name)
            quota = share["quota_bytes"]
            if quota is not None and self._used_bytes(meta, share_id) + len(data) > quota:
                raise QuotaExceededError(f"Share quota of {quota} bytes would be exceeded")
            now = _now_iso()
            record: Record = {
                "id": new_id("fil"),
                "share_id": share_id,
                "folder_id": folder,
                "name": name,
                "mime_type": mime_type,
                "size": len(data),
                "checksum_sha256": hashlib.sha256(data).hexdigest(),
                "version": 1,
                "created_at": now,
                "modified_at": now,
                "created_by": actor.user_id,
            }
            self._atomic_write(self.blob_dir / record["id"], data)
            meta["files"][record["id"]] = record
            return self._file_view(meta, record)

    def get_file(self, actor: Actor, file_id: str) -> Record:
        """The file object, when the caller may read it."""
        with self._transaction() as meta:
            return self._file_view(meta, self._file(meta, actor, file_id, "read"))

    def open_file(self, actor: Actor, file_id: str) -> tuple[Record, Path]:
        """The file object and the path of its content."""
        with self._transaction() as meta:
            record = self._file(meta, actor, file_id, "read")
            return self._file_view(meta, record), self.blob_dir / record["id"]

    def delete_file(self, actor: Actor, file_id: str) -> None:
        """Delete a file and its content."""
        with self._transaction() as meta:
            self._file(meta, actor, file_id, "write")
            del meta["files"][file_id]
        (self.blob_dir / file_id).unlink(missing_ok=True)
