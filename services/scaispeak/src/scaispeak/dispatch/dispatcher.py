"""Resolve the backend for a voice under the tenant policy and synthesise, failing over once
before any audio (scaispeak.md §3, platform §5.4)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace

import structlog

from scaicommon.audio import Pcm
from scaicommon.errors import ScaiError
from scaicommon.nodes import NodeInfo
from scaicommon.policy import Choice, PolicyStore, resolve_backend
from scaicommon.relay import speech_voice_reason
from scaicommon.runtime import Runtime
from scaicommon.warm import WarmRegistry
from scaispeak.dispatch.node import ENGINE_KIND, NODE_MAX_CHARS, NodeVoice, synthesize_on_node
from scaispeak.dispatch.params import SynthesisParams, SynthesisProgress
from scaispeak.dispatch.reference import Reference, load_reference, node_tenant
from scaispeak.dispatch.relay import synthesize_on_relay
from scaispeak.dispatch.text import split_text
from scaispeak.settings import SpeakSettings
from scaispeak.store.voices import Voice

log = structlog.get_logger("scaispeak.dispatch")


def _capabilities(voice: Voice) -> tuple[str, ...]:
    return ("cloning",) if voice.needs_reference else ()


class _OnceLoader:
    """Reads the reference clip from S3 at most once per synthesis."""

    def __init__(self, runtime: Runtime, voice: Voice) -> None:
        self._runtime = runtime
        self._voice = voice
        self._reference: Reference | None = None

    async def __call__(self) -> Reference:
        if self._reference is None:
            self._reference = await load_reference(self._runtime.objects, self._voice)
        return self._reference


class SpeakDispatcher:
    """Backend resolution and the synthesis call, shared by every ScaiSpeak path."""

    def __init__(self, runtime: Runtime, settings: SpeakSettings, policies: PolicyStore) -> None:
        self._runtime = runtime
        self._settings = settings
        self._policies = policies
        self._warm = WarmRegistry(runtime.redis, runtime.spec.module)

    def relay_reason(self, voice: Voice) -> str | None:
        """``None`` when the relay can speak ``voice`` now, else the §5.4 relay reason."""
        return self._runtime.relay.usable(
            speech_voice_reason(
                relay_voice=voice.relay_voice,
                has_reference=voice.needs_reference,
                supports_cloning=self._settings.relay_supports_cloning,
            )
        )

    async def resolve(
        self, tenant_id: str, voice: Voice, preference: str | None
    ) -> Choice[NodeInfo]:
        """The backend for ``voice`` now (502 ``SCAISPEAK_BACKEND_UNAVAILABLE`` when none).

        A needs a node with ``cloning`` for reference voices and is never usable for a global
        voice without a clip (§3.2).
        """
        policy = await self._policies.get_or_provision(tenant_id)
        nodes = self._runtime.nodes

        async def node_resolver(kind: str, capabilities: tuple[str, ...]) -> NodeInfo | None:
            if not voice.needs_reference:
                return None
            return await nodes.node_resolver(kind, capabilities)

        return await resolve_backend(
            policy,
            preference,
            module="scaispeak",
            engine_kind=ENGINE_KIND,
            capabilities=_capabilities(voice),
            node_resolver=node_resolver,
            relay_usable=lambda: self.relay_reason(voice),
            api_form="speak",
        )

    async def _next(
        self, failed: Choice[NodeInfo], voice: Voice, error: ScaiError
    ) -> Choice[NodeInfo]:
        """The one failover after ``error``: another A node when there is one, else the next
        backend (see :meth:`Choice.failover_after` for what is raised when none is left)."""
        if failed.backend == "A" and failed.node is not None:
            other = await self._runtime.nodes.resolve_audio_node(
                ENGINE_KIND, capabilities=_capabilities(voice), exclude=(failed.node.node_id,)
            )
            if other is not None:
                return replace(failed, node=other, fallbacks=())
        return await failed.failover_after(error)

    async def synthesize(
        self,
        choice: Choice[NodeInfo],
        voice: Voice,
        text: str,
        params: SynthesisParams,
        *,
        tenant_id: str,
        user_id: str,
        progress: SynthesisProgress,
    ) -> AsyncGenerator[Pcm, None]:
        """PCM chunks of ``text`` as the backend produces them.

        A failover-eligible failure before the first audio moves once to the next usable
        candidate; after it, failures are raised as they are. ``progress`` tells which backend
        produced the audio and how far it got. Raises the backend's mapped :class:`ScaiError`;
        ``SCAISPEAK_BACKEND_UNAVAILABLE`` (with the failed candidate) when failover ran out.
        """
        metrics = self._runtime.metrics
        started = time.monotonic()
        loader = _OnceLoader(self._runtime, voice)
        current = choice
        failed_over = False
        while True:
            progress.backend = current.backend
            progress.node_id = current.node.node_id if current.node else None
            try:
                async with contextlib.aclosing(
                    self._run(current, voice, text, params, loader, tenant_id, user_id, progress)
                ) as chunks:
                    async for pcm in chunks:
                        yield pcm
                break
            except ScaiError as error:
                if progress.started or failed_over or not error.failover_eligible:
                    metrics.observe_dispatch(current.backend, "synthesize", "error")
                    raise
                log.warning("dispatch_failover", backend=current.backend, code=error.code)
                try:
                    current = await self._next(current, voice, error)
                except ScaiError:
                    metrics.observe_dispatch(current.backend, "synthesize", "error")
                    raise
                failed_over = True
        metrics.observe_dispatch(
            current.backend, "synthesize", "success", time.monotonic() - started
        )

    def _run(
        self,
        choice: Choice[NodeInfo],
        voice: Voice,
        text: str,
        params: SynthesisParams,
        loader: Callable[[], Awaitable[Reference]],
        tenant_id: str,
        user_id: str,
        progress: SynthesisProgress,
    ) -> AsyncGenerator[Pcm, None]:
        if choice.backend == "A":
            assert choice.node is not None
            return self._on_node(
                choice.node, voice, text, params, loader, tenant_id, user_id, progress
            )
        progress.engine = self._runtime.relay.model
        return synthesize_on_relay(
            self._runtime.relay,
            voice,
            split_text(text, self._settings.relay_max_input_chars),
            params,
            loader,
            tts_format=self._settings.relay_tts_format,
            progress=progress,
        )

    async def _on_node(
        self,
        node: NodeInfo,
        voice: Voice,
        text: str,
        params: SynthesisParams,
        loader: Callable[[], Awaitable[Reference]],
        tenant_id: str,
        user_id: str,
        progress: SynthesisProgress,
    ) -> AsyncGenerator[Pcm, None]:
        engine = node.engine(ENGINE_KIND)
        progress.engine = (engine.model or engine.name) if engine else None
        containers = engine is not None and "decode_containers" in engine.capabilities
        scope = node_tenant(voice)
        held = await self._warm.entries("voice", scope, voice.id)
        warm = held.get(node.node_id, (None, 0))[0] == node.started_at
        chunks = synthesize_on_node(
            self._runtime.node_client,
            node,
            NodeVoice(voice, loader, containers=containers),
            split_text(text, NODE_MAX_CHARS),
            params,
            node_tenant_id=scope,
            tenant_id=tenant_id,
            user_id=user_id,
            progress=progress,
            warm=warm,
        )
        async with contextlib.aclosing(chunks):
            async for pcm in chunks:
                yield pcm
