"""What ScaiSpeak's inline ``POST /speak`` costs over calling the node's ``Synthesize`` directly.

Starts a dev node (text-to-speech) and a real ScaiSpeak process pinned to backend A, against
the machine's Postgres and Redis (``SCAI_BENCH_DATABASE_URL`` / ``SCAI_BENCH_REDIS_URL``) and
moto S3. A cloned voice is stored the way intake leaves one (a 24 kHz WAV reference of piper
speech in S3 and its ``voices`` row). The same text with the same voice then goes, alternately,

- ``grpc``: a direct ``Synthesize`` stream to the node (the reference WAV in the request);
- ``http``: ``POST /v1/modules/scaispeak/speak`` with ``Accept: audio/wav`` (validation, voice,
  blocklist and quota checks, job row, resolution, the same node, WAV encoding, usage and audit
  rows).

Prints medians and the ratio and writes ``bench/results/speak_batch.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.audio import Pcm, wav_bytes
from scaicommon.ids import new_id
from scaicommon.storage import ObjectStore
from scaicommon.testing import ManagedProcess, free_port, fresh_database
from scaicommon.testing.services import S3Endpoint, start_s3
from scaidevstack.node.testing import start_node
from scaidevstack.speechgen import piper_speech

RUNS = int(os.environ.get("SCAI_BENCH_RUNS", "8"))
RESULTS = Path(__file__).parent / "results"
TENANT = "tnt_bench"
USER = "usr_bench"
TEXT = (
    "Thanks everyone for joining. Let's start with the release status. The build is green, "
    "the documentation is ready, and we ship on Thursday after the final review."
)
REFERENCE_TEXT = (
    "The morning train leaves the station at half past seven. Please bring your ticket and "
    "a warm coat, and something to read on the way."
)


def summary(samples: list[float]) -> dict[str, float]:
    """Median, min and max in milliseconds."""
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "min_ms": round(min(samples) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def store_voice(dsn: str, s3: S3Endpoint, wav: bytes) -> str:
    """A ready cloned voice: the reference in S3 and the row, as intake stores them."""
    voice_id = new_id("voice")
    key = f"scaispeak/voices/{voice_id}/reference.wav"
    objects = ObjectStore(
        s3.url,
        "scaispeak",
        "us-east-1",
        s3.access_key,
        s3.secret_key,
        module="scaispeak",
        create_bucket=True,
    )
    asyncio.run(_put(objects, key, wav))
    with psycopg.connect(dsn, options="-c search_path=scaispeak") as conn:
        conn.execute(
            "INSERT INTO voices (id, scope, kind, tenant_id, owner_user_id, display_name,"
            " embedding_status, language_primary, reference_key, reference_sha256,"
            " reference_text, request_id) VALUES (%s, 'user', 'cloned', %s, %s, 'Bench',"
            " 'ready', 'en', %s, %s, %s, 'req_bench')",
            (voice_id, TENANT, USER, key, hashlib.sha256(wav).hexdigest(), REFERENCE_TEXT),
        )
    return voice_id


async def _put(objects: ObjectStore, key: str, data: bytes) -> None:
    await objects.ensure_bucket()
    await objects.put(key, data, content_type="audio/wav")


def main() -> int:
    """Run the comparison and print the table."""
    admin = os.environ.get(
        "SCAI_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("SCAI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    reference: np.ndarray = piper_speech(REFERENCE_TEXT, 24000)
    wav = wav_bytes(Pcm(reference.astype(np.int16).tobytes(), 24000))
    node = start_node(engines=("tts",))
    try:
        with fresh_database(admin) as dsn, start_s3() as s3:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCAISPEAK_")}
            env.update(
                {
                    "SCAISPEAK_DATABASE_URL": dsn,
                    "SCAISPEAK_REDIS_URL": redis_url,
                    "SCAISPEAK_S3_ENDPOINT_URL": s3.url,
                    "SCAISPEAK_S3_ACCESS_KEY": s3.access_key,
                    "SCAISPEAK_S3_SECRET_KEY": s3.secret_key,
                    "SCAISPEAK_ENV": "development",
                    "SCAISPEAK_HOST": "127.0.0.1",
                    "SCAISPEAK_PORT": str(port),
                    "SCAISPEAK_NODES": node.grpc_target,
                    "SCAISPEAK_DEFAULT_ALLOWED_BACKENDS": "A",
                    "SCAISPEAK_DEFAULT_BACKEND": "A",
                    "SCAISPEAK_LOG_LEVEL": "warning",
                    "SCAISPEAK_RATE_LIMIT_ENABLED": "false",
                }
            )
            subprocess.run(
                [sys.executable, "-m", "scaispeak", "migrate"],
                env=env,
                check=True,
                capture_output=True,
            )
            voice_id = store_voice(dsn, s3, wav)
            created = subprocess.run(
                [sys.executable, "-m", "scaispeak", "apikeys", "create", "--tenant", TENANT,
                 "--user", USER, "--permission", "scaispeak:synthesize"],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
            key = json.loads(created.stdout)["key"]
            base = f"http://127.0.0.1:{port}"
            service = ManagedProcess(
                ["-m", "scaispeak", "serve"], env=env, ready_url=f"{base}/healthz", name="scaispeak"
            ).start()
            try:
                wait_for_node(base, key, voice_id)
                rows, audio_ms = compare(node.stub(), base, key, voice_id, wav)
            finally:
                service.stop()
    finally:
        node.stop()
    grpc_p50, http_p50 = rows["grpc"]["p50_ms"], rows["http"]["p50_ms"]
    ratio = round(http_p50 / grpc_p50, 3)
    print(f"ScaiSpeak inline /speak vs direct Synthesize, {RUNS} runs each, {len(TEXT)} chars, "
          f"{audio_ms / 1000:.1f} s of speech, {platform.machine()}")  # fmt: skip
    print(f"{'path':<8}{'p50 ms':>10}{'min ms':>10}{'max ms':>10}")
    for name, row in rows.items():
        print(f"{name:<8}{row['p50_ms']:>10.1f}{row['min_ms']:>10.1f}{row['max_ms']:>10.1f}")
    print(f"ratio http/grpc (p50) = {ratio}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "speak_batch.json"
    out.write_text(
        json.dumps(
            {
                "runs": RUNS,
                "chars": len(TEXT),
                "audio_ms": audio_ms,
                "results": rows,
                "ratio": ratio,
                "machine": platform.machine(),
            },
            indent=2,
        )
    )
    print(f"written {out}")
    return 0


def wait_for_node(base: str, key: str, voice_id: str, timeout_s: float = 60.0) -> None:
    """Until the service's node registry offers the node (its first poll)."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        while True:
            response = c.post(
                "/v1/modules/scaispeak/speak",
                json={"text": "Ready.", "voice_id": voice_id, "response_format": "pcm"},
            )
            if response.status_code == 200:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"no node: {response.status_code} {response.text}")
            time.sleep(0.5)


