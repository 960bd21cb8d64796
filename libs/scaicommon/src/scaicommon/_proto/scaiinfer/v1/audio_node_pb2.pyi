from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_FORMAT_UNSPECIFIED: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_S16LE: _ClassVar[SampleFormat]

class TimestampGranularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIMESTAMP_GRANULARITY_UNSPECIFIED: _ClassVar[TimestampGranularity]
    TIMESTAMP_GRANULARITY_NONE: _ClassVar[TimestampGranularity]
    TIMESTAMP_GRANULARITY_SEGMENT: _ClassVar[TimestampGranularity]
    TIMESTAMP_GRANULARITY_WORD: _ClassVar[TimestampGranularity]

class StreamControlAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_CONTROL_ACTION_UNSPECIFIED: _ClassVar[StreamControlAction]
    STREAM_CONTROL_ACTION_FINALIZE: _ClassVar[StreamControlAction]
    STREAM_CONTROL_ACTION_CLOSE: _ClassVar[StreamControlAction]
    STREAM_CONTROL_ACTION_KEEPALIVE: _ClassVar[StreamControlAction]

class SynthesisControlAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYNTHESIS_CONTROL_ACTION_UNSPECIFIED: _ClassVar[SynthesisControlAction]
    SYNTHESIS_CONTROL_ACTION_FLUSH: _ClassVar[SynthesisControlAction]
    SYNTHESIS_CONTROL_ACTION_INTERRUPT: _ClassVar[SynthesisControlAction]
    SYNTHESIS_CONTROL_ACTION_CLOSE: _ClassVar[SynthesisControlAction]
SAMPLE_FORMAT_UNSPECIFIED: SampleFormat
SAMPLE_FORMAT_S16LE: SampleFormat
TIMESTAMP_GRANULARITY_UNSPECIFIED: TimestampGranularity
TIMESTAMP_GRANULARITY_NONE: TimestampGranularity
TIMESTAMP_GRANULARITY_SEGMENT: TimestampGranularity
TIMESTAMP_GRANULARITY_WORD: TimestampGranularity
STREAM_CONTROL_ACTION_UNSPECIFIED: StreamControlAction
STREAM_CONTROL_ACTION_FINALIZE: StreamControlAction
STREAM_CONTROL_ACTION_CLOSE: StreamControlAction
STREAM_CONTROL_ACTION_KEEPALIVE: StreamControlAction
SYNTHESIS_CONTROL_ACTION_UNSPECIFIED: SynthesisControlAction
SYNTHESIS_CONTROL_ACTION_FLUSH: SynthesisControlAction
SYNTHESIS_CONTROL_ACTION_INTERRUPT: SynthesisControlAction
SYNTHESIS_CONTROL_ACTION_CLOSE: SynthesisControlAction

class PcmSpec(_message.Message):
    __slots__ = ("sample_rate_hz", "channels", "sample_format")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    channels: int
    sample_format: SampleFormat
    def __init__(self, sample_rate_hz: _Optional[int] = ..., channels: _Optional[int] = ..., sample_format: _Optional[_Union[SampleFormat, str]] = ...) -> None: ...

class AudioInput(_message.Message):
    __slots__ = ("data", "media_type", "pcm")
    DATA_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    media_type: str
    pcm: PcmSpec
    def __init__(self, data: _Optional[bytes] = ..., media_type: _Optional[str] = ..., pcm: _Optional[_Union[PcmSpec, _Mapping]] = ...) -> None: ...

