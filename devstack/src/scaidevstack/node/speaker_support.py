"""Diarization inside transcription calls: candidate lookup, whole-file turns, live streams."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from scaidevstack.node import errors
from scaidevstack.node.engines.base import DiarizedTurn, SpeakerAnalysis
from scaidevstack.node.state import NodeState

STREAM_RATE = 16000
DEFAULT_MATCH_THRESHOLD = 0.5
DEFAULT_CLUSTER_THRESHOLD = 0.71
STREAM_AUDIO_KEEP_S = 600  # audio kept for attributing finals (the open segment is ≤ 10 s)


def candidate_embeddings(
    state: NodeState, tenant_id: str, speaker_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    """Enrolled embeddings of ``speaker_ids``; ``SPEAKER_NOT_ENROLLED`` names the missing ones."""
    state.require_speaker()
    try:
        found: dict[str, np.ndarray] = state.speaker_store.embeddings_for(tenant_id, speaker_ids)
    except LookupError as exc:
        missing = tuple(getattr(exc, "ids", ()))
        raise errors.speaker_not_enrolled(missing) from None
    return found


@dataclass
class DiarizeSetup:
    """A validated diarization request: engine, candidates and clustering hints."""

    speaker: SpeakerAnalysis
    candidates: dict[str, np.ndarray]
    min_speakers: int = 0
    max_speakers: int = 0
    match_threshold: float = DEFAULT_MATCH_THRESHOLD

    @classmethod
    def resolve(cls, state: NodeState, tenant_id: str, speaker_ids: Sequence[str]) -> DiarizeSetup:
        """Look the candidates up on this node (raises ``SPEAKER_NOT_ENROLLED``)."""
        speaker = state.require_speaker()
        return cls(speaker, candidate_embeddings(state, tenant_id, speaker_ids))

    def run(self, audio: np.ndarray) -> list[DiarizedTurn]:
        """Speaker turns of 16 kHz int16 audio (blocking)."""
        return self.speaker.diarize(
            audio,
            self.candidates,
            min_speakers=self.min_speakers,
            max_speakers=self.max_speakers,
            match_threshold=self.match_threshold,
        )


@dataclass
class _Cluster:
    total: np.ndarray
    label: str
    speaker_id: str
    similarity: float | None
    count: int = 1

    def centroid(self) -> np.ndarray:
        v = self.total / self.count
        n = float(np.linalg.norm(v))
        return v / n if n > 0 else v


@dataclass
class StreamSpeakers:
    """Online speaker attribution of a live stream's finals.

    Each final's audio is embedded; it joins the most similar existing cluster when the cosine
    similarity reaches the engine's clustering threshold, else it opens a cluster. A new cluster
    takes the best untaken candidate with similarity ≥ the match threshold (§3.10), else the
    next ``spk_N`` label. Names never change once given. A final too short to embed (< 1 s of
    speech) takes the previous final's speaker.
    """

    setup: DiarizeSetup
    clusters: list[_Cluster] = field(default_factory=list)
    _audio: bytearray = field(default_factory=bytearray)
    _audio_start: int = 0  # sample index of _audio[0]
    _last: DiarizedTurn | None = None

    def add_audio(self, pcm: bytes) -> None:
        """Keep the stream's audio (the last ``STREAM_AUDIO_KEEP_S`` seconds)."""
        self._audio += pcm
        excess = len(self._audio) - STREAM_AUDIO_KEEP_S * STREAM_RATE * 2
        if excess > 0:
            excess += excess % 2
            del self._audio[:excess]
            self._audio_start += excess // 2

    async def attribute(self, start_ms: int, end_ms: int) -> DiarizedTurn | None:
        """The speaker of ``[start_ms, end_ms]`` of the stream."""
        lo = max(0, start_ms * STREAM_RATE // 1000 - self._audio_start)
        hi = max(lo, end_ms * STREAM_RATE // 1000 - self._audio_start)
        pcm = bytes(self._audio[lo * 2 : hi * 2])
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        try:
            emb, _ = await asyncio.to_thread(self.setup.speaker.embed, audio)
        except ValueError:
            if self._last is None:
                return None
            turn = DiarizedTurn(
                start_ms, end_ms, self._last.speaker_id, self._last.label, self._last.similarity
            )
            self._last = turn
            return turn
        cluster = self._assign(np.asarray(emb, dtype=np.float64))
        turn = DiarizedTurn(start_ms, end_ms, cluster.speaker_id, cluster.label, cluster.similarity)
        self._last = turn
        return turn

    def _assign(self, emb: np.ndarray) -> _Cluster:
        threshold = float(
            getattr(self.setup.speaker, "cluster_threshold", DEFAULT_CLUSTER_THRESHOLD)
        )
        if self.clusters:
            sims = [float(c.centroid() @ emb) for c in self.clusters]
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                self.clusters[best].total = self.clusters[best].total + emb
                self.clusters[best].count += 1
                return self.clusters[best]
        taken = {c.speaker_id for c in self.clusters if c.speaker_id}
        sims_by_id: dict[str, float] = {}
        for cid, cemb in self.setup.candidates.items():
            vec = np.asarray(cemb, dtype=np.float64)
            norm = float(np.linalg.norm(vec) * np.linalg.norm(emb)) or 1.0
            sims_by_id[cid] = float(vec @ emb) / norm
        best_sim = max(sims_by_id.values()) if sims_by_id else None
        free = {k: v for k, v in sims_by_id.items() if k not in taken}
        best_id = max(free, key=lambda k: free[k]) if free else ""
        if best_id and free[best_id] < self.setup.match_threshold:
            best_id = ""
        if best_id:
            cluster = _Cluster(emb, best_id, best_id, best_sim)
        else:
            unnamed = sum(1 for c in self.clusters if not c.speaker_id)
            cluster = _Cluster(emb, f"spk_{unnamed}", "", best_sim)
        self.clusters.append(cluster)
        return cluster
