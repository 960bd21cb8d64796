"""Synthesis: the one core every path uses (:class:`Synthesizer`) and the request-level
behaviour of ``POST /speak``, preview and the OpenAI-compatible speech route
(:class:`SpeakService`; scaispeak.md §3, §4, §6.1, §7.13).

Every path admits a request the same way (voice usable, blocklist, quota), dispatches through
:class:`Synthesizer` and meters one usage row per dispatch. ``POST /speak`` and the OpenAI
route write a job row for every call; async jobs run in the worker (``services.synth_jobs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import anyio
import structlog

from scaicommon.audio import EncodedAudio, Pcm, StreamEncoder, encode_output, extension
from scaicommon.audio import allowed_rates as format_rates
from scaicommon.audio import content_type as format_content_type
from scaicommon.audio import default_rate as format_default_rate
from scaicommon.bodies import RequestBody
from scaicommon.errors import ScaiError
from scaicommon.ids import new_id
from scaicommon.nodes import NodeInfo
from scaicommon.policy import Choice, parse_preference
from scaicommon.principal import Principal
from scaicommon.usage import UsageSubject
from scaispeak.deps import SpeakDeps
from scaispeak.dispatch import SpeakDispatcher, SynthesisParams, SynthesisProgress
from scaispeak.services.blocklist import BlocklistService
from scaispeak.services.saveto import PreparedSave, SaveTo, SaveToService
from scaispeak.services.voices import VoiceService
from scaispeak.settings import SpeakSettings
from scaispeak.store.jobs import NewSynthJob, SynthJob, SynthJobStore, SynthOutput
from scaispeak.store.voices import Voice

log = structlog.get_logger("scaispeak.speak")

PROCESS_SYNTH_JOB: Final = "process_synth_job"
SPEAK_FORMATS: Final = ("mp3", "wav", "opus", "flac", "pcm")
OPENAI_FORMATS: Final = ("mp3", "opus", "aac", "flac", "wav", "pcm")
OPENAI_STOCK_VOICES: Final = frozenset(
    {
        "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer",
        "verse", "marin", "cedar",
    }
)  # fmt: skip
MAX_INSTRUCTIONS_CHARS: Final = 1000
SPEED_RANGE: Final = (0.5, 2.0)
CFG_RANGE: Final = (0.5, 5.0)
TRIM_RANGE: Final = (0, 2000)
_LANGUAGE: Final = re.compile(r"^[a-z]{2}$")

#: The built-in preview sentence per language (§7.13); English when the language has none.
PREVIEW_SENTENCES: Final = {
    "en": "Hello! This is a short preview of my voice.",
    "de": "Hallo! Das ist eine kurze Hörprobe meiner Stimme.",
    "nl": "Hallo! Dit is een korte voorproef van mijn stem.",
    "fr": "Bonjour ! Voici un court aperçu de ma voix.",
    "es": "¡Hola! Esta es una breve muestra de mi voz.",
    "it": "Ciao! Questa è una breve anteprima della mia voce.",
    "pt": "Olá! Esta é uma breve amostra da minha voz.",
    "da": "Hej! Dette er en kort prøve på min stemme.",
    "sv": "Hej! Det här är ett kort smakprov på min röst.",
    "pl": "Cześć! To jest krótka próbka mojego głosu.",
}

#: ``status_reason`` (§5.1) of each error code a synthesis job can end with.
_REASONS: Final = {
    "SCAISPEAK_BACKEND_UNAVAILABLE": "backend unavailable",
    "BACKEND_ERROR": "backend error",
    "BACKEND_RATE_LIMITED": "backend error",
    "UPSTREAM_SHAPE_MISMATCH": "backend error",
    "VALIDATION_ERROR": "backend error",
    "PAYLOAD_TOO_LARGE": "backend error",
    "BACKEND_TIMEOUT": "backend timeout",
    "QUOTA_EXCEEDED": "quota exceeded",
    "BUDGET_EXCEEDED": "budget exceeded",
    "SCAISPEAK_VOICE_NOT_FOUND": "voice not ready",
    "SCAISPEAK_VOICE_NOT_READY": "voice not ready",
    "SCAISPEAK_VOICE_LICENSE_EXPIRED": "voice license exhausted",
    "SCAISPEAK_VOICE_LICENSE_CAP_EXCEEDED": "voice license exhausted",
    "SCAISPEAK_TEXT_BLOCKED": "text blocked",
}
#: Failures worth another attempt in the worker (§5.6).
TRANSIENT: Final = frozenset(
    {"SCAISPEAK_BACKEND_UNAVAILABLE", "BACKEND_ERROR", "BACKEND_TIMEOUT", "BACKEND_RATE_LIMITED"}
)
UPLOAD_FAILED_REASON: Final = "scaidrive upload failed"


def status_reason(error: ScaiError) -> str:
    """The job's ``status_reason`` for a failure (§5.1)."""
    if error.code.startswith(("SCAISPEAK_SCAIDRIVE_", "SCAISPEAK_SAVE_TO_")):
        return UPLOAD_FAILED_REASON
    return _REASONS.get(error.code, "internal error")


