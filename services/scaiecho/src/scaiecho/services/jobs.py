"""Transcription jobs: the owner's API (§5.1) and the worker's run of one job (§5.2)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import structlog

from scaicommon.audio import mime_for
from scaicommon.errors import ScaiError
from scaicommon.jobs import JobQueue, lease_renewal, observe_job, retry_if_transient
from scaicommon.pagination import Page
from scaicommon.principal import Principal
from scaicommon.storage import StorageError
from scaicommon.usage import UsageSubject
from scaiecho.deps import EchoDeps
from scaiecho.dispatch import Dispatcher, OriginalAudio, TranscribeOptions
from scaiecho.services.transcribe import TRANSIENT, decode_audio, job_result, status_reason
from scaiecho.store.jobs import STATUSES, Job

log = structlog.get_logger("scaiecho.jobs")


def job_not_found() -> ScaiError:
    """404 ``SCAIECHO_JOB_NOT_FOUND`` (unknown, or another user's or tenant's)."""
    return ScaiError("SCAIECHO_JOB_NOT_FOUND", "job not found")


class JobService:
    """The job routes' behaviour: always scoped to the caller's tenant and user."""

    def __init__(self, deps: EchoDeps) -> None:
        self._deps = deps

    async def get(self, principal: Principal, job_id: str) -> Job:
        """The caller's job or 404."""
        job = await self._deps.jobs.get_owned(principal.require_tenant(), principal.user_id, job_id)
        if job is None:
            raise job_not_found()
        return job

    async def list(
        self, principal: Principal, *, status: str | None, limit: int, cursor: str | None
    ) -> Page[Job]:
        """A page of the caller's jobs; 422 for an unknown ``status``."""
        if status is not None and status not in STATUSES:
            raise ScaiError(
                "VALIDATION_ERROR",
                "status is not a job status",
                details=[{"field": "status", "message": f"expected one of {', '.join(STATUSES)}"}],
            )
        return await self._deps.jobs.list_owned(
            principal.require_tenant(),
            principal.user_id,
            status=status,
            limit=limit,
            cursor=cursor,
        )

    async def delete(self, principal: Principal, job_id: str) -> dict[str, object]:
        """Cancel a queued job, delete a finished one, refuse a running one (409)."""
        tenant_id = principal.require_tenant()
        job = await self.get(principal, job_id)
        error: ScaiError | None = None
        result: dict[str, object]
        if job.status == "queued":
            cancelled = await self._deps.jobs.cancel_queued(tenant_id, principal.user_id, job_id)
            if cancelled is None:  # it started meanwhile
                error = ScaiError("SCAIECHO_JOB_RUNNING", "the job is running")
            else:
                await self._drop_staged(cancelled)
                result = {"job_id": job_id, "status": "cancelled"}
        elif job.terminal:
            deleted = await self._deps.jobs.delete_finished(tenant_id, principal.user_id, job_id)
            if deleted is None:
                raise job_not_found()
            await self._drop_staged(deleted)
            result = {"job_id": job_id, "deleted": True}
        else:
            error = ScaiError("SCAIECHO_JOB_RUNNING", "the job is running; wait for it to end")
        await self._deps.audit.write(
            principal,
            action="scaiecho.transcription.delete",
            status="FAILURE" if error else "SUCCESS",
            resource_type="transcription",
            resource_id=job_id,
            error_code=error.code if error else None,
            http_status=error.http_status if error else None,
        )
        if error is not None:
            raise error
        return result

    async def _drop_staged(self, job: Job) -> None:
        await drop_staged(self._deps, job)


async def drop_staged(deps: EchoDeps, job: Job) -> None:
    """Delete a job's staged audio (best effort: the hourly sweep catches leftovers)."""
    if not job.audio_key:
        return
    try:
        await deps.runtime.objects.delete(job.audio_key)
    except StorageError as exc:
        log.warning("staged_audio_delete_failed", job_id=job.id, error=str(exc))
        return
    with contextlib.suppress(Exception):
        await deps.jobs.clear_audio_key(job.id)


