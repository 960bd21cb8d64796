"""Engine loading: each configured engine is built once, in a worker thread, at start-up.

An engine becomes visible (``GetNodeInfo``, health, RPCs) only when its load has finished.
A failed load is logged, reported as a ``load_error.<name>`` label and leaves the engine out.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from scaidevstack.node.state import NodeState

log = logging.getLogger("scaidevstack.node")

ENGINE_CLASSES = {
    "stt": ("scaidevstack.node.engines.stt", "WhisperSTT"),
    "tts": ("scaidevstack.node.engines.tts", "PiperTTS"),
    "speaker": ("scaidevstack.node.engines.speaker", "Ge2eSpeakerEngine"),
}


def build_engine(name: str, options: Mapping[str, Any]) -> Any:
    """Construct engine ``name`` with the config's ``options`` (blocking)."""
    module_name, class_name = ENGINE_CLASSES[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**dict(options))


def aux_models_of(engine: Any) -> list[str]:
    """Helper models an engine keeps resident (``aux_models`` or a ``vad`` with ``model_id``)."""
    names = [str(m) for m in getattr(engine, "aux_models", ())]
    vad_id = getattr(getattr(engine, "vad", None), "model_id", None)
    if isinstance(vad_id, str):
        names.append(vad_id)
    return names


def attach(state: NodeState, name: str, engine: Any) -> None:
    """Make a loaded engine visible (runs on the event loop)."""
    if name == "stt":
        state.stt = engine
    elif name == "tts":
        state.tts = engine
    else:
        from scaidevstack.node.engines.speaker import SpeakerStore

        state.speaker_store = SpeakerStore()
        state.speaker = engine
    for aux in aux_models_of(engine):
        if aux not in state.aux_models:
            state.aux_models.append(aux)
    state.changed()


async def load_engine(state: NodeState, name: str) -> bool:
    """Load one engine in a thread and attach it; ``False`` when loading failed."""
    started = time.monotonic()
    try:
        engine = await asyncio.to_thread(build_engine, name, state.config.engines[name].options)
    except Exception as exc:
        log.exception("engine_load_failed engine=%s", name)
        state.load_errors[name] = f"{type(exc).__name__}: {exc}"
        state.changed()
        return False
    attach(state, name, engine)
    log.info(
        "engine_loaded engine=%s model=%s seconds=%.2f",
        name,
        getattr(engine, "model", "?"),
        time.monotonic() - started,
    )
    return True


async def load_all(state: NodeState) -> None:
    """Load every enabled engine concurrently."""
    names = state.config.enabled_engines
    await asyncio.gather(*(load_engine(state, n) for n in names))
    if state.all_loaded():
        log.info("all_engines_loaded engines=%s", ",".join(names))
