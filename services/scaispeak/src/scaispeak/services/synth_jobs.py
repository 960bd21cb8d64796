"""Synthesis jobs: the owner's API (scaispeak.md §5.2–§5.5), the worker's run of one job
(§5.6) and the housekeeping crons (lost jobs, dead workers, output retention)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import structlog
from psycopg import AsyncConnection

from scaicommon.audio import content_type, extension
from scaicommon.errors import ScaiError
from scaicommon.jobs import JobQueue, JobSweeper, lease_renewal, observe_job, retry_if_transient
from scaicommon.pagination import Page
from scaicommon.principal import Principal
from scaicommon.requestid import set_request_id
from scaicommon.runtime import Runtime
from scaicommon.storage import ObjectNotFound, ObjectStore, StorageError
from scaicommon.timefmt import utcnow
from scaicommon.usage import UsageSubject
from scaispeak.deps import SpeakDeps
from scaispeak.dispatch import SynthesisProgress
from scaispeak.services.blocklist import BlocklistService
from scaispeak.services.saveto import PreparedSave, SaveToService
from scaispeak.services.speak import (
    PROCESS_SYNTH_JOB,
    TRANSIENT,
    UPLOAD_FAILED_REASON,
    SpeakOptions,
    SpeakService,
    encode,
    error_view,
    output_key,
    status_reason,
)
from scaispeak.services.voices import VoiceService
from scaispeak.store.jobs import STATUSES, SynthJob, SynthJobStore, SynthOutput
from scaispeak.store.voices import Voice

log = structlog.get_logger("scaispeak.jobs")

#: Objects younger than this are never swept (their row may not be written yet).
STAGED_GRACE: Final = timedelta(hours=1)
#: An inline call running this long was cut short by a crash of its API process.
INLINE_ABANDONED: Final = timedelta(hours=6)


def job_not_found() -> ScaiError:
    """404 ``SCAISPEAK_JOB_NOT_FOUND`` (unknown, or another user's)."""
    return ScaiError("SCAISPEAK_JOB_NOT_FOUND", "job not found")


def presigner(runtime: Runtime) -> ObjectStore:
    """The store that signs ``audio_url``: on ``SCAISPEAK_S3_PUBLIC_ENDPOINT_URL`` when set."""
    settings: Any = runtime.settings
    public = str(getattr(settings, "s3_public_endpoint_url", "") or "")
    if not public or public == settings.s3_endpoint_url:
        return runtime.objects

    def build() -> ObjectStore:
        return ObjectStore(
            public,
            runtime.objects.bucket,
            settings.s3_region,
            settings.s3_access_key,
            settings.s3_secret_key.get(),
            module=runtime.spec.module,
        )

    return runtime.cached("scaispeak.public_objects", build)


async def drop_objects(objects: ObjectStore, *keys: str | None) -> None:
    """Delete objects, best effort (the hourly sweep catches what is left)."""
    for key in keys:
        if not key:
            continue
        try:
            await objects.delete(key)
        except StorageError as exc:
            log.warning("synth_object_delete_failed", key=key, error=str(exc))


@dataclass(frozen=True)
class JobAudio:
    """A job's stored audio, downloaded to a temporary file for streaming."""

    path: Path
    size: int
    content_type: str
    filename: str


class SynthJobService:
    """The job routes' behaviour, always scoped to the caller's tenant and user."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self.jobs = SynthJobStore(deps.runtime.pool)

    async def _owned(self, principal: Principal, job_id: str) -> SynthJob:
        job = await self.jobs.get_owned(principal.require_tenant(), principal.user_id, job_id)
        if job is None:
            raise job_not_found()
        return job

    async def record(self, job: SynthJob) -> dict[str, Any]:
        """The §5.1 record with a freshly presigned ``audio_url``."""
        url = None
        if job.output_key:
            url = await presigner(self._deps.runtime).presign_get(
                job.output_key, int(self._deps.settings.job_audio_url_ttl_s)
            )
        return job.to_api(url)

    async def get(self, principal: Principal, job_id: str) -> dict[str, Any]:
        """The caller's job record, or 404."""
        return await self.record(await self._owned(principal, job_id))

    async def list(
        self, principal: Principal, *, status: str | None, limit: int, cursor: str | None
    ) -> Page[dict[str, Any]]:
        """A newest-first page of the caller's job records; 422 for an unknown ``status``."""
        if status is not None and status not in STATUSES:
            raise ScaiError(
                "VALIDATION_ERROR",
                "status is not a job status",
                details=[{"field": "status", "message": f"expected one of {', '.join(STATUSES)}"}],
            )
        page = await self.jobs.list_owned(
            principal.require_tenant(), principal.user_id, status=status, limit=limit, cursor=cursor
        )
        items = [await self.record(job) for job in page.items]
        return Page(items=items, has_more=page.has_more, next_cursor=page.next_cursor)

    async def delete(self, principal: Principal, job_id: str) -> dict[str, Any]:
        """Remove the job, its text and its audio (§5.5): a queued job never runs, a running
        one is cancelled by its worker (which finds the row gone) and not uploaded."""
        tenant_id = principal.require_tenant()
        async with self.jobs.transaction() as conn:
            job = await self.jobs.delete_owned(tenant_id, principal.user_id, job_id, conn=conn)
            if job is not None:
                await self._audit_delete(principal, job_id, None, conn=conn)
        if job is None:
            error = job_not_found()
            await self._audit_delete(principal, job_id, error)
            raise error
        if job.status == "queued":
            await self._deps.queue.forget(job.id)
        await drop_objects(self._deps.runtime.objects, job.text_key, job.output_key)
        return {"job_id": job_id, "deleted": True}

    async def _audit_delete(
        self,
        principal: Principal,
        job_id: str,
        error: ScaiError | None,
        *,
        conn: AsyncConnection[Any] | None = None,
    ) -> None:
        await self._deps.audit.write(
            principal,
            conn=conn,
            action="scaispeak.speech.delete",
            status="FAILURE" if error else "SUCCESS",
            resource_type="speech",
            resource_id=job_id,
            error_code=error.code if error else None,
            http_status=error.http_status if error else None,
        )

    async def audio(self, principal: Principal, job_id: str, directory: Path) -> JobAudio:
        """The stored audio in ``directory``: 409 ``SCAISPEAK_JOB_NOT_COMPLETED`` while queued
        or running, 404 ``SCAISPEAK_JOB_AUDIO_NOT_FOUND`` when none is stored."""
        job = await self._owned(principal, job_id)
        if job.status in ("queued", "running"):
            raise ScaiError("SCAISPEAK_JOB_NOT_COMPLETED", f"the job is {job.status}")
        missing = ScaiError("SCAISPEAK_JOB_AUDIO_NOT_FOUND", "no audio is stored for this job")
        if not job.output_key:
            raise missing
        name = f"{job.id}.{extension(job.response_format)}"
        path = directory / name
        try:
            await self._deps.runtime.objects.download_to(job.output_key, path)
        except ObjectNotFound:
            raise missing from None
        return JobAudio(
            path=path,
            size=path.stat().st_size,
            content_type=content_type(job.response_format, job.sample_rate),
            filename=name,
        )


# ----- the worker's run of one job (§5.6) ---------------------------------------------------


class _Failed(Exception):
    """Ends the job as ``failed`` with the reason of ``error``."""

    def __init__(self, error: ScaiError) -> None:
        super().__init__(error.message)
        self.error = error


class _Gone(Exception):
    """The job row vanished (deleted by its owner) while the attempt ran."""


class SynthJobRunner:
    """Runs one attempt of an async synthesis job in the worker."""

    def __init__(self, deps: SpeakDeps) -> None:
        self._deps = deps
        self._settings = deps.settings
        self.jobs = SynthJobStore(deps.runtime.pool)
        self._speak = SpeakService(deps)

    async def run(self, job_id: str, worker_id: str, payload: dict[str, Any] | None) -> str:
        """One attempt; returns the job's status afterwards (raises arq ``Retry`` to retry)."""
        lease_s = self._settings.job_lease_s
        job = await self.jobs.claim(job_id, worker_id, lease_s)
        if job is None:
            status = await self.jobs.status_of(job_id)
            log.info("synth_job_skipped", job_id=job_id, status=status)
            return status
        set_request_id(job.request_id)
        structlog.contextvars.bind_contextvars(
            job_id=job.id, tenant_id=job.tenant_id, user_id=job.user_id
        )
        started = time.monotonic()
        async with lease_renewal(self.jobs, job.id, worker_id, lease_s) as gone:
            attempt = asyncio.create_task(self._attempt(job, payload, started))
            watcher = asyncio.create_task(gone.wait())
            await asyncio.wait({attempt, watcher}, return_when=asyncio.FIRST_COMPLETED)
            watcher.cancel()
            if not attempt.done():
                attempt.cancel()  # the owner deleted the job: stop the backend now
            try:
                outcome = await attempt
            except asyncio.CancelledError:
                if not gone.is_set():
                    raise
                outcome = "deleted"
            except _Gone:
                outcome = "deleted"
            except _Failed as failed:
                outcome = await self._fail(job, failed.error)
        if outcome == "deleted":
            await self._forget(job)
        observe_job(self._deps.runtime.metrics, "synthesize", outcome, started)
        return outcome

    async def _forget(self, job: SynthJob) -> None:
        """A deleted job leaves nothing behind: its objects go too."""
        objects = self._deps.runtime.objects
        await drop_objects(
            objects, job.text_key, output_key(self._deps, job.id, job.response_format)
        )
        log.info("synth_job_deleted_while_running")

    async def _fail(self, job: SynthJob, error: ScaiError) -> str:
        reason = status_reason(error)
        if await self.jobs.fail(job.id, reason, error_view(error)) is None:
            return "deleted"
        await drop_objects(self._deps.runtime.objects, job.text_key)
        await self.jobs.clear_text_key(job.id)
        log.info("synth_job_failed", reason=reason, code=error.code)
        return "failed"

    async def _recheck(self, job: SynthJob, text: str) -> Voice:
        """Voice, licence, blocklist and quota again at dispatch (§5.6)."""
        try:
            voice = await VoiceService(self._deps).usable(
                job.tenant_id, job.user_id, job.voice_id, job.chars
            )
            await BlocklistService(self._deps).check(job.tenant_id, text)
            await self._deps.guard.check_for(job.tenant_id, job.user_id, "chars", job.chars)
        except ScaiError as error:
            raise _Failed(error) from None
        return voice

    async def _text(self, job: SynthJob) -> str:
        if not job.text_key:
            raise _Failed(ScaiError("INTERNAL_ERROR", "the job's text is not staged"))
        try:
            data = await self._deps.runtime.objects.get(job.text_key)
        except StorageError as exc:
            log.warning("synth_text_unavailable", error=str(exc))
            raise _Failed(ScaiError("INTERNAL_ERROR", "the job's text is unavailable")) from None
        return data.decode("utf-8")

    async def _attempt(self, job: SynthJob, payload: dict[str, Any] | None, started: float) -> str:
        text = await self._text(job)
        voice = await self._recheck(job, text)
        subject = UsageSubject(
            tenant_id=job.tenant_id,
            user_id=job.user_id,
            partner_id=job.partner_id,
            api_key_id=job.api_key_id,
        )
        options = SpeakOptions.from_json(job.params)
        params = options.merge(voice, job.sample_rate)
        progress = SynthesisProgress()

        async def meter(
            units: int, error: ScaiError | None, output_audio_ms: int | None = None
        ) -> None:
            await self._speak.meter(
                subject,
                operation="speak.job",
                progress=progress,
                units=units,
                started=started,
                error=error,
                output_audio_ms=output_audio_ms,
                job_id=job.id,
                request_id=job.request_id,
            )

        synthesizer = self._speak.synthesizer
        try:
            choice = await synthesizer.resolve(job.tenant_id, voice, job.backend_preference)
            await self.jobs.note_backend(
                job.id, choice.backend, choice.node.node_id if choice.node else None
            )
            result = await synthesizer.synthesize(
                job.tenant_id,
                job.user_id,
                voice,
                text,
                params,
                preference=job.backend_preference,
                choice=choice,
                progress=progress,
            )
        except ScaiError as error:
            await meter(progress.chars_done, error)
            await self._retry_or_fail(job, error)
        except asyncio.CancelledError:
            # Deleted while running: what was synthesised stays metered (§5.5).
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    meter(
                        progress.chars_done,
                        ScaiError("INTERNAL_ERROR", "job deleted while running"),
                    )
                )
            raise
        audio = await encode(result.pcm, job.response_format, job.sample_rate)
        key = output_key(self._deps, job.id, job.response_format)
        await self._deps.runtime.objects.put(key, audio.data, content_type=audio.content_type)
        await meter(job.chars, None, output_audio_ms=audio.duration_ms)
        await VoiceService(self._deps).record_license_use(voice, job.chars)
        output = SynthOutput(
            result.backend,
            result.node_id,
            audio.duration_ms,
            output_key=key,
            output_bytes=len(audio.data),
        )
        if job.saved_to is not None:
            return await self._upload(job, payload, audio.data, audio.content_type, output)
        if await self.jobs.complete(job.id, output) is None:
            raise _Gone()
        await self._finish(job)
        log.info("synth_job_completed", backend=result.backend, audio_ms=audio.duration_ms)
        return "completed"

    async def _upload(
        self,
        job: SynthJob,
        payload: dict[str, Any] | None,
        data: bytes,
        media_type: str,
        output: SynthOutput,
    ) -> str:
        """Upload to ScaiDrive from the payload's token; a late failure keeps the audio."""
        if await self.jobs.get(job.id) is None:
            raise _Gone()  # deleted meanwhile: a deleted job is never uploaded
        prepared: PreparedSave | None = None
        try:
            if payload is None:
                raise ValueError("no save_to payload")
            prepared = PreparedSave.from_payload(payload)
            saved = await SaveToService(self._deps).upload(prepared, data, media_type)
        except (ScaiError, ValueError) as exc:
            error = (
                exc
                if isinstance(exc, ScaiError)
                else ScaiError(
                    "SCAISPEAK_SCAIDRIVE_UPLOAD_FAILED",
                    "the ScaiDrive credentials of this job were lost; repeat the request",
                )
            )
            failed = dict(job.saved_to or {})
            failed |= prepared.failed_view(error) if prepared else {"state": "failed"}
            failed["error"] = error_view(error)
            kept = SynthOutput(
                output.backend_used,
                output.node_id,
                output.audio_duration_ms,
                output_key=output.output_key,
                output_bytes=output.output_bytes,
                saved_to=failed,
            )
            if await self.jobs.fail(job.id, UPLOAD_FAILED_REASON, error_view(error), output=kept):
                await self._finish(job)
                log.info("synth_job_upload_failed", code=error.code)
                return "failed"
            raise _Gone() from None
        done = SynthOutput(
            output.backend_used,
            output.node_id,
            output.audio_duration_ms,
            output_key=output.output_key,
            output_bytes=output.output_bytes,
            saved_to=saved,
        )
        if await self.jobs.complete(job.id, done) is None:
            raise _Gone()
        await self._finish(job)
        return "completed"

    async def _finish(self, job: SynthJob) -> None:
        """The staged text is not needed once the job is terminal."""
        await drop_objects(self._deps.runtime.objects, job.text_key)
        await self.jobs.clear_text_key(job.id)

    async def _retry_or_fail(self, job: SynthJob, error: ScaiError) -> None:
        await retry_if_transient(
            self.jobs,
            job,
            error.code,
            transient=TRANSIENT,
            max_attempts=self._settings.job_max_attempts,
            log=log,
            event="synth_job_retry",
        )
        raise _Failed(error)


