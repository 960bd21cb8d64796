"""Resolve the backend under the tenant policy and dispatch, failing over once (platform §5.4)."""

from __future__ import annotations

import time

import structlog

from scaicommon.audio import Pcm
from scaicommon.errors import ScaiError
from scaicommon.nodes import NodeInfo
from scaicommon.policy import Choice, PolicyStore, resolve_backend
from scaicommon.runtime import Runtime
from scaiecho.dispatch.node import transcribe_on_node
from scaiecho.dispatch.options import OriginalAudio, TranscribeOptions
from scaiecho.dispatch.relay import transcribe_on_relay
from scaiecho.settings import EchoSettings
from scaiecho.transcript import Transcript

log = structlog.get_logger("scaiecho.dispatch")

ENGINE_KIND = "audio.transcribe"


class Dispatcher:
    """Backend resolution and the transcription call, shared by every ScaiEcho path."""

    def __init__(self, runtime: Runtime, settings: EchoSettings, policies: PolicyStore) -> None:
        self._runtime = runtime
        self._settings = settings
        self._policies = policies

    async def resolve(self, tenant_id: str, preference: str | None) -> Choice[NodeInfo]:
        """The backend for a request now (502 ``SCAIECHO_BACKEND_UNAVAILABLE`` when none)."""
        policy = await self._policies.get_or_provision(tenant_id)
        return await resolve_backend(
            policy,
            preference,
            module="scaiecho",
            engine_kind=ENGINE_KIND,
            node_resolver=self._runtime.nodes.node_resolver,
            relay_usable=self._runtime.relay.usable,
            api_form="echo",
        )

    async def _call(
        self,
        choice: Choice[NodeInfo],
        pcm: Pcm,
        options: TranscribeOptions,
        original: OriginalAudio | None,
        tenant_id: str,
        user_id: str,
    ) -> Transcript:
        if choice.backend == "A":
            assert choice.node is not None
            return await transcribe_on_node(
                self._runtime.node_client,
                choice.node,
                pcm,
                options,
                tenant_id=tenant_id,
                user_id=user_id,
            )
        return await transcribe_on_relay(
            self._runtime.relay,
            pcm,
            options,
            original=original,
            max_upload_bytes=self._settings.relay_max_upload_bytes,
            word_timestamps=self._settings.relay_word_timestamps,
        )

    async def transcribe(
        self,
        choice: Choice[NodeInfo],
        pcm: Pcm,
        options: TranscribeOptions,
        *,
        original: OriginalAudio | None,
        tenant_id: str,
        user_id: str,
    ) -> Transcript:
        """Run the transcription on ``choice``; on a failover-eligible failure (nothing has
        been returned yet in batch) move once to the next usable candidate.

        Raises the backend's mapped :class:`ScaiError`; ``SCAIECHO_BACKEND_UNAVAILABLE`` (with
        the failed candidate in ``resolution``) when failover ran out.
        """
        metrics = self._runtime.metrics
        started = time.monotonic()
        target = choice
        try:
            try:
                transcript = await self._call(target, pcm, options, original, tenant_id, user_id)
            except ScaiError as error:
                if not error.failover_eligible:
                    raise
                log.warning("dispatch_failover", backend=target.backend, code=error.code)
                target = await choice.failover_after(error)
                transcript = await self._call(target, pcm, options, original, tenant_id, user_id)
        except ScaiError:
            metrics.observe_dispatch(target.backend, "transcribe", "error")
            raise
        metrics.observe_dispatch(
            transcript.backend, "transcribe", "success", time.monotonic() - started
        )
        return transcript