def error_view(error: ScaiError) -> dict[str, str]:
    """The job's ``error`` object: ``{code, message}``."""
    return {"code": error.code, "message": error.message}


# ----- request validation ---------------------------------------------------------------


class Problems:
    """Collects ``{field, message}`` details; :meth:`raise_any` raises one VALIDATION_ERROR."""

    def __init__(self) -> None:
        self.details: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        """Record one problem."""
        self.details.append({"field": field, "message": message})

    def raise_any(self) -> None:
        """``VALIDATION_ERROR`` with every recorded problem, when there is one."""
        if self.details:
            summary = "; ".join(f"{d['field']}: {d['message']}" for d in self.details)
            raise ScaiError("VALIDATION_ERROR", summary, details=list(self.details))

    def number(self, field: str, value: float | None, bounds: tuple[float, float]) -> float | None:
        """``value`` when inside ``bounds`` (or absent), else a problem and ``None``."""
        if value is None:
            return None
        if isinstance(value, bool) or not bounds[0] <= value <= bounds[1]:
            self.add(field, f"must be between {bounds[0]:g} and {bounds[1]:g}")
            return None
        return float(value)

    def language(self, field: str, value: str | None) -> str | None:
        """An ISO 639-1 code (two lower-case letters), or absent."""
        if value is None:
            return None
        if not _LANGUAGE.match(value):
            self.add(field, "must be an ISO 639-1 code (two lower-case letters)")
            return None
        return value

    def choice(self, field: str, value: str, allowed: tuple[str, ...]) -> str:
        """``value`` when it is one of ``allowed``."""
        if value not in allowed:
            self.add(field, f"must be one of {', '.join(allowed)}")
        return value

    def preference(self, value: str | None) -> str:
        """``backend_preference`` (absent means ``any``)."""
        try:
            return parse_preference(value)
        except ScaiError:
            self.add("backend_preference", "must be any, prefer_self_hosted or prefer_relay")
            return "any"

    def rate(self, fmt: str, value: int | None) -> int:
        """The output rate: ``value`` when the format allows it (else a problem), or the
        format's default when absent; ``0`` for an unknown format."""
        if fmt not in OPENAI_FORMATS:
            return 0
        if value is None:
            return format_default_rate(fmt)
        allowed = format_rates(fmt)
        if value not in allowed:
            self.add("sample_rate", f"{fmt} allows {', '.join(str(r) for r in allowed)}")
        return value


def request_text(raw: str | None, limit: int, problems: Problems, field: str = "text") -> str:
    """The text trimmed of surrounding whitespace (§1.6); ``None``/blank is a problem.

    Over ``limit`` code points raises 422 ``SCAISPEAK_TEXT_TOO_LONG`` with ``error.limit``.
    """
    if raw is None:
        problems.add(field, "is required")
        return ""
    text = raw.strip()
    if not text:
        problems.add(field, "must contain text, not only whitespace")
        return ""
    if len(text) > limit:
        raise ScaiError(
            "SCAISPEAK_TEXT_TOO_LONG",
            f"{field} is {len(text)} characters; the limit is {limit}",
            limit=limit,
        )
    return text


