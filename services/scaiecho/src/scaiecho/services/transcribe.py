"""Batch transcription: ``POST /transcribe`` and the OpenAI-compatible route (scaiecho.md §4, §11).

One code path from the validated upload to the job row, the backend and the meter; the
routes only parse the form and render the outcome.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Final

import structlog

from scaicommon.audio import (
    ACCEPTED_MIME,
    AudioDecodeError,
    AudioTooLong,
    Pcm,
    decode_pcm16,
    detect_container,
    mime_for,
    probe,
)
from scaicommon.errors import ScaiError
from scaicommon.ids import new_id
from scaicommon.jobs import JobQueue
from scaicommon.nodes import NodeInfo
from scaicommon.policy import Choice
from scaicommon.principal import Principal
from scaicommon.uploads import UploadedFile
from scaiecho.deps import EchoDeps
from scaiecho.dispatch import Dispatcher, OriginalAudio, TranscribeOptions
from scaiecho.store.jobs import Job, JobResult, NewJob
from scaiecho.transcript import Transcript

log = structlog.get_logger("scaiecho.transcribe")

PROCESS_JOB: Final = "process_transcribe_job"
ASYNC_NOTE: Final = (
    "Long-form transcribe runs asynchronously. Poll GET /v1/modules/scaiecho/transcribe/jobs/{id}"
)
SAMPLE_RATE: Final = 16_000

#: ``status_reason`` (§5.2) of each error code a transcription can end with.
_REASONS: Final = {
    "SCAIECHO_BACKEND_UNAVAILABLE": "backend unavailable",
    "SCAIECHO_AUDIO_DECODE_FAILED": "decode failure",
    "SCAIECHO_AUDIO_TOO_LONG": "audio too long",
    "QUOTA_EXCEEDED": "quota exceeded",
    "BUDGET_EXCEEDED": "budget exceeded",
    "BACKEND_TIMEOUT": "backend timeout",
    "BACKEND_ERROR": "backend error",
    "BACKEND_RATE_LIMITED": "backend error",
    "UPSTREAM_SHAPE_MISMATCH": "backend error",
    "VALIDATION_ERROR": "backend error",
}
#: Failures worth another attempt in the worker (§5.2).
TRANSIENT: Final = frozenset(
    {"SCAIECHO_BACKEND_UNAVAILABLE", "BACKEND_ERROR", "BACKEND_TIMEOUT", "BACKEND_RATE_LIMITED"}
)


def status_reason(error: ScaiError) -> str:
    """The job's ``status_reason`` for a failure."""
    return _REASONS.get(error.code, "internal error")


def unsupported_format() -> ScaiError:
    """415 ``SCAIECHO_AUDIO_FORMAT_UNSUPPORTED`` listing the accepted MIME types."""
    return ScaiError(
        "SCAIECHO_AUDIO_FORMAT_UNSUPPORTED",
        "the audio is not in an accepted format (wav, mp3, flac, ogg, m4a, webm)",
        accepted=sorted(ACCEPTED_MIME),
    )


def decode_failed(detail: str) -> ScaiError:
    """422 ``SCAIECHO_AUDIO_DECODE_FAILED``."""
    return ScaiError(
        "SCAIECHO_AUDIO_DECODE_FAILED",
        f"the audio could not be decoded ({detail}); check that the Content-Type matches the bytes",
    )


def too_long(limit_s: float) -> ScaiError:
    """422 ``SCAIECHO_AUDIO_TOO_LONG``."""
    return ScaiError(
        "SCAIECHO_AUDIO_TOO_LONG", f"the decoded audio is longer than {limit_s:g} seconds"
    )


async def decode_audio(source: str, max_seconds: float) -> Pcm:
    """16 kHz mono PCM of a file, off the event loop; raises the two §13 audio errors."""
    try:
        return await asyncio.to_thread(
            decode_pcm16, source, sample_rate=SAMPLE_RATE, max_seconds=max_seconds
        )
    except AudioTooLong:
        raise too_long(max_seconds) from None
    except AudioDecodeError as exc:
        raise decode_failed(str(exc)) from None


def job_result(transcript: Transcript, options: TranscribeOptions) -> JobResult:
    """The row fields of a finished transcription."""
    return JobResult(
        transcript=transcript.text,
        segments=transcript.api_segments(options.timestamps, diarized=False),
        backend_used=transcript.backend,
        node_id=transcript.node_id,
        language_detected=transcript.language or options.language_hint,
        audio_duration_ms=transcript.duration_ms,
    )


@dataclass(frozen=True)
class Submission:
    """A validated upload and what to do with it."""

    upload: UploadedFile
    options: TranscribeOptions
    force_async: bool = False
    source: str = "batch"  # "batch" | "openai"
    allow_async: bool = True  # the OpenAI route always answers synchronously


@dataclass(frozen=True)
class Completed:
    """An inline transcription that finished."""

    job: Job
    transcript: Transcript


@dataclass(frozen=True)
class Queued:
    """An upload staged for the worker."""

    job: Job


