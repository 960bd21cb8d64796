"""The node's pure building blocks: config, admission, text buffering, chunking, caches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from scaidevstack.node.admission import Admission
from scaidevstack.node.config import ConfigError, load_config, parse_address
from scaidevstack.node.diarize_merge import Span, best_turn, segment_turn
from scaidevstack.node.engines.base import DiarizedTurn, SegmentResult, VoiceProfile
from scaidevstack.node.errors import NodeError
from scaidevstack.node.relay_audio import encode, srt, vtt
from scaidevstack.node.servicer_tts import take_ready_text
from scaidevstack.node.synthesis import Chunker
from scaidevstack.node.voices import VoiceCache

REPO_CONFIG = Path(__file__).resolve().parents[1] / "node.toml"


def test_repo_config_and_env() -> None:
    cfg = load_config(REPO_CONFIG, env={"SCAI_NODE_API_SECRET": "s", "DEVSTACK_RELAY_API_KEY": ""})
    assert cfg.enabled_engines == ("stt", "tts", "speaker")
    assert cfg.grpc == "127.0.0.1:50051" and cfg.http == "127.0.0.1:8090"
    assert cfg.api_secret == "s" and cfg.relay_api_key == "sk-devstack"
    assert all(cfg.capacity_of(n) == 2 for n in cfg.enabled_engines)
    assert cfg.grace_period_s == 30.0 and cfg.stream_idle_s == 120.0


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('node_id = "n1"\n[engines.tts]\ncapacity = 3\n[engines.stt.options]\nx = 1\n')
    cfg = load_config(path, env={})
    assert cfg.node_id == "n1" and cfg.capacity_of("tts") == 3 and cfg.api_secret is None
    assert cfg.engines["stt"].options == {"x": 1}
    over = cfg.with_overrides(engines=["tts"], capacity=1, grpc="[::1]:5000", node_id="n2")
    assert over.enabled_engines == ("tts",) and over.capacity_of("tts") == 1
    assert over.node_id == "n2" and parse_address(over.grpc) == ("::1", 5000)
    for text in (
        "bogus = 1\n",
        "[engines.gpu]\n",
        "[engines.tts]\ncapacity = 0\n",
        'grpc = "nohost"\n',
        "grace_period_s = -1\n",
    ):
        path.write_text(text)
        with pytest.raises(ConfigError):
            load_config(path, env={})
    with pytest.raises(ConfigError):
        cfg.with_overrides(engines=["gpu"])
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml", env={})


async def test_admission_slots() -> None:
    adm = Admission({"audio.synthesize": 1})
    slot = adm.acquire("audio.synthesize")
    assert adm.inflight() == 1
    with pytest.raises(NodeError) as info:
        adm.acquire("audio.synthesize")
    assert info.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.code == "AT_CAPACITY" and 100 <= (info.value.retry_after_ms or 0) <= 30_000
    assert ("x-error-code", "AT_CAPACITY") in info.value.trailing_metadata()
    slot.release()
    slot.release()  # idempotent
    assert adm.inflight() == 0
    with adm.acquire("audio.synthesize"):
        assert adm.inflight("audio.synthesize") == 1
    adm.draining = True
    with pytest.raises(NodeError) as info:
        adm.acquire("audio.synthesize")
    assert info.value.code == "DRAINING" and info.value.status == grpc.StatusCode.UNAVAILABLE


async def test_admission_kill_and_idle() -> None:
    adm = Admission({"k": 2})
    started = asyncio.Event()

    async def call() -> str:
        with adm.acquire("k"):
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                return "killed" if adm.was_killed(asyncio.current_task()) else "cancelled"
        return "done"

    task = asyncio.create_task(call())
    await started.wait()
    assert adm.kill_all() == 1
    assert await task == "killed"
    await asyncio.wait_for(adm.wait_idle(), 1)


def test_take_ready_text() -> None:
    assert take_ready_text("Hello there") == ("", "Hello there")
    assert take_ready_text("One. Two! Three") == ("One. Two!", " Three")
    assert take_ready_text("Pi is 3.14 ok") == ("", "Pi is 3.14 ok")
    assert take_ready_text("Line one\nLine two") == ("Line one\n", "Line two")
    long = "word " * 60 + "tail"
    ready, rest = take_ready_text(long)
    assert ready == long[: long.rfind(" ")] and rest == " tail"
    assert take_ready_text("x" * 300) == ("x" * 300, "")


def test_chunker_sizes_and_trim() -> None:
    chunker = Chunker(22050, 16000, trim_ms=100)
    sentence = np.ones(22050 * 2, dtype=np.int16)  # 2 s
    pieces = chunker.split(sentence)
    total = sum(p.size for p in pieces)
    assert abs(total - (32000 - 1600)) <= 40
    assert all(1600 <= p.size <= 3200 for p in pieces)
    assert chunker.split(np.ones(22050, dtype=np.int16))  # no trim the second time
    chunker.restart()
    assert chunker.trim_left == 1600


def test_voice_cache() -> None:
    cache = VoiceCache(max_entries=2)
    a, b = VoiceProfile("a"), VoiceProfile("b")
    cache.put("t", "v", "h1", a)
    cache.put("t", "v", "h2", b)
    assert cache.get("t", "v", "h1") is a and cache.latest("t", "v") is a
    assert cache.get("u", "v", "h1") is None
    cache.put("t", "w", "h3", a)  # evicts the least recently used (h2)
    assert cache.get("t", "v", "h2") is None and len(cache) == 2
    assert cache.evict("t", "v") is True and cache.evict("t", "v") is False


def test_diarize_merge_rules() -> None:
    turns = [
        DiarizedTurn(0, 1000, "spkr_a", "spkr_a", 0.9),
        DiarizedTurn(1000, 2000, "", "spk_0", 0.2),
    ]
    assert best_turn(turns, 900, 1300) == turns[1]
    assert best_turn(turns, 2500, 2600) == turns[1]
    words = [(Span(0, 400), turns[0]), (Span(900, 1000), turns[0]), (Span(1000, 1200), turns[1])]
    assert segment_turn(turns, Span(0, 1200), words) == turns[0]
    assert segment_turn(turns, Span(1200, 1900), []) == turns[1]


def test_subtitles_and_encoders() -> None:
    segments = [SegmentResult(0, 1500, " Hello."), SegmentResult(61_000, 62_250, "World")]
    assert srt(segments).startswith("1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n2\n00:01:01,000")
    assert vtt(segments).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello.")
    tone = (np.sin(np.arange(24000) / 24000 * 2 * np.pi * 440) * 8000).astype(np.int16)
    assert encode(tone, 24000, "pcm") == tone.astype("<i2").tobytes()
    assert encode(tone, 24000, "wav")[:4] == b"RIFF"
    assert encode(tone, 24000, "flac")[:4] == b"fLaC"
    assert encode(tone, 24000, "opus")[:4] == b"OggS"
    assert len(encode(tone, 24000, "mp3")) > 1000 and len(encode(tone, 24000, "aac")) > 1000
