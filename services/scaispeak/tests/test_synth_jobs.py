"""Async synthesis jobs end to end (scaispeak.md §4.5, §5, §9.4): the API in the test's loop,
real ``python -m scaispeak worker`` processes, the real dev node and relay, a private Redis, S3,
and for ``save_to`` the dev ScaiKey and ScaiDrive."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaicommon.testing import DevServer, LocalRedis, S3Endpoint, scaidrive_settings
from scaicommon.testing.inprocess import on_fresh_database
from scaicommon.testing.jobs import job_waiter
from scaicommon.testing.wer import word_error_rate
from scaidevstack.node.testing import NodeProcess
from scaidevstack.scaidrive.store import Actor, DriveStore
from scaidevstack.scaikey import KeyStore
from scaispeak.deps import deps_of
from scaispeak.services.synth_jobs import SynthJobSweeper

from .conftest import SpeakEnv, running_speak, with_node
from .test_speak import (
    TEXT,
    block,
    cloned_voice,
    container_duration_ms,
    decode,
    error,
    global_voice,
    ok,
    rows,
    tenant,
    transcribe,
)

THRESHOLD = 100
LONG_TEXT = f"{TEXT} The forecast for tomorrow looks just as pleasant, so bring your friends along."
FAST = {
    "job_lease_s": 3.0,
    "job_sweep_interval_s": 1,
    "job_requeue_after_s": 1.0,
    "async_threshold_chars": THRESHOLD,
}
wait_job = job_waiter("/speak/jobs/{}", timeout_s=180.0)


@pytest.fixture(scope="module")
async def speak(
    pg_admin_dsn: str, private_redis: LocalRedis, s3_endpoint: S3Endpoint, tts_node: NodeProcess
) -> AsyncIterator[SpeakEnv]:
    overrides = {**with_node(tts_node), **FAST}
    async with on_fresh_database(
        running_speak, pg_admin_dsn, private_redis.url, s3_endpoint, **overrides
    ) as env:
        yield env


async def submit(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /speak`` expecting the 202 of §4.5."""
    answer = await client.post("/speak", json=body)
    data: dict[str, Any] = ok(answer, 202)
    assert answer.headers["location"] == f"/v1/modules/scaispeak/speak/jobs/{data['job_id']}"
    assert data["status"] == "queued"
    return data


async def job_keys(env: SpeakEnv, job_id: str) -> list[str]:
    """Objects under ``scaispeak/synth_jobs/`` that belong to the job."""
    objects = env.runtime.objects
    return sorted(k for k, _ in await objects.list_keys(objects.key("synth_jobs/")) if job_id in k)


# ----- the happy paths --------------------------------------------------------------------


