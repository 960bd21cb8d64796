"""Async jobs end to end: the API in the test's loop, real ``python -m scaiecho worker`` processes,
a real dev node and relay, a private Redis (flushed on purpose) and S3."""

from __future__ import annotations

import asyncio
import functools
import signal
import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from scaicommon.audio import Pcm, wav_bytes
from scaicommon.testing import LocalRedis, S3Endpoint
from scaicommon.testing.inprocess import on_fresh_database
from scaicommon.testing.jobs import job_waiter
from scaicommon.testing.wer import word_error_rate
from scaidevstack.node.testing import NodeProcess, start_node
from scaidevstack.speechgen import piper_speech, silence

from .conftest import EchoEnv, running_echo, with_node

TEXT = "Please send the quarterly report to the finance team before Friday afternoon."
FAST_SWEEPS = {"job_lease_s": 3.0, "job_sweep_interval_s": 1, "job_requeue_after_s": 1.0}
wait_job = job_waiter("/transcribe/jobs/{}", timeout_s=120.0)


@functools.cache
def speech() -> Pcm:
    audio: np.ndarray = piper_speech(TEXT, 16000)
    return Pcm(audio.astype(np.int16).tobytes(), 16000)


def big_wav(min_bytes: int) -> bytes:
    """The sentence, then silence, as a 48 kHz stereo WAV of at least ``min_bytes``."""
    voiced = piper_speech(TEXT, 48000)
    frames_needed = (min_bytes - 44) // 4 + 1
    pad = max(frames_needed - len(voiced), 0)
    mono = np.concatenate([voiced, silence(pad / 48000, 48000)])
    stereo = np.repeat(mono.astype(np.int16)[:, None], 2, axis=1).tobytes()
    riff = struct.pack("<4sI4s", b"RIFF", 36 + len(stereo), b"WAVE")
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 2, 48000, 48000 * 4, 4, 16)
    data = struct.pack("<4sI", b"data", len(stereo))
    return riff + fmt + data + stereo


@pytest.fixture(scope="module")
async def echo(
    pg_admin_dsn: str, private_redis: LocalRedis, s3_endpoint: S3Endpoint, dev_node: NodeProcess
) -> AsyncIterator[EchoEnv]:
    overrides = {**with_node(dev_node), **FAST_SWEEPS}
    async with on_fresh_database(
        running_echo, pg_admin_dsn, private_redis.url, s3_endpoint, **overrides
    ) as env:
        yield env


async def submit(client: httpx.AsyncClient, data: bytes, **fields: str) -> dict[str, Any]:
    r = await client.post(
        "/transcribe", files={"file": ("clip.wav", data, "audio/wav")}, data=fields
    )
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()["data"]
    assert r.headers["location"] == f"/v1/modules/scaiecho/transcribe/jobs/{body['job_id']}"
    assert body["status"] == "queued"
    assert body["note"].startswith("Long-form transcribe runs asynchronously.")
    return body


async def staged_keys(env: EchoEnv) -> list[str]:
    objects = env.runtime.objects
    return [k for k, _ in await objects.list_keys(objects.key("transcribe_jobs/"))]


