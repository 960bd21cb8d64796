"""The authenticated caller (platform §4.7) and the permission catch-all (§4.8)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from scaicommon.errors import ScaiError

AuthKind = Literal["api_key", "jwt", "service"]

BUILTIN_ROLES = frozenset(
    {
        "super_admin",
        "partner_admin",
        "tenant_admin",
        "partner_viewer",
        "tenant_viewer",
        "tenant_user",
    }
)
_ALL_KEY_ROLES = frozenset({"super_admin", "partner_admin", "tenant_admin"})
_VIEWER_ROLES = frozenset({"partner_viewer", "tenant_viewer"})


@dataclass(frozen=True)
class ModulePermissions:
    """A module's permission keys: every key and the viewer subset."""

    module: str
    all_keys: frozenset[str]
    viewer_keys: frozenset[str]

    @property
    def wildcard(self) -> str:
        """The grant that holds every key: ``<module>:*``."""
        return f"{self.module}:*"

    def is_key(self, value: str) -> bool:
        """Whether ``value`` is a key of this module or its wildcard."""
        return value in self.all_keys or value == self.wildcard


@dataclass(frozen=True)
class Principal:
    """Who is calling; built once per request and stored on ``request.state.principal``."""

    user_id: str
    tenant_id: str | None
    module: ModulePermissions
    auth_kind: AuthKind
    request_id: str
    token: str = field(repr=False, compare=False)
    partner_id: str | None = None
    email: str | None = None
    roles: frozenset[str] = frozenset()
    core_permissions: frozenset[str] = frozenset()
    module_permissions: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    api_key_id: str | None = None
    client_id: str | None = None
    actor: Mapping[str, Any] | None = None
    token_expires_at: datetime | None = None

    @property
    def is_super_admin(self) -> bool:
        """Whether the caller holds the ``super_admin`` role."""
        return "super_admin" in self.roles

    def effective_permissions(self) -> frozenset[str]:
        """The union of every grant of §4.8, as module keys."""
        keys = self.module.all_keys
        if self.roles & _ALL_KEY_ROLES or self.module.wildcard in self.module_permissions:
            return keys
        granted = set(self.module_permissions & keys)
        if self.roles & _VIEWER_ROLES:
            granted |= self.module.viewer_keys
        return frozenset(granted)

    def has(self, permission: str) -> bool:
        """Whether the caller holds ``permission`` (§4.8)."""
        return permission in self.effective_permissions()

    def require(self, permission: str) -> None:
        """Raise ``AUTHZ_PERMISSION_DENIED`` (with ``required_permission``) unless held."""
        if not self.has(permission):
            raise ScaiError(
                "AUTHZ_PERMISSION_DENIED",
                f"this call needs the {permission} permission",
                required_permission=permission,
            )

    @property
    def actor_type(self) -> Literal["user", "service"]:
        """``service`` for service tokens, else ``user`` (audit rows)."""
        return "service" if self.auth_kind == "service" else "user"

    @property
    def service_account(self) -> str | None:
        """``act.client_id``, else ``act.sub`` (audit rows)."""
        if not self.actor:
            return None
        value = self.actor.get("client_id") or self.actor.get("sub")
        return str(value) if value is not None else None

    def require_tenant(self) -> str:
        """The effective tenant; raises when the caller has none (§4.9)."""
        if self.tenant_id is None:
            raise ScaiError(
                "VALIDATION_ERROR",
                "this route needs a tenant: send X-Tenant-ID",
                details=[
                    {"field": "X-Tenant-ID", "message": "required for a principal without a tenant"}
                ],
            )
        return self.tenant_id
