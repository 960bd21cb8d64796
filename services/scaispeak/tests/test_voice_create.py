"""``POST /voices`` (clone and design) and ``POST /voices/{id}/repromote`` against real Postgres,
S3, spoken audio and the real dev node (scaispeak.md §7.4, §7.5, §7.6, §7.10)."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import secrets
import unicodedata
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest

from scaicommon.audio import Pcm, encode, wav_bytes
from scaicommon.errors import ScaiError
from scaicommon.ids import new_id
from scaicommon.storage import ObjectNotFound
from scaicommon.testing import DevServer, LocalRedis, S3Endpoint, scaidrive_settings
from scaicommon.testing.wer import word_error_rate
from scaidevstack.node.testing import NodeProcess
from scaidevstack.scaidrive.store import Actor, DriveStore
from scaidevstack.scaikey import KeyStore
from scaidevstack.speechgen import piper_speech, silence
from scaispeak.deps import deps_of
from scaispeak.services.intake import SAMPLE_SENTENCES, IntakeService
from scaispeak.store.voices import NewVoice, Voice

from .conftest import RELAY_KEY, SpeakEnv, running_speak

RATE = 24000
REFERENCE_TEXT = (
    "The morning train left the station a little after seven, carrying commuters, students and "
    "a few tired travellers toward the city. Outside the windows, fields of wheat rolled past "
    "under a pale sky, and somewhere near the back a child was laughing at a dog that chased "
    "the train along the fence."
)
# Decomposed "e" + combining diaeresis and surrounding whitespace: hashed after NFC and trim.
CONSENT_TEXT = (
    "  I, Zoe\u0308 Example, agree that my voice may be cloned for narrating our training videos.\n"
)
CONSENT_SPOKEN = (
    "I, Zoe Example, agree that my voice may be cloned for narrating our training videos."
)
DESIGN_PROMPT = "A calm, deep male voice with a slow pace, a warm tone and a gentle manner."
MIME = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg"}


# ----- spoken test audio -----------------------------------------------------------------


@functools.cache
def _speech(text: str) -> np.ndarray:
    """``text`` spoken by piper at 24 kHz, peak-normalised to -6 dBFS."""
    audio = piper_speech(text, RATE).astype(np.float64)
    scaled: np.ndarray = (audio / np.abs(audio).max() * 32767 * 10 ** (-6 / 20)).astype(np.int16)
    return scaled


def _fit(audio: np.ndarray, seconds: float) -> np.ndarray:
    """Exactly ``seconds`` long: cut, or padded with digital silence."""
    n = int(seconds * RATE)
    out = audio[:n]
    return np.concatenate([out, np.zeros(n - len(out), dtype=np.int16)])


def _padded(audio: np.ndarray, seconds: float) -> np.ndarray:
    """``seconds`` long with 0.3 s of silence at each end (a recording's lead-in and -out)."""
    return np.concatenate([silence(0.3, RATE), _fit(audio, seconds - 0.6), silence(0.3, RATE)])


def _wav(audio: np.ndarray) -> bytes:
    return wav_bytes(Pcm(audio.astype(np.int16).tobytes(), RATE))


def _compressed_in_noise(audio: np.ndarray) -> np.ndarray:
    """Speech levelled by a fast compressor with steady room noise 10 dB under it: plenty of
    speech, but a signal-to-noise ratio under 15 dB."""
    x = audio.astype(np.float64) / 32768
    window = int(0.05 * RATE)
    envelope = np.sqrt(np.convolve(x * x, np.ones(window) / window, mode="same")) + 1e-9
    level = 20 * np.log10(envelope)
    levelled = x * np.where(level > -45.0, 10 ** ((-22.0 - level) / 20), 0.0)
    noise = np.random.default_rng(7).normal(0.0, 10 ** (-32 / 20), len(x))
    return np.clip((levelled + noise) * 32768, -32768, 32767).astype(np.int16)


@functools.cache
def clip(name: str) -> bytes:
    """The named test clip as a WAV file."""
    speech = _speech(REFERENCE_TEXT)
    if name == "good":
        return _wav(_padded(speech, 10.0))
    if name == "short":
        return _wav(_padded(speech, 3.0))
    if name == "long":
        return _wav(np.concatenate([speech] * 3)[: 30 * RATE])
    if name == "silent":
        return _wav(np.concatenate([_fit(speech, 2.0), silence(6.0, RATE)]))
    if name == "clipped":
        loud = np.clip(speech.astype(np.float64) * 8, -32768, 32767).astype(np.int16)
        return _wav(_padded(loud, 10.0))
    if name == "noisy":
        return _wav(_compressed_in_noise(_fit(speech, 10.0)))
    if name == "consent":
        return _wav(_padded(_speech(CONSENT_SPOKEN), 6.0))
    if name == "consent_short":
        return _wav(_fit(_speech(CONSENT_SPOKEN), 1.5))
    if name == "consent_quiet":
        return _wav(np.concatenate([_fit(_speech(CONSENT_SPOKEN), 1.0), silence(7.0, RATE)]))
    raise KeyError(name)


def consent_flac() -> bytes:
    """The consent clip as FLAC (stored as uploaded, at ``consent.flac``)."""
    pcm = Pcm(_padded(_speech(CONSENT_SPOKEN), 6.0).tobytes(), RATE)
    return encode(pcm, "flac")


def wav_info(data: bytes) -> tuple[int, int, int, float]:
    """``(rate, channels, sample width, seconds)`` of a WAV file."""
    with wave.open(io.BytesIO(data)) as w:
        return (
            w.getframerate(),
            w.getnchannels(),
            w.getsampwidth(),
            w.getnframes() / w.getframerate(),
        )


# ----- helpers ---------------------------------------------------------------------------

FIELDS = {
    "display_name": "Zoë (narration)",
    "language_primary": "en",
    "consent_text": CONSENT_TEXT,
    "consent_user_full_name": "Zoë Example",
    "consent_stated_purpose": "Narration of internal training videos",
}


async def post_clone(
    client: httpx.AsyncClient,
    *,
    reference: tuple[str, bytes, str] | None = ("ref.wav", b"", "audio/wav"),
    consent: tuple[str, bytes, str] | None = ("consent.wav", b"", "audio/wav"),
    drop: tuple[str, ...] = (),
    **fields: str,
) -> httpx.Response:
    """A clone-mode form: the good reference and consent clips unless replaced."""
    files: dict[str, tuple[str, bytes, str]] = {}
    if reference is not None:
        name, audio, mime = reference
        files["reference"] = (name, audio or clip("good"), mime)
    if consent is not None:
        name, audio, mime = consent
        files["consent"] = (name, audio or clip("consent"), mime)
    form = {k: v for k, v in {**FIELDS, **fields}.items() if k not in drop}
    return await client.post("/voices", files=files, data=form)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The ``error`` object, after checking status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error", body
    assert body["error"]["code"] == code, body
    error: dict[str, Any] = body["error"]
    return error


def fields_of(error: dict[str, Any]) -> set[str]:
    return {d["field"] for d in error.get("details", [])}


def rows(env: SpeakEnv, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(env.dsn, options="-c search_path=scaispeak") as conn:
        return conn.execute(query, params).fetchall()


async def voice_keys(env: SpeakEnv) -> set[str]:
    """Every stored voice object (the S3 endpoint is shared by the whole session)."""
    return {key for key, _ in await env.runtime.objects.list_keys("scaispeak/voices/")}


# ----- clone mode ------------------------------------------------------------------------


async def test_clone_creates_a_ready_voice_with_consent(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    consent_bytes = consent_flac()
    async with env.client(await env.key()) as client:
        r = await post_clone(
            client,
            consent=("consent.flac", consent_bytes, "audio/flac"),
            language_supported_json='["de", "en"]',
            gender_hint="female",
            age_hint="adult",
            style_tags_json='["narration", "calm"]',
            description="Warm, measured narration voice",
        )
    assert r.status_code == 201, r.text
    voice = r.json()["data"]
    voice_id = voice["voice_id"]
    assert voice_id.startswith("voice_")
    assert r.headers["location"] == f"/v1/modules/scaispeak/voices/{voice_id}"
    assert voice["kind"] == "cloned" and voice["scope"] == "user"
    assert voice["embedding_status"] == "ready" and voice["embedding_status_reason"] is None
    assert voice["owner_user_id"] == "usr_a" and voice["tenant_id"] == "tnt_a"
    assert voice["display_name"] == "Zoë (narration)"
    assert voice["language_primary"] == "en" and voice["language_supported"] == ["en", "de"]
    assert voice["gender_hint"] == "female" and voice["style_tags"] == ["narration", "calm"]
    assert voice["voice_design_prompt"] is None
    preflight = voice["preflight"]
    assert set(preflight) == {"passed", "fail_reasons", "metrics"}
    assert preflight["passed"] is True and preflight["fail_reasons"] == []
    assert preflight["metrics"]["sample_rate"] == RATE
    assert 9.9 <= preflight["metrics"]["duration_s"] <= 10.1

    objects = env.runtime.objects
    reference = await objects.get(f"scaispeak/voices/{voice_id}/reference.wav")
    rate, channels, width, seconds = wav_info(reference)
    assert (rate, channels, width) == (24000, 1, 2) and abs(seconds - 10.0) < 0.05
    assert await objects.get(f"scaispeak/voices/{voice_id}/consent.flac") == consent_bytes

    [(ref_key, ref_sha, consent_id)] = rows(
        env, "SELECT reference_key, reference_sha256, consent_id FROM voices WHERE id = %s",
        (voice_id,),
    )  # fmt: skip
    assert ref_key == f"scaispeak/voices/{voice_id}/reference.wav"
    assert ref_sha == hashlib.sha256(reference).hexdigest()
    [consent_row] = rows(
        env,
        "SELECT id, tenant_id, created_by, consent_user_full_name, consent_text,"
        " consent_stated_purpose, consent_audio_key, consent_audio_sha256, consent_text_sha256,"
        " combined_sha256, request_id FROM consent_records WHERE voice_id = %s",
        (voice_id,),
    )
    audio_sha = hashlib.sha256(consent_bytes).hexdigest()
    text = unicodedata.normalize("NFC", CONSENT_TEXT).strip()
    text_sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    combined = hashlib.sha256(f"{audio_sha}:{text_sha}".encode("ascii")).hexdigest()
    assert consent_row == (
        consent_id,
        "tnt_a",
        "usr_a",
        "Zoë Example",
        text,
        "Narration of internal training videos",
        f"scaispeak/voices/{voice_id}/consent.flac",
        audio_sha,
        text_sha,
        combined,
        r.headers["x-request-id"],
    )
    assert consent_row[8] != hashlib.sha256(CONSENT_TEXT.encode("utf-8")).hexdigest()
    audit = rows(
        env, "SELECT action, status, resource_id FROM audit_log WHERE resource_type = 'voice'"
    )
    assert audit == [("scaispeak.voice.create", "SUCCESS", voice_id)]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("short", "duration_below_minimum"),
        ("long", "duration_above_maximum"),
        ("silent", "low_voice_activity_ratio"),
        ("clipped", "peak_dbfs_above_threshold"),
        ("noisy", "snr_below_threshold"),
    ],
)
async def test_preflight_failures_name_their_one_reason(
    speak_bare: SpeakEnv, name: str, reason: str
) -> None:
    env = speak_bare
    before = await voice_keys(env)
    async with env.client(await env.key()) as client:
        r = await post_clone(client, reference=("ref.wav", clip(name), "audio/wav"))
    error = error_of(r, 422, "SCAISPEAK_VOICE_PREFLIGHT_FAILED")
    block = error["preflight"]
    assert block["passed"] is False
    assert block["fail_reasons"] == [reason]
    assert len(block["advice"]) == 1 and block["advice"][0] in error["message"]
    assert reason in error["message"]
    assert block["thresholds"]["min_duration_s"] == 5.0
    assert block["thresholds"]["max_duration_s"] == 25.0
    assert set(block["metrics"]) >= {
        "duration_s", "voice_activity_ratio", "peak_dbfs", "snr_db", "sample_rate", "channels"
    }  # fmt: skip
    assert rows(env, "SELECT count(*) FROM voices") == [(0,)]
    assert rows(env, "SELECT count(*) FROM consent_records") == [(0,)]
    assert await voice_keys(env) == before
    audit = rows(env, "SELECT action, status, error_code, http_status FROM audit_log")
    assert audit == [("scaispeak.voice.create", "FAILURE", "SCAISPEAK_VOICE_PREFLIGHT_FAILED", 422)]


async def test_consent_inputs_missing_or_doubled(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    async with env.client(await env.key()) as client:
        missing = await post_clone(client, consent=None)
        both = await client.post(
            "/voices",
            files={
                "reference": ("ref.wav", clip("good"), "audio/wav"),
                "consent": ("consent.wav", clip("consent"), "audio/wav"),
            },
            data={**FIELDS, "consent_scaidrive_json": '{"file_id": "fil_123"}'},
        )
        no_text = await post_clone(client, drop=("consent_text", "consent_stated_purpose"))
        short_text = await post_clone(client, consent_text="I agree, fine.")
    assert fields_of(error_of(missing, 422, "SCAISPEAK_CONSENT_INVALID")) == {"consent"}
    doubled = error_of(both, 422, "SCAISPEAK_CONSENT_INVALID")
    assert fields_of(doubled) == {"consent", "consent_scaidrive_json"}
    assert fields_of(error_of(no_text, 422, "SCAISPEAK_CONSENT_INVALID")) == {
        "consent_text",
        "consent_stated_purpose",
    }
    assert fields_of(error_of(short_text, 422, "SCAISPEAK_CONSENT_INVALID")) == {"consent_text"}
    assert rows(env, "SELECT count(*) FROM voices") == [(0,)]


@pytest.mark.parametrize("name", ["consent_short", "consent_quiet", "undecodable"])
async def test_unusable_consent_clips(speak_bare: SpeakEnv, name: str) -> None:
    env = speak_bare
    before = await voice_keys(env)
    data = b"RIFF\x24\x00\x00\x00WAVEgarbage" * 40 if name == "undecodable" else clip(name)
    async with env.client(await env.key()) as client:
        r = await post_clone(client, consent=("consent.wav", data, "audio/wav"))
    assert fields_of(error_of(r, 422, "SCAISPEAK_CONSENT_INVALID")) == {"consent"}
    assert await voice_keys(env) == before


# ----- references from ScaiDrive (§9.6) ---------------------------------------------------


def data_dir_of(server: DevServer) -> Path:
    """The ``--data-dir`` the dev ScaiDrive was started with."""
    args = server.process.args
    return Path(args[args.index("--data-dir") + 1])


@pytest.fixture
async def speak_drive(
    pg_dsn: str,
    redis_url: str,
    s3_endpoint: S3Endpoint,
    scaikey_server: tuple[DevServer, KeyStore],
    scaidrive_server: DevServer,
) -> AsyncIterator[SpeakEnv]:
    """ScaiSpeak with ScaiDrive and token exchange configured."""
    settings = scaidrive_settings(scaikey_server[0], scaidrive_server, "scaispeak")
    async with running_speak(pg_dsn, redis_url, s3_endpoint, **settings) as env:
        yield env


async def test_clone_from_scaidrive_references(
    speak_drive: SpeakEnv,
    scaikey_server: tuple[DevServer, KeyStore],
    scaidrive_server: DevServer,
) -> None:
    env = speak_drive
    drive = DriveStore(data_dir_of(scaidrive_server))
    tenant = "tnt_" + secrets.token_hex(5)
    share = drive.create_share(
        tenant_id=tenant, name="Voices", members={"usr_a": "owner"}, share_type="project"
    )
    owner = Actor(tenant, "usr_a")
    consent_bytes = consent_flac()
    reference = drive.add_file(owner, share["id"], None, "ref.wav", clip("good"), "audio/wav")
    consent = drive.add_file(owner, share["id"], None, "ok.flac", consent_bytes, "audio/flac")
    server, keys = scaikey_server
    jwt = keys.mint(
        tenant=tenant,
        user="usr_a",
        roles=["tenant_admin"],
        scope="files:read",
        issuer_base=server.base_url,
    )
    form = {k: v for k, v in FIELDS.items()}
    form["reference_scaidrive_json"] = json.dumps({"file_id": reference["id"]})
    form["consent_scaidrive_json"] = json.dumps({"mcp_uri": f"scaidrive://files/{consent['id']}"})
    async with env.client(jwt) as client:
        r = await client.post("/voices", files={k: (None, v) for k, v in form.items()})
        missing = await client.post(
            "/voices",
            files={
                "consent": ("c.wav", clip("consent"), "audio/wav"),
                **{k: (None, v) for k, v in FIELDS.items()},
                "reference_scaidrive_json": (None, '{"file_id": "fil_00000000000000000000000000"}'),
            },
        )
    async with env.client(await env.key(tenant=tenant)) as client:
        api_key = await client.post("/voices", files={k: (None, v) for k, v in form.items()})
    assert r.status_code == 201, r.text
    voice_id = r.json()["data"]["voice_id"]
    stored = await env.runtime.objects.get(f"scaispeak/voices/{voice_id}/consent.flac")
    assert stored == consent_bytes
    [(audio_sha, combined)] = rows(
        env,
        "SELECT consent_audio_sha256, combined_sha256 FROM consent_records WHERE voice_id = %s",
        (voice_id,),
    )
    assert audio_sha == hashlib.sha256(consent_bytes).hexdigest()
    text_sha = hashlib.sha256(
        unicodedata.normalize("NFC", CONSENT_TEXT).strip().encode()
    ).hexdigest()
    assert combined == hashlib.sha256(f"{audio_sha}:{text_sha}".encode()).hexdigest()
    error_of(missing, 404, "SCAISPEAK_SCAIDRIVE_NOT_FOUND")
    error_of(api_key, 403, "SCAISPEAK_SCAIDRIVE_REQUIRES_JWT")


async def test_checks_run_in_the_contract_order(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    async with env.client(await env.key()) as client:
        # Field errors come before consent errors, and list every bad field.
        fields = await post_clone(
            client,
            consent=None,
            display_name="   ",
            language_primary="english",
            style_tags_json='["ok", ""]',
            gender_hint="robot",
            language_supported_json="not json",
        )
        # No reference at all is a field error, not a consent error.
        no_reference = await post_clone(client, reference=None)
        # The reference preflight runs before the consent clip checks.
        order = await post_clone(
            client,
            reference=("ref.wav", clip("short"), "audio/wav"),
            consent=("consent.wav", clip("consent_quiet"), "audio/wav"),
        )
    error = error_of(fields, 422, "VALIDATION_ERROR")
    assert fields_of(error) == {
        "display_name",
        "language_primary",
        "style_tags_json[1]",
        "gender_hint",
        "language_supported_json",
    }
    assert fields_of(error_of(no_reference, 422, "VALIDATION_ERROR")) == {"reference"}
    error_of(order, 422, "SCAISPEAK_VOICE_PREFLIGHT_FAILED")


async def test_unsupported_and_undecodable_audio(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    before = await voice_keys(env)
    text = b"these are meeting notes, not a recording of anyone speaking\n" * 20
    broken_wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8
    async with env.client(await env.key()) as client:
        bad_reference = await post_clone(client, reference=("notes.txt", text, "text/plain"))
        bad_consent = await post_clone(client, consent=("notes.txt", text, "text/plain"))
        undecodable = await post_clone(client, reference=("ref.wav", broken_wav, "audio/wav"))
    for response in (bad_reference, bad_consent):
        error = error_of(response, 415, "SCAISPEAK_AUDIO_FORMAT_UNSUPPORTED")
        assert "audio/wav" in error["accepted"] and "audio/mpeg" in error["accepted"]
    error_of(undecodable, 422, "SCAISPEAK_AUDIO_DECODE_FAILED")
    assert await voice_keys(env) == before


async def test_voice_write_is_required(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    token = await env.key(permissions=["scaispeak:voice.read"])
    async with env.client(token) as client:
        r = await post_clone(client)
    error_of(r, 403, "AUTHZ_PERMISSION_DENIED")
    audit = rows(env, "SELECT action, status, error_code FROM audit_log")
    assert audit == [("scaispeak.voice.create", "FAILURE", "AUTHZ_PERMISSION_DENIED")]


async def test_design_prompt_excludes_clone_inputs(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    async with env.client(await env.key()) as client:
        mixed = await post_clone(client, voice_design_prompt=DESIGN_PROMPT)
        unknown = await client.post(
            "/voices",
            json={
                "voice_design_prompt": DESIGN_PROMPT,
                "display_name": "Deep",
                "language_primary": "en",
                "reference": "x",
            },
        )
        short = await client.post(
            "/voices",
            json={"voice_design_prompt": "deep", "language_primary": "xx1"},
        )
    assert fields_of(error_of(mixed, 422, "VALIDATION_ERROR")) == {"reference", "consent"}
    assert fields_of(error_of(unknown, 422, "VALIDATION_ERROR")) == {"reference"}
    assert fields_of(error_of(short, 422, "VALIDATION_ERROR")) == {
        "voice_design_prompt",
        "display_name",
        "language_primary",
    }


async def test_store_reference_checks_and_normalises(speak_bare: SpeakEnv, tmp_path: Path) -> None:
    """The global-voice import path: a file on disk, no name or type hints."""
    intake = IntakeService(deps_of(speak_bare.runtime))
    source = tmp_path / "part-1"
    source.write_bytes(
        encode(Pcm(np.frombuffer(clip("good")[44:], np.int16).tobytes(), RATE), "ogg")
    )
    voice_id = new_id("voice")
    key, sha, block = await intake.store_reference(voice_id, source)
    assert key == f"scaispeak/voices/{voice_id}/reference.wav"
    stored = await speak_bare.runtime.objects.get(key)
    assert sha == hashlib.sha256(stored).hexdigest()
    assert wav_info(stored)[:3] == (24000, 1, 2)
    assert block["passed"] is True and block["metrics"]["sample_rate"] == 48000
    with pytest.raises(ScaiError) as short:
        await intake.store_reference(new_id("voice"), clip("short"))
    assert short.value.code == "SCAISPEAK_VOICE_PREFLIGHT_FAILED"
    with pytest.raises(ScaiError) as text:
        await intake.store_reference(new_id("voice"), b"plain text, not audio at all" * 4)
    assert text.value.code == "SCAISPEAK_AUDIO_FORMAT_UNSUPPORTED"


# ----- design mode -----------------------------------------------------------------------


async def transcribe(node: NodeProcess, wav: bytes) -> str:
    """What the dev node's speech-to-text hears in ``wav`` (its relay API)."""
    async with httpx.AsyncClient(timeout=120.0) as client:
        r = await client.post(
            f"{node.http_url}/v1/audio/transcriptions",
            headers={"Authorization": f"Bearer {RELAY_KEY}"},
            files={"file": ("clip.wav", wav, "audio/wav")},
            data={"model": "whisper-1"},
        )
    assert r.status_code == 200, r.text
    return str(r.json()["text"])


async def test_design_renders_and_stores_a_reference(
    speak_with_node: SpeakEnv, tts_node: NodeProcess
) -> None:
    env = speak_with_node
    async with env.client(await env.key(tenant="tnt_design", user="usr_d")) as client:
        r = await client.post(
            "/voices",
            json={
                "voice_design_prompt": DESIGN_PROMPT,
                "display_name": "Deep narrator",
                "language_primary": "en",
                "style_tags": ["deep"],
                "gender_hint": "male",
            },
        )
        form = await client.post(
            "/voices",
            files={  # plain multipart fields, no file
                "voice_design_prompt": (None, "A bright young female voice, quick and cheerful."),
                "display_name": (None, "Bright"),
                "language_primary": (None, "en"),
                "language_supported_json": (None, '["de"]'),
            },
        )
    assert r.status_code == 201, r.text
    voice = r.json()["data"]
    assert voice["kind"] == "designed" and voice["scope"] == "user"
    assert voice["embedding_status"] == "ready" and voice["preflight"] is None
    assert voice["voice_design_prompt"] == DESIGN_PROMPT
    assert voice["style_tags"] == ["deep"] and voice["gender_hint"] == "male"
    assert r.headers["location"].endswith(f"/voices/{voice['voice_id']}")
    assert form.status_code == 201, form.text
    assert form.json()["data"]["language_supported"] == ["en", "de"]

    key = f"scaispeak/voices/{voice['voice_id']}/reference.wav"
    reference = await env.runtime.objects.get(key)
    rate, channels, width, seconds = wav_info(reference)
    assert (rate, channels, width) == (24000, 1, 2) and seconds > 4.0
    [(ref_key, ref_sha, ref_text)] = rows(
        env, "SELECT reference_key, reference_sha256, reference_text FROM voices WHERE id = %s",
        (voice["voice_id"],),
    )  # fmt: skip
    assert ref_key == key and ref_sha == hashlib.sha256(reference).hexdigest()
    assert ref_text == SAMPLE_SENTENCES["en"]
    heard = await transcribe(tts_node, reference)
    assert word_error_rate(SAMPLE_SENTENCES["en"], heard) < 0.3, heard
    assert rows(env, "SELECT count(*) FROM consent_records") == [(0,)]


async def test_design_needs_backend_a_and_a_clean_prompt(speak_with_node: SpeakEnv) -> None:
    env = speak_with_node
    design = {"display_name": "Designed", "language_primary": "en"}
    admin = await env.key(tenant="tnt_policy", user="usr_admin", roles=["tenant_admin"])
    async with env.client(admin) as client:
        r = await client.patch(
            "/admin/policy", json={"allowed_backends": ["B"], "default_backend": "B"}
        )
        assert r.status_code == 200, r.text
        relay_only = await client.post(
            "/voices", json={"voice_design_prompt": DESIGN_PROMPT, **design}
        )
        entry = await client.post(
            "/admin/blocklist", json={"pattern": "menacing villain", "match": "substring"}
        )
        assert entry.status_code == 201, entry.text
        blocked = await client.post(
            "/voices",
            json={"voice_design_prompt": "A  MENACING villain with a gravelly whisper.", **design},
        )
    error = error_of(relay_only, 502, "SCAISPEAK_BACKEND_UNAVAILABLE")
    assert error["resolution"] == {
        "allowed_backends": ["B"],
        "default_backend": "B",
        "preference": "prefer_self_hosted",
        "candidates": [
            {"backend": "A", "usable": False, "reason": "not_allowed"},
            {"backend": "B", "usable": False, "reason": "relay_no_capability"},
        ],
    }
    error = error_of(blocked, 422, "SCAISPEAK_TEXT_BLOCKED")
    assert error["blocklist_entry_id"] == entry.json()["data"]["id"]
    assert rows(env, "SELECT count(*) FROM voices WHERE tenant_id = 'tnt_policy'") == [(0,)]


async def test_design_without_a_node_is_backend_unavailable(
    pg_dsn: str, local_redis: LocalRedis, s3_endpoint: S3Endpoint
) -> None:
    # A private Redis: the shared one holds the module's dev node in its registry.
    async with running_speak(pg_dsn, local_redis.url, s3_endpoint) as env:
        before = await voice_keys(env)
        async with env.client(await env.key()) as client:
            r = await client.post(
                "/voices",
                json={
                    "voice_design_prompt": DESIGN_PROMPT,
                    "display_name": "Deep",
                    "language_primary": "en",
                },
            )
        error = error_of(r, 502, "SCAISPEAK_BACKEND_UNAVAILABLE")
        assert error["resolution"] == {
            "allowed_backends": ["A"],
            "default_backend": "A",
            "preference": "prefer_self_hosted",
            "candidates": [{"backend": "A", "usable": False, "reason": "no_node"}],
        }
        assert await voice_keys(env) == before
        assert rows(env, "SELECT count(*) FROM voices") == [(0,)]


# ----- repromote -------------------------------------------------------------------------


async def legacy_voice(
    env: SpeakEnv,
    status: str,
    reference: bytes | None,
    *,
    reason: str | None = None,
    key_name: str = "reference.wav",
    scope: str = "user",
    owner: str = "usr_a",
    kind: str = "cloned",
) -> Voice:
    """A row as the previous engine left it, with its reference stored (or not) in S3."""
    voice_id = new_id("voice")
    key = f"scaispeak/voices/{voice_id}/{key_name}"
    if reference is not None:
        await env.runtime.objects.put(key, reference)
    return await deps_of(env.runtime).voices.insert(
        NewVoice(
            id=voice_id,
            scope=scope,
            kind=kind,
            tenant_id=None if scope == "global" else "tnt_a",
            owner_user_id=None if scope == "global" else owner,
            display_name=f"Legacy {status}",
            language_primary="en",
            request_id="req_legacy",
            embedding_status=status,
            embedding_status_reason=reason,
            reference_key=key,
            reference_sha256=hashlib.sha256(reference).hexdigest() if reference else None,
        )
    )


async def repromote(client: httpx.AsyncClient, voice: Voice) -> httpx.Response:
    return await client.post(f"/voices/{voice.id}/repromote")


async def test_repromote_flips_legacy_rows(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    processing = await legacy_voice(env, "processing", clip("good"))
    failed = await legacy_voice(env, "failed", clip("good"), reason="tokeniser_unavailable")
    missing = await legacy_voice(env, "failed", None, reason="ecapa_cosine_below_threshold:0.41")
    short = await legacy_voice(env, "processing", clip("short"))
    long_mp3 = encode(Pcm(np.frombuffer(clip("long")[44:], dtype=np.int16).tobytes(), RATE), "mp3")
    evicted = await legacy_voice(env, "evicted", long_mp3, key_name="legacy.mp3")
    noisy = await legacy_voice(env, "pending", clip("noisy"))
    async with env.client(await env.key()) as client:
        results = {
            name: await repromote(client, voice)
            for name, voice in {
                "processing": processing,
                "failed": failed,
                "missing": missing,
                "short": short,
                "evicted": evicted,
                "noisy": noisy,
            }.items()
        }
    data = {}
    for name, response in results.items():
        assert response.status_code == 200, (name, response.text)
        data[name] = response.json()["data"]
    for name in ("processing", "failed", "evicted", "noisy"):
        assert data[name]["embedding_status"] == "ready", name
        assert data[name]["embedding_status_reason"] is None, name
        assert data[name]["preflight"]["metrics"]["sample_rate"] == RATE, name
    assert data["processing"]["preflight"]["passed"] is True
    # Other metrics are stored but do not fail a repromote.
    assert data["noisy"]["preflight"]["fail_reasons"] == ["snr_below_threshold"]
    assert (data["missing"]["embedding_status"], data["missing"]["embedding_status_reason"]) == (
        "failed",
        "reference_unavailable",
    )
    assert (data["short"]["embedding_status"], data["short"]["embedding_status_reason"]) == (
        "failed",
        "reference_too_short",
    )
    # The 30 s legacy MP3 is trimmed to 25 s and stored normalised at the canonical key.
    objects = env.runtime.objects
    stored = await objects.get(f"scaispeak/voices/{evicted.id}/reference.wav")
    rate, channels, _, seconds = wav_info(stored)
    assert (rate, channels) == (24000, 1) and abs(seconds - 25.0) < 0.01
    assert data["evicted"]["preflight"]["metrics"]["duration_s"] == pytest.approx(25.0, abs=0.01)
    with pytest.raises(ObjectNotFound):
        await objects.get(f"scaispeak/voices/{evicted.id}/legacy.mp3")
    [(key, sha)] = rows(
        env, "SELECT reference_key, reference_sha256 FROM voices WHERE id = %s", (evicted.id,)
    )
    assert key == f"scaispeak/voices/{evicted.id}/reference.wav"
    assert sha == hashlib.sha256(stored).hexdigest()
    audit = rows(
        env,
        "SELECT resource_id, details->>'to' FROM audit_log"
        " WHERE action = 'scaispeak.voice.update' AND details->>'operation' = 'repromote'",
    )
    assert sorted(audit) == sorted(
        [
            (processing.id, "ready"),
            (failed.id, "ready"),
            (missing.id, "failed"),
            (short.id, "failed"),
            (evicted.id, "ready"),
            (noisy.id, "ready"),
        ]
    )


async def test_repromote_leaves_ready_voices_alone(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    ready = await legacy_voice(env, "ready", None)
    async with env.client(await env.key()) as client:
        r = await repromote(client, ready)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == ready.to_api()


async def test_repromote_follows_the_modification_rule(speak_bare: SpeakEnv) -> None:
    env = speak_bare
    others = await legacy_voice(env, "processing", clip("good"), owner="usr_b")
    tenant = await legacy_voice(env, "processing", clip("good"), scope="tenant", owner="usr_b")
    global_voice = await legacy_voice(
        env, "processing", clip("good"), scope="global", kind="global"
    )
    async with env.client(await env.key()) as client:
        hidden = await repromote(client, others)
        not_owner = await repromote(client, tenant)
        not_super = await repromote(client, global_voice)
        unknown = await client.post("/voices/voice_01J0ZK8M6T4W2QF3XG5N7R9B1C/repromote")
    error_of(hidden, 404, "SCAISPEAK_VOICE_NOT_FOUND")
    error_of(not_owner, 403, "SCAISPEAK_VOICE_NOT_OWNER")
    error_of(not_super, 403, "SCAISPEAK_VOICE_NOT_OWNER")
    error_of(unknown, 404, "SCAISPEAK_VOICE_NOT_FOUND")
    admin = await env.key(user="usr_admin", roles=["tenant_admin"])
    async with env.client(admin) as client:
        promoted = await repromote(client, tenant)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["data"]["embedding_status"] == "ready"
    failures = rows(
        env, "SELECT error_code FROM audit_log WHERE status = 'FAILURE' ORDER BY created_at"
    )
    assert failures == [
        ("SCAISPEAK_VOICE_NOT_FOUND",),
        ("SCAISPEAK_VOICE_NOT_OWNER",),
        ("SCAISPEAK_VOICE_NOT_OWNER",),
        ("SCAISPEAK_VOICE_NOT_FOUND",),
    ]
