"""Attach diarized speaker turns to a transcript (scaiinfer.proto.md §3.3).

A word's speaker is the turn with the largest time overlap (the nearest turn when none
overlaps). A segment's speaker is the one holding the largest share of its words' duration;
a segment without words takes the turn overlapping it most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scaidevstack.node.engines.base import DiarizedTurn


@dataclass(frozen=True)
class Span:
    """A time range in ms."""

    start_ms: int
    end_ms: int


def _overlap(a_start: int, a_end: int, b_start: int, b_end: int) -> int:
    return max(0, min(a_end, b_end) - max(a_start, b_start))


def best_turn(turns: Sequence[DiarizedTurn], start_ms: int, end_ms: int) -> DiarizedTurn | None:
    """The turn overlapping ``[start_ms, end_ms]`` most, else the nearest one."""
    if not turns:
        return None
    best = max(turns, key=lambda t: _overlap(start_ms, end_ms, t.start_ms, t.end_ms))
    if _overlap(start_ms, end_ms, best.start_ms, best.end_ms) > 0:
        return best
    mid = (start_ms + end_ms) / 2
    return min(turns, key=lambda t: min(abs(t.start_ms - mid), abs(t.end_ms - mid)))


def segment_turn(
    turns: Sequence[DiarizedTurn],
    seg: Span,
    words: Sequence[tuple[Span, DiarizedTurn | None]],
) -> DiarizedTurn | None:
    """The speaker of a segment: largest share of its words' duration, else largest overlap."""
    if not words:
        return best_turn(turns, seg.start_ms, seg.end_ms)
    share: dict[str, int] = {}
    first: dict[str, DiarizedTurn] = {}
    for span, turn in words:
        if turn is None:
            continue
        share[turn.label] = share.get(turn.label, 0) + max(1, span.end_ms - span.start_ms)
        first.setdefault(turn.label, turn)
    if not share:
        return best_turn(turns, seg.start_ms, seg.end_ms)
    label = max(share, key=lambda k: share[k])
    return first[label]
