"""Speed of the devstack inference node on this machine, through its real gRPC API.

Starts ``python -m scaidevstack node serve`` (all engines) and measures:

- STT: ``Transcribe`` real-time factor on piper speech (processing time / audio time);
- TTS: ``Synthesize`` real-time factor and time to the first audio chunk;
- TTS streaming: ``StreamSynthesize`` first audio after the first sentence, and how long an
  ``INTERRUPT`` takes to be acknowledged.

Prints a table and writes ``bench/results/node.json``. Run with ``make bench``.
"""

from __future__ import annotations

import json
import queue
import statistics
import sys
import time
from pathlib import Path

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaidevstack.node.testing import start_node
from scaidevstack.speechgen import piper_speech

RUNS = 5
RESULTS = Path(__file__).parent / "results"
TEXT = (
    "The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with "
    "a single step. Speech recognition turns spoken words into written text."
)


def median(values: list[float]) -> float:
    """Median, rounded for the table."""
    return round(statistics.median(values), 4)


def bench_transcribe(stub: object, audio: bytes, audio_s: float) -> dict[str, float]:
    """RTF of ``Transcribe`` over ``RUNS`` calls."""
    request = pb.TranscribeRequest(
        audio=pb.AudioInput(data=audio, pcm=pb.PcmSpec(sample_rate_hz=16000, channels=1)),
        language_hint="en",
    )
    rtfs = []
    for _ in range(RUNS):
        start = time.perf_counter()
        stub.Transcribe(request, timeout=120)  # type: ignore[attr-defined]
        rtfs.append((time.perf_counter() - start) / audio_s)
    return {"rtf_p50": median(rtfs), "audio_s": round(audio_s, 2)}


def bench_synthesize(stub: object) -> dict[str, float]:
    """RTF and first-chunk latency of ``Synthesize``."""
    request = pb.SynthesizeRequest(
        tenant_id="tnt_bench", text=TEXT, voice=pb.VoiceSpec(builtin="joe")
    )
    rtfs, firsts = [], []
    for _ in range(RUNS):
        start = time.perf_counter()
        first = None
        audio_ms = 0
        for message in stub.Synthesize(request, timeout=120):  # type: ignore[attr-defined]
            if message.HasField("chunk") and first is None:
                first = time.perf_counter() - start
            if message.HasField("stats"):
                audio_ms = message.stats.audio_ms
        rtfs.append((time.perf_counter() - start) / (audio_ms / 1000))
        firsts.append((first or 0.0) * 1000)
    return {"rtf_p50": median(rtfs), "first_audio_ms_p50": median(firsts)}


def _control(action: int) -> pb.StreamSynthesizeRequest:
    return pb.StreamSynthesizeRequest(control=pb.SynthesisControl(action=action))


def bench_stream_synthesize(stub: object) -> dict[str, float]:
    """First audio after the first sentence, and INTERRUPT acknowledgement time."""
    firsts: list[float] = []
    acks: list[float] = []
    for _ in range(RUNS):
        outbox: queue.Queue[pb.StreamSynthesizeRequest | None] = queue.Queue()
        outbox.put(
            pb.StreamSynthesizeRequest(
                config=pb.StreamSynthesizeConfig(
                    tenant_id="tnt_bench", voice=pb.VoiceSpec(builtin="joe")
                )
            )
        )
        events = stub.StreamSynthesize(iter(outbox.get, None))  # type: ignore[attr-defined]
        sent = time.perf_counter()
        outbox.put(pb.StreamSynthesizeRequest(text=pb.TextDelta(text="Hello there, how are you? ")))
        outbox.put(pb.StreamSynthesizeRequest(text=pb.TextDelta(text=TEXT * 3)))
        asked = 0.0
        for event in events:
            if event.HasField("chunk") and not asked:
                asked = time.perf_counter()
                firsts.append((asked - sent) * 1000)
                outbox.put(_control(pb.SYNTHESIS_CONTROL_ACTION_INTERRUPT))
            elif event.HasField("interrupted"):
                acks.append((time.perf_counter() - asked) * 1000)
                outbox.put(_control(pb.SYNTHESIS_CONTROL_ACTION_CLOSE))
            elif event.HasField("done"):
                break
        outbox.put(None)
    return {
        "first_audio_ms_p50": median(firsts),
        "interrupt_ack_ms_p50": median(acks),
        "interrupt_ack_ms_max": round(max(acks), 2),
    }


def main() -> int:
    """Run every measurement and print the table."""
    speech = piper_speech(TEXT)
    node = start_node()
    try:
        stub = node.stub()
        rows = {
            "Transcribe": bench_transcribe(stub, speech.tobytes(), speech.size / 16000),
            "Synthesize": bench_synthesize(stub),
            "StreamSynthesize": bench_stream_synthesize(stub),
        }
    finally:
        node.stop()
    print(f"devstack node, {RUNS} runs each (median), this machine")
    for name, row in rows.items():
        print(f"{name:<18}" + "  ".join(f"{k}={v}" for k, v in row.items()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "node.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
