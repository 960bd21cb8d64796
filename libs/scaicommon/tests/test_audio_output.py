"""scaicommon.audio.output: the output formats of scaispeak.md §1.9, whole and streamed."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np
import pytest

from scaicommon.audio import (
    OUTPUT_FORMATS,
    Pcm,
    StreamEncoder,
    allowed_rates,
    content_type,
    default_rate,
    encode_output,
    extension,
    resample,
)

RATE = 24000
TEXT = "Good morning. The quarterly report is ready, and the numbers look better than expected."
COMMON = (8000, 16000, 22050, 24000, 44100, 48000)
TOLERANCE_S = 0.060
# ADTS and header-less MP3 streams cannot say how much encoder delay and padding to drop,
# so their decoded audio may run up to about two codec frames longer.
PRIMING_SAMPLES = {"aac": 2 * 1024, "mp3": 2 * 1152}


@pytest.fixture(scope="module")
def speech() -> Pcm:
    """A few seconds of spoken audio at 24 kHz from the shipped piper voice."""
    from scaidevstack.speechgen import piper_speech

    return Pcm(piper_speech(TEXT, RATE).astype("<i2").tobytes(), RATE)


@dataclass(frozen=True)
class Decoded:
    container: str
    codec: str
    sample_rate: int
    channels: int
    seconds: float
    sample_format: str
    bit_rate: int


def decode(data: bytes, fmt: str, rate: int) -> Decoded:
    """Decode with PyAV; raw PCM is read with the s16le demuxer at ``rate``."""
    raw = {"format": "s16le", "options": {"sample_rate": str(rate), "ch_layout": "mono"}}
    kwargs = raw if fmt == "pcm" else {}
    with av.open(io.BytesIO(data), **kwargs) as container:  # type: ignore[call-overload]
        stream = container.streams.audio[0]
        samples = 0
        rates = set()
        formats = set()
        for frame in container.decode(stream):
            samples += frame.samples
            rates.add(frame.sample_rate)
            formats.add(frame.format.name)
        assert len(rates) == 1
        ctx = stream.codec_context
        return Decoded(
            container=container.format.name,
            codec=ctx.name,
            sample_rate=rates.pop(),
            channels=ctx.channels,
            seconds=samples / ctx.sample_rate,
            sample_format=formats.pop(),
            bit_rate=int(ctx.bit_rate or 0),
        )


def assert_duration(got_s: float, want_s: float, fmt: str, rate: int) -> None:
    extra = PRIMING_SAMPLES.get(fmt, 0) / rate
    assert want_s - TOLERANCE_S <= got_s <= want_s + TOLERANCE_S + extra, (got_s, want_s)


# ----- the table ------------------------------------------------------------------------


def test_the_format_table_is_exactly_section_1_9() -> None:
    assert OUTPUT_FORMATS == ("mp3", "wav", "flac", "opus", "pcm", "aac")
    assert {fmt: content_type(fmt, default_rate(fmt)) for fmt in OUTPUT_FORMATS} == {
        "mp3": "audio/mpeg",
        "wav": "audio/wav",
        "flac": "audio/flac",
        "opus": "audio/ogg; codecs=opus",
        "pcm": "audio/pcm; rate=24000; channels=1; encoding=s16le",
        "aac": "audio/aac",
    }
    assert content_type("pcm", 16000) == "audio/pcm; rate=16000; channels=1; encoding=s16le"
    assert content_type("mp3", 44100) == "audio/mpeg"
    assert {fmt: default_rate(fmt) for fmt in OUTPUT_FORMATS} == {
        "mp3": 24000,
        "wav": 24000,
        "flac": 24000,
        "opus": 48000,
        "pcm": 24000,
        "aac": 24000,
    }
    assert {fmt: allowed_rates(fmt) for fmt in OUTPUT_FORMATS} == {
        "mp3": COMMON,
        "wav": COMMON,
        "flac": COMMON,
        "opus": (48000,),
        "pcm": COMMON,
        "aac": (24000,),
    }
    assert {fmt: extension(fmt) for fmt in OUTPUT_FORMATS} == {
        "mp3": "mp3",
        "wav": "wav",
        "flac": "flac",
        "opus": "ogg",
        "pcm": "pcm",
        "aac": "aac",
    }


@pytest.mark.parametrize(
    ("fmt", "rate"),
    [("opus", 24000), ("aac", 48000), ("mp3", 11025), ("wav", 96000), ("pcm", 0), ("flac", 12000)],
)
def test_a_rate_the_format_does_not_allow_is_refused(speech: Pcm, fmt: str, rate: int) -> None:
    with pytest.raises(ValueError, match=str(rate)):
        encode_output(speech, fmt, rate)
    with pytest.raises(ValueError):
        StreamEncoder(fmt, rate)


def test_an_unknown_format_is_refused(speech: Pcm) -> None:
    for call in (
        lambda: encode_output(speech, "ogg"),
        lambda: default_rate("vorbis"),
        lambda: content_type("m4a", 24000),
        lambda: StreamEncoder("webm", 48000),
    ):
        with pytest.raises(ValueError, match="unknown output format"):
            call()


# ----- whole files ------------------------------------------------------------------------

EXPECTED = {  # fmt -> (demuxer, decoder, decoded sample format)
    "mp3": ("mp3", "mp3float", "fltp"),
    "wav": ("wav", "pcm_s16le", "s16"),
    "flac": ("flac", "flac", "s16"),
    "opus": ("ogg", "opus", "fltp"),
    "pcm": ("s16le", "pcm_s16le", "s16"),
    "aac": ("aac", "aac", "fltp"),
}


@pytest.mark.parametrize(
    ("fmt", "rate"), [(fmt, rate) for fmt in OUTPUT_FORMATS for rate in allowed_rates(fmt)]
)
def test_every_format_and_rate_decodes_to_the_right_audio(speech: Pcm, fmt: str, rate: int) -> None:
    encoded = encode_output(speech, fmt, rate)
    assert encoded.sample_rate == rate
    assert encoded.content_type == content_type(fmt, rate)
    assert abs(encoded.duration_ms - speech.duration_ms) <= 2
    found = decode(encoded.data, fmt, rate)
    demuxer, decoder, sample_format = EXPECTED[fmt]
    assert (found.container, found.codec, found.sample_format) == (demuxer, decoder, sample_format)
    assert (found.sample_rate, found.channels) == (rate, 1)
    # Whole files carry their delay and padding (Xing header, Ogg pre-skip), except ADTS.
    assert_duration(found.seconds, speech.duration_ms / 1000, fmt if fmt == "aac" else "", rate)


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_the_default_rate_is_used_when_none_is_given(speech: Pcm, fmt: str) -> None:
    encoded = encode_output(speech, fmt)
    assert encoded.sample_rate == default_rate(fmt)
    assert decode(encoded.data, fmt, encoded.sample_rate).sample_rate == default_rate(fmt)


def test_mp3_is_cbr_64_kbps_up_to_24_khz_and_128_above(speech: Pcm) -> None:
    for rate, kbps in ((8000, 64), (16000, 64), (24000, 64), (44100, 128), (48000, 128)):
        data = encode_output(speech, "mp3", rate).data
        with av.open(io.BytesIO(data), mode="r") as container:
            sizes = {packet.size for packet in container.demux(audio=0) if packet.size}
            assert container.streams.audio[0].codec_context.bit_rate == kbps * 1000
        # CBR: every frame the same size, give or take the padding byte.
        assert max(sizes) - min(sizes) <= 1, (rate, sorted(sizes))


def test_opus_is_about_48_kbps_and_aac_is_lc(speech: Pcm) -> None:
    opus = encode_output(speech, "opus")
    kbps = len(opus.data) * 8 / (opus.duration_ms / 1000) / 1000
    assert 35 <= kbps <= 60
    aac = encode_output(speech, "aac").data
    assert aac[:2] == b"\xff\xf1"  # ADTS sync word, MPEG-4, no CRC
    with av.open(io.BytesIO(aac)) as container:
        assert container.streams.audio[0].codec_context.profile == "LC"


def test_wav_and_pcm_hold_the_exact_samples(speech: Pcm) -> None:
    pcm = encode_output(speech, "pcm")
    assert pcm.data == speech.data
    wav = encode_output(speech, "wav").data
    assert wav[:4] == b"RIFF" and wav[8:16] == b"WAVEfmt "
    assert struct.unpack("<HHIIHH", wav[20:36]) == (1, 1, RATE, RATE * 2, 2, 16)
    assert wav[44:] == speech.data


def test_encoding_resamples_to_the_asked_rate(speech: Pcm) -> None:
    encoded = encode_output(speech, "pcm", 16000)
    samples = len(encoded.data) // 2
    assert abs(samples - speech.samples * 2 // 3) <= 2
    level = np.sqrt(np.mean(np.frombuffer(encoded.data, "<i2").astype(np.float64) ** 2))
    assert level > 300


def test_resample_keeps_duration_and_signal(speech: Pcm) -> None:
    up = resample(speech, 48000)
    assert up.sample_rate == 48000
    assert abs(up.duration_ms - speech.duration_ms) <= 2
    back = resample(up, RATE)
    original = np.frombuffer(speech.data, "<i2").astype(np.float64)
    again = np.frombuffer(back.data, "<i2").astype(np.float64)[: original.size]
    assert np.corrcoef(original[: again.size], again)[0, 1] > 0.99
    assert resample(speech, RATE) is speech
    with pytest.raises(ValueError):
        resample(speech, 0)


# ----- streaming --------------------------------------------------------------------------


def _uneven_chunks(data: bytes) -> list[bytes]:
    """Pieces of 7 ms to 500 ms, one of odd length, plus an empty push."""
    sizes = [331, 0, 4800, 24000, 9601, 48000, 2]
    chunks: list[bytes] = []
    position = 0
    index = 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        chunks.append(data[position : position + size])
        position += size
        index += 1
    return chunks


def _stream(fmt: str, speech: Pcm, rate: int, *, input_rate: int | None = None) -> list[bytes]:
    encoder = StreamEncoder(fmt, rate, input_rate=input_rate)
    out = [encoder.push(chunk) for chunk in _uneven_chunks(speech.data)]
    out.append(encoder.finish())
    return out


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_streamed_chunks_concatenate_into_one_valid_file(speech: Pcm, fmt: str) -> None:
    rate = default_rate(fmt)
    audio = resample(speech, rate)
    chunks = _stream(fmt, audio, rate)
    assert sum(1 for chunk in chunks if chunk) >= 5  # it streamed, not all at the end
    data = b"".join(chunks)
    found = decode(data, fmt, rate)
    demuxer, decoder, _ = EXPECTED[fmt]
    assert (found.container, found.codec, found.sample_rate, found.channels) == (
        demuxer,
        decoder,
        rate,
        1,
    )
    assert_duration(found.seconds, audio.duration_ms / 1000, fmt, rate)


def test_streamed_chunks_split_on_codec_boundaries(speech: Pcm) -> None:
    opus = [c for c in _stream("opus", resample(speech, 48000), 48000) if c]
    assert all(chunk.startswith(b"OggS") for chunk in opus)  # whole Ogg pages
    assert opus[0][28:36] == b"OpusHead"
    mp3 = [c for c in _stream("mp3", speech, RATE) if c]
    assert all(chunk[0] == 0xFF and chunk[1] & 0xE0 == 0xE0 for chunk in mp3)  # MPEG frames
    aac = [c for c in _stream("aac", speech, RATE) if c]
    assert all(chunk[:2] == b"\xff\xf1" for chunk in aac)  # ADTS frames
    flac = [c for c in _stream("flac", speech, RATE) if c]
    assert flac[0][:4] == b"fLaC"
    assert all(chunk[:2] in (b"\xff\xf8", b"\xff\xf9") for chunk in flac[1:])  # FLAC frames


def test_streamed_wav_has_an_unknown_length_header(speech: Pcm) -> None:
    chunks = _stream("wav", speech, RATE)
    header = chunks[0][:44]
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt " and header[36:40] == b"data"
    assert struct.unpack("<I", header[4:8])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", header[40:44])[0] == 0xFFFFFFFF
    assert b"".join(chunks)[44:] == speech.data


def test_streamed_pcm_is_the_input_in_whole_samples(speech: Pcm) -> None:
    chunks = _stream("pcm", speech, RATE)
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    assert b"".join(chunks) == speech.data


@pytest.mark.parametrize("fmt", OUTPUT_FORMATS)
def test_stream_output_keeps_up_with_the_input(speech: Pcm, fmt: str) -> None:
    """After each push, what came out so far decodes to nearly all that went in."""
    rate = default_rate(fmt)
    audio = resample(speech, rate).data
    encoder = StreamEncoder(fmt, rate)
    step = rate // 5 * 2  # 200 ms
    sent = b""
    for position in range(0, rate * 2 * 2, step):  # the first two seconds
        sent += encoder.push(audio[position : position + step])
    pushed_s = 2.0
    decoded_s = decode(sent, fmt, rate).seconds
    assert pushed_s - 0.25 <= decoded_s <= pushed_s + 0.1, decoded_s


def test_stream_resamples_its_input(speech: Pcm) -> None:
    for fmt, rate in (("opus", 48000), ("pcm", 16000), ("wav", 44100), ("mp3", 16000)):
        chunks = _stream(fmt, speech, rate, input_rate=RATE)
        found = decode(b"".join(chunks), fmt, rate)
        assert found.sample_rate == rate
        assert_duration(found.seconds, speech.duration_ms / 1000, fmt, rate)


def test_a_finished_stream_takes_nothing_more(speech: Pcm) -> None:
    encoder = StreamEncoder("mp3", RATE)
    encoder.push(speech.data[:4800])
    encoder.finish()
    with pytest.raises(RuntimeError):
        encoder.push(speech.data[:4800])
    with pytest.raises(RuntimeError):
        encoder.finish()
    assert encoder.content_type == "audio/mpeg"
    assert StreamEncoder("pcm", 16000).content_type == (
        "audio/pcm; rate=16000; channels=1; encoding=s16le"
    )
