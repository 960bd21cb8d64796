"""scaicommon.audio.preflight: platform §14 on real spoken audio (piper)."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from scaicommon.audio import (
    ACCEPTED_EXTENSIONS,
    AudioDecodeError,
    Pcm,
    PreflightResult,
    PreflightThresholds,
    encode,
    measure_clip,
    resample,
    run_preflight,
    wav_bytes,
)
from scaicommon.errors import ScaiError
from scaiecho.settings import EchoSettings
from scaispeak.settings import SpeakSettings

RATE = 22050  # the piper voice's own rate
TEXT = (
    "The quick brown fox jumps over the lazy dog near the riverbank. "
    "Every morning the baker opens his shop and sells fresh bread to the neighbours. "
    "We will meet again tomorrow afternoon to review the quarterly results together. "
    "Please remember to bring your notes and the signed documents."
)
SPEAK = PreflightThresholds(
    min_duration_s=5.0,
    max_duration_s=25.0,
    min_voice_activity_ratio=0.5,
    max_peak_dbfs=-1.0,
    min_snr_db=15.0,
    min_sample_rate=16000,
    max_sample_rate=48000,
)
HALF_SCALE = 16384  # -6.0 dBFS


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    """About 14 s of piper speech (float64, peak 1.0) at 22.05 kHz."""
    from scaidevstack.speechgen import piper_speech

    audio = piper_speech(TEXT, RATE).astype(np.float64)
    return np.asarray(audio / np.abs(audio).max())


def speech(voice: np.ndarray, seconds: float, *, peak: float = HALF_SCALE) -> np.ndarray:
    """``seconds`` of the speech (repeated as needed) as int16 with the given peak."""
    count = int(seconds * RATE)
    audio = np.tile(voice, count // voice.size + 1)[:count]
    return np.asarray(np.round(audio / np.abs(audio).max() * peak), dtype=np.int16)


def wav(samples: np.ndarray, rate: int = RATE) -> bytes:
    return wav_bytes(Pcm(samples.astype("<i2").tobytes(), rate))


def check(data: bytes | str, thresholds: PreflightThresholds = SPEAK) -> PreflightResult:
    result = run_preflight(data, thresholds)
    assert result.passed == (not result.fail_reasons)
    return result


# ----- the clips of the brief --------------------------------------------------------------


def test_a_clean_ten_second_clip_passes(voice: np.ndarray) -> None:
    result = check(wav(speech(voice, 10.0)))
    assert result.passed and result.fail_reasons == []
    metrics = result.metrics
    assert metrics["duration_s"] == 10.0
    assert metrics["peak_dbfs"] == -6.0
    assert (metrics["sample_rate"], metrics["channels"]) == (RATE, 1)
    assert 0.6 <= metrics["voice_activity_ratio"] <= 1.0
    assert metrics["snr_db"] >= 25.0
    assert result.advice == []


def test_a_three_second_clip_is_too_short(voice: np.ndarray) -> None:
    result = check(wav(speech(voice, 3.0)))
    assert result.fail_reasons == ["duration_below_minimum"]
    assert result.metrics["duration_s"] == 3.0


def test_a_thirty_second_clip_is_too_long_and_decoded_only_to_max_plus_one(
    voice: np.ndarray,
) -> None:
    result = check(wav(speech(voice, 30.0)))
    assert result.fail_reasons == ["duration_above_maximum"]
    assert 26.0 < float(result.metrics["duration_s"]) < 26.2


def test_a_mostly_silent_clip_has_low_voice_activity(voice: np.ndarray) -> None:
    clip = np.concatenate([speech(voice, 1.0), np.zeros(9 * RATE, dtype=np.int16)])
    result = check(wav(clip))
    assert result.fail_reasons == ["low_voice_activity_ratio"]
    assert float(result.metrics["voice_activity_ratio"]) < 0.15
    assert result.metrics["snr_db"] == 100.0  # the pauses are digital silence (§14.2)


def test_a_clipped_clip_is_too_hot(voice: np.ndarray) -> None:
    loud = speech(voice, 10.0).astype(np.float64) * 3.0  # gain until peaks hit full scale
    result = check(wav(np.clip(loud, -32768, 32767)))
    assert result.fail_reasons == ["peak_dbfs_above_threshold"]
    assert result.metrics["peak_dbfs"] == 0.0


def test_speech_in_white_noise_at_0_db_snr_is_too_noisy(voice: np.ndarray) -> None:
    clean = speech(voice, 10.0, peak=8000).astype(np.float64)
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, np.sqrt(np.mean(clean**2)), clean.size)
    result = check(wav(np.clip(clean + noise, -32768, 32767)))
    # At 0 dB the speech barely rises above the noise floor, so the energy VAD (voiced =
    # 10 dB above the floor) finds almost no speech either: both checks fail.
    assert result.fail_reasons == ["low_voice_activity_ratio", "snr_below_threshold"]
    assert float(result.metrics["snr_db"]) < 15.0


def test_levelled_speech_twelve_db_over_noise_fails_snr_alone(voice: np.ndarray) -> None:
    """Speech held at one level (like a phone's AGC) over noise 12 dB below it."""
    rate = 16000  # the VAD rate, so the levelling lines up with its 30 ms frames
    talk = resample(Pcm(speech(voice, 10.0).tobytes(), RATE), rate)
    samples = np.frombuffer(talk.data, "<i2").astype(np.float64) / 32768
    frames = samples[: samples.size // 480 * 480].reshape(-1, 480)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    talking = 20 * np.log10(rms + 1e-9) > 20 * np.log10(rms.max()) - 35
    target = 0.1
    levelled = np.where(talking[:, None], frames * (target / np.maximum(rms, 1e-9))[:, None], 0)
    noise = np.random.default_rng(5).normal(0.0, target * 10 ** (-12 / 20), levelled.size)
    result = check(wav(np.round((levelled.reshape(-1) + noise) * 32768), rate))
    assert result.fail_reasons == ["snr_below_threshold"]
    assert 11.0 <= float(result.metrics["snr_db"]) <= 13.5
    assert float(result.metrics["voice_activity_ratio"]) >= 0.5


def test_an_8_khz_clip_is_out_of_range(voice: np.ndarray) -> None:
    narrow = resample(Pcm(speech(voice, 10.0).tobytes(), RATE), 8000)
    result = check(narrow_wav := wav_bytes(narrow))
    assert result.fail_reasons == ["sample_rate_out_of_range"]
    assert result.metrics["sample_rate"] == 8000
    # ScaiEcho's speaker references accept 8 kHz (min 8000).
    echo = PreflightThresholds.from_settings(EchoSettings.from_env({}, dotenv=None))
    assert run_preflight(narrow_wav, echo).passed


def test_a_ten_minute_file_is_decoded_only_to_max_plus_one_second(voice: np.ndarray) -> None:
    rate = 16000
    talk = resample(Pcm(speech(voice, 15.0).tobytes(), RATE), rate)
    ten_minutes = encode(Pcm(talk.data * 40, rate), "flac")  # a decode bomb in miniature
    assert len(ten_minutes) < 20 * 2**20
    result = check(ten_minutes)
    assert result.fail_reasons == ["duration_above_maximum"]
    assert 26.0 < float(result.metrics["duration_s"]) < 26.5  # not 600
    wider = replace(SPEAK, max_duration_s=60.0)
    assert 61.0 < float(run_preflight(ten_minutes, wider).metrics["duration_s"]) < 61.5


# ----- metric definitions ------------------------------------------------------------------


def _tone_frames(amplitudes: list[float]) -> np.ndarray:
    """Consecutive 30 ms frames at 16 kHz of a 1 kHz sine (whole periods per frame)."""
    t = np.arange(480) / 16000
    period = np.sin(2 * np.pi * 1000 * t)
    return np.concatenate([np.round(period * a * 32767) for a in amplitudes]).astype(np.int16)


def test_vad_smoothing_and_snr_follow_the_definitions() -> None:
    loud, quiet = 0.5, 0.005
    amps = [quiet] * 40 + [loud] * 60
    amps[10] = amps[25] = loud  # lone loud frames in the quiet part: smoothed away
    amps[70] = quiet  # a lone quiet frame in the speech: smoothed in
    clip = _tone_frames(amps)
    result = check(wav(clip, 16000))
    power = [float(np.mean((clip[i * 480 : (i + 1) * 480] / 32768.0) ** 2)) for i in (0, 50)]
    quiet_power, loud_power = power
    # 60 voiced frames (59 loud + the smoothed-in quiet one) out of 100; unsmoothed: 61.
    assert result.metrics["voice_activity_ratio"] == 0.6
    speech_level = (59 * loud_power + quiet_power) / 60
    expected = 10 * math.log10(speech_level / quiet_power)  # quietest 10 % = quiet frames
    assert result.metrics["snr_db"] == round(expected, 1)
    assert result.metrics["duration_s"] == 3.0
    assert result.metrics["peak_dbfs"] == round(20 * math.log10(np.abs(clip).max() / 32768), 1)


def test_a_faint_hum_after_silence_is_not_speech() -> None:
    """The threshold never drops below -55 dBFS: a -69 dBFS hum after digital silence
    (floor -100 dB) is not speech."""
    result = check(wav(_tone_frames([0.0] * 150 + [0.0005] * 150), 16000))
    assert result.metrics["voice_activity_ratio"] == 0.0
    assert result.metrics["snr_db"] == 0.0
    assert result.fail_reasons == ["low_voice_activity_ratio", "snr_below_threshold"]


def test_digital_silence_reports_minus_120_dbfs() -> None:
    result = check(wav(np.zeros(6 * 16000, dtype=np.int16), 16000))
    assert result.metrics["peak_dbfs"] == -120.0
    assert result.metrics["voice_activity_ratio"] == 0.0
    assert result.metrics["snr_db"] == 0.0


def test_a_peak_of_exactly_minus_one_dbfs_passes(voice: np.ndarray) -> None:
    at_limit = round(32768 * 10 ** (-1 / 20))  # 29205 -> -1.0 dBFS
    clip = speech(voice, 10.0, peak=at_limit - 400)
    clip[int(np.argmax(np.abs(clip)))] = at_limit
    assert check(wav(clip)).metrics["peak_dbfs"] == -1.0
    assert check(wav(clip)).passed
    clip[int(np.argmax(np.abs(clip)))] = at_limit + 400  # -0.9 dBFS
    assert check(wav(clip)).fail_reasons == ["peak_dbfs_above_threshold"]


def test_stereo_peak_covers_every_channel_and_the_downmix_averages(voice: np.ndarray) -> None:
    rate = 16000
    left = np.frombuffer(resample(Pcm(speech(voice, 8.0).tobytes(), RATE), rate).data, "<i2")
    louder = (left.astype(np.int32) * 3 // 2).astype(np.int16)  # -2.5 dBFS
    stereo = np.stack([left, louder]).T.reshape(1, -1)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    result = check(buffer.getvalue())
    assert (result.metrics["channels"], result.metrics["sample_rate"]) == (2, rate)
    assert result.metrics["peak_dbfs"] == round(20 * math.log10(np.abs(louder).max() / 32768), 1)
    mono = check(wav(left, rate))  # the average is 1.25 x left: same VAD, same SNR
    assert result.metrics["voice_activity_ratio"] == mono.metrics["voice_activity_ratio"]
    assert abs(float(result.metrics["snr_db"]) - float(mono.metrics["snr_db"])) <= 0.2
    cancelled = np.stack([left, -left]).T.reshape(1, -1)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(cancelled, format="s16", layout="stereo")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    silent_mix = check(buffer.getvalue())  # averaged channels cancel out: nothing voiced
    assert silent_mix.metrics["voice_activity_ratio"] == 0.0
    assert silent_mix.metrics["peak_dbfs"] == mono.metrics["peak_dbfs"]


@pytest.mark.parametrize("ext", ACCEPTED_EXTENSIONS)
def test_every_accepted_container_is_measured_at_its_native_rate(
    voice: np.ndarray, ext: str
) -> None:
    rate = 24000
    talk = resample(Pcm(speech(voice, 10.0).tobytes(), RATE), rate)
    result = check(encode(talk, ext))
    assert result.passed, result.block(advice=True)
    assert abs(float(result.metrics["duration_s"]) - 10.0) <= 0.06
    assert result.metrics["sample_rate"] == (48000 if ext in ("ogg", "webm") else rate)


def test_paths_work_and_results_are_deterministic(voice: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "reference.wav"
    path.write_bytes(wav(speech(voice, 10.0)))
    first = run_preflight(str(path), SPEAK)
    assert run_preflight(path.read_bytes(), SPEAK) == first
    assert run_preflight(str(path), SPEAK).block(advice=True) == first.block(advice=True)


def test_undecodable_clips_raise_decode_errors() -> None:
    for data in (b"", b"RIFF\x00\x00", np.random.default_rng(3).bytes(4096)):
        with pytest.raises(AudioDecodeError):
            run_preflight(data, SPEAK)
        with pytest.raises(AudioDecodeError):
            measure_clip(data, max_seconds=60)
    with pytest.raises(AudioDecodeError):
        run_preflight(wav(np.zeros(0, dtype=np.int16)), SPEAK)


# ----- result block, advice and errors -----------------------------------------------------


def test_thresholds_come_from_either_services_settings() -> None:
    speak = PreflightThresholds.from_settings(SpeakSettings.from_env({}, dotenv=None))
    assert speak == SPEAK
    echo = PreflightThresholds.from_settings(EchoSettings.from_env({}, dotenv=None))
    assert echo.to_dict() == {
        "min_duration_s": 3.0,
        "max_duration_s": 60.0,
        "min_voice_activity_ratio": 0.5,
        "max_peak_dbfs": -1.0,
        "min_snr_db": 15.0,
        "min_sample_rate": 8000,
        "max_sample_rate": 48000,
    }
    tuned = SpeakSettings.from_env(
        {"SCAISPEAK_PREFLIGHT_MIN_SNR_DB": "20", "SCAISPEAK_PREFLIGHT_MAX_SAMPLE_RATE": "0"},
        dotenv=None,
    )
    thresholds = PreflightThresholds.from_settings(tuned)
    assert (thresholds.min_snr_db, thresholds.max_sample_rate) == (20.0, 0)


def test_max_sample_rate_zero_means_no_upper_bound(voice: np.ndarray) -> None:
    wide = resample(Pcm(speech(voice, 10.0).tobytes(), RATE), 96000)
    assert check(wav_bytes(wide)).fail_reasons == ["sample_rate_out_of_range"]
    unbounded = replace(SPEAK, max_sample_rate=0)
    assert run_preflight(wav_bytes(wide), unbounded).passed


def test_the_block_has_the_section_14_4_keys(voice: np.ndarray) -> None:
    result = check(wav(speech(voice, 3.0)))
    block = result.block(advice=False)
    assert list(block) == ["passed", "fail_reasons", "metrics", "thresholds"]
    assert block["passed"] is False
    assert block["fail_reasons"] == ["duration_below_minimum"]
    assert list(block["metrics"]) == [
        "duration_s",
        "voice_activity_ratio",
        "peak_dbfs",
        "snr_db",
        "sample_rate",
        "channels",
    ]
    assert block["thresholds"] == SPEAK.to_dict()
    assert isinstance(block["metrics"]["sample_rate"], int)
    assert isinstance(block["metrics"]["duration_s"], float)
    with_advice = result.block(advice=True)
    assert with_advice == {**block, "advice": ["Record at least 5 seconds of speech."]}


def test_every_reason_has_its_advice_sentence() -> None:
    metrics = {
        "duration_s": 41.6,
        "voice_activity_ratio": 0.2,
        "peak_dbfs": 0.0,
        "snr_db": 3.0,
        "sample_rate": 8000,
        "channels": 1,
    }
    reasons = [
        "duration_below_minimum",
        "duration_above_maximum",
        "low_voice_activity_ratio",
        "peak_dbfs_above_threshold",
        "snr_below_threshold",
        "sample_rate_out_of_range",
    ]
    result = PreflightResult(False, reasons, metrics, SPEAK)
    assert result.advice == [
        "Record at least 5 seconds of speech.",
        "Trim the clip to 25 seconds or less.",
        "Speak continuously; avoid long pauses.",
        "Lower the recording gain.",
        "Record in a quieter room or closer to the microphone.",
        "Record at a sample rate between 16 kHz and 48 kHz.",
    ]
    odd = replace(SPEAK, min_duration_s=2.5, min_sample_rate=22050)
    assert PreflightResult(False, [reasons[0], reasons[5]], metrics, odd).advice == [
        "Record at least 2.5 seconds of speech.",
        "Record at a sample rate between 22.05 kHz and 48 kHz.",
    ]


def test_the_error_carries_the_block_and_the_section_7_6_message(voice: np.ndarray) -> None:
    result = check(wav(speech(voice, 30.0)))
    error = result.error("SCAISPEAK_VOICE_PREFLIGHT_FAILED", advice=True)
    assert isinstance(error, ScaiError)
    assert error.code == "SCAISPEAK_VOICE_PREFLIGHT_FAILED"
    assert error.message == (
        "Reference clip failed preflight: duration_above_maximum. "
        "Trim the clip to 25 seconds or less."
    )
    body = error.to_dict()
    assert body["preflight"] == result.block(advice=True)
    assert body["preflight"]["advice"] == ["Trim the clip to 25 seconds or less."]

    two = PreflightResult(False, ["duration_below_minimum", "snr_below_threshold"], {}, SPEAK)
    assert two.message(advice=True) == (
        "Reference clip failed preflight: duration_below_minimum, snr_below_threshold. "
        "Record at least 5 seconds of speech. "
        "Record in a quieter room or closer to the microphone."
    )
    echo = result.error(
        "SCAIECHO_SPEAKER_PREFLIGHT_FAILED",
        advice=False,
        message="reference audio failed preflight",
    )
    assert echo.message == "reference audio failed preflight"
    assert "advice" not in echo.to_dict()["preflight"]
    with pytest.raises(ValueError):
        check(wav(speech(voice, 10.0))).error("SCAISPEAK_VOICE_PREFLIGHT_FAILED", advice=True)


# ----- consent measurements ----------------------------------------------------------------


def test_measure_clip_reports_what_consent_checks_need(voice: np.ndarray) -> None:
    metrics = measure_clip(wav(speech(voice, 8.0)), max_seconds=60)
    assert (metrics.duration_s, metrics.sample_rate, metrics.channels) == (8.0, RATE, 1)
    assert metrics.voice_activity_ratio >= 0.6
    silent = np.concatenate([speech(voice, 1.0), np.zeros(7 * RATE, dtype=np.int16)])
    assert measure_clip(wav(silent), max_seconds=60).voice_activity_ratio < 0.3
    long = measure_clip(wav(speech(voice, 90.0)), max_seconds=60)
    assert 61.0 < long.duration_s < 61.2
