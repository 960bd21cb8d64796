"""Child program that evaluates blocklist regexes under a CPU-time limit (scaispeak.md §12.2).

Run by :mod:`scaispeak.services.regex_sandbox` as ``python -I -S regex_worker.py <limit_s>``,
so it imports the standard library only. Python's ``re`` cannot be cancelled from another
thread, but its matcher checks for signals while it backtracks: a ``SIGPROF`` timer of
``limit_s`` seconds of CPU time raises inside the match and stops it.

Protocol, one JSON line per request on stdin: ``{"patterns": [...], "text": "..."}``. For
each pattern, in order, one line on stdout: ``0`` no match, ``1`` match, ``2`` limit reached,
``e`` pattern does not compile. Evaluation stops after the first ``1`` or ``2``.
"""

from __future__ import annotations

import json
import re
import signal
import sys
from types import FrameType

_CACHE_MAX = 1024


class _Expired(Exception):
    """The CPU-time limit of one evaluation was reached."""


_armed = False


def _expire(signum: int, frame: FrameType | None) -> None:
    # A signal that arrives after the match returned (and disarmed) is ignored.
    if _armed:
        raise _Expired


def _evaluate(pattern: re.Pattern[str], text: str, limit_s: float) -> str:
    global _armed
    try:
        _armed = True
        signal.setitimer(signal.ITIMER_PROF, limit_s)
        try:
            found = pattern.search(text) is not None
        finally:
            _armed = False
            signal.setitimer(signal.ITIMER_PROF, 0)
    except _Expired:
        return "2"
    return "1" if found else "0"


def _compile(source: str, cache: dict[str, re.Pattern[str] | None]) -> re.Pattern[str] | None:
    if source not in cache:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        try:
            cache[source] = re.compile(source, re.IGNORECASE)
        except (re.error, OverflowError, RecursionError, ValueError):
            cache[source] = None
    return cache[source]


def main() -> None:
    """Serve requests from stdin until it closes."""
    limit_s = float(sys.argv[1])
    signal.signal(signal.SIGPROF, _expire)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cache: dict[str, re.Pattern[str] | None] = {}
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        request = json.loads(line)
        text = str(request["text"])
        for source in request["patterns"]:
            pattern = _compile(str(source), cache)
            verdict = "e" if pattern is None else _evaluate(pattern, text, limit_s)
            out.write(verdict.encode() + b"\n")
            out.flush()
            if verdict in ("1", "2"):
                break


if __name__ == "__main__":
    main()
