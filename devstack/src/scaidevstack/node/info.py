"""``GetNodeInfo``: identity, loaded engines, live load (cheap, never loads anything)."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from scaicommon._proto.scaiinfer.v1 import audio_node_pb2 as pb
from scaidevstack.node.state import API_VERSION, SPEAKER, STT, TTS, NodeState

# engines.md: one live stream re-decoding its buffer every second uses about 45 % of a core.
STREAM_CPU_SHARE = "0.45"


def engine_entries(state: NodeState) -> list[pb.Engine]:
    """One ``Engine`` per loaded engine, with live inflight/capacity."""
    adm = state.admission
    out: list[pb.Engine] = []
    max_ms = state.config.max_audio_ms
    if state.stt is not None:
        out.append(
            pb.Engine(
                kind=STT,
                name=state.stt.name,
                model=state.stt.model,
                capabilities=state.stt_capabilities(),
                languages=list(state.stt.languages),
                inflight=adm.inflight(STT),
                capacity=adm.capacity(STT),
                max_audio_ms=max_ms,
            )
        )
    if state.tts is not None:
        out.append(
            pb.Engine(
                kind=TTS,
                name=state.tts.name,
                model=state.tts.model,
                capabilities=list(state.tts.capabilities),
                languages=list(state.tts.languages),
                inflight=adm.inflight(TTS),
                capacity=adm.capacity(TTS),
                builtin_voices=list(state.tts.builtin_voices),
                output_sample_rate_hz=int(state.tts.sample_rate),
            )
        )
    if state.speaker is not None and state.speaker_store is not None:
        out.append(
            pb.Engine(
                kind=SPEAKER,
                name=state.speaker.name,
                model=state.speaker.model,
                capabilities=list(state.speaker.capabilities),
                inflight=adm.inflight(SPEAKER),
                capacity=adm.capacity(SPEAKER),
                embedding_dims=int(state.speaker.dims),
                max_audio_ms=max_ms,
            )
        )
    return out


def models_loaded(state: NodeState) -> list[str]:
    """``<kind>:<model>`` per loaded engine plus ``aux:<model>`` helpers, without duplicates."""
    names = [f"{e.kind}:{e.model}" for e in engine_entries(state)]
    names += [f"aux:{m}" for m in state.aux_models]
    return list(dict.fromkeys(names))


def labels(state: NodeState) -> dict[str, str]:
    """Configured labels plus honest notes about what this CPU node really does."""
    out = dict(state.config.labels)
    out.setdefault("implementation", "scaidevstack")
    out.setdefault("device", "cpu")
    if state.stt is not None:
        out["stream_cpu_share"] = STREAM_CPU_SHARE
    for engine in (state.stt, state.tts, state.speaker):
        if engine is not None:
            out.update(_module_labels(engine))
    for name, err in sorted(state.load_errors.items()):
        out[f"load_error.{name}"] = err[:200]
    return out


def build_node_info(state: NodeState) -> pb.NodeInfo:
    """The ``NodeInfo`` answer (no locks, no I/O)."""
    engines = engine_entries(state)
    inflight = sum(e.inflight for e in engines)
    capacity = sum(e.capacity for e in engines)
    return pb.NodeInfo(
        node_id=state.config.node_id,
        version=state.version,
        api_version=API_VERSION,
        engines=engines,
        models_loaded=models_loaded(state),
        inflight=inflight,
        capacity=capacity,
        load=min(1.0, inflight / capacity) if capacity else 0.0,
        draining=state.draining,
        started_at_unix_ms=state.started_at_unix_ms,
        labels=labels(state),
    )


def _module_labels(engine: object) -> dict[str, str]:
    """``NODE_LABELS`` exported by an engine's module (honest notes such as ``tts.cloning``)."""
    module = sys.modules.get(type(engine).__module__)
    found = getattr(module, "NODE_LABELS", None)
    if not isinstance(found, Mapping):
        return {}
    return {str(k): str(v) for k, v in found.items()}
