"""PCM helpers of the node: int16/float conversion, resampling, container decoding."""

from __future__ import annotations

import io
import wave

import av
import numpy as np

TARGET_RATE = 16000


def int16_to_float(audio: np.ndarray) -> np.ndarray:
    """int16 PCM → float32 in [-1, 1)."""
    return audio.astype(np.float32) / 32768.0


def float_to_int16(audio: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1] → int16 PCM (clipped)."""
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def resample_int16(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample mono int16 PCM with PyAV's resampler (identity when the rates match)."""
    if src_rate == dst_rate or audio.size == 0:
        return audio.astype(np.int16, copy=False)
    frame = av.AudioFrame.from_ndarray(
        audio.reshape(1, -1).astype(np.int16), format="s16", layout="mono"
    )
    frame.sample_rate = src_rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=dst_rate)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)


def decode_container(data: bytes, rate: int = TARGET_RATE) -> np.ndarray:
    """Decode any container PyAV reads into int16 mono at ``rate``; raises ``ValueError``."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            parts: list[np.ndarray] = []
            for frame in container.decode(stream):
                parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise ValueError(f"audio does not decode: {type(exc).__name__}") from None
    if not parts:
        raise ValueError("audio holds no samples")
    return np.concatenate(parts).astype(np.int16)


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """A complete mono 16-bit WAV file of int16 ``audio``."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.asarray(audio, dtype="<i2").tobytes())
    return buffer.getvalue()
