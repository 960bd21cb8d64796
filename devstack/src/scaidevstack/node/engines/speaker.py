"""Speaker analysis (engine kind ``audio.analyze.pyannote``) on the numpy GE2E encoder.

- :class:`Ge2eSpeakerEngine` implements :class:`~scaidevstack.node.engines.base.SpeakerAnalysis`:
  utterance embeddings (resemblyzer's preprocessing and partial averaging) and diarization
  (Silero speech regions → overlapping 1.5 s windows → GE2E embeddings → average-linkage
  agglomerative clustering on cosine similarity → turns → candidate matching as
  scaiinfer.proto.md §3.10).
- :class:`SpeakerStore` holds enrolled speakers in memory under ``(tenant_id, speaker_id)``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scaidevstack.node.audio import int16_to_float
from scaidevstack.node.engines.base import DiarizedTurn, SpeakerEntry
from scaidevstack.node.engines.ge2e import (
    EMBEDDING_SIZE,
    SAMPLING_RATE,
    VAD_WINDOW,
    FloatArray,
    SileroVad,
    VoiceEncoder,
    limit_blas_threads,
    normalize_volume,
    preprocess_wav,
)

MIN_SPEECH_MS = 1000
STORE_CAPACITY = 100_000

# ----- enrolled speakers --------------------------------------------------------------------


class MissingSpeakers(LookupError):
    """Some requested speaker ids are not enrolled; :attr:`ids` lists them in request order."""

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids: tuple[str, ...] = tuple(ids)
        super().__init__(f"speakers not enrolled: {', '.join(self.ids)}")


class SpeakerStoreFull(RuntimeError):
    """The store already holds its capacity of speakers (``AT_CAPACITY``)."""


class SpeakerStore:
    """In-memory enrolled speakers keyed by ``(tenant_id, speaker_id)``; thread-safe."""

    def __init__(self, capacity: int = STORE_CAPACITY) -> None:
        self.capacity = capacity
        self._entries: dict[tuple[str, str], SpeakerEntry] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def enroll(self, entry: SpeakerEntry) -> bool:
        """Store ``entry``; True when it replaced an entry with the same key.

        Raises :class:`SpeakerStoreFull` for a new key when the store is at capacity
        (replacing an existing key is always allowed).
        """
        key = (entry.tenant_id, entry.speaker_id)
        with self._lock:
            replaced = key in self._entries
            if not replaced and len(self._entries) >= self.capacity:
                raise SpeakerStoreFull(f"speaker store holds {self.capacity} speakers")
            self._entries[key] = entry
            return replaced

    def evict(self, tenant_id: str, speaker_id: str) -> bool:
        """Remove one speaker; False when it was not held."""
        with self._lock:
            return self._entries.pop((tenant_id, speaker_id), None) is not None

    def get(self, tenant_id: str, speaker_id: str) -> SpeakerEntry | None:
        """The entry of one speaker, or None."""
        with self._lock:
            return self._entries.get((tenant_id, speaker_id))

    def list(self, tenant_id: str | None = None) -> list[SpeakerEntry]:
        """Entries sorted by (tenant, speaker); only ``tenant_id``'s when given and non-empty."""
        with self._lock:
            items = [
                entry
                for (tenant, _), entry in self._entries.items()
                if not tenant_id or tenant == tenant_id
            ]
        return sorted(items, key=lambda e: (e.tenant_id, e.speaker_id))

    def embeddings_for(self, tenant_id: str, speaker_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Embeddings of ``speaker_ids`` of one tenant; :class:`MissingSpeakers` for unknown ids."""
        with self._lock:
            found: dict[str, np.ndarray] = {}
            missing: list[str] = []
            for speaker_id in dict.fromkeys(speaker_ids):
                entry = self._entries.get((tenant_id, speaker_id))
                if entry is None:
                    missing.append(speaker_id)
                else:
                    found[speaker_id] = entry.embedding
        if missing:
            raise MissingSpeakers(missing)
        return found


# ----- diarization helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    start: int  # samples
    end: int
    region: int


def speech_regions(
    probs: np.ndarray,
    n_samples: int,
    *,
    threshold: float = 0.5,
    neg_threshold: float = 0.35,
    min_silence_ms: int = 200,
    min_speech_ms: int = 250,
    pad_ms: int = 32,
) -> list[tuple[int, int]]:
    """Speech regions (sample ranges) from per-window VAD probabilities, with hysteresis.

    Speech starts at a window ≥ ``threshold`` and continues while windows stay above
    ``neg_threshold``; pauses shorter than ``min_silence_ms`` are bridged, regions shorter than
    ``min_speech_ms`` dropped, and each region padded by ``pad_ms`` (never into a neighbour).
    """
    window_ms = VAD_WINDOW * 1000 / SAMPLING_RATE
    runs: list[list[int]] = []
    active = False
    for i, p in enumerate(probs):
        if not active and p >= threshold:
            active = True
            runs.append([i, i + 1])
        elif active and p >= neg_threshold:
            runs[-1][1] = i + 1
        elif active:
            active = False
    merged: list[list[int]] = []
    for run in runs:
        if merged and (run[0] - merged[-1][1]) * window_ms < min_silence_ms:
            merged[-1][1] = run[1]
        else:
            merged.append(list(run))
    kept = [r for r in merged if (r[1] - r[0]) * window_ms >= min_speech_ms]
    pad = int(pad_ms * SAMPLING_RATE / 1000)
    regions: list[tuple[int, int]] = []
    for k, (a, b) in enumerate(kept):
        start = max(0, a * VAD_WINDOW - pad)
        end = min(n_samples, b * VAD_WINDOW + pad)
        if regions:
            start = max(start, regions[-1][1])
        if k + 1 < len(kept):
            end = min(end, (kept[k + 1][0] * VAD_WINDOW + b * VAD_WINDOW) // 2)
        if end > start:
            regions.append((start, end))
    return regions


def _windows(regions: list[tuple[int, int]], win: int, hop: int) -> list[_Window]:
    """Evenly spaced windows of ``win`` samples covering every region (≤ ``hop`` apart)."""
    out: list[_Window] = []
    for index, (start, end) in enumerate(regions):
        length = end - start
        if length <= win:
            out.append(_Window(start, end, index))
            continue
        count = int(np.ceil((length - win) / hop)) + 1
        for s in np.linspace(start, end - win, count).round().astype(int):
            out.append(_Window(int(s), int(s) + win, index))
    return out


def agglomerate(
    embeddings: np.ndarray, threshold: float, min_clusters: int = 0, max_clusters: int = 0
) -> np.ndarray:
    """Average-linkage agglomerative clustering on cosine similarity → labels 0..k-1.

    Clusters merge while their average similarity is ≥ ``threshold``; merging continues past
    the threshold while there are more than ``max_clusters`` (when > 0) and stops once there
    are ``min_clusters`` (when > 0). Labels are numbered in order of first member.
    """
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms > 0, norms, 1.0)
    sim = (unit @ unit.T).astype(np.float64)
    np.fill_diagonal(sim, -np.inf)
    sizes = np.ones(n)
    owner = np.arange(n)
    clusters = n
    while clusters > 1:
        flat = int(np.argmax(sim))
        i, j = divmod(flat, n)
        best = sim[i, j]
        must_merge = max_clusters > 0 and clusters > max_clusters
        may_merge = best >= threshold and not (min_clusters > 0 and clusters <= min_clusters)
        if not (must_merge or may_merge):
            break
        # Lance–Williams update for average linkage; j joins i.
        merged = (sizes[i] * sim[i] + sizes[j] * sim[j]) / (sizes[i] + sizes[j])
        sim[i, :] = merged
        sim[:, i] = merged
        sim[i, i] = -np.inf
        sim[j, :] = -np.inf
        sim[:, j] = -np.inf
        sizes[i] += sizes[j]
        owner[owner == j] = i
        clusters -= 1
    _, first_index, inverse = np.unique(owner, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_index))
    return np.asarray(order[inverse], dtype=np.int64)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def match_candidates(
    centroids: Sequence[np.ndarray],
    first_appearance: Sequence[int],
    candidates: Mapping[str, np.ndarray],
    threshold: float,
) -> list[tuple[str, str, float | None]]:
    """(speaker_id, label, similarity) per cluster, as scaiinfer.proto.md §3.10.

    Pairs are taken by falling similarity, one-to-one, when ≥ ``threshold``; an unmatched
    cluster gets ``("", "spk_N")`` with N in order of ``first_appearance``; similarity is the
    cluster's best similarity to any candidate (None without candidates).
    """
    ids = sorted(candidates)
    n = len(centroids)
    sims = np.zeros((n, len(ids)))
    if ids:
        cand = np.stack([_unit(np.asarray(candidates[c], dtype=np.float64)) for c in ids])
        cent = np.stack([_unit(np.asarray(c, dtype=np.float64)) for c in centroids])
        sims = cent @ cand.T
    pairs = sorted(
        ((float(sims[k, m]), k, m) for k in range(n) for m in range(len(ids))),
        key=lambda p: (-p[0], first_appearance[p[1]], ids[p[2]]),
    )
    matched: dict[int, str] = {}
    taken: set[int] = set()
    for value, k, m in pairs:
        if value < threshold:
            break
        if k in matched or m in taken:
            continue
        matched[k] = ids[m]
        taken.add(m)
    out: list[tuple[str, str, float | None]] = [("", "", None)] * n
    next_label = 0
    for k in sorted(range(n), key=lambda k: first_appearance[k]):
        best = float(sims[k].max()) if ids else None
        if k in matched:
            out[k] = (matched[k], matched[k], best)
        else:
            out[k] = ("", f"spk_{next_label}", best)
            next_label += 1
    return out


# ----- the engine ---------------------------------------------------------------------------


class Ge2eSpeakerEngine:
    """Speaker embeddings and diarization with resemblyzer's GE2E encoder in numpy.

    Thread-safe: every call works on its own arrays; the VAD's onnxruntime session may be run
    from several threads.
    """

    name = "ge2e-numpy"
    model = "resemblyzer-ge2e-256"
    capabilities: Sequence[str] = ("embedding", "enrollment", "diarization", "decode_containers")
    dims = EMBEDDING_SIZE
    aux_models: Sequence[str] = ("silero-vad-v6",)

    def __init__(
        self,
        weights_path: Path | None = None,
        vad_path: Path | None = None,
        *,
        cluster_threshold: float = 0.71,
        window_s: float = 1.5,
        hop_s: float = 0.75,
        min_cluster_window_s: float = 1.0,
        merge_gap_s: float = 0.5,
        blas_threads: int | None = 1,
    ) -> None:
        """Load the GE2E weights and the Silero VAD (≈0.1 s, no torch).

        ``blas_threads`` (default 1) is applied process-wide to numpy's OpenBLAS (see
        :func:`~scaidevstack.node.engines.ge2e.limit_blas_threads`); None leaves it alone.
        """
        if blas_threads is not None:
            limit_blas_threads(blas_threads)
        self.encoder = VoiceEncoder(weights_path)
        self.vad = SileroVad(vad_path)
        self.cluster_threshold = cluster_threshold
        self._win = int(window_s * SAMPLING_RATE)
        self._hop = int(hop_s * SAMPLING_RATE)
        self._min_cluster_window = int(min_cluster_window_s * SAMPLING_RATE)
        self._merge_gap = int(merge_gap_s * SAMPLING_RATE)

    def embed(self, audio: np.ndarray) -> tuple[np.ndarray, int]:
        """L2-normalised embedding of the speech in 16 kHz int16 audio and the speech ms used.

        The audio goes through resemblyzer's ``preprocess_wav`` (volume up to -30 dBFS,
        silences trimmed by VAD); ``ValueError`` when less than 1 s remains.
        """
        wav = preprocess_wav(int16_to_float(np.asarray(audio).reshape(-1)), self.vad)
        speech_ms = wav.size * 1000 // SAMPLING_RATE
        if speech_ms < MIN_SPEECH_MS:
            raise ValueError(f"only {speech_ms} ms of speech after VAD; at least 1 s is needed")
        return self.encoder.embed_utterance(wav), int(speech_ms)

    def diarize(
        self,
        audio: np.ndarray,
        candidates: Mapping[str, np.ndarray],
        *,
        min_speakers: int = 0,
        max_speakers: int = 0,
        match_threshold: float = 0.5,
    ) -> list[DiarizedTurn]:
        """Speaker turns in time order, matched to candidates as scaiinfer.proto.md §3.10.

        ``min_speakers``/``max_speakers`` of 0 mean "not given"; ``ValueError`` when both are
        given and min > max, or when a candidate is not a 256-dim vector. Audio without speech
        gives no turns.
        """
        if min_speakers < 0 or max_speakers < 0:
            raise ValueError("min_speakers and max_speakers must not be negative")
        if min_speakers and max_speakers and min_speakers > max_speakers:
            raise ValueError("min_speakers is greater than max_speakers")
        for speaker_id, embedding in candidates.items():
            if np.asarray(embedding).shape != (self.dims,):
                raise ValueError(f"candidate {speaker_id!r} is not a {self.dims}-dim embedding")
        wav = int16_to_float(np.asarray(audio).reshape(-1))
        regions = speech_regions(self.vad.probabilities(wav), wav.size)
        windows = _windows(regions, self._win, self._hop)
        if not windows:
            return []
        embeddings = self.encoder.embed_utterances(
            [normalize_volume(wav[w.start : w.end]) for w in windows]
        )
        labels = self._cluster(windows, embeddings, min_speakers, max_speakers)
        spans = self._spans(windows, labels, self._merge_gap)
        n_clusters = int(labels.max()) + 1
        centroids = [_unit(embeddings[labels == k].mean(axis=0)) for k in range(n_clusters)]
        first = [min(s for s, _, lab in spans if lab == k) for k in range(n_clusters)]
        names = match_candidates(centroids, first, candidates, match_threshold)
        return [
            DiarizedTurn(
                start_ms=start * 1000 // SAMPLING_RATE,
                end_ms=end * 1000 // SAMPLING_RATE,
                speaker_id=names[label][0],
                label=names[label][1],
                similarity=names[label][2],
            )
            for start, end, label in spans
        ]

    def _cluster(
        self,
        windows: list[_Window],
        embeddings: FloatArray,
        min_speakers: int,
        max_speakers: int,
    ) -> np.ndarray:
        """Cluster the long windows; short ones join the nearest resulting centroid."""
        long_mask = np.array([w.end - w.start >= self._min_cluster_window for w in windows])
        if not long_mask.any():
            long_mask[:] = True
        core = agglomerate(
            embeddings[long_mask], self.cluster_threshold, min_speakers, max_speakers
        )
        labels = np.empty(len(windows), dtype=np.int64)
        labels[long_mask] = core
        if not long_mask.all():
            centroids = np.stack(
                [
                    _unit(embeddings[long_mask][core == k].mean(axis=0))
                    for k in range(core.max() + 1)
                ]
            )
            labels[~long_mask] = np.argmax(embeddings[~long_mask] @ centroids.T, axis=1)
        # Renumber by first appearance in time.
        _, first_index, inverse = np.unique(labels, return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first_index))
        return np.asarray(order[inverse], dtype=np.int64)

    @staticmethod
    def _spans(
        windows: list[_Window], labels: np.ndarray, merge_gap: int
    ) -> list[tuple[int, int, int]]:
        """(start, end, label) sample spans of the windows.

        Overlapping windows of one region split their overlap at its midpoint; consecutive
        spans of the same label merge when they touch or the pause between them is shorter
        than ``merge_gap`` samples.
        """
        spans: list[tuple[int, int, int]] = []
        for k, window in enumerate(windows):
            start, end = window.start, window.end
            if k > 0 and windows[k - 1].region == window.region:
                start = (window.start + windows[k - 1].end) // 2
            if k + 1 < len(windows) and windows[k + 1].region == window.region:
                end = (windows[k + 1].start + window.end) // 2
            label = int(labels[k])
            if spans and spans[-1][2] == label and start - spans[-1][1] < merge_gap:
                spans[-1] = (spans[-1][0], end, label)
            else:
                spans.append((start, end, label))
        return spans
