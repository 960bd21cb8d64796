"""ScaiEcho's module error codes (scaiecho.md §13.1)."""

from __future__ import annotations

from scaicommon.errors import register_module_codes

MODULE_CODES = {
    "SCAIECHO_JOB_RUNNING": 409,
    "SCAIECHO_SPEAKER_NOT_FOUND": 404,
    "SCAIECHO_SPEAKER_NAME_CONFLICT": 409,
    "SCAIECHO_SPEAKER_PREFLIGHT_FAILED": 422,
    "SCAIECHO_CONSENT_INVALID": 422,
    "SCAIECHO_WEBRTC_INVALID_STATE": 409,
    "SCAIECHO_CAPACITY_EXHAUSTED": 503,
}

register_module_codes("scaiecho", MODULE_CODES)
