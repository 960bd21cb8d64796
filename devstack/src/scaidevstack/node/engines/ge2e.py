"""Resemblyzer's GE2E voice encoder in numpy, reading its shipped weights without torch.

The network, its input features and its preprocessing follow ``resemblyzer`` 0.1.4
(``hparams.py``, ``audio.py``, ``voice_encoder.py``):

- input: 40-channel mel *power* spectrogram (not log) of 16 kHz audio, 25 ms Hann window
  (``n_fft`` 400), 10 ms hop, centred frames with reflect padding, slaney-normalised mel
  filterbank as ``librosa.filters.mel`` builds it (librosa before 0.10 padded with
  ``reflect``, later versions with zeros: only the first and last two frames differ);
- network: 3-layer LSTM (hidden 256) → last layer's final hidden state → linear 256→256 →
  ReLU → L2 normalisation;
- utterances: partials of 160 frames at 1.3 partials per second, averaged and renormalised;
- preprocessing: volume raised (never lowered) to -30 dBFS, then long silences trimmed. The
  original trims with webrtcvad; here faster-whisper's bundled Silero VAD (run with
  onnxruntime) gives the speech flags, per 32 ms window instead of 30 ms, smoothed exactly as
  resemblyzer smooths them (moving average of 8 windows, dilation by 6).

The weights file ``resemblyzer/pretrained.pt`` is a legacy (pre-zip) torch pickle. A
restricted unpickler maps the three globals it uses to local stand-ins and reads the raw
storages that follow the pickles, so torch is never imported.
"""

from __future__ import annotations

import collections
import ctypes
import importlib.util
import pickle
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

# resemblyzer/hparams.py
SAMPLING_RATE = 16000
MEL_WINDOW_LENGTH_MS = 25
MEL_WINDOW_STEP_MS = 10
MEL_N_CHANNELS = 40
PARTIALS_N_FRAMES = 160
VAD_MOVING_AVERAGE_WIDTH = 8
VAD_MAX_SILENCE_LENGTH = 6
AUDIO_NORM_TARGET_DBFS = -30.0
HIDDEN_SIZE = 256
EMBEDDING_SIZE = 256
NUM_LAYERS = 3

N_FFT = SAMPLING_RATE * MEL_WINDOW_LENGTH_MS // 1000  # 400
HOP_LENGTH = SAMPLING_RATE * MEL_WINDOW_STEP_MS // 1000  # 160
INT16_MAX = 2**15 - 1

# Silero VAD (16 kHz): 512-sample windows with 64 samples of context from the previous one.
VAD_WINDOW = 512
VAD_CONTEXT = 64
VAD_THRESHOLD = 0.5


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def default_weights_path() -> Path:
    """``resemblyzer/pretrained.pt`` of the installed resemblyzer (not imported: it needs torch)."""
    return _package_dir("resemblyzer") / "pretrained.pt"


def default_vad_path() -> Path:
    """faster-whisper's bundled Silero VAD (v6) ONNX file."""
    return _package_dir("faster_whisper") / "assets" / "silero_vad_v6.onnx"


_BLAS_SETTERS = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


def limit_blas_threads(threads: int) -> bool:
    """Set the thread count of numpy's bundled OpenBLAS, process-wide; False if not found.

    The encoder's recurrent step multiplies small matrices 480 times per partial: with a
    multi-threaded BLAS on a busy 2-core machine the threads' hand-offs cost up to 10x the
    work, so the engine runs BLAS single-threaded by default.
    """
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*")):
        try:
            library = ctypes.CDLL(str(path))  # already loaded by numpy: the same handle
        except OSError:
            continue
        for name in _BLAS_SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                return True
    return False


# ----- legacy torch checkpoint --------------------------------------------------------------

_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype[Any]


