"""Reference-clip preflight (platform §14, scaispeak.md §7.6, scaiecho.md §8.2).

The clip is decoded with PyAV at its native rate and measured: duration, peak level,
voice-activity ratio (the energy VAD of §14.2, numpy only, deterministic) and SNR. Every
failing check is reported. Everything here is synchronous and CPU-bound: async callers
run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final, Protocol

import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler

from scaicommon.audio.decode import (
    _DECODE_ERRORS,
    AudioDecodeError,
    Source,
    _exact_end_seconds,
    _first_audio,
    _open,
    _why,
)
from scaicommon.errors import ScaiError

VAD_RATE: Final = 16000
FRAME_SAMPLES: Final = 480  # 30 ms at 16 kHz
SILENCE_DBFS: Final = -120.0
_ENERGY_FLOOR: Final = 1e-10
_SMOOTH_FRAMES: Final = 5
_SNR_CAP_DB: Final = 100.0

FAIL_REASONS: Final = (
    "duration_below_minimum",
    "duration_above_maximum",
    "low_voice_activity_ratio",
    "peak_dbfs_above_threshold",
    "snr_below_threshold",
    "sample_rate_out_of_range",
)


class _PreflightSettings(Protocol):
    """The ``preflight_*`` fields both services' settings carry."""

    @property
    def preflight_min_duration_s(self) -> float: ...
    @property
    def preflight_max_duration_s(self) -> float: ...
    @property
    def preflight_min_voice_activity_ratio(self) -> float: ...
    @property
    def preflight_max_peak_dbfs(self) -> float: ...
    @property
    def preflight_min_snr_db(self) -> float: ...
    @property
    def preflight_min_sample_rate(self) -> int: ...
    @property
    def preflight_max_sample_rate(self) -> int: ...


@dataclass(frozen=True)
class PreflightThresholds:
    """The limits of platform §14.3; ``max_sample_rate`` 0 means no upper bound."""

    min_duration_s: float
    max_duration_s: float
    min_voice_activity_ratio: float
    max_peak_dbfs: float
    min_snr_db: float
    min_sample_rate: int
    max_sample_rate: int

    @classmethod
    def from_settings(cls, settings: _PreflightSettings) -> PreflightThresholds:
        """The thresholds from a service's ``<PREFIX>_PREFLIGHT_*`` settings."""
        return cls(
            min_duration_s=float(settings.preflight_min_duration_s),
            max_duration_s=float(settings.preflight_max_duration_s),
            min_voice_activity_ratio=float(settings.preflight_min_voice_activity_ratio),
            max_peak_dbfs=float(settings.preflight_max_peak_dbfs),
            min_snr_db=float(settings.preflight_min_snr_db),
            min_sample_rate=int(settings.preflight_min_sample_rate),
            max_sample_rate=int(settings.preflight_max_sample_rate),
        )

    def to_dict(self) -> dict[str, float | int]:
        """The ``thresholds`` object of the result block (§14.4)."""
        return {
            "min_duration_s": self.min_duration_s,
            "max_duration_s": self.max_duration_s,
            "min_voice_activity_ratio": self.min_voice_activity_ratio,
            "max_peak_dbfs": self.max_peak_dbfs,
            "min_snr_db": self.min_snr_db,
            "min_sample_rate": self.min_sample_rate,
            "max_sample_rate": self.max_sample_rate,
        }


@dataclass(frozen=True)
class ClipMetrics:
    """What consent checks need (platform §14.3): duration, VAD ratio and source format."""

    duration_s: float
    voice_activity_ratio: float
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class PreflightResult:
    """The outcome of :func:`run_preflight`; :meth:`block` is its wire form (§14.4)."""

    passed: bool
    fail_reasons: list[str]
    metrics: dict[str, float | int]
    thresholds: PreflightThresholds

    @property
    def advice(self) -> list[str]:
        """One sentence per failing reason, in order (scaispeak.md §7.6)."""
        return [advice_for(reason, self.thresholds) for reason in self.fail_reasons]

    def block(self, *, advice: bool) -> dict[str, Any]:
        """The result block; with ``advice`` it also carries ScaiSpeak's ``advice`` list."""
        out: dict[str, Any] = {
            "passed": self.passed,
            "fail_reasons": list(self.fail_reasons),
            "metrics": dict(self.metrics),
            "thresholds": self.thresholds.to_dict(),
        }
        if advice:
            out["advice"] = self.advice
        return out

    def message(self, *, advice: bool) -> str:
        """``Reference clip failed preflight: <reasons>. <Advice>`` (scaispeak.md §7.6)."""
        text = f"Reference clip failed preflight: {', '.join(self.fail_reasons)}."
        if advice and self.fail_reasons:
            text += " " + " ".join(self.advice)
        return text

    def error(self, code: str, *, advice: bool, message: str | None = None) -> ScaiError:
        """The module's preflight error (``SCAISPEAK_VOICE_PREFLIGHT_FAILED``,
        ``SCAIECHO_SPEAKER_PREFLIGHT_FAILED``) carrying ``preflight=<block>``.

        ``message`` replaces the default :meth:`message` text.
        """
        if self.passed:
            raise ValueError("a passed preflight is not an error")
        text = message if message is not None else self.message(advice=advice)
        return ScaiError(code, text, preflight=self.block(advice=advice))


