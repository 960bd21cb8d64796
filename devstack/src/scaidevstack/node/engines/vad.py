"""Voice activity detection with the Silero VAD v6 model that faster-whisper ships.

The ONNX file ``faster_whisper/assets/silero_vad_v6.onnx`` is run with onnxruntime directly (no
torch, no network). The model reads 16 kHz audio in 512-sample (32 ms) windows, each preceded by
the last 64 samples of the window before it, and carries an LSTM state ``(h, c)`` from window to
window. Running the windows one push at a time with the carried state gives exactly the same
probabilities as one batch call over the whole signal, so the streaming detector is deterministic.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 512  # samples per probability (32 ms at 16 kHz)
CONTEXT = 64  # samples of the previous window the model sees before each window
WINDOW_MS = WINDOW * 1000 // SAMPLE_RATE
_STATE_SHAPE = (1, 1, 128)


def silero_model_path() -> Path:
    """The Silero VAD v6 ONNX file bundled with faster-whisper."""
    import faster_whisper

    return Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"


@functools.cache
def _session() -> Any:
    """One onnxruntime session for the process (``run`` is thread-safe)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 4
    return onnxruntime.InferenceSession(
        str(silero_model_path()), providers=["CPUExecutionProvider"], sess_options=options
    )


class SileroVad:
    """Speech probabilities of 16 kHz audio, one per 32 ms window."""

    model_id = "silero-vad-v6"

    def __init__(self) -> None:
        self._session = _session()

    def speech_probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of int16 16 kHz mono ``audio`` (the last window is zero-padded)."""
        samples = _to_float(audio)
        if samples.size % WINDOW:
            samples = np.pad(samples, (0, WINDOW - samples.size % WINDOW))
        if samples.size == 0:
            return np.zeros(0, dtype=np.float32)
        state = VadState.initial()
        return self.run(samples.reshape(-1, WINDOW), state)

    def run(self, windows: np.ndarray, state: VadState) -> np.ndarray:
        """Probabilities of consecutive ``(n, 512)`` float windows, advancing ``state`` in place."""
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32)
        contexts = np.concatenate([state.context[None, :], windows[:-1, -CONTEXT:]], axis=0)
        batch = np.ascontiguousarray(np.concatenate([contexts, windows], axis=1), np.float32)
        probs, state.h, state.c = self._session.run(
            None, {"input": batch, "h": state.h, "c": state.c}
        )
        state.context = windows[-1, -CONTEXT:].copy()
        return np.asarray(probs, dtype=np.float32).reshape(-1)


@dataclass
class VadState:
    """The model's recurrent state between windows."""

    h: np.ndarray
    c: np.ndarray
    context: np.ndarray

    @classmethod
    def initial(cls) -> VadState:
        return cls(
            h=np.zeros(_STATE_SHAPE, dtype=np.float32),
            c=np.zeros(_STATE_SHAPE, dtype=np.float32),
            context=np.zeros(CONTEXT, dtype=np.float32),
        )


@dataclass(frozen=True)
class VadEvent:
    """Speech began (``start``) or ended (``end``) at stream sample ``sample``.

    ``reported_at`` is the stream sample at which the detector became sure (a start is confirmed
    ``min_speech_ms`` after it, an end ``min_silence_ms`` after it).
    """

    kind: Literal["start", "end"]
    sample: int
    reported_at: int

    @property
    def ms(self) -> int:
        """``sample`` in milliseconds of stream audio."""
        return self.sample * 1000 // SAMPLE_RATE


@dataclass(frozen=True)
class VadWindow:
    """One scored window: where it ends, its probability, the state after it, any event."""

    end: int
    probability: float
    in_speech: bool
    event: VadEvent | None


class VadStream:
    """Streaming speech start/end detection with hysteresis.

    Speech starts at a window whose probability reaches ``onset`` once the probability has stayed
    at or above ``offset`` for ``min_speech_ms``. Speech ends at the first window below ``offset``
    once no window has reached ``onset`` for ``min_silence_ms`` (the endpointing delay).
    """

    def __init__(
        self,
        vad: SileroVad | None = None,
        *,
        onset: float = 0.5,
        offset: float = 0.35,
        min_speech_ms: int = 250,
        min_silence_ms: int = 500,
    ) -> None:
        self._vad = vad or SileroVad()
        self._state = VadState.initial()
        self.onset = onset
        self.offset = offset
        self._min_speech = max(1, min_speech_ms * SAMPLE_RATE // 1000)
        self._min_silence = max(1, min_silence_ms * SAMPLE_RATE // 1000)
        self._leftover = np.zeros(0, dtype=np.float32)
        self._windows = 0  # windows scored so far
        self._candidate: int | None = None  # sample where unconfirmed speech began
        self._silence_from: int | None = None  # sample where the current pause began
        self.in_speech = False
        self.last_probability = 0.0

    @property
    def processed_samples(self) -> int:
        """Samples scored so far (whole windows only)."""
        return self._windows * WINDOW

    @property
    def pending_start(self) -> int | None:
        """The sample where not yet confirmed speech began, if any."""
        return self._candidate

    def push(self, audio: np.ndarray) -> list[VadWindow]:
        """Score int16 ``audio``; one :class:`VadWindow` per whole window it completes."""
        samples = np.concatenate([self._leftover, _to_float(audio)])
        whole = samples.size - samples.size % WINDOW
        self._leftover = samples[whole:]
        if whole == 0:
            return []
        probs = self._vad.run(samples[:whole].reshape(-1, WINDOW), self._state)
        out: list[VadWindow] = []
        for prob in probs:
            start = self._windows * WINDOW
            self._windows += 1
            self.last_probability = float(prob)
            event = self._step(start, float(prob))
            out.append(VadWindow(start + WINDOW, float(prob), self.in_speech, event))
        return out

    def _step(self, start: int, prob: float) -> VadEvent | None:
        end = start + WINDOW
        if not self.in_speech:
            if self._candidate is None:
                if prob >= self.onset:
                    self._candidate = start
            elif prob < self.offset:
                self._candidate = None
            if self._candidate is not None and end - self._candidate >= self._min_speech:
                self.in_speech = True
                began, self._candidate = self._candidate, None
                self._silence_from = None
                return VadEvent("start", began, end)
            return None
        if prob >= self.onset:
            self._silence_from = None
        elif prob < self.offset and self._silence_from is None:
            self._silence_from = start
        if self._silence_from is not None and end - self._silence_from >= self._min_silence:
            self.in_speech = False
            ended, self._silence_from = self._silence_from, None
            return VadEvent("end", ended, end)
        return None


def _to_float(audio: np.ndarray) -> np.ndarray:
    if audio.dtype == np.int16:
        return audio.astype(np.float32) / 32768.0
    return audio.astype(np.float32, copy=False)
