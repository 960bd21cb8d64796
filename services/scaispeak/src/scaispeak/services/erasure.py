"""Voice erasure, node eviction, the erasure audit and its reconciler.

scaispeak.md §7.8, §7.9, §12.3 (global voice removal), §12.4; platform §6.6–6.7 and §10.2.

An erasure is a chain of append-only ``erasure_audit`` events. Its id (``erasure_id``) is the id
of its ``requested`` event; every later event carries it in ``details.erasure_id``:

- ``requested`` (reason, scope, kind, consent hash) — written in the tombstone's transaction,
  with the ``scaispeak.voice.delete`` audit row;
- ``artifact_deleted`` per purged artifact (``reference``, ``consent``) — same transaction, so a
  failed S3 purge leaves the voice live and the call can be retried;
- ``node_evicted`` / ``node_evict_failed`` per node outcome of the ``EvictVoice`` fan-out;
- ``completed`` (totals) once no node is pending — at once when every node confirmed, else
  later, by the reconciler cron or ``POST /voices/{id}/evict``.

A node is pending while it has a failure and no later ``node_evicted`` event. Failed nodes are
also put in the warm registry's evict-pending set; the reconciler retries both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import structlog
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from redis.exceptions import RedisError

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.adminaudit import Origin
from scaicommon.bodies import parse_bool
from scaicommon.errors import ScaiError, service_unavailable, validation_error
from scaicommon.grpcclient import BoundStub
from scaicommon.nodes import NodeInfo, RegistryUnreadable
from scaicommon.pagination import Page, decode_optional_cursor
from scaicommon.principal import Principal
from scaicommon.runtime import Runtime
from scaicommon.storage import StorageError
from scaicommon.timefmt import format_ts, parse_ts
from scaicommon.warm import PendingEviction
from scaispeak.deps import SpeakDeps, deps_of
from scaispeak.services.voices import (
    GLOBAL_TENANT,
    WARM_KIND,
    VoiceService,
    audit_voice,
    cache_tenant,
    caller_tenant,
    may_modify,
    not_owner,
    voice_not_found,
)
from scaispeak.store.voices import Voice

log = structlog.get_logger("scaispeak.erasure")

ENGINE_KIND: Final = "audio.synthesize"
REASONS: Final = ("user_request", "global_voice_removed", "tenant_disabled", "module_uninstalled")
RECONCILER_ACTOR: Final = "system:reconciler"
STALE_MESSAGE: Final = "UNAVAILABLE: node is stale in the registry"
_LOCK_KEY: Final = "scai:scaispeak:erasure_reconcile:lock"

Row = dict[str, Any]


@dataclass(frozen=True)
class Actor:
    """Who an erasure's events are attributed to."""

    actor_id: str
    actor_type: str  # user | service | system
    request_id: str | None = None

    @classmethod
    def of(cls, principal: Principal) -> Actor:
        """The acting principal."""
        actor_id = principal.user_id
        if principal.auth_kind == "service" and principal.client_id:
            actor_id = principal.client_id
        return cls(actor_id, principal.actor_type, principal.request_id)


RECONCILER: Final = Actor(RECONCILER_ACTOR, "system")


@dataclass(frozen=True)
class EvictOutcome:
    """One ``EvictVoice`` round: nodes that confirmed, and the message of each that did not."""

    confirmed: list[str]
    failed: dict[str, str]


