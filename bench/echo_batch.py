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

import sys
import time

import httpx
import numpy as np
from benchkit import RUNS, report, running_service, summary

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaicommon.audio import Pcm, wav_bytes
from scaidevstack.node.testing import start_node
from scaidevstack.speechgen import piper_speech

TEXT = (
    "Thanks everyone for joining. Let's start with the release status. The build is green, "
    "the documentation is ready, and we ship on Thursday after the final review."
)


def main() -> int:
    """Run the comparison and print the table."""
    audio: np.ndarray = piper_speech(TEXT, 16000)
    pcm = Pcm(audio.astype(np.int16).tobytes(), 16000)
    wav = wav_bytes(pcm)
    node = start_node(engines=("stt",))
    settings = {
        "nodes": node.grpc_target,
        "default_allowed_backends": "A",
        "default_backend": "A",
        "rate_limit_enabled": "false",
    }
    try:
        with running_service("scaiecho", settings) as service:
            key = service.create_key("scaiecho:transcribe")
            rows = compare(node.stub(), service.base, key, pcm, wav)
    finally:
        node.stop()
    title = (
        "ScaiEcho inline /transcribe vs direct Transcribe, "
        f"{pcm.duration_ms / 1000:.1f} s of speech (target <= 1.05)"
    )
    report("echo_batch", title, rows, audio_ms=pcm.duration_ms)
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
