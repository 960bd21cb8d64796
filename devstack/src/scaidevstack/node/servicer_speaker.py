"""Speaker RPCs (engine kind ``audio.analyze.pyannote``): embed, enrol, evict, list, diarize."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaidevstack.node import errors
from scaidevstack.node.engines.base import SpeakerAnalysis, SpeakerEntry
from scaidevstack.node.inputs import Limits, check_input_shape, decode_input
from scaidevstack.node.servicer_base import ServicerBase, rpc
from scaidevstack.node.servicer_stt import MAX_CANDIDATES, TRANSCRIBE_MAX_BYTES, attribution
from scaidevstack.node.speaker_support import DEFAULT_MATCH_THRESHOLD, DiarizeSetup
from scaidevstack.node.state import SPEAKER

EMBED_LIMITS = Limits(max_bytes=16 * 1024 * 1024, max_ms=120_000)
STORE_FULL_RETRY_MS = 60_000


def _require(engine: SpeakerAnalysis, capability: str) -> None:
    if capability not in engine.capabilities:
        raise errors.unsupported(f"this engine has no {capability}")


class SpeakerServicer(ServicerBase):
    """The speaker-analysis RPCs."""

    async def _embed(self, engine: SpeakerAnalysis, audio: pb.AudioInput) -> tuple[Any, int]:
        samples = await asyncio.to_thread(decode_input, audio, EMBED_LIMITS, engine.capabilities)
        try:
            return await asyncio.to_thread(engine.embed, samples)
        except ValueError as exc:
            raise errors.invalid("AUDIO_INVALID", str(exc)[:200]) from None

    @rpc()
    async def EmbedSpeaker(self, request: pb.EmbedSpeakerRequest, context: Any) -> Any:
        """L2-normalised embedding of one clip (stateless)."""
        engine = self.state.require_speaker()
        _require(engine, "embedding")
        check_input_shape(request.audio, EMBED_LIMITS, engine.capabilities)
        with self.state.admission.acquire(SPEAKER):
            embedding, speech_ms = await self._embed(engine, request.audio)
        return pb.EmbedSpeakerResponse(
            embedding=[float(x) for x in embedding],
            dims=len(embedding),
            model=engine.model,
            speech_ms=int(speech_ms),
        )

    @rpc()
    async def EnrollSpeaker(self, request: pb.EnrollSpeakerRequest, context: Any) -> Any:
        """Store (or replace) a speaker's embedding under ``(tenant_id, speaker_id)``."""
        engine = self.state.require_speaker()
        _require(engine, "enrollment")
        if not request.tenant_id or not request.speaker_id:
            raise errors.bad_param("tenant_id and speaker_id are required")
        check_input_shape(request.reference, EMBED_LIMITS, engine.capabilities)
        store = self.state.speaker_store
        key_known = store.get(request.tenant_id, request.speaker_id) is not None
        if not key_known and len(store) >= store.capacity:
            raise self._store_full()
        with self.state.admission.acquire(SPEAKER):
            embedding, speech_ms = await self._embed(engine, request.reference)
        entry = SpeakerEntry(
            tenant_id=request.tenant_id,
            speaker_id=request.speaker_id,
            embedding=embedding,
            enrolled_at_unix_ms=int(time.time() * 1000),
            model=engine.model,
        )
        try:
            replaced = store.enroll(entry)
        except RuntimeError:
            raise self._store_full() from None
        return pb.EnrollSpeakerResponse(
            ok=True,
            embedding_dims=len(embedding),
            model=engine.model,
            replaced=bool(replaced),
            speech_ms=int(speech_ms),
        )

    def _store_full(self) -> errors.NodeError:
        return errors.NodeError(
            errors.S.RESOURCE_EXHAUSTED,
            "AT_CAPACITY",
            "the speaker store of this node is full",
            retry_after_ms=STORE_FULL_RETRY_MS,
        )

    @rpc()
    async def EvictSpeaker(self, request: pb.EvictSpeakerRequest, context: Any) -> Any:
        """Remove a stored speaker (idempotent, never refused for capacity)."""
        self.state.require_speaker()
        if not request.tenant_id or not request.speaker_id:
            raise errors.bad_param("tenant_id and speaker_id are required")
        evicted = self.state.speaker_store.evict(request.tenant_id, request.speaker_id)
        return pb.EvictSpeakerResponse(evicted=bool(evicted))

    @rpc()
    async def ListSpeakers(self, request: pb.ListSpeakersRequest, context: Any) -> Any:
        """Speakers held, for one tenant or all, sorted by (tenant_id, speaker_id)."""
        self.state.require_speaker()
        entries = self.state.speaker_store.list(request.tenant_id or None)
        return pb.ListSpeakersResponse(
            speakers=[
                pb.WarmSpeaker(
                    tenant_id=e.tenant_id,
                    speaker_id=e.speaker_id,
                    enrolled_at_unix_ms=int(e.enrolled_at_unix_ms),
                    embedding_dims=len(e.embedding),
                    model=e.model,
                )
                for e in entries
            ]
        )

    @rpc()
    async def Diarize(self, request: pb.DiarizeRequest, context: Any) -> Any:
        """Who spoke when, matched against enrolled candidates (§3.10)."""
        engine = self.state.require_speaker()
        _require(engine, "diarization")
        if len(request.candidate_speaker_ids) > MAX_CANDIDATES:
            raise errors.bad_param(f"at most {MAX_CANDIDATES} candidate speakers")
        if request.candidate_speaker_ids and not request.tenant_id:
            raise errors.bad_param("tenant_id is required with candidate speakers")
        if (
            request.min_speakers
            and request.max_speakers
            and request.min_speakers > request.max_speakers
        ):
            raise errors.bad_param("min_speakers is greater than max_speakers")
        threshold = DEFAULT_MATCH_THRESHOLD
        if request.HasField("match_threshold"):
            threshold = request.match_threshold
            if math.isnan(threshold) or not -1.0 <= threshold <= 1.0:
                raise errors.bad_param("match_threshold must be within -1..1")
        limits = Limits(max_bytes=TRANSCRIBE_MAX_BYTES, max_ms=self.state.config.max_audio_ms)
        check_input_shape(request.audio, limits, engine.capabilities)
        setup = DiarizeSetup.resolve(self.state, request.tenant_id, request.candidate_speaker_ids)
        setup.min_speakers = request.min_speakers
        setup.max_speakers = request.max_speakers
        setup.match_threshold = float(threshold)
        with self.state.admission.acquire(SPEAKER):
            audio = await asyncio.to_thread(
                decode_input, request.audio, limits, engine.capabilities
            )
            try:
                turns = await asyncio.to_thread(setup.run, audio)
            except ValueError as exc:
                raise errors.bad_param(str(exc)[:200]) from None
        labels: list[str] = []
        segments = []
        for turn in sorted(turns, key=lambda t: (t.start_ms, t.end_ms)):
            if turn.label not in labels:
                labels.append(turn.label)
            segments.append(
                pb.DiarizedSegment(
                    start_ms=turn.start_ms, end_ms=turn.end_ms, speaker=attribution(turn)
                )
            )
        return pb.DiarizeResponse(
            segments=segments,
            duration_ms=int(audio.size * 1000 // 16000),
            labels=labels,
            model=engine.model,
        )
