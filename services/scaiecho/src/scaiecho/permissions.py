"""ScaiEcho's permission keys (scaiecho.md §14)."""

from __future__ import annotations

from scaicommon.principal import ModulePermissions

TRANSCRIBE = "scaiecho:transcribe"
DIARIZE = "scaiecho:diarize"
ENROLL = "scaiecho:enroll"
ADMIN = "scaiecho:admin"

PERMISSIONS = ModulePermissions(
    module="scaiecho",
    all_keys=frozenset({TRANSCRIBE, DIARIZE, ENROLL, ADMIN}),
    viewer_keys=frozenset({TRANSCRIBE}),
)