@dataclass
class _Storage:
    key: str
    dtype: np.dtype[Any]
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _LazyTensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        if self.storage.data is None:
            raise ValueError(f"storage {self.storage.key} was never read")
        itemsize = self.storage.dtype.itemsize
        base = self.storage.data[self.offset :]
        view = np.lib.stride_tricks.as_strided(
            base, shape=self.shape, strides=tuple(s * itemsize for s in self.stride)
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: object = None,
    metadata: object = None,
) -> _LazyTensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``."""
    del requires_grad, backward_hooks, metadata
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


class _TorchlessUnpickler(pickle.Unpickler):
    """Unpickles a legacy torch checkpoint, allowing only the globals such a file needs."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a checkpoint")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unknown storage type {storage_type!r}")
        storage = self.storages.get(key)
        if storage is None:
            storage = _Storage(str(key), storage_type.dtype, int(numel))
            self.storages[key] = storage
        return storage


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, Mapping):
        return {k: _materialize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def load_legacy_checkpoint(path: Path) -> dict[str, Any]:
    """Load a legacy (non-zip) ``torch.save`` file into plain Python and numpy objects.

    Layout: pickled magic number, protocol version and sys info; the pickled object whose
    tensors reference storages by persistent id; the pickled list of storage keys; then, per
    key in that order, an int64 element count followed by the raw little-endian elements.
    """
    with path.open("rb") as f:
        head = f.read(4)
        if head.startswith(b"PK"):
            raise ValueError(f"{path} is a zip-format torch checkpoint; only legacy is supported")
        f.seek(0)
        storages: dict[str, _Storage] = {}
        if _TorchlessUnpickler(f, storages).load() != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a legacy torch checkpoint")
        protocol = _TorchlessUnpickler(f, storages).load()
        if protocol != 1001:
            raise ValueError(f"unsupported torch protocol version {protocol!r}")
        sys_info = _TorchlessUnpickler(f, storages).load()
        if not sys_info.get("little_endian", True):
            raise ValueError("big-endian checkpoints are not supported")
        result = _TorchlessUnpickler(f, storages).load()
        keys = _TorchlessUnpickler(f, storages).load()
        for key in keys:
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            raw = f.read(numel * storage.dtype.itemsize)
            if numel != storage.numel or len(raw) != numel * storage.dtype.itemsize:
                raise ValueError(f"storage {key} is truncated or inconsistent")
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    if not isinstance(result, dict):
        raise ValueError("checkpoint does not hold a dict")
    return dict(_materialize(result))


# ----- features -----------------------------------------------------------------------------


def _hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa ``hz_to_mel(htk=False)``)."""
    f_sp = 200.0 / 3
    mels = freqs / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = freqs >= min_log_hz
    mels[log_t] = min_log_mel + np.log(freqs[log_t] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    """Inverse slaney mel scale (librosa ``mel_to_hz(htk=False)``)."""
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def mel_filterbank(
    sr: int = SAMPLING_RATE, n_fft: int = N_FFT, n_mels: int = MEL_N_CHANNELS
) -> FloatArray:
    """``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)``: slaney scale and norm."""
    fmax = sr / 2.0
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_edges = np.linspace(
        _hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2
    )
    mel_f = _mel_to_hz(mel_edges)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights *= enorm[:, np.newaxis]
    return weights


_MEL_BASIS = mel_filterbank()
# scipy.signal.get_window("hann", N_FFT, fftbins=True): the periodic Hann window.
_HANN = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def wav_to_mel_spectrogram(wav: FloatArray) -> FloatArray:
    """``resemblyzer.audio.wav_to_mel_spectrogram``: mel power frames, shape (frames, 40).

    As ``librosa.feature.melspectrogram`` with ``n_fft=400, hop_length=160``: centred frames
    (reflect padding of ``n_fft // 2``), periodic Hann window, power 2.
    """
    y = np.asarray(wav, dtype=np.float32)
    if y.size == 0:
        return np.zeros((0, MEL_N_CHANNELS), dtype=np.float32)
    pad = N_FFT // 2
    padded: FloatArray = np.pad(y, (pad, pad), mode="reflect" if y.size > 1 else "constant")
    n_frames = 1 + (padded.size - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.as_strided(
        padded,
        shape=(n_frames, N_FFT),
        strides=(padded.strides[0] * HOP_LENGTH, padded.strides[0]),
        writeable=False,
    )
    spectrum = np.fft.rfft(frames * _HANN, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return (power @ _MEL_BASIS.T).astype(np.float32)


def normalize_volume(wav: FloatArray, target_dbfs: float = AUDIO_NORM_TARGET_DBFS) -> FloatArray:
    """Raise (never lower) the level to ``target_dbfs`` RMS (resemblyzer, ``increase_only``)."""
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * INT16_MAX) ** 2))) if wav.size else 0.0
    if rms <= 0.0:
        return wav
    change = target_dbfs - 20.0 * np.log10(rms / INT16_MAX)
    if change < 0:
        return wav
    return np.asarray(wav * np.float32(10.0 ** (change / 20.0)), dtype=np.float32)


# ----- voice activity -----------------------------------------------------------------------


class SileroVad:
    """Silero VAD v6 (faster-whisper's ONNX export) run with onnxruntime, one thread."""

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = False
        opts.log_severity_level = 4
        self._session = onnxruntime.InferenceSession(
            str(path or default_vad_path()), providers=["CPUExecutionProvider"], sess_options=opts
        )

    def probabilities(self, wav: FloatArray) -> FloatArray:
        """Speech probability of each 512-sample (32 ms) window; the last one zero-padded."""
        if wav.size == 0:
            return np.zeros(0, dtype=np.float32)
        n = -(-wav.size // VAD_WINDOW)
        audio = np.zeros(n * VAD_WINDOW, dtype=np.float32)
        audio[: wav.size] = wav
        windows = audio.reshape(n, VAD_WINDOW)
        context = np.zeros((n, VAD_CONTEXT), dtype=np.float32)
        context[1:] = windows[:-1, -VAD_CONTEXT:]
        batch = np.concatenate([context, windows], axis=1)
        h = np.zeros((1, 1, 128), dtype=np.float32)
        c = np.zeros((1, 1, 128), dtype=np.float32)
        out: list[np.ndarray] = []
        for i in range(0, n, 10000):
            probs, h, c = self._session.run(None, {"input": batch[i : i + 10000], "h": h, "c": c})
            out.append(np.asarray(probs, dtype=np.float32).reshape(-1))
        return np.concatenate(out)


def _moving_average(array: np.ndarray, width: int) -> np.ndarray:
    """resemblyzer's ``trim_long_silences.moving_average``."""
    padded = np.concatenate((np.zeros((width - 1) // 2), array, np.zeros(width // 2)))
    ret = np.cumsum(padded, dtype=float)
    ret[width:] = ret[width:] - ret[:-width]
    return ret[width - 1 :] / width


def _binary_dilation(mask: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.binary_dilation(mask, np.ones(size))`` for odd ``size``."""
    return np.convolve(mask.astype(np.int32), np.ones(size, dtype=np.int32), mode="same") > 0


def trim_long_silences(wav: FloatArray, vad: SileroVad) -> FloatArray:
    """resemblyzer's ``trim_long_silences`` with Silero flags instead of webrtcvad's.

    The audio is cut to whole VAD windows, each window flagged (probability ≥ 0.5), the flags
    smoothed with a moving average of 8 and rounded, dilated by 6 windows, and only the
    flagged windows' samples kept.
    """
    wav = wav[: wav.size - wav.size % VAD_WINDOW]
    if wav.size == 0:
        return wav
    flags = vad.probabilities(wav) >= VAD_THRESHOLD
    mask = np.round(_moving_average(flags, VAD_MOVING_AVERAGE_WIDTH)).astype(bool)
    mask = _binary_dilation(mask, VAD_MAX_SILENCE_LENGTH + 1)
    kept: FloatArray = wav[np.repeat(mask, VAD_WINDOW)]
    return kept


def preprocess_wav(wav: FloatArray, vad: SileroVad) -> FloatArray:
    """resemblyzer's ``preprocess_wav`` for 16 kHz float audio: normalise volume, trim."""
    return trim_long_silences(normalize_volume(np.asarray(wav, dtype=np.float32)), vad)


# ----- network ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _LstmLayer:
    w_ih_t: FloatArray  # (in, 4H)
    w_hh_t: FloatArray  # (H, 4H)
    bias: FloatArray  # (4H,) = bias_ih + bias_hh
    # Gates reordered from torch's i, f, g, o to i, f, o, g (the sigmoids contiguous), and the
    # sigmoid gates' weights and biases halved so that one tanh serves all four gates.


_GATE_SCALE = np.concatenate(
    [np.full(3 * HIDDEN_SIZE, 0.5, dtype=np.float32), np.ones(HIDDEN_SIZE, dtype=np.float32)]
)


def _reorder_gates(w: np.ndarray) -> np.ndarray:
    """torch's gate rows i, f, g, o → i, f, o, g, sigmoid rows scaled by 0.5."""
    i, f, g, o = np.split(w.astype(np.float32), 4, axis=0)
    stacked = np.concatenate([i, f, o, g], axis=0)
    scale = _GATE_SCALE if stacked.ndim == 1 else _GATE_SCALE[:, np.newaxis]
    return np.asarray(stacked * scale, dtype=np.float32)


def compute_partial_slices(
    n_samples: int, rate: float = 1.3, min_coverage: float = 0.75
) -> tuple[list[slice], list[slice]]:
    """``VoiceEncoder.compute_partial_slices``: wav and mel slices of the partial utterances."""
    if not 0 < min_coverage <= 1:
        raise ValueError("min_coverage must be in (0, 1]")
    samples_per_frame = HOP_LENGTH
    n_frames = int(np.ceil((n_samples + 1) / samples_per_frame))
    frame_step = round((SAMPLING_RATE / rate) / samples_per_frame)
    if not 0 < frame_step <= PARTIALS_N_FRAMES:
        raise ValueError("rate out of range")
    wav_slices: list[slice] = []
    mel_slices: list[slice] = []
    steps = max(1, n_frames - PARTIALS_N_FRAMES + frame_step + 1)
    for i in range(0, steps, frame_step):
        mel_slices.append(slice(i, i + PARTIALS_N_FRAMES))
        wav_slices.append(slice(i * samples_per_frame, (i + PARTIALS_N_FRAMES) * samples_per_frame))
    last = wav_slices[-1]
    coverage = (n_samples - last.start) / (last.stop - last.start)
    if coverage < min_coverage and len(mel_slices) > 1:
        mel_slices = mel_slices[:-1]
        wav_slices = wav_slices[:-1]
    return wav_slices, mel_slices


class VoiceEncoder:
    """The GE2E speaker encoder (resemblyzer ``VoiceEncoder``) evaluated with numpy.

    Thread-safe: inference holds no mutable state.
    """

    def __init__(self, weights_path: Path | None = None) -> None:
        checkpoint = load_legacy_checkpoint(weights_path or default_weights_path())
        state: dict[str, np.ndarray] = checkpoint["model_state"]
        layers = []
        for k in range(NUM_LAYERS):
            w_ih = _reorder_gates(state[f"lstm.weight_ih_l{k}"].astype(np.float32))
            w_hh = _reorder_gates(state[f"lstm.weight_hh_l{k}"].astype(np.float32))
            bias = _reorder_gates(
                (state[f"lstm.bias_ih_l{k}"] + state[f"lstm.bias_hh_l{k}"]).astype(np.float32)
            )
            layers.append(
                _LstmLayer(
                    np.ascontiguousarray(w_ih.T),
                    np.ascontiguousarray(w_hh.T),
                    np.ascontiguousarray(bias),
                )
            )
        self._layers = tuple(layers)
        self._linear_w_t = np.ascontiguousarray(state["linear.weight"].astype(np.float32).T)
        self._linear_b = state["linear.bias"].astype(np.float32)

    def forward(self, mels: FloatArray) -> FloatArray:
        """Embeddings of a batch of mel spectrograms (batch, frames, 40) → (batch, 256)."""
        x = np.asarray(mels, dtype=np.float32)
        if x.ndim != 3 or x.shape[2] != MEL_N_CHANNELS:
            raise ValueError(f"mels must be (batch, frames, {MEL_N_CHANNELS}), got {x.shape}")
        batch, n_frames, _ = x.shape
        hidden = HIDDEN_SIZE
        seq = np.ascontiguousarray(x.transpose(1, 0, 2))  # time-major (frames, batch, 40)
        h = np.zeros((batch, hidden), dtype=np.float32)
        for index, layer in enumerate(self._layers):
            proj = seq @ layer.w_ih_t + layer.bias  # (frames, batch, 4H)
            last = index == len(self._layers) - 1
            out = np.empty((1 if last else n_frames, batch, hidden), dtype=np.float32)
            h = np.zeros((batch, hidden), dtype=np.float32)
            c = np.zeros((batch, hidden), dtype=np.float32)
            gates = np.empty((batch, 4 * hidden), dtype=np.float32)
            scratch = np.empty((batch, hidden), dtype=np.float32)
            sig = gates[:, : 3 * hidden]
            i_gate, f_gate = gates[:, :hidden], gates[:, hidden : 2 * hidden]
            o_gate, g_gate = gates[:, 2 * hidden : 3 * hidden], gates[:, 3 * hidden :]
            for t in range(n_frames):
                np.matmul(h, layer.w_hh_t, out=gates)
                gates += proj[t]
                # The sigmoid rows were pre-scaled by 0.5: sigmoid(x) = 0.5 * tanh(x / 2) + 0.5.
                np.tanh(gates, out=gates)
                sig *= 0.5
                sig += 0.5
                c *= f_gate
                np.multiply(i_gate, g_gate, out=scratch)
                c += scratch
                np.tanh(c, out=scratch)
                h = out[0 if last else t]
                np.multiply(o_gate, scratch, out=h)
            seq = out
        raw = np.maximum(h @ self._linear_w_t + self._linear_b, 0.0)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        return np.asarray(raw / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    def partial_mels(
        self, wav: FloatArray, rate: float = 1.3, min_coverage: float = 0.75
    ) -> FloatArray:
        """The 160-frame partial spectrograms ``embed_utterance`` feeds the network."""
        wav_slices, mel_slices = compute_partial_slices(wav.size, rate, min_coverage)
        max_len = wav_slices[-1].stop
        if max_len >= wav.size:
            wav = np.pad(wav, (0, max_len - wav.size), "constant")
        mel = wav_to_mel_spectrogram(wav)
        return np.stack([mel[s] for s in mel_slices])

    def forward_batched(self, mels: FloatArray, max_batch: int = 64) -> FloatArray:
        """:meth:`forward` in slices of at most ``max_batch`` sequences (bounded memory)."""
        if len(mels) <= max_batch:
            return self.forward(mels)
        return np.concatenate(
            [self.forward(mels[i : i + max_batch]) for i in range(0, len(mels), max_batch)]
        )

    def embed_utterance(
        self, wav: FloatArray, rate: float = 1.3, min_coverage: float = 0.75
    ) -> FloatArray:
        """``VoiceEncoder.embed_utterance``: mean of the partial embeddings, L2-normalised."""
        mels = self.partial_mels(np.asarray(wav, dtype=np.float32), rate, min_coverage)
        raw = self.forward_batched(mels).mean(axis=0)
        return np.asarray(raw / np.linalg.norm(raw), dtype=np.float32)

    def embed_utterances(self, wavs: list[FloatArray]) -> FloatArray:
        """``embed_utterance`` of many clips with batched network passes, shape (n, 256)."""
        if not wavs:
            return np.zeros((0, EMBEDDING_SIZE), dtype=np.float32)
        groups = [self.partial_mels(np.asarray(w, dtype=np.float32)) for w in wavs]
        partials = self.forward_batched(np.concatenate(groups))
        out = np.empty((len(wavs), EMBEDDING_SIZE), dtype=np.float32)
        start = 0
        for i, group in enumerate(groups):
            raw = partials[start : start + len(group)].mean(axis=0)
            out[i] = raw / np.linalg.norm(raw)
            start += len(group)
        return out
