"""Backend A: ``Synthesize`` on a ScaiInfer node, piece by piece for long texts."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Final

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.audio import Pcm
from scaicommon.grpcclient import NodeCallError, NodeClient
from scaicommon.nodes import NodeInfo
from scaispeak.dispatch.params import SynthesisParams, SynthesisProgress
from scaispeak.dispatch.reference import REFERENCE_RATE, Reference
from scaispeak.store.voices import Voice

ENGINE_KIND: Final = "audio.synthesize"
#: ``SynthesizeRequest.text`` limit (scaiinfer.proto.md §1.3).
NODE_MAX_CHARS: Final = 10_000

ReferenceLoader = Callable[[], Awaitable[Reference]]


class NodeVoice:
    """The ``VoiceSpec`` of a reference voice for one node.

    The clip goes as the stored WAV when the engine decodes containers, else as raw PCM;
    ``content_sha256`` is the hash of the bytes as sent. Once the node has had the clip,
    :meth:`cached` omits the audio (the node keeps it under that hash) and a
    ``VOICE_NOT_CACHED`` answer is met by sending it again (platform §6.7).
    """

    def __init__(self, voice: Voice, load: ReferenceLoader, *, containers: bool) -> None:
        self._voice = voice
        self._load = load
        self._containers = containers
        self.sha256: str | None = voice.reference_sha256 if containers else None

    def _spec(self, audio: pb.AudioInput, sha: str, text: str | None) -> pb.VoiceSpec:
        reference = pb.ReferenceVoice(audio=audio, text=text or "", content_sha256=sha)
        return pb.VoiceSpec(voice_id=self._voice.id, reference=reference)

    def _input(self, data: bytes) -> pb.AudioInput:
        if self._containers:
            return pb.AudioInput(data=data, media_type="audio/wav")
        spec = pb.PcmSpec(
            sample_rate_hz=REFERENCE_RATE, channels=1, sample_format=pb.SAMPLE_FORMAT_S16LE
        )
        return pb.AudioInput(data=data, pcm=spec)

    async def full(self) -> pb.VoiceSpec:
        """The spec with the clip."""
        reference = await self._load()
        data = reference.wav if self._containers else await reference.pcm()
        self.sha256 = reference.sha256 if self._containers else hashlib.sha256(data).hexdigest()
        return self._spec(self._input(data), self.sha256, reference.text)

    def cached(self) -> pb.VoiceSpec | None:
        """The spec without the clip, or ``None`` while its hash is unknown."""
        if self.sha256 is None:
            return None
        return self._spec(self._input(b""), self.sha256, self._voice.reference_text)


def _options(params: SynthesisParams, *, first: bool) -> pb.SynthesisOptions:
    return pb.SynthesisOptions(
        language=params.language or "",
        speed=params.speed,
        instructions=params.instructions or "",
        cfg_value=params.cfg_value,
        # The warm-up trim applies to the start of the output, so only to the first piece.
        warmup_trim_ms=params.warmup_trim_ms if first else 0,
        sample_rate_hz=params.sample_rate,
    )


async def synthesize_on_node(
    client: NodeClient,
    node: NodeInfo,
    voice: NodeVoice,
    pieces: Sequence[str],
    params: SynthesisParams,
    *,
    node_tenant_id: str,
    tenant_id: str,
    user_id: str,
    progress: SynthesisProgress,
    warm: bool = False,
) -> AsyncGenerator[Pcm, None]:
    """PCM chunks of every piece at ``params.sample_rate``, as the node produces them.

    ``warm`` (the warm registry says the node holds the voice) omits the clip from the first
    call. Streams are never retried here; only a ``VOICE_NOT_CACHED`` answer before any audio
    of the call resends the clip once. Raises :class:`NodeCallError`.
    """
    cached = voice.cached() if warm else None
    spec = cached if cached is not None else await voice.full()
    omitted = cached is not None
    for index, piece in enumerate(pieces):
        request = pb.SynthesizeRequest(
            tenant_id=node_tenant_id,
            text=piece,
            voice=spec,
            options=_options(params, first=index == 0),
        )
        produced = False
        try:
            async with contextlib.aclosing(
                _call(client, node, request, tenant_id, user_id, progress)
            ) as chunks:
                async for pcm in chunks:
                    produced = True
                    yield pcm
        except NodeCallError as error:
            if not (omitted and error.needs_resupply and not produced):
                raise
            request.voice.CopyFrom(await voice.full())
            async with contextlib.aclosing(
                _call(client, node, request, tenant_id, user_id, progress)
            ) as chunks:
                async for pcm in chunks:
                    yield pcm
        progress.chars_done += len(piece)
        # The node now holds the clip under its hash: later pieces go without it.
        cached = voice.cached()
        if cached is not None:
            spec, omitted = cached, True


async def _call(
    client: NodeClient,
    node: NodeInfo,
    request: pb.SynthesizeRequest,
    tenant_id: str,
    user_id: str,
    progress: SynthesisProgress,
) -> AsyncGenerator[Pcm, None]:
    stream = client.stream(
        "Synthesize",
        node,
        request,
        tenant_id=tenant_id,
        user_id=user_id,
        chars=len(request.text),
    )
    try:
        while (message := await stream.read()) is not None:
            kind = message.WhichOneof("payload")
            if kind == "chunk" and message.chunk.pcm:
                chunk = message.chunk
                progress.started = True
                progress.audio_ms += chunk.duration_ms
                yield Pcm(bytes(chunk.pcm), chunk.sample_rate_hz or request.options.sample_rate_hz)
            elif kind == "stats" and message.stats.model:
                progress.engine = message.stats.model
    finally:
        stream.cancel()  # a no-op after a normal end; stops the node when the consumer left
