"""ScaiSpeak's permission keys (scaispeak.md §16)."""

from __future__ import annotations

from scaicommon.principal import ModulePermissions

SYNTHESIZE = "scaispeak:synthesize"
VOICE_READ = "scaispeak:voice.read"
VOICE_WRITE = "scaispeak:voice.write"
VOICE_SHARE = "scaispeak:voice.share"
ADMIN = "scaispeak:admin"

PERMISSIONS = ModulePermissions(
    module="scaispeak",
    all_keys=frozenset({SYNTHESIZE, VOICE_READ, VOICE_WRITE, VOICE_SHARE, ADMIN}),
    viewer_keys=frozenset({VOICE_READ}),
)