def compare(
    stub: object, base: str, key: str, voice_id: str, wav: bytes
) -> tuple[dict[str, dict[str, float]], int]:
    """Alternate the two paths (after one warm-up each) so drift hits both alike."""
    request = pb.SynthesizeRequest(
        tenant_id=TENANT,
        text=TEXT,
        voice=pb.VoiceSpec(
            voice_id=voice_id,
            reference=pb.ReferenceVoice(
                audio=pb.AudioInput(data=wav, media_type="audio/wav"),
                text=REFERENCE_TEXT,
                content_sha256=hashlib.sha256(wav).hexdigest(),
            ),
        ),
        options=pb.SynthesisOptions(language="en", speed=1.0, cfg_value=2.0, sample_rate_hz=24000),
    )
    grpc_times: list[float] = []
    http_times: list[float] = []
    audio_ms = 0
    headers = {"Authorization": f"Bearer {key}", "Accept": "audio/wav"}
    body = {"text": TEXT, "voice_id": voice_id, "response_format": "wav"}
    with httpx.Client(base_url=base, headers=headers, timeout=300) as c:
        for run in range(RUNS + 1):
            start = time.perf_counter()
            pcm = b"".join(
                m.chunk.pcm
                for m in stub.Synthesize(request, timeout=300)  # type: ignore[attr-defined]
                if m.WhichOneof("payload") == "chunk"
            )
            grpc_s = time.perf_counter() - start
            start = time.perf_counter()
            response = c.post("/v1/modules/scaispeak/speak", json=body)
            http_s = time.perf_counter() - start
            if response.status_code != 200 or response.headers["x-scaispeak-backend"] != "A":
                raise SystemExit(f"speak failed: {response.status_code} {response.text[:300]}")
            audio_ms = len(pcm) // 2 * 1000 // 24000
            if run:  # the first round warms both paths up
                grpc_times.append(grpc_s)
                http_times.append(http_s)
    return {"grpc": summary(grpc_times), "http": summary(http_times)}, audio_ms


if __name__ == "__main__":
    sys.exit(main())