class TranscribeService:
    """Runs §4.1 steps 5–9 for one validated request."""

    def __init__(self, deps: EchoDeps, dispatcher: Dispatcher, queue: JobQueue) -> None:
        self._deps = deps
        self._settings = deps.settings
        self._dispatcher = dispatcher
        self._queue = queue

    async def submit(self, principal: Principal, submission: Submission) -> Completed | Queued:
        """Transcribe inline or stage an async job (§4.1 from the media type on)."""
        tenant_id = principal.require_tenant()
        upload = submission.upload
        ext = detect_container(upload.head, upload.content_type, upload.filename)
        if ext is None:
            raise unsupported_format()
        declared_ms = await self._declared_ms(upload)
        await self._deps.guard.check(principal, "audio_ms", declared_ms)
        choice = await self._dispatcher.resolve(tenant_id, submission.options.backend_preference)
        wants_async = upload.size > self._settings.async_audio_threshold_bytes
        if submission.allow_async and (wants_async or submission.force_async):
            return await self._enqueue(principal, submission, ext, declared_ms)
        return await self._inline(principal, submission, ext, choice)

    @staticmethod
    async def _declared_ms(upload: UploadedFile) -> int:
        try:
            found = await asyncio.to_thread(probe, upload.path)
        except AudioDecodeError:
            return 0
        return found.duration_ms or 0

    def _new_job(
        self, principal: Principal, submission: Submission, *, mode: str, status: str
    ) -> NewJob:
        upload = submission.upload
        return NewJob(
            id=new_id("job"),
            tenant_id=principal.require_tenant(),
            user_id=principal.user_id,
            partner_id=principal.partner_id,
            api_key_id=principal.api_key_id,
            mode=mode,
            source=submission.source,
            status=status,
            options=submission.options.to_json(),
            audio_bytes=upload.size,
            audio_sha256=upload.sha256,
            request_id=principal.request_id,
        )

    async def _audit(self, principal: Principal, job_id: str, error: ScaiError | None) -> None:
        await self._deps.audit.write_or_log(
            principal,
            action="scaiecho.transcription.create",
            status="FAILURE" if error else "SUCCESS",
            resource_type="transcription",
            resource_id=job_id,
            error_code=error.code if error else None,
            http_status=error.http_status if error else None,
        )

    # ----- inline (§4.1 step 9) ------------------------------------------------------

    async def _inline(
        self, principal: Principal, submission: Submission, ext: str, choice: Choice[NodeInfo]
    ) -> Completed:
        upload = submission.upload
        job = await self._deps.jobs.insert(
            self._new_job(principal, submission, mode="inline", status="running")
        )
        started = time.monotonic()
        dispatched = False
        try:
            pcm = await decode_audio(str(upload.path), self._settings.max_audio_seconds)
            await self._deps.guard.check(principal, "audio_ms", pcm.duration_ms, choice.backend)
            original = OriginalAudio(upload.path, ext, mime_for(ext), upload.size)
            dispatched = True
            transcript = await self._dispatcher.transcribe(
                choice,
                pcm,
                submission.options,
                original=original,
                tenant_id=job.tenant_id,
                user_id=job.user_id,
            )
        except ScaiError as error:
            await self._deps.jobs.fail(job.id, status_reason(error))
            if dispatched:
                await self._meter(principal, job, choice.backend, 0, started, error)
            await self._audit(principal, job.id, error)
            error.extras["job_id"] = job.id
            raise
        done = await self._deps.jobs.complete(job.id, job_result(transcript, submission.options))
        await self._meter(
            principal,
            job,
            transcript.backend,
            transcript.duration_ms,
            started,
            None,
            node_id=transcript.node_id,
            engine=transcript.engine,
        )
        await self._audit(principal, job.id, None)
        return Completed(done or job, transcript)

    async def _meter(
        self,
        principal: Principal,
        job: Job,
        backend: str,
        audio_ms: int,
        started: float,
        error: ScaiError | None,
        *,
        node_id: str | None = None,
        engine: str | None = None,
    ) -> None:
        operation = "transcribe.openai" if job.source == "openai" else "transcribe.batch"
        await self._deps.usage.record(
            principal,
            operation=operation,
            backend=backend,
            unit="audio_ms",
            units=audio_ms,
            status="failure" if error else "success",
            node_id=node_id,
            engine=engine,
            latency_ms=int((time.monotonic() - started) * 1000),
            error_code=error.code if error else None,
            job_id=job.id,
        )

    # ----- async (§4.3) --------------------------------------------------------------

    async def _enqueue(
        self, principal: Principal, submission: Submission, ext: str, declared_ms: int
    ) -> Queued:
        upload = submission.upload
        new = self._new_job(principal, submission, mode="async", status="queued")
        key = self._deps.runtime.objects.key("transcribe_jobs", f"{new.id}.{ext}")
        await self._deps.runtime.objects.put(key, upload.path, content_type=mime_for(ext))
        job = await self._deps.jobs.insert(
            replace(new, audio_key=key, audio_ext=ext, declared_duration_ms=declared_ms or None)
        )
        await self._queue.enqueue(PROCESS_JOB, job.id)
        await self._audit(principal, job.id, None)
        log.info("transcribe_job_queued", job_id=job.id, audio_bytes=upload.size)
        return Queued(job)