class SpeakerAttribution(_message.Message):
    __slots__ = ("speaker_id", "label", "similarity")
    SPEAKER_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    speaker_id: str
    label: str
    similarity: float
    def __init__(self, speaker_id: _Optional[str] = ..., label: _Optional[str] = ..., similarity: _Optional[float] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "start_ms", "end_ms", "confidence", "speaker_label")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_LABEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_ms: int
    end_ms: int
    confidence: float
    speaker_label: str
    def __init__(self, text: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., confidence: _Optional[float] = ..., speaker_label: _Optional[str] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("index", "start_ms", "end_ms", "text", "confidence", "no_speech_probability", "words", "speaker")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    NO_SPEECH_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    index: int
    start_ms: int
    end_ms: int
    text: str
    confidence: float
    no_speech_probability: float
    words: _containers.RepeatedCompositeFieldContainer[Word]
    speaker: SpeakerAttribution
    def __init__(self, index: _Optional[int] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., text: _Optional[str] = ..., confidence: _Optional[float] = ..., no_speech_probability: _Optional[float] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., speaker: _Optional[_Union[SpeakerAttribution, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetNodeInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "version", "api_version", "engines", "models_loaded", "inflight", "capacity", "load", "draining", "started_at_unix_ms", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    API_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    MODELS_LOADED_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LOAD_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    version: str
    api_version: str
    engines: _containers.RepeatedCompositeFieldContainer[Engine]
    models_loaded: _containers.RepeatedScalarFieldContainer[str]
    inflight: int
    capacity: int
    load: float
    draining: bool
    started_at_unix_ms: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, node_id: _Optional[str] = ..., version: _Optional[str] = ..., api_version: _Optional[str] = ..., engines: _Optional[_Iterable[_Union[Engine, _Mapping]]] = ..., models_loaded: _Optional[_Iterable[str]] = ..., inflight: _Optional[int] = ..., capacity: _Optional[int] = ..., load: _Optional[float] = ..., draining: _Optional[bool] = ..., started_at_unix_ms: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Engine(_message.Message):
    __slots__ = ("kind", "name", "model", "capabilities", "languages", "inflight", "capacity", "builtin_voices", "output_sample_rate_hz", "embedding_dims", "max_audio_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_VOICES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMS_FIELD_NUMBER: _ClassVar[int]
    MAX_AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name: str
    model: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    languages: _containers.RepeatedScalarFieldContainer[str]
    inflight: int
    capacity: int
    builtin_voices: _containers.RepeatedScalarFieldContainer[str]
    output_sample_rate_hz: int
    embedding_dims: int
    max_audio_ms: int
    def __init__(self, kind: _Optional[str] = ..., name: _Optional[str] = ..., model: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., languages: _Optional[_Iterable[str]] = ..., inflight: _Optional[int] = ..., capacity: _Optional[int] = ..., builtin_voices: _Optional[_Iterable[str]] = ..., output_sample_rate_hz: _Optional[int] = ..., embedding_dims: _Optional[int] = ..., max_audio_ms: _Optional[int] = ...) -> None: ...

class TranscribeRequest(_message.Message):
    __slots__ = ("audio", "language_hint", "temperature", "timestamps", "diarize", "candidate_speaker_ids", "tenant_id", "prompt", "model", "disable_vad")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_HINT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    DIARIZE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SPEAKER_IDS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DISABLE_VAD_FIELD_NUMBER: _ClassVar[int]
    audio: AudioInput
    language_hint: str
    temperature: float
    timestamps: TimestampGranularity
    diarize: bool
    candidate_speaker_ids: _containers.RepeatedScalarFieldContainer[str]
    tenant_id: str
    prompt: str
    model: str
    disable_vad: bool
    def __init__(self, audio: _Optional[_Union[AudioInput, _Mapping]] = ..., language_hint: _Optional[str] = ..., temperature: _Optional[float] = ..., timestamps: _Optional[_Union[TimestampGranularity, str]] = ..., diarize: _Optional[bool] = ..., candidate_speaker_ids: _Optional[_Iterable[str]] = ..., tenant_id: _Optional[str] = ..., prompt: _Optional[str] = ..., model: _Optional[str] = ..., disable_vad: _Optional[bool] = ...) -> None: ...

class TranscribeResponse(_message.Message):
    __slots__ = ("text", "language", "language_probability", "duration_ms", "segments", "speaker_labels", "model", "processing_ms", "ignored_options")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_MS_FIELD_NUMBER: _ClassVar[int]
    IGNORED_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    text: str
    language: str
    language_probability: float
    duration_ms: int
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    speaker_labels: _containers.RepeatedScalarFieldContainer[str]
    model: str
    processing_ms: int
    ignored_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, text: _Optional[str] = ..., language: _Optional[str] = ..., language_probability: _Optional[float] = ..., duration_ms: _Optional[int] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., speaker_labels: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ..., processing_ms: _Optional[int] = ..., ignored_options: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamTranscribeRequest(_message.Message):
    __slots__ = ("config", "audio", "control")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    config: StreamTranscribeConfig
    audio: bytes
    control: StreamControl
    def __init__(self, config: _Optional[_Union[StreamTranscribeConfig, _Mapping]] = ..., audio: _Optional[bytes] = ..., control: _Optional[_Union[StreamControl, _Mapping]] = ...) -> None: ...

class StreamTranscribeConfig(_message.Message):
    __slots__ = ("language_hint", "temperature", "timestamps", "partials", "vad_events", "endpointing_ms", "diarize", "candidate_speaker_ids", "tenant_id", "sample_rate_hz", "prompt", "model")
    LANGUAGE_HINT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    PARTIALS_FIELD_NUMBER: _ClassVar[int]
    VAD_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTING_MS_FIELD_NUMBER: _ClassVar[int]
    DIARIZE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SPEAKER_IDS_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    language_hint: str
    temperature: float
    timestamps: TimestampGranularity
    partials: bool
    vad_events: bool
    endpointing_ms: int
    diarize: bool
    candidate_speaker_ids: _containers.RepeatedScalarFieldContainer[str]
    tenant_id: str
    sample_rate_hz: int
    prompt: str
    model: str
    def __init__(self, language_hint: _Optional[str] = ..., temperature: _Optional[float] = ..., timestamps: _Optional[_Union[TimestampGranularity, str]] = ..., partials: _Optional[bool] = ..., vad_events: _Optional[bool] = ..., endpointing_ms: _Optional[int] = ..., diarize: _Optional[bool] = ..., candidate_speaker_ids: _Optional[_Iterable[str]] = ..., tenant_id: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ..., prompt: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class StreamControl(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: StreamControlAction
    def __init__(self, action: _Optional[_Union[StreamControlAction, str]] = ...) -> None: ...

class StreamTranscribeEvent(_message.Message):
    __slots__ = ("started", "transcript", "speech_started", "utterance_end", "error", "closed")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    SPEECH_STARTED_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_END_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    started: StreamStarted
    transcript: TranscriptUpdate
    speech_started: SpeechStarted
    utterance_end: UtteranceEnd
    error: StreamError
    closed: StreamTranscribeClosed
    def __init__(self, started: _Optional[_Union[StreamStarted, _Mapping]] = ..., transcript: _Optional[_Union[TranscriptUpdate, _Mapping]] = ..., speech_started: _Optional[_Union[SpeechStarted, _Mapping]] = ..., utterance_end: _Optional[_Union[UtteranceEnd, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ..., closed: _Optional[_Union[StreamTranscribeClosed, _Mapping]] = ...) -> None: ...

class StreamStarted(_message.Message):
    __slots__ = ("stream_id", "model", "sample_rate_hz")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    model: str
    sample_rate_hz: int
    def __init__(self, stream_id: _Optional[str] = ..., model: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class TranscriptUpdate(_message.Message):
    __slots__ = ("segment_id", "revision", "is_final", "text", "start_ms", "end_ms", "confidence", "words", "language", "speaker", "from_finalize")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    FROM_FINALIZE_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    revision: int
    is_final: bool
    text: str
    start_ms: int
    end_ms: int
    confidence: float
    words: _containers.RepeatedCompositeFieldContainer[Word]
    language: str
    speaker: SpeakerAttribution
    from_finalize: bool
    def __init__(self, segment_id: _Optional[str] = ..., revision: _Optional[int] = ..., is_final: _Optional[bool] = ..., text: _Optional[str] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., confidence: _Optional[float] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., language: _Optional[str] = ..., speaker: _Optional[_Union[SpeakerAttribution, _Mapping]] = ..., from_finalize: _Optional[bool] = ...) -> None: ...

class SpeechStarted(_message.Message):
    __slots__ = ("at_ms",)
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    def __init__(self, at_ms: _Optional[int] = ...) -> None: ...

class UtteranceEnd(_message.Message):
    __slots__ = ("at_ms", "last_segment_id")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    last_segment_id: str
    def __init__(self, at_ms: _Optional[int] = ..., last_segment_id: _Optional[str] = ...) -> None: ...

class StreamTranscribeClosed(_message.Message):
    __slots__ = ("audio_ms", "segments", "language")
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    audio_ms: int
    segments: int
    language: str
    def __init__(self, audio_ms: _Optional[int] = ..., segments: _Optional[int] = ..., language: _Optional[str] = ...) -> None: ...

class VoiceSpec(_message.Message):
    __slots__ = ("voice_id", "reference", "design_prompt", "builtin")
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    DESIGN_PROMPT_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    voice_id: str
    reference: ReferenceVoice
    design_prompt: str
    builtin: str
    def __init__(self, voice_id: _Optional[str] = ..., reference: _Optional[_Union[ReferenceVoice, _Mapping]] = ..., design_prompt: _Optional[str] = ..., builtin: _Optional[str] = ...) -> None: ...

class ReferenceVoice(_message.Message):
    __slots__ = ("audio", "text", "content_sha256")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    audio: AudioInput
    text: str
    content_sha256: str
    def __init__(self, audio: _Optional[_Union[AudioInput, _Mapping]] = ..., text: _Optional[str] = ..., content_sha256: _Optional[str] = ...) -> None: ...

class SynthesisOptions(_message.Message):
    __slots__ = ("language", "speed", "instructions", "cfg_value", "warmup_trim_ms", "sample_rate_hz", "model")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    CFG_VALUE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_TRIM_MS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    language: str
    speed: float
    instructions: str
    cfg_value: float
    warmup_trim_ms: int
    sample_rate_hz: int
    model: str
    def __init__(self, language: _Optional[str] = ..., speed: _Optional[float] = ..., instructions: _Optional[str] = ..., cfg_value: _Optional[float] = ..., warmup_trim_ms: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("sequence", "pcm", "sample_rate_hz", "start_ms", "duration_ms")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    pcm: bytes
    sample_rate_hz: int
    start_ms: int
    duration_ms: int
    def __init__(self, sequence: _Optional[int] = ..., pcm: _Optional[bytes] = ..., sample_rate_hz: _Optional[int] = ..., start_ms: _Optional[int] = ..., duration_ms: _Optional[int] = ...) -> None: ...

class SynthesisStats(_message.Message):
    __slots__ = ("chars", "audio_ms", "chunks", "first_chunk_ms", "processing_ms", "sample_rate_hz", "model", "voice_cache_hit", "ignored_options")
    CHARS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_MS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHUNK_MS_FIELD_NUMBER: _ClassVar[int]
    PROCESSING_MS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VOICE_CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    IGNORED_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    chars: int
    audio_ms: int
    chunks: int
    first_chunk_ms: int
    processing_ms: int
    sample_rate_hz: int
    model: str
    voice_cache_hit: bool
    ignored_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, chars: _Optional[int] = ..., audio_ms: _Optional[int] = ..., chunks: _Optional[int] = ..., first_chunk_ms: _Optional[int] = ..., processing_ms: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., model: _Optional[str] = ..., voice_cache_hit: _Optional[bool] = ..., ignored_options: _Optional[_Iterable[str]] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("tenant_id", "text", "voice", "options")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    text: str
    voice: VoiceSpec
    options: SynthesisOptions
    def __init__(self, tenant_id: _Optional[str] = ..., text: _Optional[str] = ..., voice: _Optional[_Union[VoiceSpec, _Mapping]] = ..., options: _Optional[_Union[SynthesisOptions, _Mapping]] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("chunk", "stats")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    chunk: AudioChunk
    stats: SynthesisStats
    def __init__(self, chunk: _Optional[_Union[AudioChunk, _Mapping]] = ..., stats: _Optional[_Union[SynthesisStats, _Mapping]] = ...) -> None: ...

class StreamSynthesizeRequest(_message.Message):
    __slots__ = ("config", "text", "control")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    config: StreamSynthesizeConfig
    text: TextDelta
    control: SynthesisControl
    def __init__(self, config: _Optional[_Union[StreamSynthesizeConfig, _Mapping]] = ..., text: _Optional[_Union[TextDelta, _Mapping]] = ..., control: _Optional[_Union[SynthesisControl, _Mapping]] = ...) -> None: ...

class StreamSynthesizeConfig(_message.Message):
    __slots__ = ("tenant_id", "voice", "options")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    voice: VoiceSpec
    options: SynthesisOptions
    def __init__(self, tenant_id: _Optional[str] = ..., voice: _Optional[_Union[VoiceSpec, _Mapping]] = ..., options: _Optional[_Union[SynthesisOptions, _Mapping]] = ...) -> None: ...

class TextDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class SynthesisControl(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: SynthesisControlAction
    def __init__(self, action: _Optional[_Union[SynthesisControlAction, str]] = ...) -> None: ...

class StreamSynthesizeEvent(_message.Message):
    __slots__ = ("chunk", "flushed", "interrupted", "done", "error")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    FLUSHED_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    chunk: AudioChunk
    flushed: Flushed
    interrupted: Interrupted
    done: SynthesisStats
    error: StreamError
    def __init__(self, chunk: _Optional[_Union[AudioChunk, _Mapping]] = ..., flushed: _Optional[_Union[Flushed, _Mapping]] = ..., interrupted: _Optional[_Union[Interrupted, _Mapping]] = ..., done: _Optional[_Union[SynthesisStats, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...

class Flushed(_message.Message):
    __slots__ = ("last_sequence", "chars")
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CHARS_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    chars: int
    def __init__(self, last_sequence: _Optional[int] = ..., chars: _Optional[int] = ...) -> None: ...

class Interrupted(_message.Message):
    __slots__ = ("last_sequence", "dropped_chars")
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CHARS_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    dropped_chars: int
    def __init__(self, last_sequence: _Optional[int] = ..., dropped_chars: _Optional[int] = ...) -> None: ...

class EvictVoiceRequest(_message.Message):
    __slots__ = ("tenant_id", "voice_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    VOICE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    voice_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., voice_id: _Optional[str] = ...) -> None: ...

class EvictVoiceResponse(_message.Message):
    __slots__ = ("evicted",)
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    evicted: bool
    def __init__(self, evicted: _Optional[bool] = ...) -> None: ...

class EmbedSpeakerRequest(_message.Message):
    __slots__ = ("audio",)
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    audio: AudioInput
    def __init__(self, audio: _Optional[_Union[AudioInput, _Mapping]] = ...) -> None: ...

class EmbedSpeakerResponse(_message.Message):
    __slots__ = ("embedding", "dims", "model", "speech_ms")
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SPEECH_MS_FIELD_NUMBER: _ClassVar[int]
    embedding: _containers.RepeatedScalarFieldContainer[float]
    dims: int
    model: str
    speech_ms: int
    def __init__(self, embedding: _Optional[_Iterable[float]] = ..., dims: _Optional[int] = ..., model: _Optional[str] = ..., speech_ms: _Optional[int] = ...) -> None: ...

class EnrollSpeakerRequest(_message.Message):
    __slots__ = ("tenant_id", "speaker_id", "reference")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    speaker_id: str
    reference: AudioInput
    def __init__(self, tenant_id: _Optional[str] = ..., speaker_id: _Optional[str] = ..., reference: _Optional[_Union[AudioInput, _Mapping]] = ...) -> None: ...

class EnrollSpeakerResponse(_message.Message):
    __slots__ = ("ok", "embedding_dims", "model", "replaced", "speech_ms")
    OK_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    SPEECH_MS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    embedding_dims: int
    model: str
    replaced: bool
    speech_ms: int
    def __init__(self, ok: _Optional[bool] = ..., embedding_dims: _Optional[int] = ..., model: _Optional[str] = ..., replaced: _Optional[bool] = ..., speech_ms: _Optional[int] = ...) -> None: ...

class EvictSpeakerRequest(_message.Message):
    __slots__ = ("tenant_id", "speaker_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    speaker_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., speaker_id: _Optional[str] = ...) -> None: ...

class EvictSpeakerResponse(_message.Message):
    __slots__ = ("evicted",)
    EVICTED_FIELD_NUMBER: _ClassVar[int]
    evicted: bool
    def __init__(self, evicted: _Optional[bool] = ...) -> None: ...

class ListSpeakersRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListSpeakersResponse(_message.Message):
    __slots__ = ("speakers",)
    SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    speakers: _containers.RepeatedCompositeFieldContainer[WarmSpeaker]
    def __init__(self, speakers: _Optional[_Iterable[_Union[WarmSpeaker, _Mapping]]] = ...) -> None: ...

class WarmSpeaker(_message.Message):
    __slots__ = ("tenant_id", "speaker_id", "enrolled_at_unix_ms", "embedding_dims", "model")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    speaker_id: str
    enrolled_at_unix_ms: int
    embedding_dims: int
    model: str
    def __init__(self, tenant_id: _Optional[str] = ..., speaker_id: _Optional[str] = ..., enrolled_at_unix_ms: _Optional[int] = ..., embedding_dims: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class DiarizeRequest(_message.Message):
    __slots__ = ("tenant_id", "audio", "candidate_speaker_ids", "min_speakers", "max_speakers", "match_threshold")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_SPEAKER_IDS_FIELD_NUMBER: _ClassVar[int]
    MIN_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_SPEAKERS_FIELD_NUMBER: _ClassVar[int]
    MATCH_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    audio: AudioInput
    candidate_speaker_ids: _containers.RepeatedScalarFieldContainer[str]
    min_speakers: int
    max_speakers: int
    match_threshold: float
    def __init__(self, tenant_id: _Optional[str] = ..., audio: _Optional[_Union[AudioInput, _Mapping]] = ..., candidate_speaker_ids: _Optional[_Iterable[str]] = ..., min_speakers: _Optional[int] = ..., max_speakers: _Optional[int] = ..., match_threshold: _Optional[float] = ...) -> None: ...

class DiarizeResponse(_message.Message):
    __slots__ = ("segments", "duration_ms", "labels", "model")
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    segments: _containers.RepeatedCompositeFieldContainer[DiarizedSegment]
    duration_ms: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    model: str
    def __init__(self, segments: _Optional[_Iterable[_Union[DiarizedSegment, _Mapping]]] = ..., duration_ms: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ...) -> None: ...

class DiarizedSegment(_message.Message):
    __slots__ = ("start_ms", "end_ms", "speaker")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    end_ms: int
    speaker: SpeakerAttribution
    def __init__(self, start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., speaker: _Optional[_Union[SpeakerAttribution, _Mapping]] = ...) -> None: ...
