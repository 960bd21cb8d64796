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
import sys
import time

import httpx
import numpy as np
import psycopg
from benchkit import RUNS, TENANT, USER, report, running_service, summary

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.audio import Pcm, wav_bytes
from scaicommon.ids import new_id
from scaicommon.storage import ObjectStore
from scaicommon.testing.services import S3Endpoint
from scaidevstack.node.testing import start_node
from scaidevstack.speechgen import piper_speech

TEXT = (
    "Thanks everyone for joining. Let's start with the release status. The build is green, "
    "the documentation is ready, and we ship on Thursday after the final review."
)
REFERENCE_TEXT = (
    "The morning train leaves the station at half past seven. Please bring your ticket and "
    "a warm coat, and something to read on the way."
)


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
    reference: np.ndarray = piper_speech(REFERENCE_TEXT, 24000)
    wav = wav_bytes(Pcm(reference.astype(np.int16).tobytes(), 24000))
    node = start_node(engines=("tts",))
    settings = {
        "nodes": node.grpc_target,
        "default_allowed_backends": "A",
        "default_backend": "A",
        "rate_limit_enabled": "false",
    }
    try:
        with running_service("scaispeak", settings) as service:
            voice_id = store_voice(service.dsn, service.s3, wav)
            key = service.create_key("scaispeak:synthesize")
            wait_for_node(service.base, key, voice_id)
            rows, audio_ms = compare(node.stub(), service.base, key, voice_id, wav)
    finally:
        node.stop()
    title = (
        f"ScaiSpeak inline /speak vs direct Synthesize, {len(TEXT)} chars, "
        f"{audio_ms / 1000:.1f} s of speech"
    )
    report("speak_batch", title, rows, chars=len(TEXT), audio_ms=audio_ms)
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
