"""WebSocket ``error`` frames followed by the matching close (platform §2.3, §3.4)."""

from __future__ import annotations

import json
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from scaicommon.errors import ScaiError, ws_close_for
from scaicommon.requestid import current_request_id

log = structlog.get_logger("scaicommon.wsframes")


def error_frame(error: ScaiError, request_id: str) -> dict[str, Any]:
    """The ``error`` frame of ``error``: type, code, message, request_id, then the extras."""
    body = error.to_dict()
    frame: dict[str, Any] = {
        "type": "error",
        "code": body.pop("code"),
        "message": body.pop("message"),
        "request_id": request_id,
    }
    frame.update(body)
    return frame


def _request_id_of(websocket: WebSocket) -> str:
    state = websocket.scope.get("state") or {}
    value = state.get("request_id") if isinstance(state, dict) else None
    return str(value) if value else current_request_id()


async def send_error_and_close(
    websocket: WebSocket,
    error: ScaiError,
    *,
    session_started: bool = False,
    request_id: str | None = None,
) -> int:
    """Send one ``error`` text frame for ``error``, then close with its §3.4 code.

    Accepts the handshake first when it has not been accepted yet. A client that already went
    away is not an error. Returns the close code used.
    """
    close_code = ws_close_for(error.code, error.http_status, session_started=session_started)
    frame = error_frame(error, request_id or _request_id_of(websocket))
    try:
        if websocket.application_state == WebSocketState.CONNECTING:
            await websocket.accept()
        if websocket.application_state == WebSocketState.CONNECTED:
            await websocket.send_text(json.dumps(frame, separators=(",", ":")))
            await websocket.close(code=close_code)
    except (WebSocketDisconnect, RuntimeError, OSError) as exc:
        # The peer went away (or the server refused the send): there is nobody left to tell.
        log.info("ws_error_frame_not_delivered", code=error.code, reason=type(exc).__name__)
    return close_code
