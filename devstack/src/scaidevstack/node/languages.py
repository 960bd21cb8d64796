"""Language hints: ISO 639-1 normalisation and the ``UNSUPPORTED_LANGUAGE`` check."""

from __future__ import annotations

from collections.abc import Sequence

from scaidevstack.node import errors


def normalise_language(hint: str) -> str:
    """ISO 639-1 primary subtag of a hint (``en-US`` → ``en``)."""
    return hint.strip().replace("_", "-").split("-", 1)[0].lower()


def check_language(hint: str, languages: Sequence[str]) -> str | None:
    """The normalised hint, ``None`` when empty; ``UNSUPPORTED_LANGUAGE`` when not offered."""
    lang = normalise_language(hint)
    if not lang:
        return None
    if languages and lang not in {normalise_language(x) for x in languages}:
        raise errors.invalid("UNSUPPORTED_LANGUAGE", f"language {hint!r} is not supported")
    return lang
