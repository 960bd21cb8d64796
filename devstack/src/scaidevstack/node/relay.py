"""The node's OpenAI-compatible relay API (platform.md §8, §17.2) on the same engines.

Routes: ``POST /v1/audio/transcriptions``, ``POST /v1/audio/speech``, ``GET /v1/audio/voices``,
``GET /v1/models``, plus ``/healthz`` and ``/readyz`` (ready once every configured engine has
loaded). ``/v1`` needs ``Authorization: Bearer <DEVSTACK_RELAY_API_KEY>``. Errors use OpenAI's
``{"error": {"message", "type", "param", "code"}}``. Heavy requests take the same admission
slots as gRPC calls, so the two surfaces share capacity.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from scaidevstack.node.admission import Slot
from scaidevstack.node.audio import TARGET_RATE, decode_container
from scaidevstack.node.engines.base import SegmentResult, TextToSpeech, TranscriptResult
from scaidevstack.node.errors import NodeError
from scaidevstack.node.languages import check_language
from scaidevstack.node.relay_audio import CONTENT_TYPES, SPEECH_FORMATS, encode, srt, vtt
from scaidevstack.node.state import STT, TTS, NodeState
from scaidevstack.node.synthesis import Chunker, check_text, iterate_in_thread

log = logging.getLogger("scaidevstack.node.relay")

MAX_UPLOAD_BYTES = 60 * 1024 * 1024
MAX_REFERENCE_BYTES = 8 * 1024 * 1024
RELAY_TENANT = "relay"
SPEECH_RATE = 24_000
STT_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
TTS_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-tts")
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
LANGUAGE_NAMES = {
    "en": "english",
    "de": "german",
    "fr": "french",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
    "pl": "polish",
    "sv": "swedish",
    "da": "danish",
    "no": "norwegian",
    "fi": "finnish",
    "cs": "czech",
    "ru": "russian",
    "uk": "ukrainian",
    "tr": "turkish",
    "ar": "arabic",
    "he": "hebrew",
    "hi": "hindi",
    "ja": "japanese",
    "ko": "korean",
    "zh": "chinese",
}


class RelayError(Exception):
    """An OpenAI-shaped error answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The JSON error response."""
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def from_node_error(err: NodeError, param: str | None = None) -> RelayError:
    """Map the node's error vocabulary onto HTTP + OpenAI error types."""
    name = err.status.name
    if name == "RESOURCE_EXHAUSTED" and err.code == "AT_CAPACITY":
        retry_ms = err.retry_after_ms or 1000
        headers = {
            "Retry-After": str(max(1, math.ceil(retry_ms / 1000))),
            "retry-after-ms": str(retry_ms),
        }
        return RelayError(
            429, err.message, type_="rate_limit_error", code="at_capacity", headers=headers
        )
    if name == "UNAVAILABLE":
        return RelayError(503, err.message, type_="server_error", code=err.code.lower())
    if name == "INTERNAL":
        return RelayError(500, err.message, type_="server_error", code="internal_error")
    if name == "UNAUTHENTICATED":
        return RelayError(401, err.message, type_="invalid_request_error", code="invalid_api_key")
    return RelayError(400, err.message, param=param, code=err.code.lower())


Handler = Callable[[Request], Awaitable[Response]]


def create_relay_app(state: NodeState) -> Starlette:
    """The Starlette app serving the relay API over ``state``'s engines."""
    relay = _Relay(state)
    routes = [
        Route("/healthz", relay.healthz),
        Route("/readyz", relay.readyz),
        Route("/v1/models", relay.guard(relay.models), methods=["GET"]),
        Route("/v1/audio/voices", relay.guard(relay.voices), methods=["GET"]),
        Route("/v1/audio/transcriptions", relay.guard(relay.transcriptions), methods=["POST"]),
        Route("/v1/audio/speech", relay.guard(relay.speech), methods=["POST"]),
    ]
    return Starlette(routes=routes)