# ----- crons ----------------------------------------------------------------------------------


class SynthJobSweeper(JobSweeper):
    """Finds jobs the queue lost or a dead worker left behind, and expires old outputs.

    A job re-enqueued by :meth:`requeue_lost` has lost its ScaiDrive token (the payload is
    ``None``): its upload then fails late (``scaidrive upload failed``) with the audio kept.
    """

    def __init__(self, deps: SpeakDeps, queue: JobQueue) -> None:
        self.jobs = SynthJobStore(deps.runtime.pool)
        super().__init__(
            queue,
            self.jobs,
            PROCESS_SYNTH_JOB,
            args=(None,),
            requeue_after_s=deps.settings.job_requeue_after_s,
            metrics=deps.runtime.metrics,
            log=log,
            kind="synth_job",
        )
        self._deps = deps

    async def purge(self) -> dict[str, int]:
        """Delete outputs past ``SCAISPEAK_JOB_OUTPUT_RETENTION_HOURS``, objects no job row
        references, and fail inline rows whose API process died."""
        settings = self._deps.settings
        objects = self._deps.runtime.objects
        retention = timedelta(hours=settings.job_output_retention_hours)
        expired = await self.jobs.expire_outputs(retention)
        await drop_objects(objects, *expired)
        abandoned = await self.jobs.stale_inline(utcnow() - INLINE_ABANDONED)
        removed = 0
        try:
            cutoff = utcnow() - STAGED_GRACE
            listed = await objects.list_keys(objects.key("synth_jobs/"))
            old = [key for key, modified in listed if modified < cutoff]
            live = await self.jobs.live_keys(old)
            for key in old:
                if key not in live:
                    await objects.delete(key)
                    removed += 1
        except StorageError as exc:
            log.warning("synth_object_sweep_failed", error=str(exc))
        stats = {"outputs_expired": len(expired), "objects": removed, "abandoned_inline": abandoned}
        log.info("synth_jobs_purged", **stats)
        return stats
