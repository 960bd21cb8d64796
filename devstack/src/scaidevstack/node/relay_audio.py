"""Audio encoding for the relay's ``/v1/audio/speech`` (PyAV) and subtitle formatting."""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
from av.audio.stream import AudioStream

from scaidevstack.node.audio import wav_bytes
from scaidevstack.node.engines.base import SegmentResult

SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# format → (container, codec)
_ENCODERS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}
_FRAME = 960


def encode(pcm: np.ndarray, rate: int, fmt: str) -> bytes:
    """``pcm`` (int16 mono at ``rate``) as a complete file of ``fmt`` (blocking)."""
    if fmt == "pcm":
        return np.asarray(pcm, dtype="<i2").tobytes()
    if fmt == "wav":
        return wav_bytes(pcm, rate)
    container_name, codec = _ENCODERS[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_name) as container:
        stream = container.add_stream(codec, rate=rate)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        if codec == "libmp3lame":
            stream.bit_rate = 64_000
        samples = np.asarray(pcm, dtype=np.int16)
        pts = 0
        for start in range(0, max(samples.size, 1), _FRAME):
            piece = samples[start : start + _FRAME]
            if piece.size == 0:
                break
            frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = pts
            frame.time_base = Fraction(1, rate)
            pts += piece.size
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def _timestamp(ms: int, sep: str) -> str:
    hours, rest = divmod(max(0, ms), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{millis:03d}"


def srt(segments: Sequence[SegmentResult]) -> str:
    """SubRip subtitles of the segments."""
    blocks = [
        f"{i}\n{_timestamp(s.start_ms, ',')} --> {_timestamp(s.end_ms, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def vtt(segments: Sequence[SegmentResult]) -> str:
    """WebVTT subtitles of the segments."""
    blocks = [
        f"{_timestamp(s.start_ms, '.')} --> {_timestamp(s.end_ms, '.')}\n{s.text.strip()}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)
