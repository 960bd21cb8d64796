"""Voice intake: clone (§7.4), design (§7.5) and repromote (§7.10) of scaispeak.md.

The request itself is parsed by :mod:`scaispeak.services.voice_forms`.

Every reference clip is stored normalised as a 24 kHz mono PCM16 WAV at
``scaispeak/voices/{voice_id}/reference.wav`` (``reference_sha256`` = SHA-256 of those WAV
bytes); consent audio is stored as uploaded at ``scaispeak/voices/{voice_id}/consent.<ext>``.

The stored ``preflight`` block of a voice is ``{passed, fail_reasons, metrics}`` (§7.1): the
platform block of §14.4 without ``thresholds`` (which clients must accept) and without the
``advice`` that only the error carries.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from psycopg.types.json import Jsonb

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.adminaudit import Origin
from scaicommon.audio import (
    ACCEPTED_MIME,
    AudioDecodeError,
    AudioTooLong,
    Pcm,
    decode_pcm16,
    detect_container,
    mime_for,
    wav_bytes,
)
from scaicommon.audio.preflight import (
    PreflightResult,
    PreflightThresholds,
    measure_clip,
    run_preflight,
)
from scaicommon.errors import ScaiError, service_unavailable
from scaicommon.grpcclient import NodeCallError
from scaicommon.ids import new_id
from scaicommon.nodes import NodeInfo
from scaicommon.policy import Choice, resolve_backend
from scaicommon.principal import Principal
from scaicommon.storage import ObjectNotFound, StorageError
from scaicommon.uploads import too_large
from scaispeak.deps import SpeakDeps
from scaispeak.services.blocklist import BlocklistService
from scaispeak.services.drive_refs import fetch_reference
from scaispeak.services.voice_forms import (
    AudioPart,
    CloneRequest,
    DesignRequest,
    VoiceFields,
)
from scaispeak.services.voices import VoiceService, audit_voice, voice_not_found
from scaispeak.store.consent import ConsentStore, NewConsent
from scaispeak.store.voices import NewVoice, Voice

log = structlog.get_logger("scaispeak.intake")

REFERENCE_RATE: Final = 24000
ENGINE_KIND: Final = "audio.synthesize"
DESIGN_CAPABILITIES: Final = ("voice_design",)
CREATE_ACTION: Final = "scaispeak.voice.create"
# Audit verbs are a closed list (platform §10.1) without "repromote": a repromote is an update.
REPROMOTE_ACTION: Final = "scaispeak.voice.update"
_HEAD_BYTES: Final = 64

#: The sentence a designed voice reads for its reference clip, per language (English default).
SAMPLE_SENTENCES: Final[Mapping[str, str]] = {
    "en": (
        "Hello, and welcome. This is a short sample of my voice, recorded so that every later "
        "message sounds the same. I speak clearly and calmly, at an even pace."
    ),
    "de": (
        "Hallo und herzlich willkommen. Dies ist eine kurze Probe meiner Stimme, damit jede "
        "spätere Nachricht gleich klingt. Ich spreche klar, ruhig und gleichmäßig."
    ),
    "nl": (
        "Hallo en welkom. Dit is een korte opname van mijn stem, zodat elk later bericht "
        "hetzelfde klinkt. Ik spreek duidelijk, rustig en in een gelijkmatig tempo."
    ),
    "fr": (
        "Bonjour et bienvenue. Voici un court extrait de ma voix, enregistré pour que chaque "
        "message suivant sonne de la même façon. Je parle clairement, calmement et posément."
    ),
    "es": (
        "Hola y bienvenidos. Esta es una breve muestra de mi voz, grabada para que cada mensaje "
        "posterior suene igual. Hablo con claridad, con calma y a un ritmo constante."
    ),
    "it": (
        "Ciao e benvenuti. Questo è un breve campione della mia voce, registrato perché ogni "
        "messaggio successivo suoni allo stesso modo. Parlo in modo chiaro, calmo e regolare."
    ),
}


def sample_sentence(language: str) -> str:
    """The design sample sentence in ``language``, English when there is none."""
    return SAMPLE_SENTENCES.get(language, SAMPLE_SENTENCES["en"])


# ----- errors --------------------------------------------------------------------------


def unsupported_format(field: str) -> ScaiError:
    """415 ``SCAISPEAK_AUDIO_FORMAT_UNSUPPORTED`` listing the accepted MIME types."""
    return ScaiError(
        "SCAISPEAK_AUDIO_FORMAT_UNSUPPORTED",
        f"{field}: the audio is not in an accepted format (wav, mp3, flac, ogg, webm, m4a)",
        accepted=sorted(ACCEPTED_MIME),
    )


def decode_failed(field: str, detail: str) -> ScaiError:
    """422 ``SCAISPEAK_AUDIO_DECODE_FAILED``."""
    return ScaiError(
        "SCAISPEAK_AUDIO_DECODE_FAILED",
        f"{field}: the audio could not be decoded ({detail})",
    )


def consent_invalid(field: str, message: str) -> ScaiError:
    """422 ``SCAISPEAK_CONSENT_INVALID`` naming the consent input at fault."""
    return ScaiError(
        "SCAISPEAK_CONSENT_INVALID",
        f"{field}: {message}",
        details=[{"field": field, "message": message}],
    )


def preflight_failed(result: PreflightResult) -> ScaiError:
    """422 ``SCAISPEAK_VOICE_PREFLIGHT_FAILED`` with the §7.6 block (advice included)."""
    return result.error("SCAISPEAK_VOICE_PREFLIGHT_FAILED", advice=True)


def stored_block(result: PreflightResult) -> dict[str, Any]:
    """The ``preflight`` block a voice record keeps: ``{passed, fail_reasons, metrics}``."""
    block = result.block(advice=False)
    return {
        "passed": block["passed"],
        "fail_reasons": list(block["fail_reasons"]),
        "metrics": dict(block["metrics"]),
    }


# ----- audio inputs ----------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInput:
    """An audio input after any ScaiDrive download: a file on disk or bytes in memory."""

    field: str
    source: Path | bytes
    head: bytes
    sha256: str
    filename: str | None = None
    content_type: str | None = None

    @classmethod
    def of_bytes(
        cls,
        field: str,
        data: bytes,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> AudioInput:
        """An input held in memory (a ScaiDrive file, a live recording)."""
        return cls(
            field,
            data,
            data[:_HEAD_BYTES],
            hashlib.sha256(data).hexdigest(),
            filename,
            content_type,
        )

    def container(self) -> str:
        """The accepted container of the input, else 415 (§7.4 container check)."""
        ext = detect_container(self.head, self.content_type, self.filename)
        if ext is None:
            raise unsupported_format(self.field)
        return ext


def _head_of(source: str | Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source[:_HEAD_BYTES]
    with open(source, "rb") as handle:
        return handle.read(_HEAD_BYTES)


@dataclass(frozen=True)
class CheckedReference:
    """A reference clip that passed preflight, normalised for storage."""

    pcm: Pcm
    preflight: dict[str, Any]


@dataclass(frozen=True)
class _Reintake:
    """How a repromote ends: the final status and what to store with it."""

    status: str
    reason: str | None = None
    preflight: dict[str, Any] | None = None
    reference_key: str | None = None
    reference_sha256: str | None = None


_FINISH_REPROMOTE: Final = (
    "UPDATE voices SET embedding_status = %s, embedding_status_reason = %s,"
    " preflight = COALESCE(%s, preflight), reference_key = COALESCE(%s, reference_key),"
    " reference_sha256 = COALESCE(%s, reference_sha256), updated_at = now()"
    " WHERE id = %s AND deleted_at IS NULL RETURNING *"
)


class IntakeService:
    """Creates voices from a reference (clone) or a description (design), and repromotes."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self._settings = deps.settings
        self._objects = deps.runtime.objects
        self._consents = ConsentStore(deps.runtime.pool)

    @property
    def thresholds(self) -> PreflightThresholds:
        """The reference preflight thresholds from the ``SCAISPEAK_PREFLIGHT_*`` settings."""
        return PreflightThresholds.from_settings(self._settings)

    def reference_key(self, voice_id: str) -> str:
        """``scaispeak/voices/{voice_id}/reference.wav``."""
        return self._objects.key("voices", voice_id, "reference.wav")

    def consent_key(self, voice_id: str, ext: str) -> str:
        """``scaispeak/voices/{voice_id}/consent.<ext>``."""
        return self._objects.key("voices", voice_id, f"consent.{ext}")

    # ----- reference clips ----------------------------------------------------------

    async def check_reference(self, audio: AudioInput) -> CheckedReference:
        """Container check, decode, preflight (§7.4); the clip normalised to 24 kHz mono.

        Raises 415 ``…_AUDIO_FORMAT_UNSUPPORTED``, 422 ``…_AUDIO_DECODE_FAILED`` or 422
        ``…_VOICE_PREFLIGHT_FAILED``.
        """
        audio.container()
        thresholds = self.thresholds
        pcm: Pcm | None
        try:
            pcm = await asyncio.to_thread(
                decode_pcm16,
                audio.source,
                sample_rate=REFERENCE_RATE,
                max_seconds=self._settings.preflight_max_duration_s,
            )
        except AudioTooLong:
            pcm = None  # decodable; preflight reports duration_above_maximum
        except AudioDecodeError as exc:
            raise decode_failed(audio.field, str(exc)) from None
        try:
            result = await asyncio.to_thread(run_preflight, audio.source, thresholds)
        except AudioDecodeError as exc:
            raise decode_failed(audio.field, str(exc)) from None
        if not result.passed:
            raise preflight_failed(result)
        assert pcm is not None  # it passed, so it is within the duration limit
        return CheckedReference(pcm, stored_block(result))

    async def put_reference(self, voice_id: str, pcm: Pcm) -> tuple[str, str]:
        """Store ``pcm`` as the voice's reference WAV; returns ``(key, sha256)``."""
        data = wav_bytes(pcm)
        key = self.reference_key(voice_id)
        await self._objects.put(key, data, content_type="audio/wav")
        return key, hashlib.sha256(data).hexdigest()

    async def store_reference(
        self,
        voice_id: str,
        source: str | Path | bytes,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> tuple[str, str, dict[str, Any]]:
        """Check a reference clip (415/422 as in clone mode) and store it for ``voice_id``.

        Used by the global-voice import. Returns ``(reference_key, reference_sha256,
        preflight_block)``.
        """
        if isinstance(source, bytes):
            audio = AudioInput.of_bytes(
                "reference", source, filename=filename, content_type=content_type
            )
        else:
            path = Path(source)
            head = await asyncio.to_thread(_head_of, path)
            audio = AudioInput("reference", path, head, "", filename, content_type)
        checked = await self.check_reference(audio)
        key, sha = await self.put_reference(voice_id, checked.pcm)
        return key, sha, checked.preflight

    # ----- consent clips ------------------------------------------------------------

    async def check_consent(self, audio: AudioInput) -> str:
        """Container check, then the consent clip checks (§7.4); returns the container.

        Raises 415 ``…_AUDIO_FORMAT_UNSUPPORTED`` or 422 ``SCAISPEAK_CONSENT_INVALID``
        (undecodable, too short or long, too little speech).
        """
        ext = audio.container()
        s = self._settings
        try:
            clip = await asyncio.to_thread(
                measure_clip, audio.source, max_seconds=s.consent_max_duration_s
            )
        except AudioDecodeError:
            raise consent_invalid(audio.field, "the consent recording cannot be decoded") from None
        if clip.duration_s < s.consent_min_duration_s:
            raise consent_invalid(
                audio.field,
                f"the consent recording is {clip.duration_s:g} s long; at least"
                f" {s.consent_min_duration_s:g} s are needed",
            )
        if clip.duration_s > s.consent_max_duration_s:
            raise consent_invalid(
                audio.field,
                f"the consent recording is longer than {s.consent_max_duration_s:g} s",
            )
        if clip.voice_activity_ratio < s.consent_min_voice_activity_ratio:
            raise consent_invalid(
                audio.field,
                f"the consent recording has too little speech (voice activity"
                f" {clip.voice_activity_ratio:g} < {s.consent_min_voice_activity_ratio:g})",
            )
        return ext

    # ----- clone (§7.4) -------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        request: CloneRequest | DesignRequest,
        *,
        origin: Origin | None = None,
    ) -> Voice:
        """``POST /voices`` in the mode the parsed request is in."""
        if isinstance(request, DesignRequest):
            return await self.create_design(principal, request, origin=origin)
        return await self.create_clone(principal, request, origin=origin)

    async def resolve_audio(
        self, principal: Principal, request: CloneRequest
    ) -> tuple[AudioInput, AudioInput]:
        """The reference and consent inputs, downloading ScaiDrive references (§9.6)."""
        reference = await self._input(principal, request.reference)
        consent = await self._input(principal, request.consent_audio)
        return reference, consent

    async def _input(self, principal: Principal, part: AudioPart) -> AudioInput:
        if part.upload is not None:
            upload = part.upload
            return AudioInput(
                part.field,
                upload.path,
                upload.head,
                upload.sha256,
                upload.filename,
                upload.content_type,
            )
        assert part.drive_json is not None
        field = f"{part.field}_scaidrive_json"
        data, filename = await fetch_reference(self._deps, principal, part.drive_json, field)
        if len(data) > self._settings.max_upload_bytes:
            raise too_large(self._settings.max_upload_bytes)
        return AudioInput.of_bytes(part.field, data, filename=filename)

    async def create_clone(
        self, principal: Principal, request: CloneRequest, *, origin: Origin | None = None
    ) -> Voice:
        """Validate, check and store a cloned voice with its consent record (§7.4)."""
        principal.require_tenant()
        reference, consent = await self.resolve_audio(principal, request)
        return await self.create_clone_from(principal, request, reference, consent, origin=origin)

    async def create_clone_from(
        self,
        principal: Principal,
        request: CloneRequest,
        reference: AudioInput,
        consent: AudioInput,
        *,
        origin: Origin | None = None,
    ) -> Voice:
        """The §7.4 steps after the ScaiDrive references: checks, then store (201)."""
        tenant_id = principal.require_tenant()
        reference.container()
        consent_ext = consent.container()
        checked = await self.check_reference(reference)
        await self.check_consent(consent)
        voice_id = new_id("voice")
        consent_id = new_id("cons")
        reference_key, reference_sha = await self.put_reference(voice_id, checked.pcm)
        consent_key = self.consent_key(voice_id, consent_ext)
        keys = [reference_key, consent_key]
        try:
            await self._objects.put(consent_key, consent.source, content_type=mime_for(consent_ext))
            new = self._new_voice(
                principal,
                voice_id,
                "cloned",
                request.fields,
                preflight=checked.preflight,
                reference_key=reference_key,
                reference_sha256=reference_sha,
                consent_id=consent_id,
            )
            consent_row = NewConsent(
                id=consent_id,
                voice_id=voice_id,
                tenant_id=tenant_id,
                created_by=principal.user_id,
                consent_user_full_name=request.consent.full_name,
                consent_text=request.consent.text,
                consent_stated_purpose=request.consent.purpose,
                consent_audio_key=consent_key,
                consent_audio_sha256=consent.sha256,
                request_id=principal.request_id,
            )
            return await self._commit(principal, new, consent_row, origin)
        except BaseException:
            await self._discard_objects(keys)
            raise

    # ----- design (§7.5) ------------------------------------------------------------

    async def create_design(
        self, principal: Principal, request: DesignRequest, *, origin: Origin | None = None
    ) -> Voice:
        """Blocklist, backend A with ``voice_design``, one render stored as the reference."""
        tenant_id = principal.require_tenant()
        await BlocklistService(self._deps).check(tenant_id, request.prompt)
        choice = await self._design_choice(tenant_id)
        voice_id = new_id("voice")
        language = request.fields.language_primary
        text = sample_sentence(language)
        pcm = await self._render(choice, principal, voice_id, request.prompt, language, text)
        reference_key, reference_sha = await self.put_reference(voice_id, pcm)
        try:
            new = self._new_voice(
                principal,
                voice_id,
                "designed",
                request.fields,
                preflight=None,
                reference_key=reference_key,
                reference_sha256=reference_sha,
                voice_design_prompt=request.prompt,
                reference_text=text,
            )
            return await self._commit(principal, new, None, origin)
        except BaseException:
            await self._discard_objects([reference_key])
            raise

    async def _design_choice(self, tenant_id: str) -> Choice[NodeInfo]:
        policy = await self._deps.policies.get_or_provision(tenant_id)
        nodes = self._deps.runtime.nodes

        async def node_resolver(kind: str, capabilities: tuple[str, ...]) -> NodeInfo | None:
            return await nodes.resolve_audio_node(kind, capabilities=capabilities)

        # Design needs A: asking for it first lists A in ``resolution`` even when the policy
        # leaves it out (``not_allowed``), which is what the client has to fix.
        return await resolve_backend(
            policy,
            "prefer_self_hosted",
            module="scaispeak",
            engine_kind=ENGINE_KIND,
            capabilities=DESIGN_CAPABILITIES,
            node_resolver=node_resolver,
            relay_usable=lambda: "relay_no_capability",
            api_form="speak",
        )

    async def _render(
        self,
        choice: Choice[NodeInfo],
        principal: Principal,
        voice_id: str,
        prompt: str,
        language: str,
        text: str,
    ) -> Pcm:
        """The design render on the chosen node; once on another node if it is unreachable."""
        node = choice.node
        assert node is not None  # design resolves to A only
        try:
            return await self._synthesize(node, principal, voice_id, prompt, language, text)
        except NodeCallError as exc:
            if not exc.failover_eligible:
                raise
            other = await self._deps.runtime.nodes.resolve_audio_node(
                ENGINE_KIND, capabilities=DESIGN_CAPABILITIES, exclude=[node.node_id]
            )
            if other is None:
                raise choice.exhausted() from None
            log.info("voice_design_failover", failed=node.node_id, node_id=other.node_id)
            return await self._synthesize(other, principal, voice_id, prompt, language, text)

    async def _synthesize(
        self,
        node: NodeInfo,
        principal: Principal,
        voice_id: str,
        prompt: str,
        language: str,
        text: str,
    ) -> Pcm:
        tenant_id = principal.require_tenant()
        request = pb.SynthesizeRequest(
            tenant_id=tenant_id,
            text=text,
            voice=pb.VoiceSpec(voice_id=voice_id, design_prompt=prompt),
            options=pb.SynthesisOptions(language=language, sample_rate_hz=REFERENCE_RATE),
        )
        stream = self._deps.runtime.node_client.stream(
            "Synthesize",
            node,
            request,
            tenant_id=tenant_id,
            user_id=principal.user_id,
            chars=len(text),
        )
        parts: list[bytes] = []
        rate = 0
        async for message in stream:
            if message.WhichOneof("payload") == "chunk":
                parts.append(bytes(message.chunk.pcm))
                rate = int(message.chunk.sample_rate_hz) or rate
        data = b"".join(parts)
        if len(data) < 2 or rate <= 0:
            raise ScaiError("UPSTREAM_SHAPE_MISMATCH", "the node rendered no audio for the design")
        pcm = Pcm(data, rate)
        if rate != REFERENCE_RATE:
            pcm = await asyncio.to_thread(decode_pcm16, wav_bytes(pcm), sample_rate=REFERENCE_RATE)
        return pcm

    # ----- storing a new voice ------------------------------------------------------

    def _new_voice(
        self,
        principal: Principal,
        voice_id: str,
        kind: str,
        fields: VoiceFields,
        *,
        preflight: Mapping[str, Any] | None,
        reference_key: str,
        reference_sha256: str,
        consent_id: str | None = None,
        voice_design_prompt: str | None = None,
        reference_text: str | None = None,
    ) -> NewVoice:
        return NewVoice(
            id=voice_id,
            scope="user",
            kind=kind,
            tenant_id=principal.require_tenant(),
            owner_user_id=principal.user_id,
            display_name=fields.display_name,
            language_primary=fields.language_primary,
            request_id=principal.request_id,
            embedding_status="ready",
            description=fields.description,
            language_supported=fields.language_supported,
            gender_hint=fields.gender_hint,
            age_hint=fields.age_hint,
            style_tags=fields.style_tags,
            preflight=preflight,
            reference_key=reference_key,
            reference_sha256=reference_sha256,
            reference_text=reference_text,
            consent_id=consent_id,
            voice_design_prompt=voice_design_prompt,
        )

    async def _commit(
        self,
        principal: Principal,
        new: NewVoice,
        consent: NewConsent | None,
        origin: Origin | None,
    ) -> Voice:
        """Insert the voice, its consent record and the audit row in one transaction."""
        async with self._deps.runtime.pool.connection() as conn, conn.transaction():
            voice = await self._deps.voices.insert(new, conn=conn)
            if consent is not None:
                await self._consents.insert(consent, conn=conn)
            await audit_voice(
                self._deps,
                principal,
                CREATE_ACTION,
                voice.id,
                origin,
                conn=conn,
                http_status=201,
                details={"kind": voice.kind, "consent_id": voice.consent_id},
            )
        log.info("voice_created", voice_id=voice.id, kind=voice.kind)
        return voice

    async def _discard_objects(self, keys: list[str]) -> None:
        for key in keys:
            try:
                await self._objects.delete(key)
            except StorageError:
                log.warning("voice_intake_cleanup_failed", key=key)

    # ----- repromote (§7.10) --------------------------------------------------------

    async def repromote(
        self, principal: Principal, voice_id: str, *, origin: Origin | None = None
    ) -> Voice:
        """Re-run intake on the stored reference: ``ready`` or ``failed`` with a reason.

        A ``ready`` voice is returned unchanged. Metrics other than the duration are
        recomputed and stored without failing; a clip over the maximum is trimmed to it.
        """
        voice = await VoiceService(self._deps).modifiable(principal, voice_id)
        before = voice.embedding_status
        if before != "ready":
            await self._deps.voices.set_status(voice.id, "processing")
            try:
                outcome = await self._reintake(voice)
                voice = await self._finish_repromote(principal, voice, outcome, before, origin)
            except BaseException:
                # Not left at "processing" by an unexpected failure (storage down, …).
                await self._deps.voices.set_status(voice.id, before, voice.embedding_status_reason)
                raise
        else:
            await audit_voice(
                self._deps,
                principal,
                REPROMOTE_ACTION,
                voice.id,
                origin,
                http_status=200,
                details={"operation": "repromote", "from": before, "to": before},
            )
        return voice

    async def _finish_repromote(
        self,
        principal: Principal,
        voice: Voice,
        outcome: _Reintake,
        before: str,
        origin: Origin | None,
    ) -> Voice:
        preflight = None if outcome.preflight is None else Jsonb(outcome.preflight)
        params = (
            outcome.status,
            outcome.reason,
            preflight,
            outcome.reference_key,
            outcome.reference_sha256,
            voice.id,
        )
        async with self._deps.runtime.pool.connection() as conn, conn.transaction():
            updated = await self._deps.voices.fetch_one(_FINISH_REPROMOTE, params, conn=conn)
            if updated is None:
                raise voice_not_found()
            await audit_voice(
                self._deps,
                principal,
                REPROMOTE_ACTION,
                voice.id,
                origin,
                conn=conn,
                http_status=200,
                details={
                    "operation": "repromote",
                    "from": before,
                    "to": outcome.status,
                    "reason": outcome.reason,
                },
            )
        if outcome.reference_key and voice.reference_key not in (None, outcome.reference_key):
            await self._discard_objects([str(voice.reference_key)])
        return updated

    async def _reintake(self, voice: Voice) -> _Reintake:
        unavailable = _Reintake("failed", "reference_unavailable")
        if voice.reference_key is None:
            return unavailable
        try:
            data = await self._objects.get(voice.reference_key)
            pcm = await asyncio.to_thread(decode_pcm16, data, sample_rate=REFERENCE_RATE)
        except (ObjectNotFound, AudioDecodeError, ValueError) as exc:
            log.info("repromote_reference_unavailable", voice_id=voice.id, error=str(exc))
            return unavailable
        except StorageError as exc:
            # Storage being down says nothing about the clip: no verdict, try again later.
            raise service_unavailable(f"object storage is unavailable ({exc})") from None
        s = self._settings
        max_ms = int(s.preflight_max_duration_s * 1000)
        if pcm.duration_ms > max_ms:
            pcm = pcm.slice_ms(0, max_ms)
        normalised = wav_bytes(pcm)
        result = await asyncio.to_thread(run_preflight, normalised, self.thresholds)
        block = None if voice.kind == "designed" else stored_block(result)
        if pcm.samples / pcm.sample_rate < s.preflight_min_duration_s:
            return _Reintake("failed", "reference_too_short", block)
        key = self.reference_key(voice.id)
        sha = hashlib.sha256(normalised).hexdigest()
        if key != voice.reference_key or normalised != data:
            await self._objects.put(key, normalised, content_type="audio/wav")
        return _Reintake("ready", None, block, key, sha)
