"""The speaker-analysis engine: numpy GE2E encoder, embeddings, diarization, speaker store."""

from __future__ import annotations

import itertools
import os
import pickle
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from scaidevstack.node.engines import ge2e
from scaidevstack.node.engines.base import DiarizedTurn, SpeakerAnalysis, SpeakerEntry
from scaidevstack.node.engines.speaker import (
    Ge2eSpeakerEngine,
    MissingSpeakers,
    SpeakerStore,
    SpeakerStoreFull,
    agglomerate,
)
from scaidevstack.speechgen import espeak_speech, piper_speech, silence

RATE = 16000
# Two voices: the shipped piper voice ("joe") and espeak-ng's en-us female variant ("eve").
JOE_ENROL = "The quarterly report shows that revenue grew faster than expected in every region."
EVE_ENROL = "Please remember to bring your laptop and the signed contract to tomorrow's meeting."
JOE_OTHER = "Our new office is located near the river, just a short walk from the train station."
EVE_OTHER = "We should schedule a follow up call with the design team next Thursday afternoon."
TURNS = [
    ("joe", "Good morning, thanks for joining the call today."),
    ("eve", "Morning! Happy to be here, let's get started."),
    ("joe", "I think we should move the launch to next month."),
    ("eve", "That works for me, the team needs more time anyway."),
    ("joe", "Sure, I will send the updated numbers tonight."),
    ("eve", "Great, I'll review them first thing tomorrow."),
]
GAPS_S = [0.4, 0.3, 0.5, 0.35, 0.45, 0.3]


def _speak(who: str, text: str) -> np.ndarray:
    return piper_speech(text) if who == "joe" else espeak_speech(text, voice="en-us+f3")


@dataclass(frozen=True)
class Conversation:
    audio: np.ndarray
    truth: list[tuple[int, int, str]]  # ms


@pytest.fixture(scope="module")
def engine() -> Ge2eSpeakerEngine:
    """One engine for the module (weights + VAD load once)."""
    return Ge2eSpeakerEngine()


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    """Single utterances of three voices."""
    return {
        "joe_a": piper_speech(JOE_ENROL),
        "joe_b": piper_speech(JOE_OTHER),
        "eve_a": espeak_speech(EVE_ENROL, voice="en-us+f3"),
        "eve_b": espeak_speech(EVE_OTHER, voice="en-us+f3"),
        "max_a": espeak_speech(JOE_ENROL, voice="en-us+m3"),
    }