def _number(value: float) -> str:
    """5.0 -> "5", 2.5 -> "2.5"."""
    return f"{value:g}"


def _khz(rate: int) -> str:
    return f"{_number(rate / 1000)} kHz"


def advice_for(reason: str, thresholds: PreflightThresholds) -> str:
    """The advice sentence for one ``fail_reason``, with the thresholds' numbers in it."""
    t = thresholds
    if reason == "duration_below_minimum":
        return f"Record at least {_number(t.min_duration_s)} seconds of speech."
    if reason == "duration_above_maximum":
        return f"Trim the clip to {_number(t.max_duration_s)} seconds or less."
    if reason == "low_voice_activity_ratio":
        return "Speak continuously; avoid long pauses."
    if reason == "peak_dbfs_above_threshold":
        return "Lower the recording gain."
    if reason == "snr_below_threshold":
        return "Record in a quieter room or closer to the microphone."
    if reason == "sample_rate_out_of_range":
        if t.max_sample_rate > 0:
            low, high = _khz(t.min_sample_rate), _khz(t.max_sample_rate)
            return f"Record at a sample rate between {low} and {high}."
        return f"Record at a sample rate of at least {_khz(t.min_sample_rate)}."
    raise ValueError(f"unknown preflight reason {reason!r}")


# ----- decoding ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoded:
    """The clip at its native rate: peak over every channel, and the mono downmix."""

    mono: np.ndarray  # float32 in [-1, 1], channels averaged
    peak: float
    sample_rate: int
    channels: int
    frames: int


def _planes(frame: AudioFrame) -> np.ndarray:
    """The frame as float64 of shape (channels, samples) in [-1, 1]."""
    fmt = frame.format
    channels = frame.layout.nb_channels
    raw = frame.to_ndarray()
    data = raw.reshape(channels, -1) if fmt.is_planar else raw.reshape(-1, channels).T
    kind = np.dtype(raw.dtype)
    if kind.kind == "f":
        return data.astype(np.float64)
    if kind.kind == "u":  # u8: offset binary
        return (data.astype(np.float64) - 128.0) / 128.0
    return data.astype(np.float64) / float(2 ** (kind.itemsize * 8 - 1))


def _decode(source: Source, max_seconds: float) -> _Decoded:
    """Decode the first audio stream, stopping past ``max_seconds`` + 1 s (§14.1)."""
    limit = max_seconds + 1.0
    pieces: list[np.ndarray] = []
    peak = 0.0
    frames = 0
    padding = 0
    rate = 0
    channels = 0
    container = _open(source)
    try:
        with container:
            stream = _first_audio(container)
            ctx = stream.codec_context
            rate = int(ctx.sample_rate or 0)
            channels = int(ctx.channels or 0)
            end = _exact_end_seconds(container, stream)
            for frame in container.decode(stream):
                if frame.sample_rate <= 0 or frame.samples <= 0:
                    continue
                rate = rate or frame.sample_rate
                channels = channels or frame.layout.nb_channels
                planes = _planes(frame)
                peak = max(peak, float(np.max(np.abs(planes))))
                pieces.append(planes.mean(axis=0).astype(np.float32))
                frames += frame.samples
                if end is not None and frame.pts is not None and frame.time_base is not None:
                    start = float(frame.pts * frame.time_base)
                    length = frame.samples / frame.sample_rate
                    extra = min(length, max(0.0, start + length - end))
                    padding += round(extra * frame.sample_rate)
                if frames / rate > limit:
                    break
    except _DECODE_ERRORS as exc:
        raise AudioDecodeError(_why(exc)) from None
    if frames == 0 or rate <= 0:
        raise AudioDecodeError("no audio samples decoded")
    mono = np.concatenate(pieces)
    if 0 < padding < mono.size:
        mono = mono[: mono.size - padding]
        frames -= padding
    return _Decoded(mono=mono, peak=peak, sample_rate=rate, channels=channels, frames=frames)


