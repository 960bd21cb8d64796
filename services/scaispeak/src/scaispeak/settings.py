"""ScaiSpeak settings: ``SCAISPEAK_*`` environment variables (scaispeak.md §14)."""

from __future__ import annotations

from typing import ClassVar

from scaicommon.settings import CommonSettings, Url


class SpeakSettings(CommonSettings, kw_only=True):
    """Every ``SCAISPEAK_*`` variable, as a field without the prefix."""

    ENV_PREFIX: ClassVar[str] = "SCAISPEAK"
    MODULE: ClassVar[str] = "scaispeak"

    port: int = 8082
    worker_http_port: int = 9182
    s3_public_endpoint_url: Url = ""
    relay_model: str = "gpt-4o-mini-tts"
    relay_supports_cloning: bool = False
    relay_tts_format: str = "pcm"
    relay_max_input_chars: int = 4096
    price_per_1k_chars_a: str = "0"
    price_per_1k_chars_b: str = "0"
    async_threshold_chars: int = 2000
    max_text_chars: int = 100_000
    preview_max_chars: int = 300
    openai_max_input_chars: int = 4096
    openai_default_voice: str = ""
    sync_timeout_s: float = 120.0
    max_upload_bytes: int = 52_428_800
    job_audio_url_ttl_s: float = 3600.0
    job_output_retention_hours: int = 168
    preflight_min_duration_s: float = 5.0
    preflight_max_duration_s: float = 25.0
    preflight_min_sample_rate: int = 16000
    default_stream_codec: str = "opus"
    stream_idle_timeout_s: float = 60.0
    stream_segment_max_chars: int = 200
    stream_max_sessions_per_tenant: int = 50
    live_record_idle_timeout_s: float = 120.0
    webrtc_session_ttl_s: float = 300.0
    evict_rpc_timeout_s: float = 5.0
    erasure_reconcile_interval_s: float = 60.0
    default_monthly_chars_limit: int = 0
    ui_enabled: bool = True
    ui_scaikey_client_id: str = ""

    def problems(self) -> list[str]:
        """The common checks plus ScaiSpeak's enumerations."""
        out = super().problems()
        if self.relay_tts_format not in ("pcm", "wav", "mp3"):
            got = self.relay_tts_format
            out.append(f'SCAISPEAK_RELAY_TTS_FORMAT: expected pcm, wav or mp3, got "{got}"')
        if self.default_stream_codec not in ("opus", "pcm", "mp3", "wav"):
            got = self.default_stream_codec
            out.append(
                f'SCAISPEAK_DEFAULT_STREAM_CODEC: expected opus, pcm, mp3 or wav, got "{got}"'
            )
        return out
