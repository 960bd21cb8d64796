"""Backend B: the OpenAI-shaped relay (platform §8).

- :class:`RelayClient`: one ``httpx.AsyncClient`` per process; :meth:`RelayClient.transcribe`
  (``/v1/audio/transcriptions``, ``verbose_json`` normalised) and :meth:`RelayClient.speech`
  (``/v1/audio/speech``, body streamed); the error table of §8.4 and its one retry.
- :class:`RelayCircuit`: the per-process circuit of §8.5.
- :meth:`RelayClient.usable`: the relay half of ``resolve_backend`` (§5.4).

Not here (module work): splitting audio over the upload limit into 10-minute pieces and
re-encoding unsupported containers (§8.2), splitting text over ``RELAY_MAX_INPUT_CHARS`` and
decoding ``wav``/``mp3`` answers (§8.3).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from scaicommon.errors import ScaiError
from scaicommon.logging import scrub
from scaicommon.metrics import ServiceMetrics
from scaicommon.requestid import current_request_id
from scaicommon.settings import CommonSettings
from scaicommon.tracing import inject_trace_headers

log = structlog.get_logger("scaicommon.relay")

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
SPEECH_PATH = "/v1/audio/speech"
#: Containers the relay takes as they are (§8.2).
RELAY_CONTAINERS = frozenset(
    {"flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"}
)
WRITE_TIMEOUT_S = 60.0
POOL_TIMEOUT_S = 5.0
MAX_RETRY_AFTER_S = 5
_MESSAGE_CHARS = 300
_RETRY_PAUSE_S = 0.2

FailureKind = Literal["connect", "timeout", "http", "shape", "circuit", "network"]


# ----- languages ----------------------------------------------------------------------

_LANGUAGE_NAMES = {
    "afrikaans": "af", "albanian": "sq", "amharic": "am", "arabic": "ar", "armenian": "hy",
    "assamese": "as", "azerbaijani": "az", "bashkir": "ba", "basque": "eu", "belarusian": "be",
    "bengali": "bn", "bosnian": "bs", "breton": "br", "bulgarian": "bg", "burmese": "my",
    "castilian": "es", "catalan": "ca", "chinese": "zh", "croatian": "hr", "czech": "cs",
    "danish": "da", "dutch": "nl", "english": "en", "estonian": "et", "faroese": "fo",
    "finnish": "fi", "flemish": "nl", "french": "fr", "galician": "gl", "georgian": "ka",
    "german": "de", "greek": "el", "gujarati": "gu", "haitian": "ht", "haitian creole": "ht",
    "hausa": "ha", "hebrew": "he", "hindi": "hi", "hungarian": "hu", "icelandic": "is",
    "indonesian": "id", "italian": "it", "japanese": "ja", "javanese": "jv", "kannada": "kn",
    "kazakh": "kk", "khmer": "km", "korean": "ko", "lao": "lo", "latin": "la", "latvian": "lv",
    "letzeburgesch": "lb", "lingala": "ln", "lithuanian": "lt", "luxembourgish": "lb",
    "macedonian": "mk", "malagasy": "mg", "malay": "ms", "malayalam": "ml", "maltese": "mt",
    "mandarin": "zh", "maori": "mi", "marathi": "mr", "moldavian": "ro", "moldovan": "ro",
    "mongolian": "mn", "myanmar": "my", "nepali": "ne", "norwegian": "no", "nynorsk": "nn",
    "occitan": "oc", "panjabi": "pa", "pashto": "ps", "persian": "fa", "polish": "pl",
    "portuguese": "pt", "punjabi": "pa", "pushto": "ps", "romanian": "ro", "russian": "ru",
    "sanskrit": "sa", "serbian": "sr", "shona": "sn", "sindhi": "sd", "sinhala": "si",
    "sinhalese": "si", "slovak": "sk", "slovenian": "sl", "somali": "so", "spanish": "es",
    "sundanese": "su", "swahili": "sw", "swedish": "sv", "tagalog": "tl", "tajik": "tg",
    "tamil": "ta", "tatar": "tt", "telugu": "te", "thai": "th", "tibetan": "bo",
    "turkish": "tr", "turkmen": "tk", "ukrainian": "uk", "urdu": "ur", "uzbek": "uz",
    "valencian": "ca", "vietnamese": "vi", "welsh": "cy", "yiddish": "yi", "yoruba": "yo",
}  # fmt: skip
_LANGUAGE_CODES = frozenset(_LANGUAGE_NAMES.values())
_CODE_ALIASES = {"jw": "jv", "iw": "he", "in": "id", "ji": "yi"}


def normalize_language(value: object) -> str | None:
    """ISO 639-1 from a code (``en``, ``en-US``) or an English name (``english``); else ``None``."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower().replace("_", "-")
    if not text:
        return None
    if text in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[text]
    code = text.split("-", 1)[0]
    code = _CODE_ALIASES.get(code, code)
    return code if code in _LANGUAGE_CODES else None


