"""Admission control (scaiinfer.proto.md §1.4): per-engine capacity slots for heavy calls.

No queueing: a heavy call that finds its engine full fails at once with ``AT_CAPACITY`` and a
``retry-after-ms`` estimate. A slot is a context manager; leaving it (completion, error or
cancellation) frees the slot synchronously. While draining, new heavy calls get ``DRAINING``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Mapping
from types import TracebackType

from scaidevstack.node import errors

MIN_RETRY_MS = 100
MAX_RETRY_MS = 30_000
_DEFAULT_CALL_MS = 2_000.0
_EWMA_WEIGHT = 0.3


class Slot:
    """One admitted heavy call. Release is idempotent."""

    def __init__(
        self, pool: EnginePool, task: asyncio.Task[object] | None, on_release: _Callback
    ) -> None:
        self._pool = pool
        self._on_release = on_release
        self.task = task
        self.started = time.monotonic()
        self.killed = False
        self._released = False

    @property
    def kind(self) -> str:
        """Engine kind holding this slot."""
        return self._pool.kind

    def release(self) -> None:
        """Free the slot (only the first call counts)."""
        if not self._released:
            self._released = True
            self._pool._release(self)
            self._on_release()

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class EnginePool:
    """Capacity and live slots of one engine kind."""

    def __init__(self, kind: str, capacity: int) -> None:
        self.kind = kind
        self.capacity = capacity
        self.slots: set[Slot] = set()
        self._ewma_ms = _DEFAULT_CALL_MS

    @property
    def inflight(self) -> int:
        """Heavy calls running now."""
        return len(self.slots)

    def retry_after_ms(self) -> int:
        """When a slot is likely to free up: the soonest expected end of a running call."""
        now = time.monotonic()
        remaining = [self._ewma_ms - (now - s.started) * 1000.0 for s in self.slots]
        guess = min(remaining) if remaining else MIN_RETRY_MS
        return int(min(MAX_RETRY_MS, max(MIN_RETRY_MS, guess)))

    def _release(self, slot: Slot) -> None:
        self.slots.discard(slot)
        if not slot.killed:
            took = (time.monotonic() - slot.started) * 1000.0
            self._ewma_ms += _EWMA_WEIGHT * (took - self._ewma_ms)


class Admission:
    """All engine pools of the node plus the draining switch."""

    def __init__(self, capacities: Mapping[str, int]) -> None:
        self.pools = {kind: EnginePool(kind, cap) for kind, cap in capacities.items()}
        self.draining = False
        self._killed: weakref.WeakSet[asyncio.Task[object]] = weakref.WeakSet()
        self._idle: asyncio.Event | None = None

    def acquire(self, kind: str) -> Slot:
        """A slot on ``kind`` for the current task; raises ``DRAINING`` or ``AT_CAPACITY``."""
        if self.draining:
            raise errors.draining()
        pool = self.pools[kind]
        if pool.inflight >= pool.capacity:
            raise errors.at_capacity(kind, pool.retry_after_ms())
        slot = Slot(pool, _current_task(), self._note_release)
        pool.slots.add(slot)
        return slot

    def inflight(self, kind: str | None = None) -> int:
        """Live heavy calls of ``kind``, or of the whole node."""
        if kind is not None:
            pool = self.pools.get(kind)
            return pool.inflight if pool else 0
        return sum(p.inflight for p in self.pools.values())

    def capacity(self, kind: str) -> int:
        """Configured capacity of ``kind`` (0 when unknown)."""
        pool = self.pools.get(kind)
        return pool.capacity if pool else 0

    async def wait_idle(self) -> None:
        """Wait until no heavy call runs (bound it with ``asyncio.timeout``)."""
        if self.inflight() == 0:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()

    def kill_all(self) -> int:
        """Cancel the task of every running heavy call (end of the drain grace period)."""
        count = 0
        for pool in self.pools.values():
            for slot in list(pool.slots):
                slot.killed = True
                if slot.task is not None and not slot.task.done():
                    self._killed.add(slot.task)
                    slot.task.cancel()
                    count += 1
        return count

    def was_killed(self, task: asyncio.Task[object] | None) -> bool:
        """Whether :meth:`kill_all` cancelled ``task``."""
        return task is not None and task in self._killed

    def _note_release(self) -> None:
        if self._idle is not None and self.inflight() == 0:
            self._idle.set()


_Callback = Callable[[], None]


def _current_task() -> asyncio.Task[object] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