@dataclass(frozen=True)
class SpeakOptions:
    """The request's synthesis options (``None`` = voice default, else engine default)."""

    language_hint: str | None = None
    speed: float | None = None
    instructions: str | None = None
    cfg_value: float | None = None
    warmup_trim_ms: int | None = None

    @classmethod
    def check(cls, problems: Problems, body: SpeakBody | SpeechBody) -> SpeakOptions:
        """Validate each option of ``body`` against §4.1, recording problems."""
        instructions = body.instructions
        if instructions is not None and len(instructions) > MAX_INSTRUCTIONS_CHARS:
            problems.add("instructions", f"must be at most {MAX_INSTRUCTIONS_CHARS} characters")
        trim = problems.number("warmup_trim_ms", body.warmup_trim_ms, TRIM_RANGE)
        return cls(
            language_hint=problems.language("language_hint", body.language_hint),
            speed=problems.number("speed", body.speed, SPEED_RANGE),
            instructions=instructions or None,
            cfg_value=problems.number("cfg_value", body.cfg_value, CFG_RANGE),
            warmup_trim_ms=None if trim is None else int(trim),
        )

    def merge(self, voice: Voice, sample_rate: int) -> SynthesisParams:
        """Engine default < the voice's defaults < these options (§3.4)."""
        return SynthesisParams.merge(
            voice.defaults,
            voice.language_primary,
            sample_rate=sample_rate,
            language=self.language_hint,
            speed=self.speed,
            instructions=self.instructions,
            cfg_value=self.cfg_value,
            warmup_trim_ms=self.warmup_trim_ms,
        )

    def to_json(self) -> dict[str, Any]:
        """The job row's ``params``."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpeakOptions:
        """Read back :meth:`to_json` output (unknown keys ignored)."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class SpeakRequest:
    """A validated ``POST /speak`` body."""

    text: str
    voice_id: str
    response_format: str
    sample_rate: int
    options: SpeakOptions
    preference: str
    force_async: bool = False
    save_to: SaveTo | None = None

    @property
    def chars(self) -> int:
        """Metered characters: code points of the trimmed text."""
        return len(self.text)


@dataclass(frozen=True)
class SpeechRequest:
    """A validated OpenAI-compatible ``/v1/audio/speech`` body (§6.1)."""

    model: str
    text: str
    voice: str
    response_format: str
    options: SpeakOptions
    preference: str

    @property
    def chars(self) -> int:
        """Metered characters."""
        return len(self.text)

    @property
    def sample_rate(self) -> int:
        """Every OpenAI format at its default rate (``pcm`` is 24 kHz)."""
        return format_default_rate(self.response_format)


class SpeakBody(RequestBody):
    """The ``POST /speak`` JSON body (§4.1); presence and ranges are checked by
    :func:`speak_request` so that every problem is reported on its field."""

    text: str | None = None
    voice_id: str | None = None
    response_format: str = "mp3"
    sample_rate: int | None = None
    language_hint: str | None = None
    speed: float | None = None
    instructions: str | None = None
    cfg_value: float | None = None
    warmup_trim_ms: int | None = None
    backend_preference: str | None = None
    force_async: bool = False
    save_to: Any = None


def speak_request(body: SpeakBody, settings: SpeakSettings) -> SpeakRequest:
    """Validate a ``/speak`` body (422 ``VALIDATION_ERROR`` with ``details``; 422
    ``SCAISPEAK_TEXT_TOO_LONG`` with ``limit``)."""
    problems = Problems()
    if not body.voice_id:
        problems.add("voice_id", "is required")
    fmt = problems.choice("response_format", body.response_format, SPEAK_FORMATS)
    rate = problems.rate(fmt, body.sample_rate)
    options = SpeakOptions.check(problems, body)
    preference = problems.preference(body.backend_preference)
    save_to = None
    if body.save_to is not None:
        try:
            save_to = SaveTo.parse(body.save_to)
        except ScaiError as error:
            problems.details.extend(error.details or [])
    text = request_text(body.text, settings.max_text_chars, problems)
    problems.raise_any()
    return SpeakRequest(
        text=text,
        voice_id=str(body.voice_id),
        response_format=fmt,
        sample_rate=rate,
        options=options,
        preference=preference,
        force_async=body.force_async,
        save_to=save_to,
    )


class SpeechBody(RequestBody):
    """The OpenAI-compatible ``/v1/audio/speech`` JSON body (§6.1), extras included."""

    model: str | None = None
    input: str | None = None
    voice: str | dict[str, Any] | None = None
    response_format: str = "mp3"
    speed: float | None = None
    instructions: str | None = None
    stream_format: str | None = None
    backend_preference: str | None = None
    language_hint: str | None = None
    cfg_value: float | None = None
    warmup_trim_ms: int | None = None


