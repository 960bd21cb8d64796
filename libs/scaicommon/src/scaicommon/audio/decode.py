"""PyAV decoding and splitting of audio (design §6, platform §8.2, §14.1).

Encoding lives in :mod:`scaicommon.audio.output`.

Everything here is synchronous and CPU-bound: async callers run it with
``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from typing import Final

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer

Source = str | os.PathLike[str] | bytes

# Errors PyAV (and the file layer under it) raise for bytes that do not decode.
_DECODE_ERRORS: Final = (av.FFmpegError, ValueError, OSError, EOFError, IndexError, TypeError)

# ffmpeg demuxer names -> our staging extensions.
_DEMUXER_EXT: Final[dict[str, str]] = {
    "wav": "wav",
    "mp3": "mp3",
    "flac": "flac",
    "ogg": "ogg",
    "mov": "m4a",
    "mp4": "m4a",
    "m4a": "m4a",
    "aac": "m4a",
    "matroska": "webm",
    "webm": "webm",
}


class AudioDecodeError(Exception):
    """The bytes do not decode as audio; the message says why, briefly."""


class AudioTooLong(Exception):
    """Decoding stopped because the audio runs past the allowed duration (platform §14.1).

    ``seconds`` is how much was decoded before stopping (a lower bound of the real length).
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"audio is longer than allowed: stopped after {seconds:.3f} s")
        self.seconds = seconds


@dataclass(frozen=True)
class Probe:
    """What a container declares about its first audio stream, without decoding it.

    ``container`` is our staging extension (``wav``, ``m4a``, …) when the demuxer is one
    of the accepted ones, else ffmpeg's demuxer name. ``codec`` is ffmpeg's codec name
    (``mp3``, ``aac``, ``opus``, ``flac``, ``pcm_s16le``, …).
    """

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration_ms: int | None


