"""Voice conditioning cache: ``(tenant_id, voice_id, content_sha256)`` → ``VoiceProfile``.

Filled from reference clips (cloning) and design prompts; emptied per voice by ``EvictVoice``.
"""

from __future__ import annotations

import threading
import time

from scaidevstack.node.engines.base import VoiceProfile

MAX_VOICES = 10_000

VoiceKey = tuple[str, str, str]


class VoiceCache:
    """Thread-safe LRU-ish map of derived voice profiles."""

    def __init__(self, max_entries: int = MAX_VOICES) -> None:
        self._entries: dict[VoiceKey, tuple[VoiceProfile, float]] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, tenant_id: str, voice_id: str, sha256: str) -> VoiceProfile | None:
        """The cached profile, refreshing its use time."""
        key = (tenant_id, voice_id, sha256)
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            self._entries[key] = (hit[0], time.monotonic())
            return hit[0]

    def put(self, tenant_id: str, voice_id: str, sha256: str, profile: VoiceProfile) -> None:
        """Store a profile; the least recently used entry goes when full."""
        with self._lock:
            if len(self._entries) >= self._max:
                oldest = min(self._entries, key=lambda k: self._entries[k][1])
                del self._entries[oldest]
            self._entries[(tenant_id, voice_id, sha256)] = (profile, time.monotonic())

    def latest(self, tenant_id: str, voice_id: str) -> VoiceProfile | None:
        """The most recently used profile of ``(tenant_id, voice_id)``, any reference."""
        with self._lock:
            hits = [v for k, v in self._entries.items() if k[0] == tenant_id and k[1] == voice_id]
        if not hits:
            return None
        return max(hits, key=lambda hit: hit[1])[0]

    def evict(self, tenant_id: str, voice_id: str) -> bool:
        """Drop every entry of ``(tenant_id, voice_id)``; ``True`` when something was held."""
        with self._lock:
            keys = [k for k in self._entries if k[0] == tenant_id and k[1] == voice_id]
            for key in keys:
                del self._entries[key]
            return bool(keys)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