@pytest.fixture(scope="module")
def conversation() -> Conversation:
    """Alternating joe/eve turns of 2–4 s separated by 0.3–0.5 s pauses, with the true times."""
    parts: list[np.ndarray] = []
    truth: list[tuple[int, int, str]] = []
    position = 0
    for (who, text), gap in zip(TURNS, GAPS_S, strict=True):
        speech = _speak(who, text)
        truth.append((position * 1000 // RATE, (position + speech.size) * 1000 // RATE, who))
        parts += [speech, silence(gap)]
        position += speech.size + silence(gap).size
    return Conversation(np.concatenate(parts), truth)


@pytest.fixture(scope="module")
def enrolled(engine: Ge2eSpeakerEngine, clips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Enrolment embeddings of joe and eve from sentences not in the conversation."""
    return {"joe": engine.embed(clips["joe_a"])[0], "eve": engine.embed(clips["eve_a"])[0]}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _scores(turns: list[DiarizedTurn], truth: list[tuple[int, int, str]]) -> tuple[float, float]:
    """(share of detected speech time given the right speaker_id, share of truth covered)."""
    correct = covered = 0
    for start, end, who in truth:
        for turn in turns:
            ov = _overlap(start, end, turn.start_ms, turn.end_ms)
            covered += ov
            correct += ov if turn.speaker_id == who else 0
    total = sum(end - start for start, end, _ in truth)
    return correct / covered, covered / total


def _label_of(turns: list[DiarizedTurn], start: int, end: int) -> str:
    """The label holding the most time in [start, end)."""
    share: dict[str, int] = {}
    for turn in turns:
        share[turn.label] = share.get(turn.label, 0) + _overlap(
            start, end, turn.start_ms, turn.end_ms
        )
    return max(share, key=lambda k: share[k])


def _assert_well_formed(turns: list[DiarizedTurn]) -> None:
    assert turns
    for turn in turns:
        assert 0 <= turn.start_ms < turn.end_ms
    for a, b in itertools.pairwise(turns):
        assert a.end_ms <= b.start_ms


# ----- weights and network ------------------------------------------------------------------


def test_weights_load_without_torch(engine: Ge2eSpeakerEngine) -> None:
    assert "torch" not in sys.modules
    state = ge2e.load_legacy_checkpoint(ge2e.default_weights_path())["model_state"]
    assert state["lstm.weight_ih_l0"].shape == (1024, 40)
    for layer in (1, 2):
        assert state[f"lstm.weight_ih_l{layer}"].shape == (1024, 256)
    for layer in (0, 1, 2):
        assert state[f"lstm.weight_hh_l{layer}"].shape == (1024, 256)
        assert state[f"lstm.bias_ih_l{layer}"].shape == (1024,)
        assert state[f"lstm.bias_hh_l{layer}"].shape == (1024,)
    assert state["linear.weight"].shape == (256, 256)
    assert state["linear.bias"].shape == (256,)
    assert all(np.isfinite(v).all() for v in state.values())
    assert "torch" not in sys.modules
    typed: SpeakerAnalysis = engine  # mypy checks the protocol
    assert (typed.name, typed.model, typed.dims) == ("ge2e-numpy", "resemblyzer-ge2e-256", 256)
    assert list(typed.capabilities) == [
        "embedding",
        "enrollment",
        "diarization",
        "decode_containers",
    ]


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def test_checkpoint_reader_refuses_foreign_globals(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(
        pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"little_endian": True}, protocol=2)
        + pickle.dumps({"model_state": _Evil()}, protocol=2)
    )
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        ge2e.load_legacy_checkpoint(path)


def _reference_forward(state: dict[str, np.ndarray], mels: np.ndarray) -> np.ndarray:
    """torch.nn.LSTM (gates i, f, g, o) + linear + ReLU + L2 norm, written plainly in float64."""

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-x)))

    seq = mels.astype(np.float64)
    batch, frames, _ = seq.shape
    h = np.zeros((batch, 256))
    for layer in range(3):
        w_ih, w_hh = state[f"lstm.weight_ih_l{layer}"], state[f"lstm.weight_hh_l{layer}"]
        b = state[f"lstm.bias_ih_l{layer}"] + state[f"lstm.bias_hh_l{layer}"]
        h = np.zeros((batch, 256))
        c = np.zeros((batch, 256))
        outputs = []
        for t in range(frames):
            z = seq[:, t] @ w_ih.T + h @ w_hh.T + b
            i, f, g, o = np.split(z, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outputs.append(h)
        seq = np.stack(outputs, axis=1)
    raw = np.maximum(h @ state["linear.weight"].T + state["linear.bias"], 0.0)
    return np.asarray(raw / np.linalg.norm(raw, axis=1, keepdims=True))


def test_network_matches_plain_lstm(
    engine: Ge2eSpeakerEngine, clips: dict[str, np.ndarray]
) -> None:
    state = ge2e.load_legacy_checkpoint(ge2e.default_weights_path())["model_state"]
    wav = ge2e.normalize_volume(clips["joe_a"].astype(np.float32) / 32768.0)
    mel = ge2e.wav_to_mel_spectrogram(wav)
    mels = np.stack([mel[0:60], mel[100:160]])
    fast = engine.encoder.forward(mels)
    slow = _reference_forward(state, mels)
    assert fast.shape == (2, 256)
    assert np.abs(fast - slow).max() < 1e-4
    for k in range(2):
        assert _cosine(fast[k], slow[k]) > 0.99999


def test_mel_features() -> None:
    basis = ge2e.mel_filterbank()
    assert basis.shape == (40, 201)
    # Slaney normalisation: every triangle has unit area in Hz (bins are 40 Hz apart).
    areas = basis.sum(axis=1) * (RATE / ge2e.N_FFT)
    assert np.allclose(areas[10:], 1.0, atol=0.05)
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    mel = ge2e.wav_to_mel_spectrogram(tone)
    assert mel.shape == (1 + RATE // ge2e.HOP_LENGTH, 40)
    assert mel.dtype == np.float32
    # The tone's energy sits in FFT bin 25 (1000 Hz / 40 Hz): the channel weighting it most wins.
    assert int(np.argmax(mel[50])) == int(np.argmax(basis[:, 25]))
    # Centred frames: frame k is the window around sample 160k of the reflect-padded signal.
    padded = np.pad(tone, (200, 200), mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    frame = np.abs(np.fft.rfft(padded[3 * 160 : 3 * 160 + 400] * window)) ** 2
    assert np.allclose(mel[3], basis @ frame, rtol=1e-3)


def test_partial_slices_follow_resemblyzer() -> None:
    wav_slices, mel_slices = ge2e.compute_partial_slices(5 * RATE)
    # 501 frames, step round(16000 / 1.3 / 160) = 77; the 6th partial covers 72 % < 75 %.
    assert [s.start for s in mel_slices] == [0, 77, 154, 231, 308]
    assert all(s.stop - s.start == 160 for s in mel_slices)
    assert wav_slices[1] == slice(77 * 160, 237 * 160)
    assert len(ge2e.compute_partial_slices(RATE)[1]) == 1


# ----- embeddings ---------------------------------------------------------------------------


def test_embedding_is_unit_and_deterministic(
    engine: Ge2eSpeakerEngine, clips: dict[str, np.ndarray]
) -> None:
    first, speech_ms = engine.embed(clips["joe_b"])
    again, speech_again = engine.embed(clips["joe_b"])
    assert first.shape == (256,)
    assert first.dtype == np.float32
    assert abs(float(np.linalg.norm(first)) - 1.0) < 1e-5
    assert (first >= 0).all()  # ReLU before the normalisation
    assert np.array_equal(first, again)
    assert speech_ms == speech_again
    assert 2000 < speech_ms <= clips["joe_b"].size * 1000 // RATE


def test_same_speaker_scores_above_threshold_and_others_below(
    engine: Ge2eSpeakerEngine, clips: dict[str, np.ndarray]
) -> None:
    e = {name: engine.embed(audio)[0] for name, audio in clips.items()}
    same_joe = _cosine(e["joe_a"], e["joe_b"])
    same_eve = _cosine(e["eve_a"], e["eve_b"])
    joe_eve = _cosine(e["joe_a"], e["eve_a"])
    joe_max = _cosine(e["joe_a"], e["max_a"])
    print(f"same {same_joe:.3f} {same_eve:.3f}; joe/eve {joe_eve:.3f}; joe/max {joe_max:.3f}")
    # engines.md: same voice ≈ 0.92, different voices ≈ 0.55; cluster threshold 0.71.
    assert same_joe > 0.82
    assert same_eve > 0.82
    assert joe_eve < 0.62
    assert joe_max < 0.71


def test_embed_needs_one_second_of_speech(
    engine: Ge2eSpeakerEngine, clips: dict[str, np.ndarray]
) -> None:
    speech = clips["joe_a"]
    loud = np.flatnonzero(np.abs(speech) > 1000)
    middle = (loud[0] + loud[-1]) // 2
    short = np.concatenate([silence(1.0), speech[middle : middle + RATE // 2], silence(1.0)])
    with pytest.raises(ValueError, match="speech"):
        engine.embed(short)
    with pytest.raises(ValueError, match="speech"):
        engine.embed(silence(3.0))
    with pytest.raises(ValueError, match="speech"):
        engine.embed(np.zeros(0, dtype=np.int16))


# ----- speaker store ------------------------------------------------------------------------


def _entry(tenant: str, speaker: str, value: float = 1.0) -> SpeakerEntry:
    embedding = np.full(256, value, dtype=np.float32) / 16.0
    return SpeakerEntry(tenant, speaker, embedding, 1_700_000_000_000, "resemblyzer-ge2e-256")


def test_store_enroll_replace_evict_list() -> None:
    store = SpeakerStore()
    assert store.enroll(_entry("t1", "spkr_b")) is False
    assert store.enroll(_entry("t1", "spkr_a")) is False
    assert store.enroll(_entry("t2", "spkr_a")) is False
    assert store.enroll(_entry("t1", "spkr_b", 2.0)) is True
    assert len(store) == 3
    stored = store.get("t1", "spkr_b")
    assert stored is not None
    assert stored.embedding[0] == pytest.approx(2.0 / 16.0)
    assert [(e.tenant_id, e.speaker_id) for e in store.list()] == [
        ("t1", "spkr_a"),
        ("t1", "spkr_b"),
        ("t2", "spkr_a"),
    ]
    assert [e.speaker_id for e in store.list("t2")] == ["spkr_a"]
    assert [e.speaker_id for e in store.list("")] == ["spkr_a", "spkr_b", "spkr_a"]
    assert store.evict("t1", "spkr_a") is True
    assert store.evict("t1", "spkr_a") is False
    assert store.get("t1", "spkr_a") is None
    assert store.get("t2", "spkr_a") is not None  # other tenant untouched


def test_store_tenant_isolation_and_missing_ids() -> None:
    store = SpeakerStore()
    store.enroll(_entry("t1", "spkr_a", 1.0))
    store.enroll(_entry("t2", "spkr_a", 3.0))
    store.enroll(_entry("t1", "spkr_b", 2.0))
    found = store.embeddings_for("t1", ["spkr_a", "spkr_b"])
    assert set(found) == {"spkr_a", "spkr_b"}
    assert found["spkr_a"][0] == pytest.approx(1.0 / 16.0)
    assert store.embeddings_for("t2", ["spkr_a"])["spkr_a"][0] == pytest.approx(3.0 / 16.0)
    with pytest.raises(MissingSpeakers) as caught:
        store.embeddings_for("t2", ["spkr_x", "spkr_a", "spkr_b"])
    assert caught.value.ids == ("spkr_x", "spkr_b")
    assert store.embeddings_for("t1", []) == {}


def test_store_capacity() -> None:
    store = SpeakerStore(capacity=2)
    store.enroll(_entry("t", "a"))
    store.enroll(_entry("t", "b"))
    with pytest.raises(SpeakerStoreFull):
        store.enroll(_entry("t", "c"))
    assert store.enroll(_entry("t", "a", 5.0)) is True  # replacing is allowed when full
    assert store.evict("t", "b") is True
    assert store.enroll(_entry("t", "c")) is False


# ----- diarization --------------------------------------------------------------------------


def test_diarize_with_enrolled_candidates(
    engine: Ge2eSpeakerEngine, conversation: Conversation, enrolled: dict[str, np.ndarray]
) -> None:
    turns = engine.diarize(conversation.audio, enrolled)
    _assert_well_formed(turns)
    accuracy, coverage = _scores(turns, conversation.truth)
    print(f"attributed correctly {accuracy:.3f}, truth covered {coverage:.3f}")
    assert accuracy >= 0.9
    assert coverage >= 0.8
    assert {t.speaker_id for t in turns} == {"joe", "eve"}
    for turn in turns:
        assert turn.label == turn.speaker_id
        assert turn.similarity is not None
        assert turn.similarity > 0.8
    for start, end, who in conversation.truth:
        assert _label_of(turns, start, end) == who


def test_diarize_without_candidates_labels_by_first_appearance(
    engine: Ge2eSpeakerEngine, conversation: Conversation
) -> None:
    turns = engine.diarize(conversation.audio, {})
    _assert_well_formed(turns)
    assert turns[0].label == "spk_0"
    assert {t.label for t in turns} == {"spk_0", "spk_1"}
    assert all(t.speaker_id == "" and t.similarity is None for t in turns)
    expected = {"joe": "spk_0", "eve": "spk_1"}
    for start, end, who in conversation.truth:
        assert _label_of(turns, start, end) == expected[who]


def test_diarize_with_one_candidate(
    engine: Ge2eSpeakerEngine, conversation: Conversation, enrolled: dict[str, np.ndarray]
) -> None:
    turns = engine.diarize(conversation.audio, {"eve": enrolled["eve"]})
    _assert_well_formed(turns)
    assert {(t.speaker_id, t.label) for t in turns} == {("eve", "eve"), ("", "spk_0")}
    for start, end, who in conversation.truth:
        assert _label_of(turns, start, end) == ("eve" if who == "eve" else "spk_0")
    sims = {t.label: t.similarity for t in turns}
    assert sims["eve"] is not None and sims["eve"] > 0.8
    # The unmatched cluster still reports its best similarity to any candidate.
    assert sims["spk_0"] is not None and sims["spk_0"] < 0.71


def test_diarize_respects_match_threshold(
    engine: Ge2eSpeakerEngine, conversation: Conversation, enrolled: dict[str, np.ndarray]
) -> None:
    turns = engine.diarize(conversation.audio, enrolled, match_threshold=0.99)
    assert {t.label for t in turns} == {"spk_0", "spk_1"}
    assert all(t.speaker_id == "" for t in turns)
    assert all(t.similarity is not None and 0.8 < t.similarity < 0.99 for t in turns)


def test_diarize_speaker_bounds(
    engine: Ge2eSpeakerEngine, conversation: Conversation, enrolled: dict[str, np.ndarray]
) -> None:
    one = engine.diarize(conversation.audio, enrolled, max_speakers=1)
    assert len({t.label for t in one}) == 1
    three = engine.diarize(conversation.audio, {}, min_speakers=3)
    assert len({t.label for t in three}) == 3
    with pytest.raises(ValueError):
        engine.diarize(conversation.audio, {}, min_speakers=3, max_speakers=2)
    with pytest.raises(ValueError, match="256"):
        engine.diarize(conversation.audio, {"x": np.ones(128, dtype=np.float32)})
    assert engine.diarize(silence(2.0), enrolled) == []


def test_engine_is_usable_from_threads(
    engine: Ge2eSpeakerEngine, clips: dict[str, np.ndarray]
) -> None:
    names = ["joe_a", "eve_a", "joe_b", "eve_b"]
    alone = [engine.embed(clips[n])[0] for n in names]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda n: engine.embed(clips[n])[0], names))
    for a, b in zip(alone, together, strict=True):
        assert np.allclose(a, b, atol=1e-6)


def test_agglomerate_threshold_and_bounds() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=256), rng.normal(size=256)
    points = np.stack([a + 0.1 * rng.normal(size=256) for _ in range(3)] + [b, b + 0.01])
    assert agglomerate(points, 0.71).tolist() == [0, 0, 0, 1, 1]
    assert agglomerate(points, 0.71, max_clusters=1).tolist() == [0] * 5
    assert len(set(agglomerate(points, 0.71, min_clusters=3).tolist())) == 3
    assert agglomerate(points, 1.01).tolist() == [0, 1, 2, 3, 4]