def speech_request(body: SpeechBody, settings: SpeakSettings) -> SpeechRequest:
    """Validate an OpenAI-compatible speech body (``stream_format: "sse"`` is refused)."""
    problems = Problems()
    if not body.model:
        problems.add("model", "is required")
    voice = body.voice.get("id") if isinstance(body.voice, dict) else body.voice
    if not isinstance(voice, str) or not voice.strip():
        problems.add("voice", "is required")
        voice = ""
    fmt = problems.choice("response_format", body.response_format, OPENAI_FORMATS)
    if body.stream_format not in (None, "audio"):
        problems.add("stream_format", "only audio is supported (sse is not)")
    options = SpeakOptions.check(problems, body)
    preference = problems.preference(body.backend_preference)
    text = request_text(body.input, settings.openai_max_input_chars, problems, "input")
    problems.raise_any()
    return SpeechRequest(
        model=str(body.model),
        text=text,
        voice=voice.strip(),
        response_format=fmt,
        options=options,
        preference=preference,
    )


class PreviewBody(RequestBody):
    """The preview body (§7.13), from JSON, multipart or a URL-encoded form."""

    text: str | None = None
    response_format: str = "mp3"
    backend_preference: str | None = None
    language_hint: str | None = None


@dataclass(frozen=True)
class PreviewRequest:
    """A validated preview request; ``text`` ``None`` means the built-in sentence."""

    text: str | None
    response_format: str
    preference: str
    language_hint: str | None


def preview_request(body: PreviewBody, settings: SpeakSettings) -> PreviewRequest:
    """Validate a preview body (text over ``SCAISPEAK_PREVIEW_MAX_CHARS`` → 422
    ``SCAISPEAK_TEXT_TOO_LONG``)."""
    problems = Problems()
    fmt = problems.choice("response_format", body.response_format, SPEAK_FORMATS)
    preference = problems.preference(body.backend_preference)
    language = problems.language("language_hint", body.language_hint)
    text = None
    if body.text is not None:
        text = request_text(body.text, settings.preview_max_chars, problems)
    problems.raise_any()
    return PreviewRequest(text, fmt, preference, language)


# ----- the synthesis core ---------------------------------------------------------------


@dataclass(frozen=True)
class SynthesisResult:
    """A whole synthesis: the PCM and who produced it."""

    pcm: Pcm
    backend: str
    node_id: str | None
    engine: str | None


def _join(chunks: list[Pcm], rate: int) -> Pcm:
    if not chunks:
        return Pcm(b"", rate)
    return Pcm(b"".join(c.data for c in chunks), chunks[0].sample_rate)