# ----- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayWord:
    """One word of a relay transcript."""

    text: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class RelaySegment:
    """One segment; ``confidence`` = exp(avg_logprob) clamped to [0, 1], or ``None``."""

    index: int
    start_ms: int
    end_ms: int
    text: str
    confidence: float | None
    no_speech_probability: float | None


@dataclass(frozen=True)
class RelayTranscript:
    """A normalised ``verbose_json`` answer; ``duration_ms`` is ``None`` when absent."""

    text: str
    language: str | None
    duration_ms: int | None
    segments: tuple[RelaySegment, ...]
    words: tuple[RelayWord, ...]


# ----- errors -------------------------------------------------------------------------


class RelayError(ScaiError):
    """A relay failure mapped to its platform error (§8.4).

    ``status`` is the HTTP status (``None`` for transport failures), ``kind`` what failed;
    neither reaches the client body.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        kind: FailureKind,
        status: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        # Module codes (``<MODULE>_BACKEND_UNAVAILABLE``) are 502 whether registered or not.
        http = 502 if code.endswith("_BACKEND_UNAVAILABLE") else None
        super().__init__(code, message, http_status=http, retry_after=retry_after)
        self.kind = kind
        self.status = status

    @property
    def counts_against_circuit(self) -> bool:
        """Connect/TLS, 401/403 and 5xx count towards the circuit (§8.5)."""
        if self.kind == "connect":
            return True
        return (
            self.kind == "http"
            and self.status is not None
            and (self.status in (401, 403) or self.status >= 500)
        )

    @property
    def failover_eligible(self) -> bool:
        """Connect/TLS errors, 5xx and 429: the dispatcher may fail over (§5.4)."""
        if self.kind in ("connect", "circuit"):
            return True
        return (
            self.kind == "http"
            and self.status is not None
            and (self.status >= 500 or self.status == 429)
        )

    @property
    def retryable(self) -> bool:
        """Retried once: 5xx, connect errors, and 429 with ``retry_after`` ≤ 5 s (§8.4)."""
        if self.kind == "connect":
            return True
        if self.kind != "http" or self.status is None:
            return False
        if self.status == 429:
            return (self.retry_after or 1) <= MAX_RETRY_AFTER_S
        return self.status >= 500


def relay_message(body: bytes) -> str:
    """The relay's error text (OpenAI ``error.message``, ``detail``, or plain text).

    Shortened to 300 characters and scrubbed (§4.11).
    """
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message") is not None:
            text = str(error["message"])
        elif isinstance(error, str):
            text = error
        elif "detail" in data:
            detail = data["detail"]
            text = detail if isinstance(detail, str) else json.dumps(detail)
    return scrub(text)[:_MESSAGE_CHARS]


def _retry_after(headers: Mapping[str, str]) -> int:
    value = headers.get("retry-after")
    if value:
        try:
            return max(1, math.ceil(float(value)))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
                return max(1, math.ceil(when.timestamp() - time.time()))
            except (TypeError, ValueError):
                pass
    value_ms = headers.get("retry-after-ms")
    if value_ms:
        try:
            return max(1, math.ceil(float(value_ms) / 1000))
        except ValueError:
            pass
    return 1


def map_response(
    status: int, body: bytes, headers: Mapping[str, str], *, module: str
) -> RelayError:
    """The platform error for a non-2xx relay answer (§8.4)."""
    message = relay_message(body)
    if status in (400, 422):
        return RelayError(
            "VALIDATION_ERROR", f"relay rejected input: {message}", kind="http", status=status
        )
    if status in (401, 403):
        log.error("relay_auth_rejected", status=status, relay_message=message)
        return RelayError(
            "BACKEND_ERROR", "relay refused the service credentials", kind="http", status=status
        )
    if status == 404:
        return RelayError(
            "BACKEND_ERROR", f"relay endpoint or model not found: {message}", kind="http",
            status=status,
        )  # fmt: skip
    if status in (408, 504):
        return RelayError("BACKEND_TIMEOUT", "relay timed out", kind="http", status=status)
    if status == 413:
        return RelayError(
            "PAYLOAD_TOO_LARGE", f"relay refused the payload size: {message}", kind="http",
            status=status,
        )  # fmt: skip
    if status == 429:
        return RelayError(
            "BACKEND_RATE_LIMITED",
            "relay rate limit reached",
            kind="http",
            status=status,
            retry_after=_retry_after(headers),
        )
    return RelayError(
        "BACKEND_ERROR", f"relay error (HTTP {status}): {message}", kind="http", status=status
    )


def map_transport(exc: httpx.HTTPError, *, module: str) -> RelayError:
    """The platform error for a transport failure (connect/TLS, timeout, broken stream)."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout) or isinstance(
        exc.__cause__ or exc.__context__, ssl.SSLError
    ):
        return RelayError(
            f"{module.upper()}_BACKEND_UNAVAILABLE",
            f"relay unreachable ({type(exc).__name__})",
            kind="connect",
        )
    if isinstance(exc, httpx.TimeoutException):
        return RelayError("BACKEND_TIMEOUT", "relay timed out", kind="timeout")
    return RelayError(
        "BACKEND_ERROR", f"relay connection failed ({type(exc).__name__})", kind="network"
    )