def job_usage(env: EchoEnv, job_id: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(env.dsn, options="-c search_path=scaiecho") as conn:
        rows = conn.execute(
            "SELECT operation, status, units FROM usage_records WHERE job_id = %s", (job_id,)
        ).fetchall()
    return [(str(a), str(b), int(c)) for a, b, c in rows]


async def test_large_upload_and_force_async_complete(echo: EchoEnv) -> None:
    key = await echo.key(tenant="tnt_async")
    worker = await echo.start_worker()
    try:
        async with echo.client(key) as client:
            large = await submit(client, big_wav(6 * 1024 * 1024))
            small = await submit(client, wav_bytes(speech()), force_async="true")
            assert large["audio_bytes"] > 6 * 1024 * 1024
            for job_id in (large["job_id"], small["job_id"]):
                job = await wait_job(client, job_id, ("completed", "failed"))
                assert job["status"] == "completed", job
                assert word_error_rate(TEXT, job["transcript"]) <= 0.10, job["transcript"]
                assert job["backend_used"] == "B"
                assert job["started_at"] and job["completed_at"]
                assert [u[:2] for u in job_usage(echo, job_id)] == [("transcribe.job", "success")]
        assert await staged_keys(echo) == []
    finally:
        worker.stop()


async def test_failure_reasons(echo: EchoEnv) -> None:
    key = await echo.key(tenant="tnt_fail")
    admin = await echo.key(tenant="tnt_fail", user="usr_admin", roles=["tenant_admin"])
    undecodable = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 200
    async with echo.client(key) as client, echo.client(admin) as admin_client:
        broken = await submit(client, undecodable, force_async="true")
        over = await submit(client, wav_bytes(speech()), force_async="true")
        # The budget runs out between enqueue and dispatch.
        r = await admin_client.put(
            "/admin/budget", json={"period": "month", "audio_seconds_limit": 1}
        )
        assert r.status_code == 200
        worker = await echo.start_worker()
        try:
            failed = await wait_job(client, broken["job_id"], ("completed", "failed"))
            quota = await wait_job(client, over["job_id"], ("completed", "failed"))
        finally:
            worker.stop()
    assert (failed["status"], failed["status_reason"]) == ("failed", "decode failure")
    assert (quota["status"], quota["status_reason"]) == ("failed", "quota exceeded")
    assert await staged_keys(echo) == []


async def test_node_gone_at_dispatch(
    pg_dsn: str, local_redis: LocalRedis, s3_endpoint: S3Endpoint
) -> None:
    node = await asyncio.to_thread(start_node, engines=("stt",))
    try:
        async with running_echo(
            pg_dsn, local_redis.url, s3_endpoint, nodes=[node.grpc_target], **FAST_SWEEPS
        ) as env:
            await env.wait_for_node()
            key = await env.key(tenant="tnt_gone")
            async with env.client(key) as client:
                job = await submit(client, wav_bytes(speech()), force_async="true")
                await asyncio.to_thread(node.stop)
                for _ in range(150):  # until its heartbeat is stale
                    if not await env.runtime.nodes.resolve_audio_node("audio.transcribe"):
                        break
                    await asyncio.sleep(0.2)
                worker = await env.start_worker(job_max_attempts=1)
                try:
                    done = await wait_job(client, job["job_id"], ("completed", "failed"))
                finally:
                    worker.stop()
    finally:
        node.stop()
    assert (done["status"], done["status_reason"]) == ("failed", "backend unavailable")
    assert done["backend_used"] is None


async def test_worker_killed_mid_job_completes_once(echo: EchoEnv) -> None:
    key = await echo.key(tenant="tnt_kill")
    first = await echo.start_worker()
    async with echo.client(key) as client:
        job = await submit(client, big_wav(3 * 1024 * 1024), force_async="true")
        await wait_job(client, job["job_id"], ("running", "completed"))
        first.stop(signal.SIGKILL)
        second = await echo.start_worker()
        try:
            done = await wait_job(client, job["job_id"], ("completed", "failed"))
        finally:
            second.stop()
    assert done["status"] == "completed", done
    assert word_error_rate(TEXT, done["transcript"]) <= 0.10
    assert [u[:2] for u in job_usage(echo, job["job_id"])] == [("transcribe.job", "success")]


async def test_redis_flushed_while_queued(echo: EchoEnv, private_redis: LocalRedis) -> None:
    key = await echo.key(tenant="tnt_flush")
    async with echo.client(key) as client:
        job = await submit(client, wav_bytes(speech()), force_async="true")
        await echo.runtime.redis.flushdb()
        worker = await echo.start_worker()
        try:
            done = await wait_job(client, job["job_id"], ("completed", "failed"))
        finally:
            worker.stop()
    assert done["status"] == "completed", done
    assert "transcribe_job_requeued" in worker.output()


async def test_cancel_queued_job(echo: EchoEnv) -> None:
    key = await echo.key(tenant="tnt_cancel")
    async with echo.client(key) as client:
        job = await submit(client, wav_bytes(speech()), force_async="true")
        assert len(await staged_keys(echo)) == 1
        r = await client.delete(f"/transcribe/jobs/{job['job_id']}")
        assert r.json()["data"] == {"job_id": job["job_id"], "status": "cancelled"}
        got = (await client.get(f"/transcribe/jobs/{job['job_id']}")).json()["data"]
        listed = await client.get("/transcribe/jobs", params={"status": "cancelled"})
    assert (got["status"], got["status_reason"]) == ("cancelled", "cancelled by user")
    assert [j["job_id"] for j in listed.json()["data"]["items"]] == [job["job_id"]]
    assert await staged_keys(echo) == []
