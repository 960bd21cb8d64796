"""``Synthesize``, ``StreamSynthesize`` and ``EvictVoice`` (engine kind ``audio.synthesize``)."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import grpc.aio

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaidevstack.node import errors
from scaidevstack.node.engines.base import TextToSpeech, VoiceProfile
from scaidevstack.node.servicer_base import ServicerBase, rpc
from scaidevstack.node.state import TTS
from scaidevstack.node.synthesis import (
    MAX_TEXT,
    Chunker,
    OutputCounter,
    SynthParams,
    check_text,
    iterate_in_thread,
    resolve_voice,
    synth_params,
)

MAX_BUFFERED_TEXT = 20_000
SOFT_CUT_CHARS = 250
_SENTENCE_END = re.compile(r"[.!?;…](?=\s|$)|\n")


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def take_ready_text(buffer: str) -> tuple[str, str]:
    """Split ``buffer`` into (text to synthesise now, text to keep buffered) per §3.6.

    Everything up to the last sentence end is ready; without one, a buffer over 250
    characters is cut at its last whitespace.
    """
    last = None
    for match in _SENTENCE_END.finditer(buffer):
        last = match
    if last is not None:
        return buffer[: last.end()], buffer[last.end() :]
    if len(buffer) > SOFT_CUT_CHARS:
        cut = max(buffer.rfind(" "), buffer.rfind("\t"), buffer.rfind("\n"))
        if cut <= 0:
            return buffer, ""
        return buffer[:cut], buffer[cut:]
    return "", buffer


class TtsServicer(ServicerBase):
    """The synthesis RPCs."""

    @rpc()
    async def Synthesize(self, request: pb.SynthesizeRequest, context: Any) -> None:
        """Text to speech for a complete text: ordered chunks, then one ``stats``."""
        received = time.monotonic()
        tts = self.state.require_tts()
        text = check_text(request.text)
        params = synth_params(tts, request.options)
        with self.state.admission.acquire(TTS):
            profile, hit = await resolve_voice(
                tts, self.state.voices, request.tenant_id, request.voice
            )
            chunker = Chunker(int(tts.sample_rate), params.sample_rate, params.trim_ms)
            out = OutputCounter(params.sample_rate)
            async for audio in iterate_in_thread(tts.synthesize(text, profile, speed=params.speed)):
                for pcm in chunker.split(audio):
                    chunk = out.chunk(pcm, time.monotonic())
                    await context.write(pb.SynthesizeResponse(chunk=chunk))
            stats = _stats(tts, params, out, received, chars=len(text), cache_hit=hit)
            stats.processing_ms = _ms_since(received)
            await context.write(pb.SynthesizeResponse(stats=stats))

    @rpc(error_event=lambda e: pb.StreamSynthesizeEvent(error=e.stream_error()))
    async def StreamSynthesize(self, request_iterator: Any, context: Any) -> None:
        """Text to speech for incrementally arriving text (§3.6)."""
        tts = self.state.require_tts()
        idle_s = self.state.config.stream_idle_s
        try:
            first = await asyncio.wait_for(context.read(), idle_s)
        except TimeoutError:
            raise errors.stream_idle(idle_s) from None
        if first is grpc.aio.EOF or first.WhichOneof("payload") != "config":
            raise errors.protocol_violation("the first message must be the config")
        if "streaming" not in tts.capabilities:
            raise errors.unsupported("this engine has no streaming synthesis")
        cfg = first.config
        params = synth_params(tts, cfg.options)
        with self.state.admission.acquire(TTS):
            profile, hit = await resolve_voice(tts, self.state.voices, cfg.tenant_id, cfg.voice)
            session = _SynthSession(context, tts, profile, params, hit, idle_s)
            await session.run()

    @rpc()
    async def EvictVoice(self, request: pb.EvictVoiceRequest, context: Any) -> Any:
        """Drop everything derived from ``(tenant_id, voice_id)`` (idempotent, never refused)."""
        self.state.require_tts()
        if not request.tenant_id or not request.voice_id:
            raise errors.bad_param("tenant_id and voice_id are required")
        evicted = self.state.voices.evict(request.tenant_id, request.voice_id)
        return pb.EvictVoiceResponse(evicted=evicted)


def _stats(
    tts: TextToSpeech,
    params: SynthParams,
    out: OutputCounter,
    started: float | None,
    *,
    chars: int,
    cache_hit: bool,
) -> pb.SynthesisStats:
    first = 0
    if out.first_chunk_at is not None and started is not None:
        first = int((out.first_chunk_at - started) * 1000)
    return pb.SynthesisStats(
        chars=chars,
        audio_ms=out.audio_ms,
        chunks=out.sequence,
        first_chunk_ms=first,
        sample_rate_hz=params.sample_rate,
        model=tts.model,
        voice_cache_hit=cache_hit,
        ignored_options=list(params.ignored),
    )


@dataclass
class _Job:
    """One unit of the generation queue: text, a FLUSH marker or the CLOSE marker."""

    kind: str  # "text" | "flush" | "close"
    epoch: int
    text: str = ""


class _SynthSession:
    """One ``StreamSynthesize`` call after its config.

    The handler task reads client messages and queues jobs; a generation task synthesises
    them in order. Every write happens under one lock, and ``INTERRUPT`` bumps ``epoch`` under
    that lock, so no chunk of dropped text can follow the ``interrupted`` event.
    """

    def __init__(
        self,
        context: Any,
        tts: TextToSpeech,
        profile: VoiceProfile,
        params: SynthParams,
        cache_hit: bool,
        idle_s: float,
    ) -> None:
        self.context = context
        self.tts = tts
        self.profile = profile
        self.params = params
        self.cache_hit = cache_hit
        self.idle_s = idle_s
        self.chunker = Chunker(int(tts.sample_rate), params.sample_rate, params.trim_ms)
        self.out = OutputCounter(params.sample_rate)
        self.lock = asyncio.Lock()
        self.epoch = 0
        self.buffer = ""
        self.jobs: deque[_Job] = deque()
        self.jobs_ready = asyncio.Event()
        self.current: _Job | None = None
        self.first_text_at: float | None = None
        self.chars_done = 0
        self.flush_chars = 0
        self.flush_last_seq: int | None = None
        self.processing_s = 0.0
        self.generator: asyncio.Task[None]

    # ----- reader side --------------------------------------------------------------------

    async def run(self) -> None:
        self.generator = asyncio.create_task(self._generate())
        read: asyncio.Future[Any] | None = None
        try:
            while True:
                if read is None:
                    read = asyncio.ensure_future(self.context.read())
                done, _ = await asyncio.wait(
                    {read, self.generator},
                    timeout=self.idle_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if self.generator.done():
                    self.generator.result()
                    raise errors.internal()  # the generator ends only after CLOSE
                if not done:
                    raise errors.stream_idle(self.idle_s)
                msg = read.result()
                read = None
                if await self._handle(msg):
                    break
            await self.generator
            await self._write(
                pb.StreamSynthesizeEvent(
                    done=_stats(
                        self.tts,
                        self.params,
                        self.out,
                        self.first_text_at,
                        chars=self.chars_done,
                        cache_hit=self.cache_hit,
                    )
                ),
                processing=True,
            )
        finally:
            self.generator.cancel()
            if read is not None:
                read.cancel()

    async def _handle(self, msg: Any) -> bool:
        """Apply one client message; ``True`` once the stream is closing."""
        if msg is grpc.aio.EOF:
            self._dispatch(self.buffer)
            self._queue(_Job("close", self.epoch))
            return True
        kind = msg.WhichOneof("payload")
        if kind == "text":
            delta = msg.text.text
            if len(delta) > MAX_TEXT:
                raise errors.invalid("TEXT_TOO_LONG", f"a TextDelta is over {MAX_TEXT} characters")
            if self.first_text_at is None and delta:
                self.first_text_at = time.monotonic()
            self.buffer += delta
            if self._buffered_chars() > MAX_BUFFERED_TEXT:
                raise errors.buffer_overflow(f"over {MAX_BUFFERED_TEXT} characters buffered")
            ready, self.buffer = take_ready_text(self.buffer)
            self._dispatch(ready)
            return False
        if kind == "control":
            action = msg.control.action
            if action == pb.SYNTHESIS_CONTROL_ACTION_FLUSH:
                self._dispatch(self.buffer)
                self.buffer = ""
                self._queue(_Job("flush", self.epoch))
                return False
            if action == pb.SYNTHESIS_CONTROL_ACTION_INTERRUPT:
                await self._interrupt()
                return False
            if action == pb.SYNTHESIS_CONTROL_ACTION_CLOSE:
                self._dispatch(self.buffer)
                self.buffer = ""
                self._queue(_Job("close", self.epoch))
                return True
            raise errors.bad_param(f"unknown synthesis control action {action}")
        if kind == "config":
            raise errors.protocol_violation("config may be sent only once, first")
        raise errors.protocol_violation("empty stream message")

    def _buffered_chars(self) -> int:
        return len(self.buffer) + sum(len(j.text) for j in self.jobs)

    def _dispatch(self, text: str) -> None:
        if text.strip():
            self._queue(_Job("text", self.epoch, text))

    def _queue(self, job: _Job) -> None:
        self.jobs.append(job)
        self.jobs_ready.set()

    async def _interrupt(self) -> None:
        async with self.lock:
            dropped = self._buffered_chars()
            if self.current is not None and self.current.epoch == self.epoch:
                dropped += len(self.current.text)
            self.epoch += 1
            self.buffer = ""
            self.jobs.clear()
            self.flush_chars = 0
            self.flush_last_seq = None
            self.chunker.restart()
            event = pb.Interrupted(dropped_chars=dropped)
            if self.out.last_sequence is not None:
                event.last_sequence = self.out.last_sequence
            await self.context.write(pb.StreamSynthesizeEvent(interrupted=event))
            # Abandon the sentence being rendered (its thread finishes on its own, unread) so
            # new text does not wait for it; a fresh generator serves the new epoch.
            self.generator.cancel()
            self.generator = asyncio.create_task(self._generate())

    # ----- generator side -----------------------------------------------------------------

    async def _next_job(self) -> _Job:
        while not self.jobs:
            self.jobs_ready.clear()
            await self.jobs_ready.wait()
        return self.jobs.popleft()

    async def _generate(self) -> None:
        while True:
            job = await self._next_job()
            if job.kind == "close":
                return
            if job.epoch != self.epoch:
                continue
            if job.kind == "flush":
                async with self.lock:
                    if job.epoch == self.epoch:
                        event = pb.Flushed(chars=self.flush_chars)
                        if self.flush_last_seq is not None:
                            event.last_sequence = self.flush_last_seq
                        self.flush_chars = 0
                        self.flush_last_seq = None
                        await self.context.write(pb.StreamSynthesizeEvent(flushed=event))
                continue
            await self._synthesise(job)

    async def _synthesise(self, job: _Job) -> None:
        self.current = job
        started = time.monotonic()
        try:
            sentences = self.tts.synthesize(job.text, self.profile, speed=self.params.speed)
            async for audio in iterate_in_thread(sentences):
                if job.epoch != self.epoch:
                    return  # interrupted: stop at this sentence boundary
                for pcm in self.chunker.split(audio):
                    async with self.lock:
                        if job.epoch != self.epoch:
                            return
                        chunk = self.out.chunk(pcm, time.monotonic())
                        self.flush_last_seq = chunk.sequence
                        await self.context.write(pb.StreamSynthesizeEvent(chunk=chunk))
            if job.epoch == self.epoch:
                self.chars_done += len(job.text)
                self.flush_chars += len(job.text)
        finally:
            if self.current is job:
                self.current = None
            self.processing_s += time.monotonic() - started

    async def _write(self, event: pb.StreamSynthesizeEvent, *, processing: bool = False) -> None:
        if processing and event.HasField("done"):
            event.done.processing_ms = int(self.processing_s * 1000)
        async with self.lock:
            await self.context.write(event)
