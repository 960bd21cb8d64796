"""The node's settings: a TOML file (``devstack/node.toml``), two env vars, CLI overrides.

File keys (all optional)::

    node_id = "devstack-node-01"
    grpc = "127.0.0.1:50051"          # gRPC AudioNode + grpc.health.v1
    http = "127.0.0.1:8090"           # OpenAI-compatible relay API
    grace_period_s = 30.0             # drain: how long in-flight calls may run after SIGTERM
    stream_idle_s = 120.0             # StreamTranscribe/StreamSynthesize idle limit
    max_audio_ms = 1800000            # longest audio accepted by unary calls

    [labels]                          # free-form GetNodeInfo labels
    region = "local"

    [engines.stt]                     # also engines.tts, engines.speaker
    enabled = true
    capacity = 2
    [engines.stt.options]             # keyword arguments for the engine's constructor
    cpu_threads = 1

Env: ``SCAI_NODE_API_SECRET`` (required ``x-api-secret`` when set and non-empty),
``DEVSTACK_RELAY_API_KEY`` (relay bearer key, default ``sk-devstack``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ENGINE_NAMES = ("stt", "tts", "speaker")
ENGINE_KINDS = {
    "stt": "audio.transcribe",
    "tts": "audio.synthesize",
    "speaker": "audio.analyze.pyannote",
}
DEFAULT_CAPACITY = 2
DEFAULT_CONFIG_PATH = Path("devstack/node.toml")
DEFAULT_RELAY_API_KEY = "sk-devstack"


class ConfigError(ValueError):
    """The config file or an override is invalid; the message names the key."""


@dataclass(frozen=True)
class EngineConfig:
    """One engine's settings."""

    enabled: bool = True
    capacity: int = DEFAULT_CAPACITY
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``node serve`` needs."""

    node_id: str = "devstack-node-01"
    grpc: str = "127.0.0.1:50051"
    http: str = "127.0.0.1:8090"
    grace_period_s: float = 30.0
    stream_idle_s: float = 120.0
    max_audio_ms: int = 1_800_000
    labels: Mapping[str, str] = field(default_factory=dict)
    engines: Mapping[str, EngineConfig] = field(
        default_factory=lambda: {name: EngineConfig() for name in ENGINE_NAMES}
    )
    api_secret: str | None = None
    relay_api_key: str = DEFAULT_RELAY_API_KEY

    @property
    def enabled_engines(self) -> tuple[str, ...]:
        """Engine names to load, in the canonical order ``stt, tts, speaker``."""
        return tuple(n for n in ENGINE_NAMES if n in self.engines and self.engines[n].enabled)

    def capacity_of(self, name: str) -> int:
        """Configured capacity of engine ``name``."""
        return self.engines[name].capacity if name in self.engines else DEFAULT_CAPACITY

    def with_overrides(
        self,
        *,
        node_id: str | None = None,
        grpc: str | None = None,
        http: str | None = None,
        engines: Sequence[str] | None = None,
        capacity: int | None = None,
        grace_period_s: float | None = None,
    ) -> NodeConfig:
        """A copy with the CLI overrides applied (``None`` leaves a value alone)."""
        cfg = self
        if node_id is not None:
            cfg = replace(cfg, node_id=_non_empty("node_id", node_id))
        if grpc is not None:
            cfg = replace(cfg, grpc=_address("grpc", grpc))
        if http is not None:
            cfg = replace(cfg, http=_address("http", http))
        if grace_period_s is not None:
            cfg = replace(cfg, grace_period_s=_non_negative("grace_period_s", grace_period_s))
        if engines is not None:
            unknown = sorted(set(engines) - set(ENGINE_NAMES))
            if unknown:
                raise ConfigError(f"engines: unknown {unknown}; choose from {list(ENGINE_NAMES)}")
            cfg = replace(
                cfg,
                engines={
                    n: replace(cfg.engines.get(n, EngineConfig()), enabled=n in engines)
                    for n in ENGINE_NAMES
                },
            )
        if capacity is not None:
            cap = _capacity("capacity", capacity)
            cfg = replace(
                cfg, engines={n: replace(e, capacity=cap) for n, e in cfg.engines.items()}
            )
        return cfg


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> NodeConfig:
    """Read ``path`` (default ``devstack/node.toml`` when it exists) plus the env vars."""
    env = os.environ if env is None else env
    if path is None:
        data = _read(DEFAULT_CONFIG_PATH) if DEFAULT_CONFIG_PATH.is_file() else {}
    else:
        data = _read(Path(path))
    secret = env.get("SCAI_NODE_API_SECRET") or None
    relay_key = env.get("DEVSTACK_RELAY_API_KEY") or DEFAULT_RELAY_API_KEY
    return _from_mapping(data, secret, relay_key)


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"bad address {address!r}: expected host:port")
    return host.strip("[]"), int(port)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _from_mapping(data: Mapping[str, Any], secret: str | None, relay_key: str) -> NodeConfig:
    known = {
        "node_id",
        "grpc",
        "http",
        "grace_period_s",
        "stream_idle_s",
        "max_audio_ms",
        "labels",
        "engines",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown keys {unknown}")
    defaults = NodeConfig()
    engines_data = data.get("engines", {})
    if not isinstance(engines_data, Mapping):
        raise ConfigError("engines: expected a table")
    bad = sorted(set(engines_data) - set(ENGINE_NAMES))
    if bad:
        raise ConfigError(f"engines: unknown {bad}; choose from {list(ENGINE_NAMES)}")
    engines = {n: _engine(n, engines_data.get(n, {})) for n in ENGINE_NAMES}
    labels = data.get("labels", {})
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise ConfigError("labels: expected a table of strings")
    max_audio_ms = data.get("max_audio_ms", defaults.max_audio_ms)
    if not isinstance(max_audio_ms, int) or max_audio_ms <= 0:
        raise ConfigError("max_audio_ms: expected a positive integer")
    return NodeConfig(
        node_id=_non_empty("node_id", data.get("node_id", defaults.node_id)),
        grpc=_address("grpc", data.get("grpc", defaults.grpc)),
        http=_address("http", data.get("http", defaults.http)),
        grace_period_s=_non_negative(
            "grace_period_s", data.get("grace_period_s", defaults.grace_period_s)
        ),
        stream_idle_s=_positive("stream_idle_s", data.get("stream_idle_s", 120.0)),
        max_audio_ms=max_audio_ms,
        labels=dict(labels),
        engines=engines,
        api_secret=secret,
        relay_api_key=relay_key,
    )


def _engine(name: str, data: Any) -> EngineConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"engines.{name}: expected a table")
    unknown = sorted(set(data) - {"enabled", "capacity", "options"})
    if unknown:
        raise ConfigError(f"engines.{name}: unknown keys {unknown}")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"engines.{name}.enabled: expected true or false")
    options = data.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"engines.{name}.options: expected a table")
    return EngineConfig(
        enabled=enabled,
        capacity=_capacity(f"engines.{name}.capacity", data.get("capacity", DEFAULT_CAPACITY)),
        options=dict(options),
    )


def _non_empty(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a non-empty string")
    return value.strip()


def _address(key: str, value: Any) -> str:
    text = _non_empty(key, value)
    try:
        parse_address(text)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return text


def _capacity(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
        raise ConfigError(f"{key}: expected an integer 1..1024")
    return value


def _non_negative(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{key}: expected a number >= 0")
    return float(value)


def _positive(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{key}: expected a number > 0")
    return float(value)
