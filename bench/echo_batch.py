"""What ScaiEcho's inline ``POST /transcribe`` costs over calling the node directly.

Starts a dev node (speech-to-text) and a real ScaiEcho process pinned to backend A, against
the machine's Postgres and Redis (``SCAI_BENCH_DATABASE_URL`` / ``SCAI_BENCH_REDIS_URL``) and
moto S3. The same WAV of piper speech is sent, alternately, as

- ``grpc``: a direct ``Transcribe`` call (16 kHz PCM) to the node;
- ``http``: ``POST /v1/modules/scaiecho/transcribe`` (multipart upload, sniff, decode, job row,
  quota, dispatch to the same node, usage and audit rows).

Prints medians and the ratio (target ≤ 1.05×) and writes ``bench/results/echo_batch.json``.
"""

from __future__ import annotations

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

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.audio import Pcm, wav_bytes
from scaicommon.testing import ManagedProcess, free_port, fresh_database
from scaicommon.testing.services import start_s3
from scaidevstack.node.testing import start_node
from scaidevstack.speechgen import piper_speech

RUNS = int(os.environ.get("SCAI_BENCH_RUNS", "8"))
RESULTS = Path(__file__).parent / "results"
TEXT = (
    "Thanks everyone for joining. Let's start with the release status. The build is green, "
    "the documentation is ready, and we ship on Thursday after the final review."
)


def summary(samples: list[float]) -> dict[str, float]:
    """Median, min and max in milliseconds."""
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "min_ms": round(min(samples) * 1000, 1),
        "max_ms": round(max(samples) * 1000, 1),
    }


def main() -> int:
    """Run the comparison and print the table."""
    admin = os.environ.get(
        "SCAI_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    redis_url = os.environ.get("SCAI_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    audio: np.ndarray = piper_speech(TEXT, 16000)
    pcm = Pcm(audio.astype(np.int16).tobytes(), 16000)
    wav = wav_bytes(pcm)
    node = start_node(engines=("stt",))
    try:
        with fresh_database(admin) as dsn, start_s3() as s3:
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("SCAIECHO_")}
            env.update(
                {
                    "SCAIECHO_DATABASE_URL": dsn,
                    "SCAIECHO_REDIS_URL": redis_url,
                    "SCAIECHO_S3_ENDPOINT_URL": s3.url,
                    "SCAIECHO_S3_ACCESS_KEY": s3.access_key,
                    "SCAIECHO_S3_SECRET_KEY": s3.secret_key,
                    "SCAIECHO_ENV": "development",
                    "SCAIECHO_HOST": "127.0.0.1",
                    "SCAIECHO_PORT": str(port),
                    "SCAIECHO_NODES": node.grpc_target,
                    "SCAIECHO_DEFAULT_ALLOWED_BACKENDS": "A",
                    "SCAIECHO_DEFAULT_BACKEND": "A",
                    "SCAIECHO_LOG_LEVEL": "warning",
                    "SCAIECHO_RATE_LIMIT_ENABLED": "false",
                }
            )
            subprocess.run(
                [sys.executable, "-m", "scaiecho", "migrate"],
                env=env,
                check=True,
                capture_output=True,
            )
            created = subprocess.run(
                [sys.executable, "-m", "scaiecho", "apikeys", "create", "--tenant", "tnt_bench",
                 "--user", "usr_bench", "--permission", "scaiecho:transcribe"],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
            key = json.loads(created.stdout)["key"]
            base = f"http://127.0.0.1:{port}"
            service = ManagedProcess(
                ["-m", "scaiecho", "serve"], env=env, ready_url=f"{base}/healthz", name="scaiecho"
            ).start()
            try:
                rows = compare(node.stub(), base, key, pcm, wav)
            finally:
                service.stop()
    finally:
        node.stop()
    grpc_p50, http_p50 = rows["grpc"]["p50_ms"], rows["http"]["p50_ms"]
    ratio = round(http_p50 / grpc_p50, 3)
    print(f"ScaiEcho inline /transcribe vs direct Transcribe, {RUNS} runs each, "
          f"{pcm.duration_ms / 1000:.1f} s of speech, {platform.machine()}")  # fmt: skip
    print(f"{'path':<8}{'p50 ms':>10}{'min ms':>10}{'max ms':>10}")
    for name, row in rows.items():
        print(f"{name:<8}{row['p50_ms']:>10.1f}{row['min_ms']:>10.1f}{row['max_ms']:>10.1f}")
    print(f"ratio http/grpc (p50) = {ratio}  (target <= 1.05)")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "echo_batch.json"
    out.write_text(
        json.dumps(
            {"runs": RUNS, "audio_ms": pcm.duration_ms, "results": rows, "ratio": ratio}, indent=2
        )
    )
    print(f"written {out}")
    return 0


def compare(stub: object, base: str, key: str, pcm: Pcm, wav: bytes) -> dict[str, dict[str, float]]:
    """Alternate the two paths (after one warm-up each) so drift hits both alike."""
    request = pb.TranscribeRequest(
        audio=pb.AudioInput(data=pcm.data, pcm=pb.PcmSpec(sample_rate_hz=16000, channels=1)),
        timestamps=pb.TIMESTAMP_GRANULARITY_SEGMENT,
    )
    grpc_times: list[float] = []
    http_times: list[float] = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        for run in range(RUNS + 1):
            start = time.perf_counter()
            stub.Transcribe(request, timeout=300)  # type: ignore[attr-defined]
            grpc_s = time.perf_counter() - start
            start = time.perf_counter()
            response = c.post(
                "/v1/modules/scaiecho/transcribe", files={"file": ("a.wav", wav, "audio/wav")}
            )
            http_s = time.perf_counter() - start
            if response.status_code != 200 or response.json()["data"]["backend_used"] != "A":
                raise SystemExit(f"transcribe failed: {response.status_code} {response.text}")
            if run:  # the first round warms both paths up
                grpc_times.append(grpc_s)
                http_times.append(http_s)
    return {"grpc": summary(grpc_times), "http": summary(http_times)}


if __name__ == "__main__":
    sys.exit(main())