async def test_long_text_runs_as_a_job(speak: SpeakEnv, tts_node: NodeProcess) -> None:
    tnt = tenant()
    voice_id = await global_voice(speak)
    key = await speak.key(tenant=tnt)
    other = await speak.key(tenant=tnt, user="usr_other")
    async with speak.client(key) as client:
        queued = await submit(client, {"text": LONG_TEXT, "voice_id": voice_id})
        job_id = queued["job_id"]
        assert queued["chars"] == len(LONG_TEXT)
        assert queued["note"] == (
            f"Text is longer than the inline limit of {THRESHOLD} characters. "
            f"Poll GET /v1/modules/scaispeak/speak/jobs/{job_id}."
        )
        waiting = ok(await client.get(f"/speak/jobs/{job_id}"))
        assert (waiting["mode"], waiting["status"], waiting["audio_url"]) == (
            "async",
            "queued",
            None,
        )
        assert waiting["backend_used"] is None and waiting["started_at"] is None
        error(await client.get(f"/speak/jobs/{job_id}/audio"), 409, "SCAISPEAK_JOB_NOT_COMPLETED")
        assert await job_keys(speak, job_id) == [f"scaispeak/synth_jobs/{job_id}.txt"]
        worker = await speak.start_worker()
        try:
            done = await wait_job(client, job_id, ("completed", "failed"))
        finally:
            worker.stop()
        download = await client.get(f"/speak/jobs/{job_id}/audio")
        listed = ok(await client.get("/speak/jobs", params={"status": "completed"}))
        bad = error(
            await client.get("/speak/jobs", params={"status": "done"}), 422, "VALIDATION_ERROR"
        )
    async with speak.client(other) as stranger:
        error(await stranger.get(f"/speak/jobs/{job_id}"), 404, "SCAISPEAK_JOB_NOT_FOUND")
        error(await stranger.get(f"/speak/jobs/{job_id}/audio"), 404, "SCAISPEAK_JOB_NOT_FOUND")
        error(await stranger.delete(f"/speak/jobs/{job_id}"), 404, "SCAISPEAK_JOB_NOT_FOUND")
    assert done["status"] == "completed", done
    assert done["backend_used"] == "B"
    assert (done["response_format"], done["sample_rate"]) == ("mp3", 24000)
    assert done["started_at"] and done["completed_at"] and done["status_reason"] is None
    assert download.status_code == 200
    assert download.headers["content-type"] == "audio/mpeg"
    assert download.headers["content-disposition"] == f'attachment; filename="{job_id}.mp3"'
    assert int(download.headers["content-length"]) == len(download.content)
    assert abs(container_duration_ms(download.content) - done["audio_duration_ms"]) <= 80
    assert word_error_rate(LONG_TEXT, await transcribe(tts_node, download.content)) <= 0.10
    async with httpx.AsyncClient() as plain:
        presigned = await plain.get(done["audio_url"])
    assert presigned.status_code == 200 and presigned.content == download.content
    assert [j["job_id"] for j in listed["items"]] == [job_id]
    assert [d["field"] for d in bad["details"]] == ["status"]
    assert await job_keys(speak, job_id) == [f"scaispeak/synth_jobs/{job_id}.mp3"]
    usage = await rows(speak, "SELECT * FROM usage_records WHERE job_id = %s", job_id)
    assert [(u["operation"], u["status"], u["units"]) for u in usage] == [
        ("speak.job", "success", len(LONG_TEXT))
    ]
    [row] = await rows(speak, "SELECT request_id FROM synth_jobs WHERE id = %s", job_id)
    assert usage[0]["request_id"] == row["request_id"]


async def test_force_async_on_the_node(speak: SpeakEnv, tts_node: NodeProcess) -> None:
    tnt = tenant()
    voice_id = await cloned_voice(speak, tnt)
    key = await speak.key(tenant=tnt)
    async with speak.client(key) as client:
        queued = await submit(
            client,
            {
                "text": TEXT,
                "voice_id": voice_id,
                "force_async": True,
                "response_format": "wav",
                "sample_rate": 16000,
                "backend_preference": "prefer_self_hosted",
            },
        )
        assert queued["note"].startswith("The job runs asynchronously because force_async")
        worker = await speak.start_worker()
        try:
            done = await wait_job(client, queued["job_id"], ("completed", "failed"))
        finally:
            worker.stop()
        audio = (await client.get(f"/speak/jobs/{queued['job_id']}/audio")).content
    assert (done["status"], done["backend_used"], done["sample_rate"]) == ("completed", "A", 16000)
    assert decode(audio, 16000).duration_ms == done["audio_duration_ms"]
    assert word_error_rate(TEXT, await transcribe(tts_node, audio)) <= 0.10


# ----- failures at dispatch ---------------------------------------------------------------


