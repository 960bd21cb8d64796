"""Encoding synthesised PCM into the output formats of scaispeak.md §1.9 (PyAV).

Whole files come from :func:`encode_output`; live sessions use :class:`StreamEncoder`,
whose chunks concatenate into one valid file (scaispeak.md §10.3). :func:`encode` is the
older container-keyed entry point used for staging and tests. Everything here is
synchronous and CPU-bound: async callers run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Protocol

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream

from scaicommon.audio.decode import Pcm, wav_bytes

OUTPUT_FORMATS: Final = ("mp3", "wav", "flac", "opus", "pcm", "aac")

_COMMON_RATES: Final = (8000, 16000, 22050, 24000, 44100, 48000)

# Ogg pages are cut every 100 ms, so a live stream holds back at most that much audio
# while costing little framing overhead.
_OGG_PAGE_DURATION_US: Final = "100000"

# WAV header with both size fields 0xFFFFFFFF: "length unknown" (scaispeak.md §10.3).
_UNKNOWN_SIZE: Final = 0xFFFFFFFF


@dataclass(frozen=True)
class _Format:
    content_type: str
    extension: str
    default_rate: int
    rates: tuple[int, ...]


_FORMATS: Final[dict[str, _Format]] = {
    "mp3": _Format("audio/mpeg", "mp3", 24000, _COMMON_RATES),
    "wav": _Format("audio/wav", "wav", 24000, _COMMON_RATES),
    "flac": _Format("audio/flac", "flac", 24000, _COMMON_RATES),
    "opus": _Format("audio/ogg; codecs=opus", "ogg", 48000, (48000,)),
    "pcm": _Format(
        "audio/pcm; rate={rate}; channels=1; encoding=s16le", "pcm", 24000, _COMMON_RATES
    ),
    "aac": _Format("audio/aac", "aac", 24000, (24000,)),
}


@dataclass(frozen=True)
class _Codec:
    """How one compressed format is muxed and encoded."""

    muxer: str
    codec: str
    sample_format: str | None = None
    format_options: tuple[tuple[str, str], ...] = ()


_CODECS: Final[dict[str, _Codec]] = {
    # No ID3 tag: a stream must start with an MPEG frame (§10.3).
    "mp3": _Codec("mp3", "libmp3lame", format_options=(("id3v2_version", "0"),)),
    "flac": _Codec("flac", "flac", sample_format="s16"),
    "opus": _Codec("ogg", "libopus", format_options=(("page_duration", _OGG_PAGE_DURATION_US),)),
    "aac": _Codec("adts", "aac"),
}


def _spec(fmt: str) -> _Format:
    try:
        return _FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown output format {fmt!r}") from None


def default_rate(fmt: str) -> int:
    """The sample rate ``fmt`` uses when the caller names none (§1.9)."""
    return _spec(fmt).default_rate


def allowed_rates(fmt: str) -> tuple[int, ...]:
    """The sample rates ``fmt`` may be produced at (§1.9)."""
    return _spec(fmt).rates


def content_type(fmt: str, rate: int) -> str:
    """The ``Content-Type`` of ``fmt`` at ``rate`` (only ``pcm`` names its rate)."""
    return _spec(fmt).content_type.format(rate=rate)


def extension(fmt: str) -> str:
    """The file extension for ``fmt`` (``opus`` is ``ogg``)."""
    return _spec(fmt).extension


def check_rate(fmt: str, rate: int | None) -> int:
    """``rate`` (or the format's default) when ``fmt`` allows it, else ``ValueError``."""
    spec = _spec(fmt)
    chosen = spec.default_rate if rate is None else rate
    if chosen not in spec.rates:
        allowed = ", ".join(str(r) for r in spec.rates)
        raise ValueError(f"{fmt} does not support {chosen} Hz (allowed: {allowed})")
    return chosen


def _bit_rate(fmt: str, rate: int) -> int | None:
    """mp3 CBR 64 kbps up to 24 kHz else 128 kbps, Opus ~48 kbps, AAC 64 kbps (§1.9)."""
    if fmt == "mp3":
        return 64_000 if rate <= 24000 else 128_000
    if fmt == "opus":
        return 48_000
    if fmt == "aac":
        return 64_000
    return None


def resample(pcm: Pcm, rate: int) -> Pcm:
    """``pcm`` converted to ``rate`` (s16 mono) with ffmpeg's resampler; same rate is a no-op."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    if pcm.sample_rate == rate:
        return pcm
    if pcm.samples == 0:
        return Pcm(b"", rate)
    resampler = AudioResampler(format="s16", layout="mono", rate=rate)
    frames = resampler.resample(_frame(_samples(pcm.data), pcm.sample_rate, 0))
    frames += resampler.resample(None)
    return Pcm(_raw(frames), rate)


def _samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2", count=len(data) // 2)


def _raw(frames: list[AudioFrame]) -> bytes:
    """The s16 mono bytes of resampled frames."""
    return b"".join(bytes(memoryview(f.planes[0])[: f.samples * 2]) for f in frames)


def _frame(samples: np.ndarray, rate: int, pts: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _StreamSink:
    """A write-only, non-seekable file for PyAV: what the muxer wrote since the last drain.

    Without ``seek`` the muxers never go back to patch headers, so every byte written
    is final and may be sent at once.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def seekable(self) -> bool:
        return False

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class _PyAvEncoder:
    """One PyAV muxer + encoder fed s16 mono at ``input_rate``; resampling is PyAV's own."""

    def __init__(
        self,
        sink: _Writable,
        codec: _Codec,
        rate: int,
        *,
        input_rate: int,
        bit_rate: int | None,
        streaming: bool,
    ) -> None:
        options = dict(codec.format_options)
        if streaming:
            options["flush_packets"] = "1"  # each push returns whole pages / frames
        self._container = av.open(sink, mode="w", format=codec.muxer, options=options)
        try:
            stream = self._container.add_stream(codec.codec, rate=rate, layout="mono")
            if not isinstance(stream, AudioStream):
                raise TypeError(f"{codec.codec} is not an audio encoder")
            if codec.sample_format is not None:
                stream.format = codec.sample_format
            if bit_rate is not None:
                stream.bit_rate = bit_rate
        except BaseException:
            self._container.close()
            raise
        self._stream = stream
        self._input_rate = input_rate
        self._pts = 0

    def push(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        frame = _frame(samples, self._input_rate, self._pts)
        self._pts += samples.size
        self._container.mux(self._stream.encode(frame))

    def finish(self) -> None:
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()


@dataclass(frozen=True)
class EncodedAudio:
    """An encoded output file; ``duration_ms`` is the audio's own length (no codec padding)."""

    data: bytes
    content_type: str
    sample_rate: int
    duration_ms: int


def encode_output(pcm: Pcm, fmt: str, sample_rate: int | None = None) -> EncodedAudio:
    """``pcm`` as a whole file of output format ``fmt`` at ``sample_rate`` (§1.9).

    ``sample_rate`` defaults to the format's default; one the format does not allow
    raises ``ValueError``. The audio is resampled first when the rates differ.
    """
    rate = check_rate(fmt, sample_rate)
    audio = resample(pcm, rate)
    if fmt == "pcm":
        data = audio.data[: audio.samples * 2]
    elif fmt == "wav":
        data = wav_bytes(audio)
    else:
        buffer = io.BytesIO()  # seekable: mp3 gets its Xing header, FLAC its sample count
        encoder = _PyAvEncoder(
            buffer,
            _CODECS[fmt],
            rate,
            input_rate=rate,
            bit_rate=_bit_rate(fmt, rate),
            streaming=False,
        )
        encoder.push(_samples(audio.data))
        encoder.finish()
        data = buffer.getvalue()
    return EncodedAudio(data, content_type(fmt, rate), rate, audio.duration_ms)


def _streaming_wav_header(rate: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        _UNKNOWN_SIZE,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        rate,
        rate * 2,
        2,
        16,
        b"data",
        _UNKNOWN_SIZE,
    )


class StreamEncoder:
    """Encodes a live session: every chunk returned, concatenated, is one valid file.

    ``push`` takes s16le mono PCM at ``input_rate`` (default: ``sample_rate``, the output
    rate, which ``fmt`` must allow) and returns the bytes ready so far, possibly empty:
    whole Ogg pages for ``opus``, whole MPEG frames for ``mp3``, whole ADTS frames for
    ``aac``, FLAC frames, whole samples for ``pcm`` and ``wav`` (whose first chunk starts
    with a RIFF header sized 0xFFFFFFFF). ``finish`` returns the rest and closes it.
    """

    def __init__(self, fmt: str, sample_rate: int, *, input_rate: int | None = None) -> None:
        self.format = fmt
        self.sample_rate = check_rate(fmt, sample_rate)
        self.input_rate = input_rate or self.sample_rate
        self.content_type = content_type(fmt, self.sample_rate)
        self._odd = b""
        self._closed = False
        self._header = _streaming_wav_header(self.sample_rate) if fmt == "wav" else b""
        self._resampler: AudioResampler | None = None
        self._pts = 0
        self._sink = _StreamSink()
        self._encoder: _PyAvEncoder | None = None
        if fmt in _CODECS:
            self._encoder = _PyAvEncoder(
                self._sink,
                _CODECS[fmt],
                self.sample_rate,
                input_rate=self.input_rate,
                bit_rate=_bit_rate(fmt, self.sample_rate),
                streaming=True,
            )
        elif self.input_rate != self.sample_rate:
            self._resampler = AudioResampler(format="s16", layout="mono", rate=self.sample_rate)

    def push(self, pcm: bytes) -> bytes:
        """Encode more s16le mono PCM; returns the encoded bytes ready now (maybe ``b""``)."""
        if self._closed:
            raise RuntimeError("the stream encoder is finished")
        data = self._odd + pcm
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        return self._encode(_samples(data[:whole]))

    def finish(self) -> bytes:
        """Flush the encoder and return the last bytes of the stream."""
        if self._closed:
            raise RuntimeError("the stream encoder is finished")
        self._closed = True
        if self._encoder is not None:
            self._encoder.finish()
            return self._take(self._sink.drain())
        out = self._take(b"")
        if self._resampler is not None:
            out += _raw(self._resampler.resample(None))
        return out

    def _encode(self, samples: np.ndarray) -> bytes:
        if self._encoder is not None:
            self._encoder.push(samples)
            return self._take(self._sink.drain())
        if self._resampler is None:
            return self._take(samples.tobytes())
        if samples.size == 0:
            return self._take(b"")
        frame = _frame(samples, self.input_rate, self._pts)
        self._pts += samples.size
        return self._take(_raw(self._resampler.resample(frame)))

    def _take(self, data: bytes) -> bytes:
        """Prefix the WAV header to the first chunk."""
        if self._header:
            data, self._header = self._header + data, b""
        return data


# ----- container-keyed whole files (staging, tests) -------------------------------------

# ext -> (codec, forced encoder rate or None to keep the input rate when the encoder takes it)
_CONTAINER_CODECS: Final[dict[str, tuple[_Codec, int | None]]] = {
    "mp3": (_CODECS["mp3"], None),
    "flac": (_CODECS["flac"], None),
    "ogg": (_Codec("ogg", "libopus"), 48000),
    "m4a": (_Codec("ipod", "aac"), None),
    "webm": (_Codec("webm", "libopus"), 48000),
}


def _encoder_rate(codec: str, wanted: int) -> int:
    rates = av.Codec(codec, "w").audio_rates
    if not rates or wanted in rates:
        return wanted
    higher = sorted(r for r in rates if r >= wanted)
    return higher[0] if higher else max(rates)


def encode(pcm: Pcm, ext: str) -> bytes:
    """Encode ``pcm`` as a whole file of container ``ext``.

    ``ext`` is ``wav``, ``mp3``, ``flac``, ``ogg`` (Opus), ``m4a`` (AAC) or ``webm``
    (Opus). Opus is encoded at 48 kHz; MP3 and AAC at the input rate when the encoder
    takes it, else the next rate it does.
    """
    if ext == "wav":
        return wav_bytes(pcm)
    if ext not in _CONTAINER_CODECS:
        raise ValueError(f"cannot encode to {ext!r}")
    codec, forced_rate = _CONTAINER_CODECS[ext]
    rate = forced_rate or _encoder_rate(codec.codec, pcm.sample_rate)
    buffer = io.BytesIO()
    encoder = _PyAvEncoder(
        buffer, codec, rate, input_rate=pcm.sample_rate, bit_rate=None, streaming=False
    )
    encoder.push(_samples(pcm.data))
    encoder.finish()
    return buffer.getvalue()
