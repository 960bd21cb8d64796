"""ScaiEcho settings: ``SCAIECHO_*`` environment variables (scaiecho.md §12)."""

from __future__ import annotations

from typing import ClassVar

from scaicommon.settings import CommonSettings


class EchoSettings(CommonSettings, kw_only=True):
    """Every ``SCAIECHO_*`` variable, as a field without the prefix."""

    ENV_PREFIX: ClassVar[str] = "SCAIECHO"
    MODULE: ClassVar[str] = "scaiecho"

    port: int = 8081
    worker_http_port: int = 9181
    relay_model: str = "whisper-1"
    relay_word_timestamps: bool = True
    relay_max_upload_bytes: int = 26_214_400
    price_per_audio_minute_a: str = "0"
    price_per_audio_minute_b: str = "0"
    enroll_node_timeout_s: float = 30.0
    async_audio_threshold_bytes: int = 5_242_880
    max_upload_bytes: int = 209_715_200
    max_audio_seconds: float = 14_400.0
    speaker_max_file_bytes: int = 20_971_520
    idle_timeout_s: float = 30.0
    max_session_seconds: float = 14_400.0
    utterance_end_ms: int = 1000
    max_streams_per_tenant: int = 20
    max_streams_per_instance: int = 200
    webrtc_session_ttl_s: float = 120.0
    job_retention_days: int = 30
    worker_concurrency: int = 4
    instance_id: str = ""