async def test_rechecks_at_dispatch(speak: SpeakEnv) -> None:
    tnt, poor = tenant(), tenant()
    mine = await cloned_voice(speak, tnt)
    doomed = await cloned_voice(speak, tnt)
    licensed = await global_voice(speak)
    other_global = await global_voice(speak)
    key = await speak.key(tenant=tnt)
    poor_key = await speak.key(tenant=poor)
    async with speak.client(key) as client, speak.client(poor_key) as poor_client:
        blocked = await submit(client, {"text": f"{LONG_TEXT} Secret plan.", "voice_id": mine})
        gone = await submit(client, {"text": LONG_TEXT, "voice_id": doomed})
        lapsed = await submit(client, {"text": LONG_TEXT, "voice_id": licensed})
        broke = await submit(poor_client, {"text": LONG_TEXT, "voice_id": other_global})
        # Between enqueue and dispatch: a blocklist entry, an erased voice, an expired licence
        # and an exhausted budget.
        entry = await block(speak, tnt, "secret plan")
        async with speak.runtime.pool.connection() as conn:
            await conn.execute("UPDATE voices SET deleted_at = now() WHERE id = %s", (doomed,))
            await conn.execute(
                "UPDATE voices SET license = license || %s::jsonb WHERE id = %s",
                (
                    '{"license_type": "term", "license_expires_at": "2021-01-01T00:00:00.000Z"}',
                    licensed,
                ),
            )
        await deps_of(speak.runtime).budgets.set(poor, None, "month", "chars", 10, "usr_admin")
        worker = await speak.start_worker()
        try:
            results = [
                await wait_job(c, j["job_id"], ("completed", "failed"))
                for c, j in (
                    (client, blocked),
                    (client, gone),
                    (client, lapsed),
                    (poor_client, broke),
                )
            ]
        finally:
            worker.stop()
        missing = error(
            await client.get(f"/speak/jobs/{blocked['job_id']}/audio"),
            404,
            "SCAISPEAK_JOB_AUDIO_NOT_FOUND",
        )
    assert missing["message"]
    assert [(r["status"], r["status_reason"], r["error"]["code"]) for r in results] == [
        ("failed", "text blocked", "SCAISPEAK_TEXT_BLOCKED"),
        ("failed", "voice not ready", "SCAISPEAK_VOICE_NOT_FOUND"),
        ("failed", "voice license exhausted", "SCAISPEAK_VOICE_LICENSE_EXPIRED"),
        ("failed", "quota exceeded", "QUOTA_EXCEEDED"),
    ]
    assert entry.startswith("blk_")
    for job in results:
        assert job["audio_url"] is None and job["backend_used"] is None
        assert await job_keys(speak, job["job_id"]) == []
    ids = [r["job_id"] for r in results]
    assert await rows(speak, "SELECT * FROM usage_records WHERE job_id = ANY(%s)", ids) == []


async def test_no_backend_at_dispatch_retries_then_fails(speak: SpeakEnv) -> None:
    tnt = tenant()
    relay_only = await global_voice(speak)
    key = await speak.key(tenant=tnt)
    admin = await speak.key(tenant=tnt, user="usr_admin", permissions=["scaispeak:admin"])
    async with speak.client(key) as client, speak.client(admin) as admin_client:
        queued = await submit(client, {"text": LONG_TEXT, "voice_id": relay_only})
        # The policy changes after enqueue: only A, which never serves a voice without a clip.
        ok(
            await admin_client.patch(
                "/admin/policy", json={"allowed_backends": ["A"], "default_backend": "A"}
            )
        )
        worker = await speak.start_worker(job_max_attempts=2)
        try:
            done = await wait_job(client, queued["job_id"], ("completed", "failed"))
        finally:
            worker.stop()
    assert (done["status"], done["status_reason"]) == ("failed", "backend unavailable")
    assert done["error"]["code"] == "SCAISPEAK_BACKEND_UNAVAILABLE"
    assert worker.output().count("synth_job_retry") == 1
    [row] = await rows(speak, "SELECT attempts FROM synth_jobs WHERE id = %s", queued["job_id"])
    assert row["attempts"] == 2


async def test_inline_job_has_no_stored_audio(speak: SpeakEnv) -> None:
    voice_id = await global_voice(speak)
    key = await speak.key(tenant=tenant())
    async with speak.client(key) as client:
        data = ok(await client.post("/speak", json={"text": TEXT, "voice_id": voice_id}))
        error(
            await client.get(f"/speak/jobs/{data['job_id']}/audio"),
            404,
            "SCAISPEAK_JOB_AUDIO_NOT_FOUND",
        )


# ----- delete, lost jobs, dead workers, retention -----------------------------------------


