"""Validation and decoding of ``AudioInput`` (scaiinfer.proto.md §1.3, §3.3).

Raw PCM must be S16LE mono at 8–48 kHz with an even byte count; it is resampled to 16 kHz.
Containers (``media_type``) are decoded with PyAV only when the engine lists
``decode_containers``. Every limit error carries the code the calling RPC asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaidevstack.node import errors
from scaidevstack.node.audio import TARGET_RATE, decode_container, resample_int16
from scaidevstack.node.errors import NodeError

MIN_RATE = 8000
MAX_RATE = 48000
MEDIA_TYPES = frozenset(
    {
        "audio/wav",
        "audio/x-wav",
        "audio/wave",
        "audio/vnd.wave",
        "audio/mpeg",
        "audio/mp3",
        "audio/flac",
        "audio/x-flac",
        "audio/ogg",
        "audio/opus",
        "audio/mp4",
        "audio/m4a",
        "audio/x-m4a",
        "audio/aac",
        "audio/webm",
        "video/webm",
        "video/mp4",
        "application/ogg",
    }
)


@dataclass(frozen=True)
class Limits:
    """Limits of one RPC and the codes its errors use."""

    max_bytes: int
    max_ms: int
    too_long_code: str = "AUDIO_TOO_LONG"
    invalid_code: str = "AUDIO_INVALID"
    min_ms: int = 0


def check_input_shape(audio: pb.AudioInput, limits: Limits, capabilities: Sequence[str]) -> None:
    """The cheap checks (no decoding): size, format fields, capability."""
    if not audio.data:
        raise errors.invalid(limits.invalid_code, "audio is empty")
    if len(audio.data) > limits.max_bytes:
        raise errors.invalid(
            limits.too_long_code, f"audio is over {limits.max_bytes // (1024 * 1024)} MiB"
        )
    which = audio.WhichOneof("format")
    if which == "media_type":
        if "decode_containers" not in capabilities:
            raise errors.unsupported("this engine accepts raw PCM only (no decode_containers)")
        if _base_type(audio.media_type) not in MEDIA_TYPES:
            raise errors.invalid(
                "UNSUPPORTED_MEDIA_TYPE", f"media type {audio.media_type!r} is not decoded here"
            )
        return
    spec = audio.pcm if which == "pcm" else pb.PcmSpec()
    if spec.channels not in (0, 1):
        raise errors.invalid(limits.invalid_code, "only mono audio is accepted")
    if spec.sample_format not in (pb.SAMPLE_FORMAT_UNSPECIFIED, pb.SAMPLE_FORMAT_S16LE):
        raise errors.bad_param(f"unknown sample_format {spec.sample_format}")
    rate = spec.sample_rate_hz or TARGET_RATE
    if not MIN_RATE <= rate <= MAX_RATE:
        raise errors.invalid("UNSUPPORTED_SAMPLE_RATE", f"sample rate {rate} Hz is not 8–48 kHz")
    if len(audio.data) % 2:
        raise errors.invalid(limits.invalid_code, "PCM16 audio has an odd byte count")
    duration_ms = len(audio.data) // 2 * 1000 // rate
    if duration_ms > limits.max_ms:
        raise errors.invalid(limits.too_long_code, f"audio is over {limits.max_ms} ms")


def decode_input(audio: pb.AudioInput, limits: Limits, capabilities: Sequence[str]) -> np.ndarray:
    """int16 mono 16 kHz samples of ``audio`` (blocking: run it in a thread)."""
    check_input_shape(audio, limits, capabilities)
    if audio.WhichOneof("format") == "media_type":
        try:
            samples = decode_container(audio.data, TARGET_RATE)
        except ValueError as exc:
            raise errors.invalid(limits.invalid_code, str(exc)) from None
    else:
        rate = audio.pcm.sample_rate_hz or TARGET_RATE
        raw = np.frombuffer(audio.data, dtype="<i2").astype(np.int16)
        samples = resample_int16(raw, rate, TARGET_RATE)
    duration_ms = samples.size * 1000 // TARGET_RATE
    if duration_ms > limits.max_ms:
        raise errors.invalid(limits.too_long_code, f"audio is over {limits.max_ms} ms")
    if duration_ms < limits.min_ms:
        raise errors.invalid(limits.invalid_code, f"audio is shorter than {limits.min_ms} ms")
    if samples.size == 0:
        raise errors.invalid(limits.invalid_code, "audio holds no samples")
    return samples


def _base_type(media_type: str) -> str:
    return media_type.split(";", 1)[0].strip().lower()


__all__ = ["MEDIA_TYPES", "Limits", "NodeError", "check_input_shape", "decode_input"]