def shape_mismatch(what: str) -> RelayError:
    """``UPSTREAM_SHAPE_MISMATCH``: a 2xx answer the client cannot read."""
    return RelayError("UPSTREAM_SHAPE_MISMATCH", f"relay answer unreadable: {what}", kind="shape")


# ----- verbose_json -------------------------------------------------------------------


def _ms(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise shape_mismatch(f"{what} is not a number")
    return max(0, round(float(value) * 1000))


def _opt_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse_verbose_json(data: object) -> RelayTranscript:
    """Normalise a ``verbose_json`` body (§8.2); raises ``UPSTREAM_SHAPE_MISMATCH``."""
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise shape_mismatch("no text")
    raw_segments = data.get("segments") or []
    raw_words = data.get("words") or []
    if not isinstance(raw_segments, list) or not isinstance(raw_words, list):
        raise shape_mismatch("segments or words is not a list")
    segments: list[RelaySegment] = []
    for index, seg in enumerate(raw_segments):
        if not isinstance(seg, dict):
            raise shape_mismatch("segment is not an object")
        logprob = _opt_float(seg.get("avg_logprob"))
        confidence = None if logprob is None else min(1.0, max(0.0, math.exp(logprob)))
        segments.append(
            RelaySegment(
                index=index,
                start_ms=_ms(seg.get("start"), "segment start"),
                end_ms=_ms(seg.get("end"), "segment end"),
                text=str(seg.get("text") or "").strip(),
                confidence=confidence,
                no_speech_probability=_opt_float(seg.get("no_speech_prob")),
            )
        )
    words: list[RelayWord] = []
    for word in raw_words:
        if not isinstance(word, dict):
            raise shape_mismatch("word is not an object")
        words.append(
            RelayWord(
                text=str(word.get("word") or "").strip(),
                start_ms=_ms(word.get("start"), "word start"),
                end_ms=_ms(word.get("end"), "word end"),
            )
        )
    duration = _opt_float(data.get("duration"))
    return RelayTranscript(
        text=data["text"].strip(),
        language=normalize_language(data.get("language")),
        duration_ms=None if duration is None else max(0, round(duration * 1000)),
        segments=tuple(segments),
        words=tuple(words),
    )


# ----- circuit (§8.5) -----------------------------------------------------------------


class RelayCircuit:
    """Opens after ``threshold`` consecutive failures for ``cooldown_s``; then one probe.

    While open, :attr:`is_open` is true. After the cool-down the first :meth:`acquire` takes
    the probe; other requests stay refused until the probe ends: success closes the circuit,
    failure opens it for another cool-down.
    """

    def __init__(
        self,
        threshold: int = 3,
        cooldown_s: float = 15.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = max(1, threshold)
        self.cooldown_s = cooldown_s
        self._clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        """``closed``; ``open`` (cooling down or probing); ``half_open`` (probe available)."""
        if self._opened_at is None:
            return "closed"
        if self._probing or self._clock() - self._opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    @property
    def is_open(self) -> bool:
        """True while requests are refused (``relay_unhealthy``)."""
        return self.state == "open"

    def acquire(self) -> bool:
        """Whether a request may go now; after the cool-down it becomes the probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open":
            self._probing = True
            return True
        return False

    def success(self) -> None:
        """A request reached a healthy relay: close the circuit."""
        if self._opened_at is not None:
            log.info("relay_circuit_closed")
        self.failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        """A counting failure (connect/TLS, 401/403, 5xx)."""
        self.failures += 1
        if self._probing or (self._opened_at is None and self.failures >= self.threshold):
            self._opened_at = self._clock()
            self._probing = False
            log.warning("relay_circuit_open", failures=self.failures, cooldown_s=self.cooldown_s)

    def inconclusive(self) -> None:
        """A request ended without a verdict (client timeout, broken stream).

        Outside a probe nothing changes; a probe that ends this way re-opens the circuit.
        """
        if self._probing:
            self._opened_at = self._clock()
            self._probing = False


# ----- the client ---------------------------------------------------------------------


def speech_voice_reason(
    *, relay_voice: str | None, has_reference: bool, supports_cloning: bool
) -> str | None:
    """The module reason for a voice on B (§8.3): ``None`` when the relay can speak it.

    A stored relay voice name always works; a reference-based voice needs cloning support
    (``relay_no_cloning``); anything else is ``relay_no_voice``.
    """
    if relay_voice:
        return None
    if has_reference:
        return None if supports_cloning else "relay_no_cloning"
    return "relay_no_voice"


class RelayClient:
    """The process's relay client (§8.1)."""

    def __init__(
        self,
        *,
        module: str,
        base_url: str,
        api_key: str,
        model: str,
        user_agent: str,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 120.0,
        failure_threshold: int = 3,
        cooldown_s: float = 15.0,
        metrics: ServiceMetrics | None = None,
        tracer: trace.Tracer | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.module = module
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("scaicommon.relay")
        self.circuit = RelayCircuit(failure_threshold, cooldown_s)
        self._api_key = api_key
        self.http = httpx.AsyncClient(
            http2=transport is None,
            transport=transport,
            timeout=httpx.Timeout(
                connect=connect_timeout_s,
                read=read_timeout_s,
                write=WRITE_TIMEOUT_S,
                pool=POOL_TIMEOUT_S,
            ),
            headers={"User-Agent": user_agent},
        )

    @classmethod
    def from_settings(
        cls,
        settings: CommonSettings,
        *,
        module: str,
        user_agent: str,
        metrics: ServiceMetrics | None = None,
        tracer: trace.Tracer | None = None,
    ) -> RelayClient:
        """A client from the ``<PREFIX>_RELAY_*`` settings."""
        return cls(
            module=module,
            base_url=settings.relay_base_url,
            api_key=settings.relay_api_key.get(),
            model=settings.relay_model,
            user_agent=user_agent,
            connect_timeout_s=settings.relay_connect_timeout_s,
            read_timeout_s=settings.relay_timeout_s,
            failure_threshold=settings.relay_failure_threshold,
            cooldown_s=settings.relay_cooldown_s,
            metrics=metrics,
            tracer=tracer,
        )

    @property
    def configured(self) -> bool:
        """Base URL and API key are both set."""
        return bool(self.base_url and self._api_key)

    def usable(self, reason: str | None = None) -> str | None:
        """``None`` when B can take the request, else the §5.4 relay reason.

        ``reason`` is the module's own verdict (``relay_no_cloning``, ``relay_no_voice``,
        ``relay_no_capability``), reported after ``relay_unconfigured`` and before
        ``relay_unhealthy``.
        """
        if not self.configured:
            return "relay_unconfigured"
        if reason is not None:
            return reason
        if self.circuit.is_open:
            return "relay_unhealthy"
        return None

    def readiness(self) -> tuple[str, str | None]:
        """``relay`` readiness (§12.1) without calling the relay."""
        if not self.configured:
            return "unconfigured", "relay base URL or API key not set"
        if self.circuit.is_open:
            return "error", "relay circuit open after repeated failures"
        return "ok", None

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()

    # ----- plumbing ------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "X-Request-ID": current_request_id(),
        }
        inject_trace_headers(headers)
        return headers

    def _gate(self) -> None:
        if not self.configured:
            raise RelayError(
                f"{self.module.upper()}_BACKEND_UNAVAILABLE",
                "relay not configured",
                kind="circuit",
            )
        if not self.circuit.acquire():
            raise RelayError(
                f"{self.module.upper()}_BACKEND_UNAVAILABLE",
                "relay unhealthy (circuit open)",
                kind="circuit",
            )

    def _count(self, endpoint: str, status: str) -> None:
        if self.metrics is not None:
            self.metrics.relay_requests.labels(endpoint=endpoint, status=status).inc()

    def _settle(self, error: RelayError | None) -> None:
        if error is None or (error.kind in ("http", "shape") and not error.counts_against_circuit):
            self.circuit.success()  # the relay answered: consecutive failures end here
        elif error.counts_against_circuit:
            self.circuit.failure()
        else:
            self.circuit.inconclusive()

    @staticmethod
    def _status_label(error: RelayError) -> str:
        return str(error.status) if error.status is not None else f"{error.kind}_error"

    async def _pause(self, error: RelayError) -> None:
        await asyncio.sleep(
            float(error.retry_after or 1) if error.status == 429 else _RETRY_PAUSE_S
        )

    # ----- transcription (§8.2) --------------------------------------------------------

    async def transcribe(
        self,
        audio: bytes,
        content_type: str,
        filename_ext: str,
        *,
        language: str | None = None,
        temperature: float | None = None,
        prompt: str | None = None,
        word_timestamps: bool = True,
    ) -> RelayTranscript:
        """``POST /v1/audio/transcriptions`` (multipart, ``verbose_json``), retried once.

        The caller passes audio the relay accepts (one of :data:`RELAY_CONTAINERS`, under the
        upload limit) or a 16 kHz mono WAV it re-encoded. Raises :class:`RelayError`.
        """
        data: dict[str, Any] = {"model": self.model, "response_format": "verbose_json"}
        if language:
            data["language"] = language
        if temperature is not None:
            data["temperature"] = repr(float(temperature))
        if prompt:
            data["prompt"] = prompt
        data["timestamp_granularities[]"] = ["segment", "word"] if word_timestamps else ["segment"]
        files = {"file": (f"audio.{filename_ext.lstrip('.')}", audio, content_type)}
        url = self.base_url + TRANSCRIPTIONS_PATH
        for attempt in (1, 2):
            self._gate()
            error: RelayError | None = None
            with self.tracer.start_as_current_span(
                f"POST {TRANSCRIPTIONS_PATH}", kind=SpanKind.CLIENT
            ):
                try:
                    response = await self.http.post(
                        url, data=data, files=files, headers=self._headers()
                    )
                except httpx.HTTPError as exc:
                    error = map_transport(exc, module=self.module)
                else:
                    if response.status_code >= 400:
                        error = map_response(
                            response.status_code,
                            response.content,
                            response.headers,
                            module=self.module,
                        )
                    else:
                        self._settle(None)
                        self._count("transcriptions", str(response.status_code))
                        try:
                            body = response.json()
                        except ValueError:
                            raise shape_mismatch("not JSON") from None
                        return parse_verbose_json(body)
            self._settle(error)
            self._count("transcriptions", self._status_label(error))
            if attempt == 1 and error.retryable:
                log.info("relay_retry", endpoint="transcriptions", code=error.code)
                await self._pause(error)
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    # ----- speech (§8.3) -------------------------------------------------------------

    async def speech(
        self,
        text: str,
        voice: str,
        *,
        response_format: str = "pcm",
        speed: float | None = None,
        instructions: str | None = None,
        reference_wav_b64: str | bytes | None = None,
        reference_text: str | None = None,
    ) -> AsyncIterator[bytes]:
        """``POST /v1/audio/speech``; yields body bytes as they arrive.

        Retried once (5xx, connect errors, 429 with ``retry_after`` ≤ 5 s) only before the
        first body byte. ``reference_wav_b64`` (base64 text, or raw WAV bytes to encode)
        adds the cloning extension fields. Raises :class:`RelayError`.
        """
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": voice,
            "response_format": response_format,
        }
        if speed is not None and speed != 1.0:
            body["speed"] = speed
        if instructions:
            body["instructions"] = instructions
        if reference_wav_b64 is not None:
            if isinstance(reference_wav_b64, bytes):
                reference_wav_b64 = base64.b64encode(reference_wav_b64).decode("ascii")
            body["reference_audio_base64"] = reference_wav_b64
            if reference_text:
                body["reference_text"] = reference_text
        url = self.base_url + SPEECH_PATH
        for attempt in (1, 2):
            self._gate()
            error: RelayError | None = None
            started = False
            span = self.tracer.start_span(f"POST {SPEECH_PATH}", kind=SpanKind.CLIENT)
            try:
                with trace.use_span(span, end_on_exit=False):
                    headers = self._headers()
                async with self.http.stream("POST", url, json=body, headers=headers) as response:
                    if response.status_code >= 400:
                        error = map_response(
                            response.status_code,
                            await response.aread(),
                            response.headers,
                            module=self.module,
                        )
                    else:
                        self._settle(None)
                        self._count("speech", str(response.status_code))
                        async for chunk in response.aiter_bytes():
                            if chunk:
                                started = True
                                yield chunk
                        return
            except httpx.HTTPError as exc:
                error = map_transport(exc, module=self.module)
                if started:
                    raise error from None
            finally:
                span.end()
            self._settle(error)
            self._count("speech", self._status_label(error))
            if attempt == 1 and error.retryable:
                log.info("relay_retry", endpoint="speech", code=error.code)
                await self._pause(error)
                continue
            raise error