class Synthesizer:
    """Resolve and synthesise (A or B, one failover before audio) for every path."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self.dispatcher = SpeakDispatcher(deps.runtime, deps.settings, deps.policies)

    async def resolve(
        self, tenant_id: str, voice: Voice, preference: str | None
    ) -> Choice[NodeInfo]:
        """The backend for ``voice`` now (502 ``SCAISPEAK_BACKEND_UNAVAILABLE``)."""
        return await self.dispatcher.resolve(tenant_id, voice, preference)

    async def stream(
        self,
        choice: Choice[NodeInfo],
        tenant_id: str,
        user_id: str,
        voice: Voice,
        text: str,
        params: SynthesisParams,
        *,
        progress: SynthesisProgress,
    ) -> AsyncGenerator[Pcm, None]:
        """PCM chunks as they are produced; notes the voice warm on its node after A."""
        chunks = self.dispatcher.synthesize(
            choice,
            voice,
            text,
            params,
            tenant_id=tenant_id,
            user_id=user_id,
            progress=progress,
        )
        async with contextlib.aclosing(chunks):
            async for pcm in chunks:
                yield pcm
        if progress.backend == "A" and progress.node_id:
            try:
                await VoiceService(self._deps).note_warm(voice, progress.node_id)
            except Exception as exc:  # the warm registry is a hint; synthesis succeeded
                log.warning("warm_note_failed", voice_id=voice.id, error=type(exc).__name__)

    async def synthesize(
        self,
        tenant_id: str,
        user_id: str,
        voice: Voice,
        text: str,
        params: SynthesisParams,
        *,
        preference: str | None,
        choice: Choice[NodeInfo] | None = None,
        progress: SynthesisProgress | None = None,
    ) -> SynthesisResult:
        """The whole utterance (resolved here unless ``choice`` is given).

        Raises the mapped :class:`ScaiError` of the resolution or the backend.
        """
        progress = progress if progress is not None else SynthesisProgress()
        if choice is None:
            choice = await self.resolve(tenant_id, voice, preference)
        parts: list[Pcm] = []
        async with contextlib.aclosing(
            self.stream(choice, tenant_id, user_id, voice, text, params, progress=progress)
        ) as chunks:
            async for pcm in chunks:
                parts.append(pcm)
        return SynthesisResult(
            pcm=_join(parts, params.sample_rate),
            backend=progress.backend or choice.backend,
            node_id=progress.node_id,
            engine=progress.engine,
        )


async def encode(pcm: Pcm, fmt: str, sample_rate: int) -> EncodedAudio:
    """:func:`scaicommon.audio.encode_output` off the event loop."""
    return await asyncio.to_thread(encode_output, pcm, fmt, sample_rate)


def output_key(deps: SpeakDeps, job_id: str, fmt: str) -> str:
    """``scaispeak/synth_jobs/{job_id}.{ext}``."""
    return deps.runtime.objects.key("synth_jobs", f"{job_id}.{extension(fmt)}")


def text_key(deps: SpeakDeps, job_id: str) -> str:
    """``scaispeak/synth_jobs/{job_id}.txt``."""
    return deps.runtime.objects.key("synth_jobs", f"{job_id}.txt")


# ----- outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Inline:
    """A ``/speak`` call answered inline."""

    job: SynthJob
    audio: EncodedAudio
    backend: str
    saved_to: dict[str, Any] | None


@dataclass(frozen=True)
class Queued:
    """A ``/speak`` call staged as an async job."""

    job: SynthJob


@dataclass(frozen=True)
class Preview:
    """A voice preview (§7.13)."""

    audio: EncodedAudio
    response_format: str
    backend: str
    chars: int


class SpeechStream:
    """An OpenAI-compatible synthesis whose first audio exists: headers are known and
    :meth:`body` yields the encoded stream, finishing the job row when it ends."""

    def __init__(
        self,
        service: SpeakService,
        principal: Principal,
        job: SynthJob,
        voice: Voice,
        request: SpeechRequest,
        chunks: AsyncGenerator[Pcm, None],
        first: Pcm | None,
        progress: SynthesisProgress,
        started: float,
    ) -> None:
        self._service = service
        self._principal = principal
        self.job = job
        self._voice = voice
        self._request = request
        self._chunks = chunks
        self._first = first
        self._progress = progress
        self._started = started
        self.content_type = format_content_type(request.response_format, request.sample_rate)

    @property
    def backend(self) -> str:
        """The backend producing the audio."""
        return self._progress.backend or "A"

    async def body(self) -> AsyncIterator[bytes]:
        """The encoded audio as it is produced; the job, meter, licence and audit at the end."""
        request = self._request
        encoder: StreamEncoder | None = None
        error: ScaiError | None = None
        samples, rate = 0, request.sample_rate
        try:
            async with contextlib.aclosing(self._chunks) as chunks:
                pending = [self._first] if self._first is not None else []
                while True:
                    pcm = pending.pop() if pending else await anext(chunks, None)
                    if pcm is None:
                        break
                    if encoder is None:
                        rate = pcm.sample_rate
                        encoder = StreamEncoder(
                            request.response_format, request.sample_rate, input_rate=rate
                        )
                    samples += pcm.samples
                    out = await asyncio.to_thread(encoder.push, pcm.data)
                    if out:
                        yield out
            if encoder is None:
                encoder = StreamEncoder(request.response_format, request.sample_rate)
            tail = await asyncio.to_thread(encoder.finish)
            if tail:
                yield tail
        except ScaiError as exc:
            error = exc
            raise
        except (Exception, asyncio.CancelledError, GeneratorExit):
            error = ScaiError("INTERNAL_ERROR", "the stream ended before the audio was complete")
            raise
        finally:
            # Shielded: a client that left cancels this task, and the job row, usage row and
            # audit row must still be written.
            with anyio.CancelScope(shield=True):
                await self._service.finish_stream(
                    self._principal,
                    self.job,
                    self._voice,
                    request,
                    self._progress,
                    self._started,
                    error,
                    -(-samples * 1000 // rate),
                )


# ----- the service ------------------------------------------------------------------------


class SpeakService:
    """``POST /speak`` (§4), preview (§7.13) and ``/v1/audio/speech`` (§6.1)."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self._settings = deps.settings
        self.jobs = SynthJobStore(deps.runtime.pool)
        self.synthesizer = Synthesizer(deps)
        self.voices = VoiceService(deps)

    # ----- shared steps ---------------------------------------------------------------------

    async def admit(self, principal: Principal, voice_id: str, text: str) -> Voice:
        """§4.2 steps 2–4: voice visible, ready and licensed; text not blocked; quota."""
        tenant_id = principal.require_tenant()
        voice = await self.voices.usable(tenant_id, principal.user_id, voice_id, len(text))
        await BlocklistService(self._deps).check(tenant_id, text)
        await self._deps.guard.check(principal, "chars", len(text))
        return voice

    async def meter(
        self,
        subject: Principal | UsageSubject,
        *,
        operation: str,
        progress: SynthesisProgress,
        units: int,
        started: float,
        error: ScaiError | None,
        output_audio_ms: int | None = None,
        job_id: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """One usage row for a dispatch that reached a backend (none when it never did)."""
        if progress.backend is None:
            return
        await self._deps.usage.record(
            subject,
            operation=operation,
            backend=progress.backend,
            unit="chars",
            units=units,
            status="failure" if error else "success",
            node_id=progress.node_id,
            engine=progress.engine,
            output_audio_ms=output_audio_ms,
            latency_ms=int((time.monotonic() - started) * 1000),
            error_code=error.code if error else None,
            request_id=request_id,
            job_id=job_id,
        )

    async def audit(
        self,
        principal: Principal,
        error: ScaiError | None,
        *,
        resource_id: str | None,
        details: Mapping[str, Any],
    ) -> None:
        """The ``scaispeak.speech.create`` row of an inference call (written after dispatch)."""
        await self._deps.audit.write_or_log(
            principal,
            action="scaispeak.speech.create",
            status="FAILURE" if error else "SUCCESS",
            resource_type="speech",
            resource_id=resource_id,
            error_code=error.code if error else None,
            http_status=error.http_status if error else None,
            details=details,
        )

    def _new_job(
        self,
        principal: Principal,
        request: SpeakRequest | SpeechRequest,
        *,
        mode: str,
        source: str,
        voice_id: str,
        job_id: str | None = None,
        text_key: str | None = None,
        saved_to: Mapping[str, Any] | None = None,
    ) -> NewSynthJob:
        return NewSynthJob(
            id=job_id or new_id("job"),
            tenant_id=principal.require_tenant(),
            user_id=principal.user_id,
            partner_id=principal.partner_id,
            api_key_id=principal.api_key_id,
            mode=mode,
            source=source,
            status="running" if mode == "inline" else "queued",
            voice_id=voice_id,
            chars=request.chars,
            response_format=request.response_format,
            sample_rate=request.sample_rate,
            request_id=principal.request_id,
            params=request.options.to_json(),
            backend_preference=request.preference,
            text_key=text_key,
            saved_to=saved_to,
        )

    async def _fail_job(
        self,
        principal: Principal,
        job: SynthJob,
        error: ScaiError,
        operation: str,
        progress: SynthesisProgress,
        units: int,
        started: float,
    ) -> None:
        """Fail an inline job with ``error`` and meter the ``units`` it got through."""
        await self.jobs.fail(job.id, status_reason(error), error_view(error))
        await self.meter(
            principal,
            operation=operation,
            progress=progress,
            units=units,
            started=started,
            error=error,
            job_id=job.id,
        )

    # ----- POST /speak ----------------------------------------------------------------------

    async def speak(self, principal: Principal, request: SpeakRequest) -> Inline | Queued:
        """§4.2 from step 2 on; every outcome is audited (``scaispeak.speech.create``)."""
        details = {"voice_id": request.voice_id, "chars": request.chars, "source": "speak"}
        try:
            voice = await self.admit(principal, request.voice_id, request.text)
            prepared = None
            if request.save_to is not None:
                prepared = await SaveToService(self._deps).prepare(principal, request.save_to)
            over = request.chars > self._settings.async_threshold_chars
            if over or request.force_async:
                outcome: Inline | Queued = await self._enqueue(principal, request, prepared)
            else:
                outcome = await self._inline(principal, request, voice, prepared)
        except ScaiError as error:
            await self.audit(
                principal, error, resource_id=error.extras.get("job_id"), details=details
            )
            raise
        await self.audit(principal, None, resource_id=outcome.job.id, details=details)
        return outcome

    async def _inline(
        self,
        principal: Principal,
        request: SpeakRequest,
        voice: Voice,
        prepared: PreparedSave | None,
    ) -> Inline:
        job = await self.jobs.insert(
            self._new_job(principal, request, mode="inline", source="speak", voice_id=voice.id)
        )
        started = time.monotonic()
        progress = SynthesisProgress()
        params = request.options.merge(voice, request.sample_rate)
        timeout_s = self._settings.sync_timeout_s
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    result = await self.synthesizer.synthesize(
                        job.tenant_id,
                        job.user_id,
                        voice,
                        request.text,
                        params,
                        preference=request.preference,
                        progress=progress,
                    )
            except TimeoutError:
                raise ScaiError(
                    "BACKEND_TIMEOUT", f"synthesis took longer than {timeout_s:g} seconds"
                ) from None
        except ScaiError as error:
            await self._fail_job(
                principal, job, error, "speak.batch", progress, progress.chars_done, started
            )
            error.extras["job_id"] = job.id
            raise
        audio = await encode(result.pcm, request.response_format, request.sample_rate)
        await self.meter(
            principal,
            operation="speak.batch",
            progress=progress,
            units=request.chars,
            started=started,
            error=None,
            output_audio_ms=audio.duration_ms,
            job_id=job.id,
        )
        await self.voices.record_license_use(voice, request.chars)
        done = SynthOutput(result.backend, result.node_id, audio.duration_ms)
        saved_to = None
        if prepared is not None:
            saved_to = await self._save_inline(job, request, prepared, audio, done)
        finished = await self.jobs.complete(job.id, replace(done, saved_to=saved_to))
        return Inline(finished or job, audio, result.backend, saved_to)

    async def _save_inline(
        self,
        job: SynthJob,
        request: SpeakRequest,
        prepared: PreparedSave,
        audio: EncodedAudio,
        done: SynthOutput,
    ) -> dict[str, Any]:
        """Upload; on failure keep the audio as the job's output and fail the job (§9.4)."""
        try:
            return await SaveToService(self._deps).upload(prepared, audio.data, audio.content_type)
        except ScaiError as error:
            key = output_key(self._deps, job.id, request.response_format)
            await self._deps.runtime.objects.put(key, audio.data, content_type=audio.content_type)
            kept = SynthOutput(
                done.backend_used,
                done.node_id,
                done.audio_duration_ms,
                output_key=key,
                output_bytes=len(audio.data),
                saved_to=prepared.failed_view(error),
            )
            await self.jobs.fail(job.id, UPLOAD_FAILED_REASON, error_view(error), output=kept)
            error.extras["job_id"] = job.id
            raise

    async def _enqueue(
        self, principal: Principal, request: SpeakRequest, prepared: PreparedSave | None
    ) -> Queued:
        job_id = new_id("job")
        key = text_key(self._deps, job_id)
        await self._deps.runtime.objects.put(
            key, request.text.encode("utf-8"), content_type="text/plain; charset=utf-8"
        )
        job = await self.jobs.insert(
            self._new_job(
                principal,
                request,
                job_id=job_id,
                mode="async",
                source="speak",
                voice_id=request.voice_id,
                text_key=key,
                saved_to=prepared.pending_view() if prepared else None,
            )
        )
        payload = prepared.to_payload() if prepared else None
        await self._deps.queue.enqueue(PROCESS_SYNTH_JOB, job.id, payload)
        log.info("synth_job_queued", job_id=job.id, chars=request.chars)
        return Queued(job)

    # ----- POST /voices/{id}/preview ---------------------------------------------------------

    async def preview(
        self,
        principal: Principal,
        voice_id: str,
        *,
        text: str | None,
        response_format: str,
        preference: str,
        language_hint: str | None,
    ) -> Preview:
        """Synthesise ``text`` (or the built-in sentence of the voice's language), metered as
        ``voice.preview``; audited, but no job row (§7.13)."""
        tenant_id = principal.require_tenant()
        details: dict[str, Any] = {"voice_id": voice_id, "source": "preview"}
        try:
            if text is None:
                seen = await self.voices.visible(tenant_id, principal.user_id, voice_id)
                text = PREVIEW_SENTENCES.get(seen.language_primary, PREVIEW_SENTENCES["en"])
            details["chars"] = len(text)
            voice = await self.admit(principal, voice_id, text)
            preview = await self._preview(
                principal, voice, text, response_format, preference, language_hint
            )
        except ScaiError as error:
            await self.audit(principal, error, resource_id=None, details=details)
            raise
        await self.audit(principal, None, resource_id=None, details=details)
        return preview

    async def _preview(
        self,
        principal: Principal,
        voice: Voice,
        text: str,
        response_format: str,
        preference: str,
        language_hint: str | None,
    ) -> Preview:
        started = time.monotonic()
        progress = SynthesisProgress()
        rate = format_default_rate(response_format)
        params = SpeakOptions(language_hint=language_hint).merge(voice, rate)
        try:
            result = await self.synthesizer.synthesize(
                principal.require_tenant(),
                principal.user_id,
                voice,
                text,
                params,
                preference=preference,
                progress=progress,
            )
        except ScaiError as error:
            await self.meter(
                principal,
                operation="voice.preview",
                progress=progress,
                units=progress.chars_done,
                started=started,
                error=error,
            )
            raise
        audio = await encode(result.pcm, response_format, rate)
        await self.meter(
            principal,
            operation="voice.preview",
            progress=progress,
            units=len(text),
            started=started,
            error=None,
            output_audio_ms=audio.duration_ms,
        )
        await self.voices.record_license_use(voice, len(text))
        return Preview(audio, response_format, result.backend, len(text))

    # ----- POST /v1/audio/speech -------------------------------------------------------------

    async def find_openai_voice(self, principal: Principal, name: str) -> str:
        """The voice id the OpenAI ``voice`` names: an id, a global display name, or (for an
        unknown stock name) ``SCAISPEAK_OPENAI_DEFAULT_VOICE``; else 404."""
        if name.startswith("voice_"):
            return name
        found = await self.voices.find_global_by_name(name)
        if found is not None:
            return found.id
        default = self._settings.openai_default_voice
        if name.lower() in OPENAI_STOCK_VOICES and default:
            if default.startswith("voice_"):
                return default
            found = await self.voices.find_global_by_name(default)
            if found is not None:
                return found.id
        raise ScaiError("SCAISPEAK_VOICE_NOT_FOUND", f"no voice named {name!r}")

    async def open_speech(self, principal: Principal, request: SpeechRequest) -> SpeechStream:
        """Admit, record the inline job and start synthesis up to its first audio.

        Failures before the first audio are raised (and audited, metered, recorded on the
        job); later ones cut the stream (:meth:`finish_stream`).
        """
        details: dict[str, Any] = {"voice": request.voice, "chars": request.chars}
        details |= {"source": "openai", "model": request.model}
        started = time.monotonic()
        progress = SynthesisProgress()
        job: SynthJob | None = None
        try:
            voice_id = await self.find_openai_voice(principal, request.voice)
            voice = await self.admit(principal, voice_id, request.text)
            job = await self.jobs.insert(
                self._new_job(principal, request, mode="inline", source="openai", voice_id=voice.id)
            )
            params = request.options.merge(voice, request.sample_rate)
            chunks = await self._first_audio(principal, job, voice, request, params, progress)
        except ScaiError as error:
            if job is not None:
                await self._fail_job(principal, job, error, "speak.openai", progress, 0, started)
            await self.audit(principal, error, resource_id=job.id if job else None, details=details)
            raise
        stream, first = chunks
        return SpeechStream(self, principal, job, voice, request, stream, first, progress, started)

    async def _first_audio(
        self,
        principal: Principal,
        job: SynthJob,
        voice: Voice,
        request: SpeechRequest,
        params: SynthesisParams,
        progress: SynthesisProgress,
    ) -> tuple[AsyncGenerator[Pcm, None], Pcm | None]:
        """Resolve and pull the first chunk (504 after ``SCAISPEAK_SYNC_TIMEOUT_S``)."""
        timeout_s = self._settings.sync_timeout_s
        choice = await self.synthesizer.resolve(job.tenant_id, voice, request.preference)
        stream = self.synthesizer.stream(
            choice, job.tenant_id, job.user_id, voice, request.text, params, progress=progress
        )
        try:
            async with asyncio.timeout(timeout_s):
                first = await anext(stream, None)
        except TimeoutError:
            await stream.aclose()
            raise ScaiError("BACKEND_TIMEOUT", f"no audio within {timeout_s:g} seconds") from None
        except BaseException:
            await stream.aclose()
            raise
        return stream, first

    async def finish_stream(
        self,
        principal: Principal,
        job: SynthJob,
        voice: Voice,
        request: SpeechRequest,
        progress: SynthesisProgress,
        started: float,
        error: ScaiError | None,
        audio_ms: int,
    ) -> None:
        """End of an OpenAI-compatible stream: job row, usage, licence and audit."""
        details = {"voice": request.voice, "chars": request.chars, "source": "openai"}
        if error is None:
            output = SynthOutput(progress.backend or "A", progress.node_id, audio_ms)
            await self.jobs.complete(job.id, output)
            await self.voices.record_license_use(voice, request.chars)
        else:
            await self.jobs.fail(job.id, status_reason(error), error_view(error))
        await self.meter(
            principal,
            operation="speak.openai",
            progress=progress,
            units=request.chars if error is None else progress.chars_done,
            started=started,
            error=error,
            output_audio_ms=audio_ms,
            job_id=job.id,
        )
        await self.audit(principal, error, resource_id=job.id, details=details)
