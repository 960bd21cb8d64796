"""Word error rate, for tests that check transcripts against the text that was spoken."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9']+")


_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _number_words(token: str) -> list[str]:
    """Spell out 0–99 as recognisers and people write them in words; others stay digits."""
    if not token.isdigit() or int(token) > 99:
        return [token]
    value = int(token)
    if value < 20:
        return [_ONES[value]]
    tens, ones = divmod(value, 10)
    return [_TENS[tens]] + ([_ONES[ones]] if ones else [])


def normalise_words(text: str) -> list[str]:
    """Lower-case words without punctuation, small numbers spelled out.

    ``Hello, world!`` → ``["hello", "world"]``; ``at 9`` → ``["at", "nine"]`` (recognisers
    write numerals for spoken numbers; both spellings are the same words).
    """
    words = _WORD.findall(text.lower().replace("’", "'"))
    return [w for token in words for w in _number_words(token)]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by edit distance."""
    ref = normalise_words(reference)
    hyp = normalise_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, start=1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (ref_word != hyp_word),
            )
        previous = current
    return previous[-1] / len(ref)