class _Relay:
    def __init__(self, state: NodeState) -> None:
        self.state = state

    # ----- plumbing ---------------------------------------------------------------------------

    def guard(self, handler: Handler) -> Handler:
        """Bearer check and error mapping around a ``/v1`` handler."""

        async def wrapped(request: Request) -> Response:
            request_id = request.headers.get("x-request-id", "")
            try:
                self._check_key(request)
                response = await handler(request)
            except RelayError as exc:
                if exc.status == 401:
                    # Drain the upload: answering before reading it makes the client see a
                    # connection reset instead of the 401.
                    async for _ in request.stream():
                        pass
                response = exc.response()
            except NodeError as exc:
                response = from_node_error(exc).response()
            except Exception:
                log.exception("relay_failed path=%s request_id=%s", request.url.path, request_id)
                response = RelayError(
                    500, "internal node error", type_="server_error", code="internal_error"
                ).response()
            if request_id:
                response.headers["x-request-id"] = request_id
            return response

        return wrapped

    def _check_key(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RelayError(
                401,
                "You didn't provide an API key. Use 'Authorization: Bearer YOUR_KEY'.",
                code="missing_api_key",
            )
        expected = self.state.config.relay_api_key.encode()
        if not hmac.compare_digest(token.strip().encode(), expected):
            raise RelayError(401, "Incorrect API key provided.", code="invalid_api_key")

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "engines": self.state.loaded_kinds()})

    async def readyz(self, request: Request) -> Response:
        ready = self.state.all_loaded() and not self.state.draining
        body = {
            "ready": ready,
            "engines": self.state.loaded_kinds(),
            "draining": self.state.draining,
            "load_errors": self.state.load_errors,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    # ----- listings ---------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        created = self.state.started_at_unix_ms // 1000
        ids: list[str] = []
        if self.state.stt is not None:
            ids += [*STT_MODELS, self.state.stt.model]
        if self.state.tts is not None:
            ids += [*TTS_MODELS, self.state.tts.model]
        data = [
            {"id": i, "object": "model", "created": created, "owned_by": "scaidevstack"}
            for i in dict.fromkeys(ids)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def voices(self, request: Request) -> Response:
        tts = self.state.require_tts()
        data = [
            {"id": v, "name": v, "object": "voice", "builtin": True, "alias_of": None}
            for v in tts.builtin_voices
        ]
        default = tts.builtin_voices[0] if tts.builtin_voices else None
        data += [
            {"id": v, "name": v, "object": "voice", "builtin": False, "alias_of": default}
            for v in OPENAI_VOICES
            if v not in tts.builtin_voices
        ]
        return JSONResponse({"object": "list", "data": data})

    # ----- transcription ----------------------------------------------------------------------

    async def transcriptions(self, request: Request) -> Response:
        stt = self.state.require_stt()
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_UPLOAD_BYTES + 1024 * 1024:
            raise RelayError(413, "upload is over 60 MiB", code="payload_too_large")
        try:
            form = await request.form(max_files=1, max_fields=32, max_part_size=MAX_UPLOAD_BYTES)
        except Exception as exc:
            raise RelayError(400, f"invalid multipart body: {exc}", param="file") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise RelayError(400, "file is required", param="file")
        model = str(form.get("model") or "")
        if not model:
            raise RelayError(400, "model is required", param="model")
        if model not in (*STT_MODELS, stt.model):
            raise RelayError(
                404, f"The model `{model}` does not exist.", param="model", code="model_not_found"
            )
        fmt = str(form.get("response_format") or "json")
        if fmt not in TRANSCRIPTION_FORMATS:
            raise RelayError(400, f"unsupported response_format {fmt!r}", param="response_format")
        try:
            language = check_language(str(form.get("language") or ""), stt.languages)
        except NodeError as exc:
            raise from_node_error(exc, "language") from None
        temperature = _float_field(form.get("temperature"), "temperature", 0.0, 1.0)
        granularities = [str(g) for g in form.getlist("timestamp_granularities[]")]
        granularities += [str(g) for g in form.getlist("timestamp_granularities")]
        if set(granularities) - {"word", "segment"}:
            raise RelayError(
                400,
                "timestamp_granularities must be word or segment",
                param="timestamp_granularities",
            )
        words = fmt == "verbose_json" and "word" in granularities
        prompt = str(form.get("prompt") or "") or None
        if prompt and "prompt" not in stt.capabilities:
            prompt = None
        data = await upload.read()
        if len(data) > MAX_UPLOAD_BYTES:
            raise RelayError(413, "upload is over 60 MiB", code="payload_too_large")
        if not data:
            raise RelayError(400, "file is empty", param="file")
        with self.state.admission.acquire(STT):
            try:
                audio = await asyncio.to_thread(decode_container, data, TARGET_RATE)
            except ValueError as exc:
                raise RelayError(400, f"Invalid file format: {exc}", param="file") from None
            if audio.size * 1000 // TARGET_RATE > self.state.config.max_audio_ms:
                raise RelayError(400, "audio is too long", param="file", code="audio_too_long")
            result = await asyncio.to_thread(
                stt.transcribe,
                audio,
                language=language,
                temperature=temperature,
                word_timestamps=words,
                prompt=prompt,
            )
        return _transcription_response(result, fmt, granularities, audio.size)

    # ----- speech -----------------------------------------------------------------------------

    async def speech(self, request: Request) -> Response:
        tts = self.state.require_tts()
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RelayError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RelayError(400, "body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RelayError(400, "model is required", param="model")
        if model not in (*TTS_MODELS, tts.model):
            raise RelayError(
                404, f"The model `{model}` does not exist.", param="model", code="model_not_found"
            )
        text = body.get("input")
        if not isinstance(text, str):
            raise RelayError(400, "input is required", param="input")
        try:
            check_text(text, field_name="input")
        except NodeError as exc:
            raise from_node_error(exc, "input") from None
        fmt = body.get("response_format") or "mp3"
        if fmt not in SPEECH_FORMATS:
            raise RelayError(400, f"unsupported response_format {fmt!r}", param="response_format")
        speed = _float_field(body.get("speed"), "speed", 0.25, 4.0)
        profile = await self._voice(tts, body)
        slot = self.state.admission.acquire(TTS)
        try:
            sentences = tts.synthesize(text, profile, speed=speed or 1.0)
            chunker = Chunker(int(tts.sample_rate), SPEECH_RATE, 0)
            if fmt == "pcm":
                stream = _pcm_stream(iterate_in_thread(sentences), chunker, slot)
                return _SlotStreamingResponse(stream, slot, media_type=CONTENT_TYPES["pcm"])
            parts: list[np.ndarray] = []
            async for audio in iterate_in_thread(sentences):
                parts.extend(chunker.split(audio))
            pcm = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
            payload = await asyncio.to_thread(encode, pcm, SPEECH_RATE, fmt)
        except BaseException:
            slot.release()
            raise
        slot.release()
        return Response(payload, media_type=CONTENT_TYPES[fmt])

    async def _voice(self, tts: TextToSpeech, body: dict[str, Any]) -> Any:
        voice = body.get("voice")
        if isinstance(voice, dict):
            voice = voice.get("id")
        if not isinstance(voice, str) or not voice:
            raise RelayError(400, "voice is required", param="voice")
        if voice in tts.builtin_voices:
            return tts.builtin_profile(voice)
        if voice in OPENAI_VOICES and tts.builtin_voices:
            return tts.builtin_profile(tts.builtin_voices[0])
        if not voice.startswith("voice_"):
            raise RelayError(400, f"unknown voice {voice!r}", param="voice")
        encoded = body.get("reference_audio_base64")
        if not encoded:
            cached = self.state.voices.latest(RELAY_TENANT, voice)
            if cached is None:
                raise RelayError(
                    400,
                    f"voice {voice!r} needs reference_audio_base64 (not cached here)",
                    param="reference_audio_base64",
                )
            return cached
        if "cloning" not in tts.capabilities:
            raise RelayError(400, "this node cannot clone voices", param="voice")
        try:
            data = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise RelayError(
                400, "reference_audio_base64 is not base64", param="reference_audio_base64"
            ) from None
        if len(data) > MAX_REFERENCE_BYTES:
            raise RelayError(400, "reference audio is over 8 MiB", param="reference_audio_base64")
        sha = hashlib.sha256(data).hexdigest()
        cached = self.state.voices.get(RELAY_TENANT, voice, sha)
        if cached is not None:
            return cached
        try:
            audio = await asyncio.to_thread(decode_container, data, TARGET_RATE)
            if not 1000 <= audio.size * 1000 // TARGET_RATE <= 30_000:
                raise ValueError("the reference clip must last 1 to 30 s")
            profile = await asyncio.to_thread(tts.profile_from_reference, voice, audio)
        except ValueError as exc:
            raise RelayError(
                400, f"unusable reference audio: {exc}", param="reference_audio_base64"
            ) from None
        self.state.voices.put(RELAY_TENANT, voice, sha, profile)
        return profile


class _SlotStreamingResponse(StreamingResponse):
    """A streamed body that frees its admission slot however the response ends."""

    def __init__(self, content: AsyncIterator[bytes], slot: Slot, media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self._slot = slot

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


async def _pcm_stream(
    sentences: AsyncIterator[np.ndarray], chunker: Chunker, slot: Slot
) -> AsyncIterator[bytes]:
    """Raw 24 kHz s16le as each sentence is produced; frees the slot at the end or on cancel."""
    try:
        async for audio in sentences:
            for pcm in chunker.split(audio):
                yield np.asarray(pcm, dtype="<i2").tobytes()
    finally:
        slot.release()


def _float_field(value: Any, name: str, lo: float, hi: float) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RelayError(400, f"{name} must be a number", param=name) from None
    if math.isnan(number) or not lo <= number <= hi:
        raise RelayError(400, f"{name} must be within {lo}..{hi}", param=name)
    return number


def _avg_logprob(segment: SegmentResult) -> float:
    if segment.confidence is None or segment.confidence <= 0:
        return -1.0
    return round(math.log(min(1.0, segment.confidence)), 4)


def _transcription_response(
    result: TranscriptResult, fmt: str, granularities: list[str], samples: int
) -> Response:
    text = result.text.strip()
    if fmt == "json":
        return JSONResponse({"text": text})
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt == "srt":
        return PlainTextResponse(srt(result.segments))
    if fmt == "vtt":
        return PlainTextResponse(vtt(result.segments), media_type="text/vtt")
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": LANGUAGE_NAMES.get(result.language, result.language or "english"),
        "duration": round(samples / TARGET_RATE, 3),
        "text": text,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": 0,
                "start": s.start_ms / 1000,
                "end": s.end_ms / 1000,
                "text": " " + s.text.strip(),
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": _avg_logprob(s),
                "compression_ratio": 1.0,
                "no_speech_prob": round(s.no_speech_probability or 0.0, 4),
            }
            for i, s in enumerate(result.segments)
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.text.strip(), "start": w.start_ms / 1000, "end": w.end_ms / 1000}
            for s in result.segments
            for w in s.words
        ]
    return JSONResponse(body)
