"""scaicommon.audio: container sniffing, PyAV decode/encode, long-audio splitting."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from scaicommon.audio import (
    ACCEPTED_EXTENSIONS,
    ACCEPTED_MIME,
    AudioDecodeError,
    AudioTooLong,
    Pcm,
    decode_pcm16,
    detect_container,
    encode,
    mime_for,
    probe,
    sniff,
    split_pcm,
    wav_bytes,
)

RATE = 16000
TEXT = "Thanks everyone for joining. Let's start with the release status."


def _speech() -> np.ndarray:
    """Spoken audio from the shipped piper voice; a chord of tones where piper is absent."""
    try:
        from scaidevstack.speechgen import piper_speech

        return piper_speech(TEXT, RATE)
    except ImportError:
        t = np.arange(int(3.3 * RATE)) / RATE
        tones = np.sin(2 * np.pi * 220.0 * t) + np.sin(2 * np.pi * 330.0 * t)
        return (tones * 8000).astype(np.int16)


@pytest.fixture(scope="module")
def speech() -> Pcm:
    """A few seconds of spoken audio at 16 kHz."""
    return Pcm(_speech().astype("<i2").tobytes(), RATE)


@pytest.fixture(scope="module")
def files(speech: Pcm) -> dict[str, bytes]:
    """The speech encoded into each accepted container."""
    return {ext: encode(speech, ext) for ext in ACCEPTED_EXTENSIONS}


# ----- containers ---------------------------------------------------------------------


@pytest.mark.parametrize("ext", ACCEPTED_EXTENSIONS)
def test_sniff_finds_each_container(files: dict[str, bytes], ext: str) -> None:
    head = files[ext][:64]
    assert sniff(head) == ext
    assert detect_container(head, None, None) == ext


def test_sniffed_bytes_beat_a_lying_content_type(files: dict[str, bytes]) -> None:
    head = files["mp3"][:64]
    assert detect_container(head, "audio/wav", "meeting.wav") == "mp3"
    assert detect_container(files["flac"][:64], "audio/mpeg", "x.mp3") == "flac"


def test_random_bytes_are_unsupported() -> None:
    head = np.random.default_rng(7).bytes(64)
    assert sniff(head) is None
    assert detect_container(head, None, None) is None
    assert detect_container(head, "application/octet-stream", "notes.txt") is None
    assert sniff(b"") is None


def test_hints_are_used_only_when_sniffing_is_inconclusive() -> None:
    head = bytes(64)
    assert detect_container(head, "audio/ogg; codecs=opus", None) == "ogg"
    assert detect_container(head, "AUDIO/X-WAV", None) == "wav"
    assert detect_container(head, "Audio/AAC", None) == "m4a"
    assert detect_container(head, "application/octet-stream", "talk.FLAC") == "flac"
    assert detect_container(head, None, "voice.opus") == "ogg"
    assert detect_container(head, None, "voice.oga") == "ogg"
    assert detect_container(head, None, "clip.mp4") == "m4a"
    assert detect_container(head, None, "clip.aac") == "m4a"
    assert detect_container(head, "text/plain", "archive.zip") is None
    assert detect_container(head, None, "no-extension") is None


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "m4a"),  # ADTS AAC, no CRC
        (b"\xff\xf9\x50\x80\x02\x1f\xfc", "m4a"),  # ADTS AAC, MPEG-2
        (b"\xff\xfb\x90\x64\x00", "mp3"),  # MPEG-1 layer III, 128 kb/s, 44.1 kHz
        (b"\xff\xfd\x90\x64\x00", "mp3"),  # MPEG-1 layer II
        (b"\xff\xff\xff\xff\xff", None),  # layer I / bad bitrate
        (b"\xff\xfb\xf0\x64\x00", None),  # bitrate index 15 is invalid
        (b"\xff\xfb\x9c\x64\x00", None),  # sampling-rate index 3 is reserved
        (b"\x00\x00\x00\x18ftyp3gp4\x00\x00\x00\x00isom3gp4", "m4a"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", None),  # an image
        (b"\x00\x00\x00\x18ftypXXXX\x00\x00\x00\x00XXXXmp42", "m4a"),  # compatible brand
        (b"RIFF\x00\x00\x00\x00AVI LIST", None),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
    ],
)
def test_sniff_magic_edge_cases(head: bytes, expected: str | None) -> None:
    assert sniff(head) == expected


def test_mime_table_and_canonical_types() -> None:
    assert len(ACCEPTED_MIME) == 15
    assert set(ACCEPTED_MIME.values()) == set(ACCEPTED_EXTENSIONS)
    assert ACCEPTED_MIME["audio/ogg;codecs=opus"] == "ogg"
    canonical = {ext: mime_for(ext) for ext in ACCEPTED_EXTENSIONS}
    assert canonical == {
        "wav": "audio/wav",
        "mp3": "audio/mpeg",
        "flac": "audio/flac",
        "ogg": "audio/ogg",
        "m4a": "audio/mp4",
        "webm": "audio/webm",
    }
    assert all(ACCEPTED_MIME[mime] == ext for ext, mime in canonical.items())
    with pytest.raises(ValueError):
        mime_for("aiff")


# ----- decode ---------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ACCEPTED_EXTENSIONS)
def test_decode_each_container_to_the_true_duration(
    files: dict[str, bytes], speech: Pcm, ext: str
) -> None:
    pcm = decode_pcm16(files[ext])
    assert pcm.sample_rate == RATE
    assert abs(pcm.duration_ms - speech.duration_ms) <= 50
    level = np.sqrt(np.mean(np.frombuffer(pcm.data, "<i2").astype(np.float64) ** 2))
    assert level > 300  # real signal came back, not silence


@pytest.mark.parametrize("ext", ACCEPTED_EXTENSIONS)
def test_probe_reports_the_declared_facts(files: dict[str, bytes], speech: Pcm, ext: str) -> None:
    found = probe(files[ext])
    assert found.container == ext
    codecs = {"wav": "pcm_s16le", "mp3": "mp3", "flac": "flac", "m4a": "aac"}
    assert found.codec == codecs.get(ext, "opus")
    assert found.channels == 1
    assert found.sample_rate in (RATE, 48000)
    assert found.duration_ms is not None
    assert abs(found.duration_ms - speech.duration_ms) <= 50


def test_decode_and_probe_read_paths(files: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "speech.ogg"
    path.write_bytes(files["ogg"])
    assert probe(path).codec == "opus"
    assert decode_pcm16(str(path), sample_rate=8000).sample_rate == 8000


def test_decode_downmixes_and_resamples_stereo() -> None:
    rate = 44100
    t = np.arange(rate * 2) / rate
    left = np.sin(2 * np.pi * 440 * t) * 8000
    stereo = np.stack([left, left]).T.reshape(1, -1).astype(np.int16)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    found = probe(buffer.getvalue())
    assert (found.channels, found.sample_rate, found.duration_ms) == (2, rate, 2000)
    pcm = decode_pcm16(buffer.getvalue())
    assert (pcm.sample_rate, pcm.duration_ms) == (RATE, 2000)
    peak = int(np.abs(np.frombuffer(pcm.data, "<i2")).max())
    assert 5000 < peak < 9000  # averaged, not summed or dropped


@pytest.mark.parametrize("ext", [e for e in ACCEPTED_EXTENSIONS if e != "wav"])
def test_truncated_file_does_not_decode(files: dict[str, bytes], ext: str) -> None:
    with pytest.raises(AudioDecodeError):
        decode_pcm16(files[ext][:200])


def test_wav_header_without_samples_does_not_decode(files: dict[str, bytes]) -> None:
    with pytest.raises(AudioDecodeError, match="no audio samples"):
        decode_pcm16(files["wav"][:44])


def test_empty_and_garbage_do_not_decode() -> None:
    for data in (b"", np.random.default_rng(3).bytes(8192)):
        with pytest.raises(AudioDecodeError):
            decode_pcm16(data)
        with pytest.raises(AudioDecodeError):
            probe(data)


def test_max_seconds_stops_decoding_early() -> None:
    # Ten minutes of a tone: a decode bomb in miniature (FLAC packs it small).
    t = np.arange(RATE) / RATE
    second = (np.sin(2 * np.pi * 300 * t) * 5000).astype("<i2").tobytes()
    data = encode(Pcm(second * 600, RATE), "flac")
    with pytest.raises(AudioTooLong) as caught:
        decode_pcm16(data, max_seconds=3)
    # Stopped just past max_seconds + 1 s, far from the 600 s the file holds.
    assert 4.0 < caught.value.seconds < 5.0
    assert decode_pcm16(data, max_seconds=600).duration_ms == 600_000


# ----- PCM, WAV, splitting --------------------------------------------------------------


def test_pcm_properties_and_slices() -> None:
    pcm = Pcm(bytes(range(34)), RATE)  # 17 samples
    assert pcm.samples == 17
    assert pcm.duration_ms == 2  # 1.0625 ms rounds up
    whole = Pcm(np.arange(RATE, dtype="<i2").tobytes(), RATE)
    piece = whole.slice_ms(250, 500)
    assert piece.samples == 4000
    assert np.frombuffer(piece.data, "<i2")[0] == 4000
    assert whole.slice_ms(900, 5000).samples == 1600
    assert whole.slice_ms(700, 600).samples == 0


def test_wav_bytes_round_trips(speech: Pcm) -> None:
    data = wav_bytes(speech)
    assert len(data) == 44 + len(speech.data)
    with wave.open(io.BytesIO(data)) as parsed:
        assert (parsed.getnchannels(), parsed.getsampwidth(), parsed.getframerate()) == (1, 2, RATE)
        assert parsed.readframes(parsed.getnframes()) == speech.data
    assert decode_pcm16(data).data == speech.data
    odd = Pcm(speech.data[: 24000 * 2], 24000)
    assert decode_pcm16(wav_bytes(odd), sample_rate=24000).data == odd.data


def test_split_short_audio_is_one_piece(speech: Pcm) -> None:
    assert split_pcm(speech) == [(0, speech)]


def test_split_long_audio_cuts_in_the_quiet_frames() -> None:
    minutes = 25
    rng = np.random.default_rng(11)
    audio = rng.normal(0, 3000, minutes * 60 * RATE).astype(np.int16)
    audio[audio == 0] = 1  # no accidental silent frame anywhere else
    gaps = [(595.0, 595.5), (1190.0, 1190.5)]  # inside the last 10 s of pieces 1 and 2
    for start_s, end_s in gaps:
        audio[int(start_s * RATE) : int(end_s * RATE)] = 0
    pcm = Pcm(audio.tobytes(), RATE)

    pieces = split_pcm(pcm)

    assert len(pieces) == 3
    assert all(piece.duration_ms <= 600_000 for _, piece in pieces)
    assert b"".join(piece.data for _, piece in pieces) == pcm.data
    position = 0
    for offset_ms, piece in pieces:
        assert offset_ms * RATE // 1000 == position
        position += piece.samples
    for (start_s, end_s), (offset_ms, _) in zip(gaps, pieces[1:], strict=True):
        cut = offset_ms / 1000
        assert start_s + 0.01 <= cut <= end_s - 0.01  # inside a silent 20 ms frame


def test_split_cuts_at_the_lowest_energy_frame_of_the_window() -> None:
    rate = 8000
    audio = np.full(rate * 70, 2000, dtype=np.int16)  # 70 s, max piece 30 s
    audio[rate * 25 : rate * 26] = 500  # quiet, in the last 10 s of piece 1
    audio[rate * 27 : rate * 27 + 160] = 100  # the quietest 20 ms of that window
    audio[rate * 5 : rate * 6] = 0  # silent, but outside the search window
    pieces = split_pcm(Pcm(audio.tobytes(), rate), max_piece_ms=30_000)
    assert pieces[1][0] == 27_010
    assert all(piece.duration_ms <= 30_000 for _, piece in pieces)
    assert sum(piece.samples for _, piece in pieces) == audio.size
