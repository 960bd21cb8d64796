"""Tenant administration both services share: the backend policy write and the monthly quota.

Each change is audited (platform §10.1): the policy row and its ``<module>.policy.update`` row
commit in one transaction; the budget row (written by :class:`BudgetStore` on its own
connection) is restored when its ``<module>.budget.update`` row cannot be written. Budget reads
are audited as ``<module>.budget.read``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import structlog
from psycopg import AsyncConnection

from scaicommon.adminaudit import Origin, audit_success
from scaicommon.audit import AuditWriter
from scaicommon.budgets import Budget, BudgetStore
from scaicommon.policy import Policy, PolicyStore
from scaicommon.principal import Principal

log = structlog.get_logger("scaicommon.tenantadmin")

BUDGET_PERIOD: Final = "month"
#: The largest amount a ``budgets`` row holds (``numeric(20,6)``: 14 integer digits).
MAX_BUDGET_AMOUNT: Final = 10**14 - 1

#: The API value of a budget row's limit (``None`` for no row), as audit rows record it.
LimitOf = Callable[[Budget | None], int | None]


class PolicyAdmin:
    """Reads and changes a tenant's backend policy (platform §5.2)."""

    def __init__(self, policies: PolicyStore, audit: AuditWriter, *, module: str) -> None:
        self._policies = policies
        self._audit = audit
        self._action = f"{module}.policy.update"

    async def get(self, tenant_id: str) -> Policy:
        """The tenant's policy, provisioned from the defaults when it has none."""
        return await self._policies.get_or_provision(tenant_id)

    async def update(
        self,
        principal: Principal,
        *,
        allowed: str | None,
        default: str | None,
        origin: Origin | None = None,
    ) -> Policy:
        """Merge the given fields into the stored policy and audit the change atomically.

        ``allowed`` is canonical (parse the module's input form first). Raises
        ``VALIDATION_ERROR`` for no field, a bad default, or a default that is not allowed.
        """
        tenant_id = principal.require_tenant()

        async def record(conn: AsyncConnection[Any], before: Policy, after: Policy) -> None:
            await audit_success(
                self._audit,
                principal,
                conn=conn,
                action=self._action,
                resource_type="tenant_policy",
                resource_id=tenant_id,
                origin=origin,
                details={"before": before.to_audit(), "after": after.to_audit()},
            )

        _, after = await self._policies.update(
            tenant_id, allowed=allowed, default=default, actor=principal, on_write=record
        )
        return after


class TenantBudgetAdmin:
    """A tenant's one tenant-wide ``month`` quota row of one unit.

    ``limit_field`` names the limit in the module's API (``audio_seconds_limit``,
    ``chars_limit``) and ``limit_of`` turns a row (or its absence) into that value, for the
    ``before``/``after`` of audit rows.
    """

    def __init__(
        self,
        budgets: BudgetStore,
        audit: AuditWriter,
        *,
        module: str,
        unit: str,
        limit_field: str,
        limit_of: LimitOf,
    ) -> None:
        self._budgets = budgets
        self._audit = audit
        self._module = module
        self.unit = unit
        self._limit_field = limit_field
        self._limit_of = limit_of

    async def current(self, tenant_id: str) -> Budget | None:
        """The tenant's row, or ``None``."""
        return await self._budgets.get(tenant_id, None, BUDGET_PERIOD, self.unit)

    async def read(self, principal: Principal, *, origin: Origin | None = None) -> Budget | None:
        """The caller's tenant's row, audited as ``<module>.budget.read``."""
        budget = await self.current(principal.require_tenant())
        await audit_success(
            self._audit,
            principal,
            action=f"{self._module}.budget.read",
            resource_type="budget",
            resource_id=budget.id if budget is not None else None,
            origin=origin,
        )
        return budget

    async def replace(
        self,
        principal: Principal,
        amount: int | Decimal | None,
        *,
        origin: Origin | None = None,
    ) -> Budget | None:
        """Store ``amount`` (``None`` deletes the row) and audit it; returns the new row.

        ``BudgetStore`` writes on its own connection, so a failed audit insert is undone by
        restoring the previous row before the error propagates.
        """
        tenant_id = principal.require_tenant()
        store = self._budgets
        before = await self.current(tenant_id)
        after: Budget | None = None
        if amount is None:
            await store.delete_scope(tenant_id, None, BUDGET_PERIOD, self.unit)
        else:
            after = await store.set(
                tenant_id, None, BUDGET_PERIOD, self.unit, amount, principal.user_id
            )
        row = after or before
        try:
            await audit_success(
                self._audit,
                principal,
                action=f"{self._module}.budget.update",
                resource_type="budget",
                resource_id=row.id if row is not None else None,
                origin=origin,
                details={
                    "period": BUDGET_PERIOD,
                    "before": {self._limit_field: self._limit_of(before)},
                    "after": {self._limit_field: self._limit_of(after)},
                },
            )
        except Exception:
            await self._restore(tenant_id, before)
            raise
        return after

    async def _restore(self, tenant_id: str, before: Budget | None) -> None:
        store = self._budgets
        try:
            if before is None:
                await store.delete_scope(tenant_id, None, BUDGET_PERIOD, self.unit)
            else:
                await store.set(
                    tenant_id, None, BUDGET_PERIOD, self.unit, before.amount, before.updated_by
                )
        except Exception as exc:
            log.error("budget_restore_failed", tenant_id=tenant_id, error=type(exc).__name__)
