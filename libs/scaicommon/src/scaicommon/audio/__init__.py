"""Audio helpers shared by the services: container detection, PyAV decode/encode, splitting."""

from scaicommon.audio.containers import (
    ACCEPTED_EXTENSIONS,
    ACCEPTED_MIME,
    detect_container,
    mime_for,
    sniff,
)
from scaicommon.audio.decode import (
    AudioDecodeError,
    AudioTooLong,
    Pcm,
    Probe,
    decode_pcm16,
    encode,
    probe,
    split_pcm,
    wav_bytes,
)

__all__ = [
    "ACCEPTED_EXTENSIONS",
    "ACCEPTED_MIME",
    "AudioDecodeError",
    "AudioTooLong",
    "Pcm",
    "Probe",
    "decode_pcm16",
    "detect_container",
    "encode",
    "mime_for",
    "probe",
    "sniff",
    "split_pcm",
    "wav_bytes",
]
