"""Cutting long texts at sentence boundaries for backends with a per-request limit.

Nodes take at most 10,000 characters per ``Synthesize`` (scaiinfer.proto.md §1.3) and the relay
``<PREFIX>_RELAY_MAX_INPUT_CHARS`` (platform §8.3); longer texts go as several requests whose
audio is concatenated.
"""

from __future__ import annotations

import re
from typing import Final

#: A sentence end: a run of terminators (optionally closed by quotes or brackets) followed by
#: whitespace or the end of the text, or a newline.
_SENTENCE_END: Final = re.compile(r"[.!?;…]+[\"'”’)\]»]*(?=\s|$)|\n")
_SPACE: Final = re.compile(r"\s")


def split_text(text: str, max_chars: int) -> list[str]:
    """``text`` as stripped, non-empty pieces of at most ``max_chars`` characters.

    Each piece ends after the last sentence end that fits; a sentence longer than the limit is
    cut at its last whitespace that fits, and a run without whitespace is cut hard. The pieces
    hold every non-whitespace character of ``text`` once, in order.
    """
    if max_chars <= 0:
        raise ValueError("max_chars must be positive")
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    pieces: list[str] = []
    start = 0
    while True:
        while start < len(text) and text[start].isspace():
            start += 1
        if len(text) - start <= max_chars:
            break
        limit = start + max_chars
        cut = max((e for e in ends if start < e <= limit), default=0)
        if cut <= start:
            spaces = [m.start() for m in _SPACE.finditer(text, start + 1, limit + 1)]
            cut = spaces[-1] if spaces else limit
        piece = text[start:cut].strip()
        if piece:
            pieces.append(piece)
        start = cut
    rest = text[start:].strip()
    if rest:
        pieces.append(rest)
    return pieces
