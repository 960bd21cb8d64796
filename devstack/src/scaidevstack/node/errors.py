"""The node's error vocabulary (scaiinfer.proto.md §4.2) and how an error ends a call.

A handler raises :class:`NodeError`; :func:`abort` turns it into the gRPC status with trailing
metadata ``x-error-code`` (plus ``retry-after-ms`` / ``x-missing-speaker-ids``). Bidirectional
streams first send the in-band ``StreamError`` event (see ``servicer_base.rpc``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import grpc

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb

S = grpc.StatusCode


class NodeError(Exception):
    """A call's failure: gRPC status, ``x-error-code`` and a one-line message."""

    def __init__(
        self,
        status: grpc.StatusCode,
        code: str,
        message: str,
        *,
        retry_after_ms: int | None = None,
        missing_speaker_ids: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.missing_speaker_ids = tuple(missing_speaker_ids)

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        """``x-error-code`` plus the extras this error carries."""
        md: list[tuple[str, str]] = [("x-error-code", self.code)]
        if self.retry_after_ms is not None:
            md.append(("retry-after-ms", str(int(self.retry_after_ms))))
        if self.missing_speaker_ids:
            md.append(("x-missing-speaker-ids", ",".join(self.missing_speaker_ids)))
        return tuple(md)

    def stream_error(self) -> pb.StreamError:
        """The in-band ``StreamError`` event body."""
        return pb.StreamError(code=self.code, message=self.message)

    def __repr__(self) -> str:
        return f"NodeError({self.status.name}, {self.code}, {self.message!r})"


def invalid(code: str, message: str) -> NodeError:
    """``INVALID_ARGUMENT`` with ``code``."""
    return NodeError(S.INVALID_ARGUMENT, code, message)


def bad_param(message: str) -> NodeError:
    """``INVALID_ARGUMENT`` / ``INVALID_PARAMETER``."""
    return NodeError(S.INVALID_ARGUMENT, "INVALID_PARAMETER", message)


def protocol_violation(message: str) -> NodeError:
    """``INVALID_ARGUMENT`` / ``PROTOCOL_VIOLATION``."""
    return NodeError(S.INVALID_ARGUMENT, "PROTOCOL_VIOLATION", message)


def unsupported(message: str) -> NodeError:
    """``FAILED_PRECONDITION`` / ``CAPABILITY_UNSUPPORTED``."""
    return NodeError(S.FAILED_PRECONDITION, "CAPABILITY_UNSUPPORTED", message)


def not_loaded(kind: str) -> NodeError:
    """``UNAVAILABLE`` / ``ENGINE_NOT_LOADED``."""
    return NodeError(S.UNAVAILABLE, "ENGINE_NOT_LOADED", f"no {kind} engine is loaded")


def draining() -> NodeError:
    """``UNAVAILABLE`` / ``DRAINING``."""
    return NodeError(S.UNAVAILABLE, "DRAINING", "node is draining")


def at_capacity(kind: str, retry_after_ms: int) -> NodeError:
    """``RESOURCE_EXHAUSTED`` / ``AT_CAPACITY`` with ``retry-after-ms``."""
    return NodeError(
        S.RESOURCE_EXHAUSTED,
        "AT_CAPACITY",
        f"{kind} engine is at capacity",
        retry_after_ms=retry_after_ms,
    )


def buffer_overflow(message: str) -> NodeError:
    """``RESOURCE_EXHAUSTED`` / ``BUFFER_OVERFLOW``."""
    return NodeError(S.RESOURCE_EXHAUSTED, "BUFFER_OVERFLOW", message)


def stream_idle(seconds: float) -> NodeError:
    """``DEADLINE_EXCEEDED`` / ``STREAM_IDLE``."""
    return NodeError(S.DEADLINE_EXCEEDED, "STREAM_IDLE", f"no client message for {seconds:g} s")


def speaker_not_enrolled(missing: Sequence[str]) -> NodeError:
    """``FAILED_PRECONDITION`` / ``SPEAKER_NOT_ENROLLED`` with ``x-missing-speaker-ids``."""
    return NodeError(
        S.FAILED_PRECONDITION,
        "SPEAKER_NOT_ENROLLED",
        f"{len(missing)} candidate speaker(s) not enrolled on this node",
        missing_speaker_ids=missing,
    )


def unauthenticated() -> NodeError:
    """``UNAUTHENTICATED``: ``x-api-secret`` missing or wrong."""
    return NodeError(S.UNAUTHENTICATED, "UNAUTHENTICATED", "x-api-secret missing or wrong")


def internal() -> NodeError:
    """``INTERNAL`` with the generic one-line message (details go to the log)."""
    return NodeError(S.INTERNAL, "INTERNAL", "internal node error")


async def abort(context: Any, err: NodeError) -> NoReturn:
    """End the call with ``err``'s status and trailing metadata."""
    await context.abort(err.status, err.message, trailing_metadata=err.trailing_metadata())
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