async def test_delete_queued_and_running_jobs(speak: SpeakEnv) -> None:
    tnt = tenant()
    voice_id = await cloned_voice(speak, tnt)
    key = await speak.key(tenant=tnt)
    long_read = " ".join([LONG_TEXT] * 12)
    async with speak.client(key) as client:
        queued = await submit(client, {"text": LONG_TEXT, "voice_id": voice_id})
        deleted = ok(await client.delete(f"/speak/jobs/{queued['job_id']}"))
        assert deleted == {"job_id": queued["job_id"], "deleted": True}
        error(await client.get(f"/speak/jobs/{queued['job_id']}"), 404, "SCAISPEAK_JOB_NOT_FOUND")
        assert await job_keys(speak, queued["job_id"]) == []
        running = await submit(
            client,
            {"text": long_read, "voice_id": voice_id, "backend_preference": "prefer_self_hosted"},
        )
        worker = await speak.start_worker()
        try:
            await wait_job(client, running["job_id"], ("running",))
            ok(await client.delete(f"/speak/jobs/{running['job_id']}"))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while "synth_job_deleted_while_running" not in worker.output():
                assert loop.time() < deadline, worker.output()[-3000:]
                await asyncio.sleep(0.2)
        finally:
            worker.stop()
    assert await job_keys(speak, running["job_id"]) == []
    assert await rows(speak, "SELECT * FROM synth_jobs WHERE tenant_id = %s", tnt) == []
    # The queued job never ran; the running one was cut short and metered as far as it got.
    usage = await rows(speak, "SELECT * FROM usage_records WHERE tenant_id = %s", tnt)
    assert [(u["job_id"], u["status"]) for u in usage] == [(running["job_id"], "failure")]
    assert usage[0]["units"] < len(long_read)
    audits = await rows(
        speak,
        "SELECT status FROM audit_log WHERE action = 'scaispeak.speech.delete' AND tenant_id = %s",
        tnt,
    )
    assert [a["status"] for a in audits] == ["SUCCESS", "SUCCESS"]


async def test_lost_and_orphaned_jobs_complete(speak: SpeakEnv) -> None:
    tnt = tenant()
    voice_id = await global_voice(speak)
    key = await speak.key(tenant=tnt)
    deps = deps_of(speak.runtime)
    async with speak.client(key) as client:
        lost = await submit(client, {"text": LONG_TEXT, "voice_id": voice_id})
        await deps.queue.forget(lost["job_id"])  # as if Redis had lost it
        worker = await speak.start_worker()
        try:
            done = await wait_job(client, lost["job_id"], ("completed", "failed"))
        finally:
            worker.stop()
        assert done["status"] == "completed", done
        assert "synth_job_requeued" in worker.output()
        # A worker killed mid-job: another one takes the job over once its lease lapses.
        long_read = " ".join([LONG_TEXT] * 6)
        killed = await submit(client, {"text": long_read, "voice_id": voice_id})
        first = await speak.start_worker()
        await wait_job(client, killed["job_id"], ("running", "completed"))
        first.stop(signal.SIGKILL)
        second = await speak.start_worker()
        try:
            done = await wait_job(client, killed["job_id"], ("completed", "failed"))
        finally:
            second.stop()
    assert done["status"] == "completed", done
    usage = await rows(
        speak, "SELECT status FROM usage_records WHERE job_id = %s", killed["job_id"]
    )
    assert [u["status"] for u in usage] == ["success"]


async def test_outputs_expire_after_retention(speak: SpeakEnv) -> None:
    voice_id = await global_voice(speak)
    key = await speak.key(tenant=tenant())
    async with speak.client(key) as client:
        queued = await submit(client, {"text": LONG_TEXT, "voice_id": voice_id})
        worker = await speak.start_worker()
        try:
            done = await wait_job(client, queued["job_id"], ("completed", "failed"))
        finally:
            worker.stop()
        assert done["audio_url"]
        async with speak.runtime.pool.connection() as conn:
            await conn.execute(
                "UPDATE synth_jobs SET completed_at = now() - %s WHERE id = %s",
                (timedelta(hours=169), queued["job_id"]),
            )
        deps = deps_of(speak.runtime)
        stats = await SynthJobSweeper(deps, deps.queue).purge()
        expired = ok(await client.get(f"/speak/jobs/{queued['job_id']}"))
        gone = await client.get(f"/speak/jobs/{queued['job_id']}/audio")
    assert stats["outputs_expired"] >= 1
    assert expired["status"] == "completed" and expired["audio_url"] is None
    error(gone, 404, "SCAISPEAK_JOB_AUDIO_NOT_FOUND")
    assert await job_keys(speak, queued["job_id"]) == []


# ----- save_to ----------------------------------------------------------------------------


@pytest.fixture
async def drive_speak(
    pg_dsn: str,
    private_redis: LocalRedis,
    s3_endpoint: S3Endpoint,
    tts_node: NodeProcess,
    scaikey_server: tuple[DevServer, KeyStore],
    scaidrive_server: DevServer,
) -> AsyncIterator[SpeakEnv]:
    settings = {
        **with_node(tts_node),
        **FAST,
        **scaidrive_settings(scaikey_server[0], scaidrive_server, "scaispeak"),
    }
    async with running_speak(pg_dsn, private_redis.url, s3_endpoint, **settings) as env:
        yield env