class _Failed(Exception):
    """Ends the job as ``failed`` with ``reason`` (and the error for metering)."""

    def __init__(self, reason: str, error: ScaiError | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class JobRunner:
    """Runs one attempt of an async job in the worker (§5.2)."""

    def __init__(self, deps: EchoDeps, dispatcher: Dispatcher, queue: JobQueue) -> None:
        self._deps = deps
        self._settings = deps.settings
        self._dispatcher = dispatcher
        self._queue = queue

    async def run(self, job_id: str, worker_id: str) -> str:
        """One attempt; returns the job's status afterwards (raises arq ``Retry`` to retry)."""
        lease_s = self._settings.job_lease_s
        job = await self._deps.jobs.claim(job_id, worker_id, lease_s)
        if job is None:
            status = await self._deps.jobs.status_of(job_id)
            log.info("transcribe_job_skipped", job_id=job_id, status=status)
            return status
        structlog.contextvars.bind_contextvars(
            job_id=job.id, tenant_id=job.tenant_id, user_id=job.user_id, request_id=job.request_id
        )
        started = time.monotonic()
        async with lease_renewal(self._deps.jobs, job.id, worker_id, lease_s):
            try:
                outcome = await self._attempt(job, started)
            except _Failed as failed:
                await self._deps.jobs.fail(job.id, failed.reason)
                await drop_staged(self._deps, job)
                log.info("transcribe_job_failed", reason=failed.reason)
                outcome = "failed"
        observe_job(self._deps.runtime.metrics, "transcribe", outcome, started)
        return outcome

    async def _attempt(self, job: Job, started: float) -> str:
        options = TranscribeOptions.from_json(job.options)
        subject = UsageSubject(
            tenant_id=job.tenant_id,
            user_id=job.user_id,
            partner_id=job.partner_id,
            api_key_id=job.api_key_id,
        )
        guard = self._deps.guard
        try:
            await guard.check_for(
                job.tenant_id, job.user_id, "audio_ms", job.declared_duration_ms or 0
            )
        except ScaiError as error:
            raise _Failed(status_reason(error)) from None
        with tempfile.TemporaryDirectory(prefix="scaiecho-job-") as tmp:
            local = Path(tmp) / f"audio.{job.audio_ext or 'bin'}"
            await self._fetch(job, local)
            try:
                pcm = await decode_audio(str(local), self._settings.max_audio_seconds)
                await guard.check_for(job.tenant_id, job.user_id, "audio_ms", pcm.duration_ms)
            except ScaiError as error:
                raise _Failed(status_reason(error)) from None
            ext = job.audio_ext or "wav"
            original = OriginalAudio(local, ext, mime_for(ext), job.audio_bytes)
            backend: str | None = None
            try:
                choice = await self._dispatcher.resolve(job.tenant_id, options.backend_preference)
                backend = choice.backend
                await self._deps.jobs.note_backend(
                    job.id, choice.backend, choice.node.node_id if choice.node else None
                )
                transcript = await self._dispatcher.transcribe(
                    choice,
                    pcm,
                    options,
                    original=original,
                    tenant_id=job.tenant_id,
                    user_id=job.user_id,
                )
            except ScaiError as error:
                if backend is not None:
                    await self._deps.usage.record(
                        subject,
                        operation="transcribe.job",
                        backend=backend,
                        unit="audio_ms",
                        units=0,
                        status="failure",
                        error_code=error.code,
                        request_id=job.request_id,
                        job_id=job.id,
                        latency_ms=int((time.monotonic() - started) * 1000),
                    )
                await self._retry_or_fail(job, error)
        done = await self._deps.jobs.complete(job.id, job_result(transcript, options))
        if done is None:  # cancelled or failed meanwhile: do not meter a result nobody keeps
            return "lost"
        await self._deps.usage.record(
            subject,
            operation="transcribe.job",
            backend=transcript.backend,
            unit="audio_ms",
            units=transcript.duration_ms,
            node_id=transcript.node_id,
            engine=transcript.engine,
            request_id=job.request_id,
            job_id=job.id,
            latency_ms=int((time.monotonic() - started) * 1000),
        )
        await drop_staged(self._deps, done)
        log.info(
            "transcribe_job_completed", backend=transcript.backend, audio_ms=transcript.duration_ms
        )
        return "completed"

    async def _fetch(self, job: Job, local: Path) -> None:
        if not job.audio_key:
            raise _Failed("staged audio unavailable")
        try:
            await self._deps.runtime.objects.download_to(job.audio_key, local)
        except StorageError as exc:
            log.warning("staged_audio_unavailable", error=str(exc))
            raise _Failed("staged audio unavailable") from None

    async def _retry_or_fail(self, job: Job, error: ScaiError) -> None:
        await retry_if_transient(
            self._deps.jobs,
            job,
            error.code,
            transient=TRANSIENT,
            max_attempts=self._settings.job_max_attempts,
            log=log,
            event="transcribe_job_retry",
        )
        raise _Failed(status_reason(error), error)
