"""The node's live state shared by the gRPC servicer, the relay app and the server.

It holds the loaded engines (each appears only once loaded), the admission pools, the voice
cache, the speaker store and the draining flag. Nothing here blocks the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from scaidevstack.node import errors
from scaidevstack.node.admission import Admission
from scaidevstack.node.config import ENGINE_KINDS, NodeConfig
from scaidevstack.node.engines.base import SpeakerAnalysis, SpeechToText, TextToSpeech
from scaidevstack.node.voices import VoiceCache

STT = ENGINE_KINDS["stt"]
TTS = ENGINE_KINDS["tts"]
SPEAKER = ENGINE_KINDS["speaker"]
API_VERSION = "scaiinfer.v1"


def node_version() -> str:
    """The installed ``scaidevstack`` version (semver)."""
    try:
        return metadata.version("scaidevstack")
    except metadata.PackageNotFoundError:  # pragma: no cover - source checkout without install
        return "0.0.0"


@dataclass
class NodeState:
    """Everything the node's surfaces share."""

    config: NodeConfig
    started_at_unix_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    version: str = field(default_factory=node_version)
    stt: SpeechToText | None = None
    tts: TextToSpeech | None = None
    speaker: SpeakerAnalysis | None = None
    speaker_store: Any = None
    aux_models: list[str] = field(default_factory=list)
    load_errors: dict[str, str] = field(default_factory=dict)
    voices: VoiceCache = field(default_factory=VoiceCache)
    admission: Admission = field(init=False)
    on_change: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        caps = {ENGINE_KINDS[n]: self.config.capacity_of(n) for n in self.config.enabled_engines}
        self.admission = Admission(caps)

    # ----- engines ---------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """Whether the node refuses new heavy calls."""
        return self.admission.draining

    def loaded_kinds(self) -> list[str]:
        """Kinds of the engines loaded so far, in canonical order."""
        pairs = ((STT, self.stt), (TTS, self.tts), (SPEAKER, self.speaker))
        return [kind for kind, engine in pairs if engine is not None]

    def serving(self) -> bool:
        """Health: at least one engine loaded and not draining."""
        return bool(self.loaded_kinds()) and not self.draining

    def all_loaded(self) -> bool:
        """Every configured engine finished loading."""
        return len(self.loaded_kinds()) == len(self.config.enabled_engines)

    def changed(self) -> None:
        """Notify listeners (health) that serving state may have changed."""
        for callback in list(self.on_change):
            callback()

    def require_stt(self) -> SpeechToText:
        """The transcribe engine, else ``ENGINE_NOT_LOADED``."""
        if self.stt is None:
            raise errors.not_loaded(STT)
        return self.stt

    def require_tts(self) -> TextToSpeech:
        """The synthesis engine, else ``ENGINE_NOT_LOADED``."""
        if self.tts is None:
            raise errors.not_loaded(TTS)
        return self.tts

    def require_speaker(self) -> SpeakerAnalysis:
        """The speaker engine, else ``ENGINE_NOT_LOADED``."""
        if self.speaker is None or self.speaker_store is None:
            raise errors.not_loaded(SPEAKER)
        return self.speaker

    def stt_capabilities(self) -> list[str]:
        """The transcribe engine's capabilities plus ``diarization`` when the node can diarize."""
        if self.stt is None:
            return []
        caps = list(self.stt.capabilities)
        if (
            "diarization" not in caps
            and self.speaker is not None
            and "diarization" in self.speaker.capabilities
        ):
            caps.append("diarization")
        return caps
