"""A voice's stored reference clip, as the backends take it (scaispeak.md §3.5)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Final

from scaicommon.audio import AudioDecodeError, decode_pcm16
from scaicommon.errors import ScaiError
from scaicommon.storage import ObjectStore, StorageError
from scaispeak.store.voices import Voice

#: Stored references are 24 kHz mono PCM16 WAV (HC2's intake normalises them).
REFERENCE_RATE: Final = 24_000
#: Node cache key of global voices, which belong to no tenant.
GLOBAL_TENANT: Final = "global"


def node_tenant(voice: Voice) -> str:
    """The ``tenant_id`` a node keys the voice's cache under: its own tenant, or ``global``."""
    return voice.tenant_id or GLOBAL_TENANT


def reference_unavailable() -> ScaiError:
    """409 ``SCAISPEAK_VOICE_NOT_READY``: the reference clip cannot be read."""
    return ScaiError(
        "SCAISPEAK_VOICE_NOT_READY",
        "the voice's reference clip is unavailable; repromote or re-create the voice",
    )


@dataclass(frozen=True)
class Reference:
    """The reference WAV (``sha256`` of its bytes) and its transcript when known."""

    wav: bytes
    sha256: str
    text: str | None

    async def pcm(self) -> bytes:
        """The clip as raw s16le mono at :data:`REFERENCE_RATE` (for nodes without containers)."""
        try:
            decoded = await asyncio.to_thread(decode_pcm16, self.wav, sample_rate=REFERENCE_RATE)
        except AudioDecodeError:
            raise reference_unavailable() from None
        return decoded.data


async def load_reference(objects: ObjectStore, voice: Voice) -> Reference:
    """Read the voice's reference clip from S3 (409 ``SCAISPEAK_VOICE_NOT_READY`` when gone)."""
    if not voice.reference_key:
        raise reference_unavailable()
    try:
        wav = await objects.get(voice.reference_key)
    except StorageError:
        raise reference_unavailable() from None
    # Hashed from the bytes themselves: a node refuses a content_sha256 that does not match.
    return Reference(wav=wav, sha256=hashlib.sha256(wav).hexdigest(), text=voice.reference_text)