async def test_save_to_inline_and_async(
    drive_speak: SpeakEnv,
    scaikey_server: tuple[DevServer, KeyStore],
    scaidrive_server: DevServer,
) -> None:
    env = drive_speak
    args = scaidrive_server.process.args
    store = DriveStore(Path(args[args.index("--data-dir") + 1]))
    tnt = "tnt_" + secrets.token_hex(5)
    share = str(store.create_share(tenant_id=tnt, name="Audio", members={"usr_a": "owner"})["id"])
    tiny = store.create_share(
        tenant_id=tnt, name="Tiny", members={"usr_a": "owner"}, quota_bytes=1000
    )
    server, keys = scaikey_server
    jwt = keys.mint(
        tenant=tnt,
        user="usr_a",
        scope="files:read files:write",
        issuer_base=server.base_url,
        roles=["tenant_admin"],
    )
    voice_id = await global_voice(env)

    def save(name: str) -> dict[str, Any]:
        return {"share_id": share, "filename": name}

    def names() -> dict[str, str]:
        items, _ = store.list_children(Actor(tnt, "usr_a"), share, None)
        return {i["name"]: i["id"] for i in items}

    async with env.client(jwt) as client:
        raw = await client.post(
            "/speak",
            json={"text": TEXT, "voice_id": voice_id, "save_to": save("inline.mp3")},
            headers={"Accept": "audio/mpeg"},
        )
        assert raw.status_code == 200, raw.text
        assert raw.headers["x-scaispeak-saved-file-id"] == names()["inline.mp3"]
        full = error(
            await client.post(
                "/speak",
                json={
                    "text": TEXT,
                    "voice_id": voice_id,
                    "save_to": {"share_id": str(tiny["id"]), "filename": "big.mp3"},
                },
            ),
            507,
            "SCAISPEAK_SCAIDRIVE_QUOTA_EXCEEDED",
        )
        over_quota = ok(await client.get(f"/speak/jobs/{full['job_id']}"))
        assert (over_quota["status"], over_quota["status_reason"]) == (
            "failed",
            "scaidrive upload failed",
        )
        assert over_quota["saved_to"]["state"] == "failed"
        kept_inline = await client.get(f"/speak/jobs/{full['job_id']}/audio")
        assert kept_inline.status_code == 200
        assert container_duration_ms(kept_inline.content) > 2000
        good = await submit(
            client, {"text": LONG_TEXT, "voice_id": voice_id, "save_to": save("job.mp3")}
        )
        late = await submit(
            client, {"text": LONG_TEXT, "voice_id": voice_id, "save_to": save("taken.mp3")}
        )
        pending = ok(await client.get(f"/speak/jobs/{good['job_id']}"))
        assert pending["saved_to"]["state"] == "pending"
        # Someone takes the name after enqueue: the worker's upload meets a conflict.
        store.add_file(Actor(tnt, "usr_a"), share, None, "taken.mp3", b"not audio", "audio/mpeg")
        worker = await env.start_worker()
        try:
            saved = await wait_job(client, good["job_id"], ("completed", "failed"))
            failed = await wait_job(client, late["job_id"], ("completed", "failed"))
        finally:
            worker.stop()
        kept = await client.get(f"/speak/jobs/{late['job_id']}/audio")
        stored = await client.get(f"/speak/jobs/{good['job_id']}/audio")
    assert saved["status"] == "completed", saved
    assert saved["saved_to"]["state"] == "saved"
    assert saved["saved_to"]["file_id"] == names()["job.mp3"]
    _, path = store.open_file(Actor(tnt, "usr_a"), saved["saved_to"]["file_id"])
    assert path.read_bytes() == stored.content
    assert (failed["status"], failed["status_reason"]) == ("failed", "scaidrive upload failed")
    assert failed["error"]["code"] == "SCAISPEAK_SCAIDRIVE_CONFLICT"
    assert failed["saved_to"]["state"] == "failed"
    assert failed["saved_to"]["error"]["code"] == "SCAISPEAK_SCAIDRIVE_CONFLICT"
    assert failed["audio_url"] and kept.status_code == 200
    assert container_duration_ms(kept.content) > 2000