@dataclass(frozen=True)
class Pcm:
    """Signed 16-bit little-endian mono PCM at ``sample_rate``."""

    data: bytes
    sample_rate: int

    @property
    def samples(self) -> int:
        """Number of samples."""
        return len(self.data) // 2

    @property
    def duration_ms(self) -> int:
        """Duration in milliseconds, rounded up to a whole millisecond."""
        return -(-self.samples * 1000 // self.sample_rate)

    def _sample_at(self, ms: int) -> int:
        return max(0, min(self.samples, ms * self.sample_rate // 1000))

    def slice_ms(self, start_ms: int, end_ms: int) -> Pcm:
        """The audio between two offsets in milliseconds (clamped to the audio)."""
        start = self._sample_at(start_ms)
        end = max(start, self._sample_at(end_ms))
        return Pcm(self.data[start * 2 : end * 2], self.sample_rate)


def _open(source: Source) -> InputContainer:
    target: str | os.PathLike[str] | io.BytesIO
    target = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        return av.open(target, mode="r")
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(_why(exc)) from None


def _why(exc: BaseException) -> str:
    """A short reason: ffmpeg's own error text, without the errno and file name."""
    text = exc.strerror if isinstance(exc, av.FFmpegError) else str(exc)
    text = (text or "").strip()
    return f"{type(exc).__name__}: {text}"[:160] if text else type(exc).__name__


def _first_audio(container: InputContainer) -> AudioStream:
    if not container.streams.audio:
        raise AudioDecodeError("no audio stream")
    return container.streams.audio[0]


def _container_name(container: InputContainer) -> str:
    names = container.format.name.split(",")
    for name in names:
        if name in _DEMUXER_EXT:
            return _DEMUXER_EXT[name]
    return names[0]


def probe(source: Source) -> Probe:
    """The container's declared facts about its first audio stream (no full decode).

    ``duration_ms`` is the stream's declared duration, else the container's, else None.
    Synchronous: call it with ``asyncio.to_thread`` from async code.
    """
    container = _open(source)
    with container:
        stream = _first_audio(container)
        ctx = stream.codec_context
        duration_ms: int | None = None
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            duration_ms = math.ceil(float(stream.duration * stream.time_base) * 1000)
        elif container.duration is not None and container.duration > 0:
            duration_ms = math.ceil(container.duration / 1000)  # AV_TIME_BASE is µs
        return Probe(
            container=_container_name(container),
            codec=ctx.codec.canonical_name,
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
            duration_ms=duration_ms,
        )


class _Converter:
    """Resamples decoded frames to s16 mono; rebuilds itself if the input format changes."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._resampler: AudioResampler | None = None
        self._shape: tuple[str, str, int] | None = None

    def push(self, frame: AudioFrame | None, out: io.BytesIO) -> None:
        if frame is not None:
            shape = (frame.format.name, frame.layout.name, frame.sample_rate)
            if shape != self._shape:
                self.push(None, out)
                self._resampler = AudioResampler(format="s16", layout="mono", rate=self._rate)
                self._shape = shape
        if self._resampler is None:
            return
        for converted in self._resampler.resample(frame):
            out.write(memoryview(converted.planes[0])[: converted.samples * 2])
        if frame is None:
            self._resampler = None
            self._shape = None


def decode_pcm16(
    source: Source, *, sample_rate: int = 16000, max_seconds: float | None = None
) -> Pcm:
    """Decode the first audio stream fully into s16le mono PCM at ``sample_rate``.

    Channels are downmixed and the rate converted by ``av.AudioResampler``. With
    ``max_seconds``, decoding stops as soon as more than ``max_seconds + 1`` seconds were
    decoded and :class:`AudioTooLong` is raised (no decode bombs, platform §14.1).
    Raises :class:`AudioDecodeError` when the bytes do not decode or yield no samples.
    Synchronous: call it with ``asyncio.to_thread`` from async code.
    """
    limit = None if max_seconds is None else max_seconds + 1.0
    # BytesIO.getvalue() hands over its buffer without a copy, unlike bytes(bytearray).
    out = io.BytesIO()
    decoded_seconds = 0.0
    padding_seconds = 0.0
    container = _open(source)
    try:
        with container:
            stream = _first_audio(container)
            end = _exact_end_seconds(container, stream)
            converter = _Converter(sample_rate)
            for frame in container.decode(stream):
                if frame.sample_rate <= 0 or frame.samples <= 0:
                    continue
                length = frame.samples / frame.sample_rate
                decoded_seconds += length
                if end is not None and frame.pts is not None and frame.time_base is not None:
                    start = float(frame.pts * frame.time_base)
                    padding_seconds += min(length, max(0.0, start + length - end))
                converter.push(frame, out)
                if limit is not None and decoded_seconds > limit:
                    raise AudioTooLong(round(decoded_seconds, 3))
            converter.push(None, out)
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(_why(exc)) from None
    drop = round(padding_seconds * sample_rate) * 2
    if 0 < drop < out.tell():
        out.truncate(out.tell() - drop)
    data = out.getvalue()
    if not data:
        raise AudioDecodeError("no audio samples decoded")
    return Pcm(data, sample_rate)


def _exact_end_seconds(container: InputContainer, stream: AudioStream) -> float | None:
    """Where an MP4/M4A track ends, to drop the encoder's padding after it.

    The MP4 demuxer trims the encoder delay at the start but hands the decoder whole
    frames at the end, so AAC comes back up to a frame too long. Other demuxers either
    trim both ends themselves or only estimate their duration (MP3), so they are left be.
    """
    if "mp4" not in container.format.name.split(","):
        return None
    if stream.duration is None or stream.time_base is None or stream.duration <= 0:
        return None
    return float((stream.duration + (stream.start_time or 0)) * stream.time_base)


def wav_bytes(pcm: Pcm) -> bytes:
    """A canonical PCM16 mono WAV (44-byte header) holding ``pcm``."""
    size = len(pcm.data) - len(pcm.data) % 2
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + size,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        pcm.sample_rate,
        pcm.sample_rate * 2,
        2,
        16,
        b"data",
        size,
    )
    return header + pcm.data[:size]


def split_pcm(
    pcm: Pcm, *, max_piece_ms: int = 600_000, search_ms: int = 10_000, frame_ms: int = 20
) -> list[tuple[int, Pcm]]:
    """Cut long audio into ``(offset_ms, piece)`` pairs of at most ``max_piece_ms`` (§8.2).

    Each piece but the last ends in the middle of the lowest-energy ``frame_ms`` frame
    within its last ``search_ms``, on a whole millisecond. The pieces cover the audio
    exactly once, in order; short audio is one piece.
    """
    if max_piece_ms <= 0 or frame_ms <= 0 or search_ms < 0:
        raise ValueError("max_piece_ms and frame_ms must be positive, search_ms not negative")
    rate = pcm.sample_rate
    total = pcm.samples
    max_piece = max_piece_ms * rate // 1000
    if total <= max_piece:
        return [(0, pcm)]
    samples = np.frombuffer(pcm.data, dtype="<i2", count=total)
    frame = max(1, frame_ms * rate // 1000)
    search = min(search_ms, max_piece_ms) * rate // 1000
    pieces: list[tuple[int, Pcm]] = []
    start_ms = 0
    start = 0
    while total - start > max_piece:
        end = start + max_piece
        cut_ms = _quietest_cut_ms(samples, end, search, frame, rate)
        if cut_ms * rate // 1000 <= start:  # degenerate settings: cut hard at the limit
            cut_ms = end * 1000 // rate
        cut = cut_ms * rate // 1000
        pieces.append((start_ms, Pcm(pcm.data[start * 2 : cut * 2], rate)))
        start_ms, start = cut_ms, cut
    pieces.append((start_ms, Pcm(pcm.data[start * 2 :], rate)))
    return pieces


def _quietest_cut_ms(samples: np.ndarray, end: int, search: int, frame: int, rate: int) -> int:
    """The whole-millisecond midpoint of the lowest-energy frame ending by ``end``."""
    count = search // frame
    if count == 0:
        return end * 1000 // rate
    first = end - count * frame
    window = samples[first:end].astype(np.int64).reshape(count, frame)
    energy = np.einsum("ij,ij->i", window, window)
    # The latest of equally quiet frames, so pieces stay as long as allowed.
    index = count - 1 - int(np.argmin(energy[::-1]))
    middle = first + index * frame + frame // 2
    return middle * 1000 // rate