def _to_vad_rate(mono: np.ndarray, rate: int) -> np.ndarray:
    """The mono clip resampled to 16 kHz with ffmpeg's resampler (float32)."""
    if rate == VAD_RATE:
        return mono
    resampler = AudioResampler(format="flt", layout="mono", rate=VAD_RATE)
    frame = AudioFrame.from_ndarray(mono.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    out = resampler.resample(frame) + resampler.resample(None)
    parts = [f.to_ndarray().reshape(-1)[: f.samples] for f in out]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


# ----- metrics ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Vad:
    power: np.ndarray  # mean(x^2) per 30 ms frame
    voiced: np.ndarray  # bool per frame, smoothed


def _vad(signal: np.ndarray) -> _Vad:
    """The energy VAD of platform §14.2 on 16 kHz mono."""
    count = signal.size // FRAME_SAMPLES
    frames = signal[: count * FRAME_SAMPLES].astype(np.float64).reshape(count, FRAME_SAMPLES)
    power = np.mean(frames * frames, axis=1)
    if count == 0:
        return _Vad(power=power, voiced=np.zeros(0, dtype=bool))
    energy = 10.0 * np.log10(power + _ENERGY_FLOOR)
    noise_floor = float(np.percentile(energy, 10))
    threshold = max(noise_floor + 10.0, -55.0)
    return _Vad(power=power, voiced=_median_smooth(energy >= threshold))


def _median_smooth(flags: np.ndarray) -> np.ndarray:
    """A 5-frame median filter; the ends repeat the edge frames (a majority vote of 5)."""
    half = _SMOOTH_FRAMES // 2
    padded = np.pad(flags.astype(np.int8), half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, _SMOOTH_FRAMES)
    return np.asarray(windows.sum(axis=1) > half)


def _snr_db(vad: _Vad) -> float:
    """Speech level minus the level of the quietest 10 % of frames, in [0, 100] dB."""
    if not vad.voiced.any():
        return 0.0
    speech = float(np.mean(vad.power[vad.voiced]))
    quiet = max(1, int(vad.power.size * 0.1))
    noise = float(np.mean(np.sort(vad.power)[:quiet]))
    if noise <= 0.0:  # digital silence in the pauses
        return _SNR_CAP_DB
    if speech <= 0.0:
        return 0.0
    snr = 10.0 * math.log10(speech) - 10.0 * math.log10(noise)
    return min(_SNR_CAP_DB, max(0.0, snr))


def _ratio(vad: _Vad) -> float:
    return float(vad.voiced.mean()) if vad.voiced.size else 0.0


def _peak_dbfs(peak: float) -> float:
    if peak <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(peak))


def _round(value: float, digits: int) -> float:
    return round(value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0


def _measure(decoded: _Decoded) -> tuple[dict[str, float | int], _Vad]:
    vad = _vad(_to_vad_rate(decoded.mono, decoded.sample_rate))
    metrics: dict[str, float | int] = {
        "duration_s": _round(decoded.frames / decoded.sample_rate, 3),
        "voice_activity_ratio": _round(_ratio(vad), 3),
        "peak_dbfs": _round(_peak_dbfs(decoded.peak), 1),
        "snr_db": _round(_snr_db(vad), 1),
        "sample_rate": decoded.sample_rate,
        "channels": decoded.channels,
    }
    return metrics, vad


def _fail_reasons(metrics: dict[str, float | int], t: PreflightThresholds) -> list[str]:
    """Every broken rule of §14.3, in the table's order, judged on the reported values."""
    rate = metrics["sample_rate"]
    broken = {
        "duration_below_minimum": metrics["duration_s"] < t.min_duration_s,
        "duration_above_maximum": metrics["duration_s"] > t.max_duration_s,
        "low_voice_activity_ratio": metrics["voice_activity_ratio"] < t.min_voice_activity_ratio,
        "peak_dbfs_above_threshold": metrics["peak_dbfs"] > t.max_peak_dbfs,
        "snr_below_threshold": metrics["snr_db"] < t.min_snr_db,
        "sample_rate_out_of_range": rate < t.min_sample_rate
        or (t.max_sample_rate > 0 and rate > t.max_sample_rate),
    }
    return [reason for reason in FAIL_REASONS if broken[reason]]


def run_preflight(source: Source, thresholds: PreflightThresholds) -> PreflightResult:
    """Measure a reference clip (path or bytes) and check it against ``thresholds``.

    Decoding stops once more than ``max_duration_s + 1`` seconds were decoded; the clip
    then fails ``duration_above_maximum`` with ``duration_s`` = the amount decoded.
    Raises :class:`AudioDecodeError` when the clip does not decode or has no samples.
    """
    metrics, _ = _measure(_decode(source, thresholds.max_duration_s))
    reasons = _fail_reasons(metrics, thresholds)
    return PreflightResult(
        passed=not reasons, fail_reasons=reasons, metrics=metrics, thresholds=thresholds
    )


def measure_clip(source: Source, *, max_seconds: float) -> ClipMetrics:
    """Duration, voice-activity ratio, rate and channels of a clip (consent checks).

    Decoding stops past ``max_seconds + 1`` s, as for preflight; ``duration_s`` is then
    the amount decoded. Raises :class:`AudioDecodeError` when the clip does not decode.
    """
    metrics, _ = _measure(_decode(source, max_seconds))
    return ClipMetrics(
        duration_s=float(metrics["duration_s"]),
        voice_activity_ratio=float(metrics["voice_activity_ratio"]),
        sample_rate=int(metrics["sample_rate"]),
        channels=int(metrics["channels"]),
    )
