"""Blocklist regexes evaluated in child processes with a hard time limit (scaispeak.md §12.2).

Why processes: Python's ``re`` holds the GIL for the whole match and cannot be cancelled, so a
catastrophic pattern (``(a+)+$``) run in a thread would stall the event loop; the ``regex``
package (which has a timeout) is not a dependency of the service. Each child
(:mod:`scaispeak.services.regex_worker`) stops its own match after ``limit_s`` of CPU time
(a ``SIGPROF`` timer, which the matcher notices while it backtracks), so a busy host does not
turn slow-but-fine patterns into timeouts. The parent also waits at most ``limit_s + grace_s``
of wall time per pattern; a child that overruns that, dies or cannot be started is killed and
replaced, and the pattern counts as timed out. A timeout counts as a match (fail closed).

The pool is per process (:func:`shared_sandbox`) and its children are reused across requests;
callers wait in a worker thread (:meth:`RegexSandbox.first_hit`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import structlog

log = structlog.get_logger("scaispeak.regex_sandbox")

WORKER_SCRIPT: Final = Path(__file__).with_name("regex_worker.py")
LIMIT_S: Final = 0.05
GRACE_S: Final = 2.0
POOL_SIZE: Final = 2


@dataclass(frozen=True)
class RegexHit:
    """The first pattern (by index) that matched or ran out of time."""

    index: int
    timed_out: bool


class _WorkerLost(Exception):
    """The child did not answer in time, died, or could not be written to."""


class _Worker:
    """One child process and its read buffer; used by one thread at a time."""

    def __init__(self, limit_s: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(WORKER_SCRIPT), repr(limit_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
            start_new_session=True,
        )
        self._buffer = b""

    @property
    def _stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    @property
    def _stdout_fd(self) -> int:
        assert self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def send(self, payload: bytes) -> None:
        """Write one request line."""
        try:
            self._stdin.write(payload)
            self._stdin.flush()
        except (OSError, ValueError) as exc:
            raise _WorkerLost(type(exc).__name__) from exc

    def read_line(self, timeout_s: float) -> bytes:
        """The next answer line, waiting at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerLost("timeout")
            ready, _, _ = select.select([self._stdout_fd], [], [], remaining)
            if not ready:
                raise _WorkerLost("timeout")
            chunk = os.read(self._stdout_fd, 4096)
            if not chunk:
                raise _WorkerLost("exited")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.strip()

    def kill(self) -> None:
        """Stop the child and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def close(self) -> None:
        """Let an idle child exit on end of input (killed if it does not within a second)."""
        try:
            self._stdin.close()
            self.proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class RegexSandbox:
    """A small pool of regex children; :meth:`first_hit` is safe from any thread."""

    def __init__(
        self, *, limit_s: float = LIMIT_S, grace_s: float = GRACE_S, size: int = POOL_SIZE
    ) -> None:
        self.limit_s = limit_s
        self.grace_s = grace_s
        self.pid = os.getpid()
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []

    async def first_hit(self, patterns: Sequence[str], text: str) -> RegexHit | None:
        """The first of ``patterns`` that matches ``text`` or times out, else ``None``.

        Patterns are compiled case-insensitively; ``text`` is searched as given.
        """
        if not patterns:
            return None
        return await asyncio.to_thread(self.first_hit_blocking, list(patterns), text)

    def first_hit_blocking(self, patterns: Sequence[str], text: str) -> RegexHit | None:
        """:meth:`first_hit` for a worker thread."""
        payload = json.dumps({"patterns": list(patterns), "text": text}).encode() + b"\n"
        with self._slots:
            worker = self._start(payload)
            if worker is None:
                return RegexHit(0, timed_out=True)
            for index, source in enumerate(patterns):
                try:
                    verdict = worker.read_line(self.limit_s + self.grace_s)
                except _WorkerLost as exc:
                    log.warning("blocklist_regex_worker_lost", reason=str(exc), pattern_index=index)
                    worker.kill()
                    return RegexHit(index, timed_out=True)
                if verdict == b"1":
                    self._release(worker)
                    return RegexHit(index, timed_out=False)
                if verdict == b"2":
                    log.info("blocklist_regex_timeout", pattern_index=index)
                    self._release(worker)
                    return RegexHit(index, timed_out=True)
                if verdict == b"e":
                    log.warning("blocklist_regex_invalid", pattern=source[:100])
            self._release(worker)
            return None

    def _start(self, payload: bytes) -> _Worker | None:
        """An idle (or new) child that accepted ``payload``; one retry with a fresh child."""
        for _ in range(2):
            try:
                worker = self._take()
            except OSError as exc:
                log.error("blocklist_regex_worker_spawn_failed", error=type(exc).__name__)
                return None
            try:
                worker.send(payload)
            except _WorkerLost:
                worker.kill()
                continue
            return worker
        return None

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Worker(self.limit_s)

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def close(self) -> None:
        """Stop every idle child."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()


_shared: RegexSandbox | None = None
_shared_lock = threading.Lock()


def shared_sandbox() -> RegexSandbox:
    """This process's sandbox (a forked child gets its own, never its parent's pipes)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.pid != os.getpid():
            _shared = RegexSandbox()
            atexit.register(_shared.close)
        return _shared