@dataclass
class ErasureSummary:
    """One erasure as ``GET /admin/erasure/audit`` shows it, folded from its events."""

    erasure_id: str
    voice_id: str
    tenant_id: str
    scope: str | None
    kind: str | None
    actor_user_id: str
    reason: str | None
    consent_hash: str | None
    requested_at: datetime
    artifacts_deleted: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    pending: dict[str, str] = field(default_factory=dict)
    completed_at: datetime | None = None

    @classmethod
    def fold(cls, requested: Row, events: Iterable[Row]) -> ErasureSummary:
        """The summary of the erasure started by ``requested``, from its later events."""
        details = requested["details"] or {}
        out = cls(
            erasure_id=requested["id"],
            voice_id=requested["subject_id"],
            tenant_id=requested["tenant_id"],
            scope=details.get("scope"),
            kind=details.get("kind"),
            actor_user_id=requested["actor_id"],
            reason=details.get("reason"),
            consent_hash=details.get("consent_hash"),
            requested_at=requested["created_at"],
        )
        for event in events:
            out.apply(event)
        return out

    def apply(self, event: Row) -> None:
        """Fold one later event in (events must come oldest first)."""
        kind, node_id, details = event["event"], event["node_id"], event["details"] or {}
        if kind == "artifact_deleted":
            artifact = details.get("artifact")
            if artifact and artifact not in self.artifacts_deleted:
                self.artifacts_deleted.append(str(artifact))
        elif kind == "node_evicted" and node_id:
            if node_id not in self.evicted:
                self.evicted.append(node_id)
            self.pending.pop(node_id, None)
        elif kind == "node_evict_failed" and node_id and node_id not in self.evicted:
            self.pending[node_id] = str(details.get("error") or "eviction failed")
        elif kind == "completed" and self.completed_at is None:
            self.completed_at = event["created_at"]

    @property
    def pending_node_ids(self) -> list[str]:
        """Nodes that have not confirmed the eviction yet."""
        return sorted(self.pending)

    def to_api(self) -> dict[str, Any]:
        """The item of §12.4."""
        return {
            "erasure_id": self.erasure_id,
            "voice_id": self.voice_id,
            "tenant_id": self.tenant_id,
            "scope": self.scope,
            "kind": self.kind,
            "actor_user_id": self.actor_user_id,
            "reason": self.reason,
            "artifacts_deleted": list(self.artifacts_deleted),
            "consent_hash": self.consent_hash,
            "warm_replicas_evicted": len(self.evicted),
            "pending_node_ids": self.pending_node_ids,
            "error_summary": {n: self.pending[n] for n in self.pending_node_ids},
            "requested_at": format_ts(self.requested_at),
            "completed_at": format_ts(self.completed_at),
        }


@dataclass(frozen=True)
class AuditQuery:
    """Validated filters of ``GET /admin/erasure/audit``."""

    voice_id: str | None = None
    pending: bool | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> AuditQuery:
        """From query parameters; 422 on a bad ``pending``, ``since`` or ``until``."""
        pending = query.get("pending")
        return cls(
            voice_id=query.get("voice_id") or None,
            pending=None if pending is None else parse_bool("pending", pending),
            since=_timestamp(query, "since"),
            until=_timestamp(query, "until"),
        )


