"""Polling an asynchronous job over the API until it reaches a status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from scaicommon.testing.envelopes import ok

#: ``await wait_job(client, job_id, statuses)``: the job once its status is one of these.
JobWaiter = Callable[[httpx.AsyncClient, str, tuple[str, ...]], Awaitable[dict[str, Any]]]


async def poll_job(
    client: httpx.AsyncClient, path: str, statuses: tuple[str, ...], timeout_s: float
) -> dict[str, Any]:
    """``GET path`` until the job's ``status`` is one of ``statuses`` (fails after timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        job: dict[str, Any] = ok(await client.get(path))
        if job["status"] in statuses:
            return job
        if loop.time() > deadline:
            raise AssertionError(f"job stuck at {job['status']}: {job}")
        await asyncio.sleep(0.2)


def job_waiter(path: str, *, timeout_s: float) -> JobWaiter:
    """A ``wait_job`` for the jobs at ``path`` (``{}`` stands for the job id)."""

    async def wait_job(
        client: httpx.AsyncClient, job_id: str, statuses: tuple[str, ...]
    ) -> dict[str, Any]:
        return await poll_job(client, path.format(job_id), statuses, timeout_s)

    return wait_job
