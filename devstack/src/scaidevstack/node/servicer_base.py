"""What every AudioNode handler shares: ``x-node-id``, the secret check, error endings, logs.

Handlers are wrapped with :func:`rpc`. A handler raises :class:`NodeError` for contract errors;
anything else is logged and ends the call with a generic ``INTERNAL``. Bidirectional streams pass
``error_event`` so the in-band ``StreamError`` event goes out before the status.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio

from scaidevstack.node import errors
from scaidevstack.node.errors import NodeError
from scaidevstack.node.state import NodeState

log = logging.getLogger("scaidevstack.node")

H = TypeVar("H", bound=Callable[..., Awaitable[Any]])
ErrorEvent = Callable[[NodeError], Any]


class ServicerBase:
    """Holds the node state; subclasses add the RPC handlers."""

    def __init__(self, state: NodeState) -> None:
        self.state = state

    def check_secret(self, metadata: dict[str, str]) -> None:
        """``UNAUTHENTICATED`` unless ``x-api-secret`` equals the node secret (when one is set)."""
        secret = self.state.config.api_secret
        if not secret:
            return
        given = metadata.get("x-api-secret", "")
        if not hmac.compare_digest(given.encode(), secret.encode()):
            raise errors.unauthenticated()


def call_metadata(context: Any) -> dict[str, str]:
    """Inbound metadata as a dict (last value wins; binary values skipped)."""
    out: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            out[key.lower()] = value
    return out


def rpc(error_event: ErrorEvent | None = None) -> Callable[[H], H]:
    """Decorate an AudioNode handler (see the module docstring)."""

    def decorate(handler: H) -> H:
        name = handler.__name__

        @functools.wraps(handler)
        async def wrapper(self: ServicerBase, request: Any, context: Any) -> Any:
            started = time.monotonic()
            md = call_metadata(context)
            await context.send_initial_metadata((("x-node-id", self.state.config.node_id),))
            try:
                self.check_secret(md)
                result = await handler(self, request, context)
            except NodeError as exc:
                err = exc
            except asyncio.CancelledError:
                if not self.state.admission.was_killed(asyncio.current_task()):
                    _log_call(name, md, started, "CANCELLED")
                    raise
                err = errors.draining()
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception(
                    "rpc_failed method=%s request_id=%s", name, md.get("x-request-id", "")
                )
                err = errors.internal()
            else:
                _log_call(name, md, started, "OK")
                return result
            _log_call(name, md, started, err.code)
            if error_event is not None:
                try:
                    await context.write(error_event(err))
                except Exception:  # the peer may be gone already
                    log.debug("error event not delivered", exc_info=True)
            await errors.abort(context, err)

        return wrapper  # type: ignore[return-value]

    return decorate


def _log_call(method: str, md: dict[str, str], started: float, outcome: str) -> None:
    log.log(
        logging.DEBUG if outcome in ("OK", "CANCELLED") else logging.INFO,
        "rpc method=%s outcome=%s ms=%d request_id=%s tenant_id=%s traceparent=%s",
        method,
        outcome,
        (time.monotonic() - started) * 1000,
        md.get("x-request-id", ""),
        md.get("x-tenant-id", ""),
        md.get("traceparent", ""),
    )