def _timestamp(query: Mapping[str, str], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return parse_ts(raw)
    except ValueError:
        raise validation_error(name, "must be an RFC 3339 timestamp with an offset") from None


def erasure_tenant(principal: Principal) -> str:
    """The tenant whose erasures the caller lists; a super admin without one sees global voices'."""
    if principal.tenant_id is None and principal.is_super_admin:
        return GLOBAL_TENANT
    return caller_tenant(principal)


# ----- SQL helpers ------------------------------------------------------------------------------


async def _rows(conn: AsyncConnection[Any], query: str, params: Sequence[Any]) -> list[Row]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return list(await cur.fetchall())


_OPEN_ERASURES: Final = (
    "SELECT r.* FROM erasure_audit r WHERE r.event = 'requested' AND r.subject_type = 'voice'"
    " AND NOT EXISTS (SELECT 1 FROM erasure_audit c WHERE c.event = 'completed'"
    " AND c.tenant_id = r.tenant_id AND c.subject_id = r.subject_id"
    " AND c.details->>'erasure_id' = r.id)"
)


class ErasureService:
    """Erasure (§7.8, §12.3), eviction (§7.9), the audit listing (§12.4) and the reconciler."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self._voices = VoiceService(deps)

    @property
    def runtime(self) -> Runtime:
        """The service runtime."""
        return self._deps.runtime

    # ----- routes ----------------------------------------------------------------------------

    async def delete_voice(
        self, principal: Principal, voice_id: str, origin: Origin
    ) -> dict[str, Any]:
        """``DELETE /voices/{id}``: the §7.7 rule, global voices refused (403)."""
        voice = await self._voices.visible(caller_tenant(principal), principal.user_id, voice_id)
        if voice.scope == "global":
            raise not_owner("global voices are removed through DELETE /admin/voices/global/{id}")
        if not may_modify(principal, voice):
            raise not_owner("only the owner or a scaispeak:admin holder may delete this voice")
        return await self.erase(
            voice, Actor.of(principal), "user_request", principal=principal, origin=origin
        )

    async def delete_global(
        self, principal: Principal, voice_id: str, origin: Origin
    ) -> dict[str, Any]:
        """``DELETE /admin/voices/global/{id}`` (super admin checked by the route)."""
        voice = await self._deps.voices.get(voice_id)
        if voice is None or voice.deleted or voice.scope != "global":
            raise voice_not_found()
        return await self.erase(
            voice, Actor.of(principal), "global_voice_removed", principal=principal, origin=origin
        )

    async def evict(self, principal: Principal, voice_id: str, origin: Origin) -> dict[str, Any]:
        """``POST /voices/{id}/evict`` (§7.9); tombstoned voices append to their erasure."""
        voice = await self._voices.modifiable(principal, voice_id, include_deleted=True)
        actor = Actor.of(principal)
        outcome = await self.evict_nodes(voice, actor)
        pending = sorted(outcome.failed)
        erasure_id = None
        if voice.deleted:
            erasure = await self._latest_erasure(voice)
            if erasure is not None:
                erasure_id = erasure.erasure_id
                await self._record_outcome(voice, erasure_id, outcome, actor)
                pending = await self._finish_if_done(voice, erasure_id, actor)
        await audit_voice(
            self._deps,
            principal,
            "scaispeak.voice.evict",
            voice.id,
            origin,
            details={
                "erasure_id": erasure_id,
                "nodes_evicted": len(outcome.confirmed),
                "nodes_failed": sorted(outcome.failed),
            },
        )
        return {
            "voice_id": voice.id,
            "warm_replicas_evicted": len(outcome.confirmed),
            "error_summary": outcome.failed,
            "pending_node_ids": pending,
        }

    async def list_audit(
        self, tenant_id: str, query: AuditQuery, *, limit: int, cursor: str | None
    ) -> Page[dict[str, Any]]:
        """One page of the tenant's erasures, newest first (§12.4)."""
        binding = {
            "tenant_id": tenant_id,
            "voice_id": query.voice_id,
            "pending": query.pending,
            "since": query.since,
            "until": query.until,
        }
        after = decode_optional_cursor(cursor, binding)
        where = [
            "r.tenant_id = %s",
            "r.event = 'requested'",
            "r.subject_type = 'voice'",
        ]
        params: list[Any] = [tenant_id]
        if query.voice_id is not None:
            where.append("r.subject_id = %s")
            params.append(query.voice_id)
        if query.since is not None:
            where.append("r.created_at >= %s")
            params.append(query.since)
        if query.until is not None:
            where.append("r.created_at < %s")
            params.append(query.until)
        if query.pending is not None:
            negate = "NOT " if query.pending else ""
            where.append(
                f"{negate}EXISTS (SELECT 1 FROM erasure_audit c WHERE c.event = 'completed'"  # noqa: S608
                " AND c.tenant_id = r.tenant_id AND c.subject_id = r.subject_id"
                " AND c.details->>'erasure_id' = r.id)"
            )
        if after is not None:
            where.append("(r.created_at, r.id) < (%s, %s)")
            params.extend(after)
        params.append(limit + 1)
        sql = (
            f"SELECT r.* FROM erasure_audit r WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY r.created_at DESC, r.id DESC LIMIT %s"
        )
        async with self.runtime.pool.connection() as conn:
            requested = await _rows(conn, sql, params)
            summaries = await self._summaries(conn, requested[:limit])
        page = Page.from_rows(
            requested, limit, key=lambda r: (r["created_at"], r["id"]), filters=binding
        )
        by_id = {s.erasure_id: s for s in summaries}
        return Page(
            items=[by_id[r["id"]].to_api() for r in page.items],
            has_more=page.has_more,
            next_cursor=page.next_cursor,
        )

    # ----- the erasure itself -----------------------------------------------------------------

    async def erase(
        self,
        voice: Voice,
        actor: Actor,
        reason: str,
        *,
        principal: Principal | None = None,
        origin: Origin | None = None,
    ) -> dict[str, Any]:
        """Erase one live voice (§7.8 steps 1–4) and return the response body.

        Also the entry point of lifecycle purges (reason ``tenant_disabled`` /
        ``module_uninstalled``, no ``principal``). With a ``principal`` the
        ``scaispeak.voice.delete`` audit row joins the tombstone's transaction.
        """
        if reason not in REASONS:
            raise ValueError(f"unknown erasure reason {reason!r}")
        tenant_id = cache_tenant(voice)
        try:
            async with self.runtime.pool.connection() as conn, conn.transaction():
                tombstoned = await self._deps.voices.tombstone(voice.id, actor.actor_id, conn=conn)
                if tombstoned is None:
                    raise voice_not_found()
                consents = await _rows(
                    conn,
                    "SELECT * FROM consent_records WHERE voice_id = %s ORDER BY created_at, id"
                    " FOR UPDATE",
                    (voice.id,),
                )
                consent_hash = consents[0]["combined_sha256"] if consents else None
                erasure_id = await self._append(
                    "requested",
                    voice,
                    actor,
                    conn=conn,
                    details={
                        "reason": reason,
                        "scope": voice.scope,
                        "kind": voice.kind,
                        "consent_hash": consent_hash,
                    },
                )
                if principal is not None:
                    await audit_voice(
                        self._deps,
                        principal,
                        "scaispeak.voice.delete",
                        voice.id,
                        origin,
                        conn=conn,
                        details={"erasure_id": erasure_id, "reason": reason},
                    )
                await self._purge_artifacts(conn, voice, consents, erasure_id, actor)
        except StorageError as exc:
            log.warning("erasure_purge_failed", voice_id=voice.id, error=str(exc))
            raise service_unavailable(
                "object storage unavailable; the voice was not deleted"
            ) from None
        outcome = await self.evict_nodes(voice, actor)
        await self._record_outcome(voice, erasure_id, outcome, actor)
        if not outcome.failed:
            await self._append(
                "completed",
                voice,
                actor,
                details={
                    "erasure_id": erasure_id,
                    "artifacts_deleted": await self._artifact_count(erasure_id, tenant_id),
                    "nodes_evicted": len(outcome.confirmed),
                    "nodes_failed": 0,
                },
            )
        log.info(
            "voice_erased",
            voice_id=voice.id,
            erasure_id=erasure_id,
            reason=reason,
            nodes_evicted=len(outcome.confirmed),
            nodes_failed=sorted(outcome.failed),
        )
        return {
            "voice_id": voice.id,
            "deleted": True,
            "erasure_id": erasure_id,
            "warm_replicas_evicted": len(outcome.confirmed),
            "error_summary": outcome.failed,
        }

    async def _purge_artifacts(
        self,
        conn: AsyncConnection[Any],
        voice: Voice,
        consents: Sequence[Row],
        erasure_id: str,
        actor: Actor,
    ) -> None:
        objects = self.runtime.objects
        if voice.reference_key:
            await objects.delete(voice.reference_key)
            await self._append(
                "artifact_deleted",
                voice,
                actor,
                conn=conn,
                details={
                    "erasure_id": erasure_id,
                    "artifact": "reference",
                    "key": voice.reference_key,
                    "sha256": voice.reference_sha256,
                },
            )
        for consent in consents:
            key = consent["consent_audio_key"]
            if key:
                await objects.delete(key)
            if consent["redacted_at"] is None:
                await conn.execute(
                    "UPDATE consent_records SET consent_user_full_name = NULL,"
                    " consent_text = NULL, consent_stated_purpose = NULL,"
                    " consent_audio_key = NULL, redacted_at = now() WHERE id = %s",
                    (consent["id"],),
                )
            await self._append(
                "artifact_deleted",
                voice,
                actor,
                conn=conn,
                details={
                    "erasure_id": erasure_id,
                    "artifact": "consent",
                    "consent_id": consent["id"],
                    "key": key,
                    "sha256": consent["consent_audio_sha256"],
                    "combined_sha256": consent["combined_sha256"],
                    "redacted": True,
                },
            )

    # ----- node eviction ----------------------------------------------------------------------

    async def evict_nodes(self, voice: Voice, actor: Actor) -> EvictOutcome:
        """``EvictVoice`` on every node that may cache the voice (§7.8 step 3).

        Targets: the warm registry's nodes for it plus every known node with
        ``audio.synthesize``, each with a ``SCAISPEAK_EVICT_RPC_TIMEOUT_S`` deadline. Stale
        nodes are not called (platform §6.6) and count as failed. The warm-registry hash is
        cleared before any call, so it is gone whatever the calls return. Failures go to the
        evict-pending set; confirmations leave it.
        """
        tenant_id = cache_tenant(voice)
        warm = self._voices.warm_registry
        try:
            holders = set(await warm.clear(WARM_KIND, tenant_id, voice.id))
            known = await self.runtime.nodes.read()
        except (RedisError, OSError, RegistryUnreadable):
            raise service_unavailable(
                "the node registry is unreadable; retry POST /voices/{voice_id}/evict"
            ) from None
        targets = [n for n in known if n.has(ENGINE_KIND) or n.node_id in holders]
        outcome = await self._call_evict(
            voice.id, tenant_id, [n for n in targets if n.health != "stale"], actor
        )
        failed = dict(outcome.failed)
        for node in targets:
            if node.health == "stale":
                failed[node.node_id] = STALE_MESSAGE
        for node_id in sorted(failed):
            await warm.add_pending(WARM_KIND, tenant_id, voice.id, node_id)
        for node_id in outcome.confirmed:
            await warm.remove_pending(PendingEviction(WARM_KIND, tenant_id, voice.id, node_id))
        return EvictOutcome(sorted(outcome.confirmed), {n: failed[n] for n in sorted(failed)})

    async def _call_evict(
        self, voice_id: str, tenant_id: str, nodes: Sequence[NodeInfo], actor: Actor
    ) -> EvictOutcome:
        request = pb.EvictVoiceRequest(tenant_id=tenant_id, voice_id=voice_id)

        async def call(stub: BoundStub, node: NodeInfo) -> bool:
            response = await stub.EvictVoice(request)
            return bool(response.evicted)

        if not nodes:
            return EvictOutcome([], {})
        result = await self.runtime.node_client.fan_out(
            ENGINE_KIND,
            call,
            timeout_s=self._deps.settings.evict_rpc_timeout_s,
            nodes=nodes,
            tenant_id=tenant_id,
            user_id=actor.actor_id,
        )
        failed = {
            r.node_id: f"{r.error_code}: {r.error_message or 'no detail'}"
            for r in result.results
            if not r.ok
        }
        return EvictOutcome(sorted(result.ok_node_ids), failed)

    # ----- erasure events -----------------------------------------------------------------------

    async def _append(
        self,
        event: str,
        voice: Voice,
        actor: Actor,
        *,
        node_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        conn: AsyncConnection[Any] | None = None,
    ) -> str:
        return await self._deps.erasures.append(
            event,
            cache_tenant(voice),
            "voice",
            voice.id,
            actor.actor_id,
            actor.actor_type,
            request_id=actor.request_id,
            node_id=node_id,
            details=details,
            conn=conn,
        )

    async def _record_outcome(
        self, voice: Voice, erasure_id: str, outcome: EvictOutcome, actor: Actor
    ) -> None:
        for node_id in outcome.confirmed:
            await self._append(
                "node_evicted", voice, actor, node_id=node_id, details={"erasure_id": erasure_id}
            )
        for node_id, error in outcome.failed.items():
            await self._append(
                "node_evict_failed",
                voice,
                actor,
                node_id=node_id,
                details={"erasure_id": erasure_id, "error": error},
            )

    async def _summary(self, tenant_id: str, erasure_id: str) -> ErasureSummary | None:
        async with self.runtime.pool.connection() as conn:
            requested = await _rows(
                conn,
                "SELECT * FROM erasure_audit WHERE id = %s AND tenant_id = %s"
                " AND event = 'requested'",
                (erasure_id, tenant_id),
            )
            found = await self._summaries(conn, requested)
        return found[0] if found else None

    async def _summaries(
        self, conn: AsyncConnection[Any], requested: Sequence[Row]
    ) -> list[ErasureSummary]:
        """Fold the events of each ``requested`` row (one query for all of them)."""
        if not requested:
            return []
        ids = [r["id"] for r in requested]
        events = await _rows(
            conn,
            "SELECT * FROM erasure_audit WHERE subject_type = 'voice' AND subject_id = ANY(%s)"
            " AND tenant_id = ANY(%s) AND details->>'erasure_id' = ANY(%s)"
            " ORDER BY created_at, id",
            (
                sorted({r["subject_id"] for r in requested}),
                sorted({r["tenant_id"] for r in requested}),
                ids,
            ),
        )
        by_erasure: dict[str, list[Row]] = {i: [] for i in ids}
        for event in events:
            by_erasure[(event["details"] or {})["erasure_id"]].append(event)
        return [ErasureSummary.fold(r, by_erasure[r["id"]]) for r in requested]

    async def _latest_erasure(self, voice: Voice) -> ErasureSummary | None:
        async with self.runtime.pool.connection() as conn:
            requested = await _rows(
                conn,
                "SELECT * FROM erasure_audit WHERE tenant_id = %s AND subject_type = 'voice'"
                " AND subject_id = %s AND event = 'requested' ORDER BY created_at DESC, id DESC"
                " LIMIT 1",
                (cache_tenant(voice), voice.id),
            )
            found = await self._summaries(conn, requested)
        return found[0] if found else None

    async def _artifact_count(self, erasure_id: str, tenant_id: str) -> int:
        summary = await self._summary(tenant_id, erasure_id)
        return len(summary.artifacts_deleted) if summary else 0

    async def _finish_if_done(self, voice: Voice, erasure_id: str, actor: Actor) -> list[str]:
        """Append ``completed`` when nothing is pending any more; return the pending nodes."""
        summary = await self._summary(cache_tenant(voice), erasure_id)
        if summary is None:
            return []
        if not summary.pending and summary.completed_at is None:
            await self._append(
                "completed",
                voice,
                actor,
                details={
                    "erasure_id": erasure_id,
                    "artifacts_deleted": len(summary.artifacts_deleted),
                    "nodes_evicted": len(summary.evicted),
                    "nodes_failed": 0,
                },
            )
        return summary.pending_node_ids

    # ----- reconciler ---------------------------------------------------------------------------

    async def reconcile(self) -> dict[str, Any]:
        """One erasure-reconciler run (§12.4, platform §6.7).

        For every open erasure with pending nodes, ``EvictVoice`` on each pending node that is
        known and not stale again; each confirmation appends ``node_evicted`` (actor
        ``system:reconciler``), and ``completed`` follows once nothing is pending. Then the
        remaining evict-pending entries (evictions of live voices) are retried.
        """
        lock_ttl_ms = int(max(60.0, self._deps.settings.erasure_reconcile_interval_s) * 1000)
        token = RECONCILER_ACTOR
        redis = self.runtime.redis
        if not await redis.set(_LOCK_KEY, token, nx=True, px=lock_ttl_ms):
            return {"skipped": True}
        try:
            return await self._reconcile()
        finally:
            await redis.delete(_LOCK_KEY)

    async def _reconcile(self) -> dict[str, Any]:
        async with self.runtime.pool.connection() as conn:
            open_rows = await _rows(conn, _OPEN_ERASURES + " ORDER BY r.created_at, r.id", ())
            summaries = await self._summaries(conn, open_rows)
        nodes = {n.node_id: n for n in await self.runtime.nodes.read()}
        warm = self._voices.warm_registry
        evicted = completed = 0
        for summary in summaries:
            if not summary.pending:
                continue  # an erasure still in progress, or one that lost its outcome events
            voice = await self._deps.voices.get(summary.voice_id)
            if voice is None:
                continue
            reachable = [
                nodes[n]
                for n in summary.pending_node_ids
                if n in nodes and nodes[n].health != "stale"
            ]
            outcome = await self._call_evict(voice.id, summary.tenant_id, reachable, RECONCILER)
            for node_id in outcome.confirmed:
                await self._append(
                    "node_evicted",
                    voice,
                    RECONCILER,
                    node_id=node_id,
                    details={"erasure_id": summary.erasure_id, "by": "reconciler"},
                )
                await warm.remove_pending(
                    PendingEviction(WARM_KIND, summary.tenant_id, voice.id, node_id)
                )
                evicted += 1
            if outcome.confirmed and not await self._finish_if_done(
                voice, summary.erasure_id, RECONCILER
            ):
                completed += 1
        report = await warm.reconcile(self.runtime.nodes, self._evict_pending_entry)
        result = {
            "erasures_open": len(summaries),
            "nodes_evicted": evicted,
            "erasures_completed": completed,
            "pending_resolved": report.resolved,
            "pending_kept": report.kept,
            "pending_dropped": report.dropped,
        }
        log.info("erasure_reconcile", **result)
        return result

    async def _evict_pending_entry(
        self, node: NodeInfo, kind: str, tenant_id: str, item_id: str
    ) -> bool | None:
        if kind != WARM_KIND:
            return None
        outcome = await self._call_evict(item_id, tenant_id, [node], RECONCILER)
        return True if outcome.confirmed else None


async def reconcile_erasures(ctx: dict[str, Any]) -> dict[str, Any]:
    """The arq cron (every ``SCAISPEAK_ERASURE_RECONCILE_INTERVAL_S``), ``ctx["runtime"]`` set."""
    runtime: Runtime = ctx["runtime"]
    return await ErasureService(deps_of(runtime)).reconcile()


def super_admin_only(principal: Principal) -> None:
    """403 ``AUTHZ_PERMISSION_DENIED`` unless the caller holds the ``super_admin`` role."""
    if not principal.is_super_admin:
        raise ScaiError(
            "AUTHZ_PERMISSION_DENIED",
            "this call needs the super_admin role",
            required_role="super_admin",
        )
