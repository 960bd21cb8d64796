"""Settings loaded from the environment with a per-service prefix (platform §15).

A service declares one msgspec Struct deriving from :class:`CommonSettings`. Each field
``name`` is read from ``<PREFIX>_NAME`` (``SCAIECHO_DATABASE_URL`` ↔ field ``database_url``,
shown as ``scaiecho_database_url`` by ``config``). A ``.env`` file is read when present;
the process environment wins. Every problem is reported at once, one line per variable.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar, get_args, get_origin
from urllib.parse import urlsplit

import msgspec


class Secret:
    """A secret value: ``repr`` and logs show ``**********``; :meth:`get` returns it."""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def get(self) -> str:
        """The secret itself."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "'**********'" if self._value else "''"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class UrlValue:
    """Marker for ``Annotated[str, URL]``: must have a scheme and host when non-empty."""


URL = UrlValue()
Url = Annotated[str, URL]


class SettingsError(Exception):
    """Invalid configuration; ``problems`` holds one line per variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a ``.env`` file (``KEY=value`` lines, ``#`` comments, optional quotes)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _parse(var: str, raw: str, annotation: Any) -> Any:
    """Parse one raw env value into ``annotation``; raises ``ValueError`` with a message."""
    base, markers = annotation, ()
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        markers = tuple(extra)
    if base is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f'expected boolean, got "{raw}"')
    if base is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f'expected integer, got "{raw}"') from None
    if base is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError(f'expected number, got "{raw}"') from None
    if base is Secret:
        return Secret(raw)
    if get_origin(base) is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    value = raw.strip()
    if URL in markers and value:
        parts = urlsplit(value)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f'expected a URL with scheme and host, got "{raw}"')
    return value


S = TypeVar("S", bound="CommonSettings")


class CommonSettings(msgspec.Struct, kw_only=True):
    """Settings both services share (platform §15.2, §15.3)."""

    ENV_PREFIX: ClassVar[str] = ""
    MODULE: ClassVar[str] = ""
    # Client-side variables that share the prefix but are not settings: ``<PREFIX>_URL`` is
    # the service base URL that ``make run`` writes to ``.devstack/credentials.env``.
    CLIENT_VARIABLES: ClassVar[frozenset[str]] = frozenset({"url"})

    env: str = "production"
    host: str = "0.0.0.0"
    port: int = 8080
    public_base_url: Url = ""
    database_url: Url = ""
    database_schema: str = ""
    database_pool_min: int = 1
    database_pool_max: int = 10
    redis_url: Url = ""
    s3_endpoint_url: Url = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: str = ""
    s3_secret_key: Secret = msgspec.field(default_factory=Secret)
    log_level: str = "info"
    log_format: str = ""
    phase: str = "ga"
    worker_http_port: int = 9180
    nodes: list[str] = msgspec.field(default_factory=list)
    nodes_dns: str = ""
    nodes_port: int = 50051
    node_poll_interval_s: float = 5.0
    node_warn_after_s: float = 15.0
    node_stale_after_s: float = 45.0
    grpc_service_secret: Secret = msgspec.field(default_factory=Secret)
    grpc_deadline_scale: float = 1.0
    node_tls: bool = False
    node_ca_file: str = ""
    scaigrid_base_url: Url = ""
    scaikey_base_url: Url = ""
    scaikey_jwks_url: Url = ""
    scaikey_issuer: str = ""
    scaikey_audience: list[str] = msgspec.field(default_factory=list)
    scaikey_required_scope: str = ""
    scaikey_token_url: Url = ""
    scaikey_client_id: str = ""
    scaikey_client_secret: Secret = msgspec.field(default_factory=Secret)
    scaidrive_url: Url = ""
    scaidrive_audience: str = "scaidrive"
    scaidrive_timeout_s: float = 30.0
    relay_base_url: Url = ""
    relay_api_key: Secret = msgspec.field(default_factory=Secret)
    relay_model: str = ""
    relay_timeout_s: float = 120.0
    relay_connect_timeout_s: float = 5.0
    relay_failure_threshold: int = 3
    relay_cooldown_s: float = 15.0
    default_allowed_backends: str = ""
    default_backend: str = ""
    rate_limit_enabled: bool = True
    rate_limit_window_s: float = 60.0
    rate_limit_per_key: int = 60
    rate_limit_per_user: int = 120
    rate_limit_per_tenant: int = 1000
    rate_limit_per_partner: int = 5000
    rate_limit_per_ip: int = 120
    apikey_cache_ttl_s: float = 30.0
    warm_registry_ttl_s: float = 86400.0
    # Async jobs. Not in the contracts (the services' READMEs explain them): how fast a dead
    # worker's job is taken over, and how often the sweep cron looks for lost jobs.
    job_max_attempts: int = 3
    job_lease_s: float = 30.0
    job_sweep_interval_s: int = 60
    job_requeue_after_s: float = 120.0
    currency: str = "EUR"
    cors_allow_origins: list[str] = msgspec.field(default_factory=list)
    preflight_min_duration_s: float = 3.0
    preflight_max_duration_s: float = 60.0
    preflight_min_voice_activity_ratio: float = 0.5
    preflight_max_peak_dbfs: float = -1.0
    preflight_min_snr_db: float = 15.0
    preflight_min_sample_rate: int = 8000
    preflight_max_sample_rate: int = 48000
    consent_min_duration_s: float = 3.0
    consent_max_duration_s: float = 60.0
    consent_min_voice_activity_ratio: float = 0.3
    webrtc_ice_servers: str = "[]"

    # ----- derived values -------------------------------------------------------------

    @property
    def schema(self) -> str:
        """The Postgres schema (defaults to the module id)."""
        return self.database_schema or self.MODULE

    @property
    def bucket(self) -> str:
        """The S3 bucket (defaults to the module id)."""
        return self.s3_bucket or self.MODULE

    @property
    def effective_log_format(self) -> str:
        """``console`` in development unless set, else ``json``."""
        if self.log_format:
            return self.log_format
        return "console" if self.env == "development" else "json"

    @property
    def jwks_url(self) -> str:
        """ScaiKey JWKS URL, or '' when JWTs are not configured (§4.5)."""
        if self.scaikey_jwks_url:
            return self.scaikey_jwks_url
        base = self.scaikey_base_url.rstrip("/")
        return f"{base}/api/v1/platform/.well-known/jwks.json" if base else ""

    @property
    def issuer(self) -> str:
        """The accepted ``iss`` prefix, without a trailing slash."""
        return (self.scaikey_issuer or self.scaikey_base_url).rstrip("/")

    @property
    def token_url(self) -> str:
        """ScaiKey token endpoint for RFC 8693 exchange."""
        if self.scaikey_token_url:
            return self.scaikey_token_url
        base = self.scaikey_base_url.rstrip("/")
        return f"{base}/api/v1/platform/oauth/token" if base else ""

    @property
    def relay_configured(self) -> bool:
        """Backend B is configured when both its base URL and key are set."""
        return bool(self.relay_base_url and self.relay_api_key)

    # ----- checks -------------------------------------------------------------------

    def problems(self) -> list[str]:
        """Cross-field checks; one line per problem (empty when fine)."""
        prefix = self.ENV_PREFIX
        out: list[str] = []
        if self.node_warn_after_s >= self.node_stale_after_s:
            out.append(f"{prefix}_NODE_WARN_AFTER_S: must be below {prefix}_NODE_STALE_AFTER_S")
        if self.node_poll_interval_s > self.node_warn_after_s / 2:
            out.append(
                f"{prefix}_NODE_POLL_INTERVAL_S: must be at most half of {prefix}_NODE_WARN_AFTER_S"
            )
        if self.log_format not in ("", "json", "console"):
            out.append(f'{prefix}_LOG_FORMAT: expected json or console, got "{self.log_format}"')
        if self.log_level not in ("debug", "info", "warning", "error"):
            out.append(
                f'{prefix}_LOG_LEVEL: expected debug|info|warning|error, got "{self.log_level}"'
            )
        if self.default_allowed_backends not in ("", "A", "B", "AB", "BA"):
            out.append(f"{prefix}_DEFAULT_ALLOWED_BACKENDS: expected A, B, AB or BA")
        if self.default_backend not in ("", "A", "B"):
            out.append(f"{prefix}_DEFAULT_BACKEND: expected A or B")
        every = self.job_sweep_interval_s
        if (
            every <= 0
            or (every < 60 and 60 % every)
            or (every >= 60 and (every % 60 or 3600 % every))
        ):
            out.append(
                f"{prefix}_JOB_SWEEP_INTERVAL_S: must divide 60, or be whole minutes dividing 60"
            )
        return out

    def require(self, *names: str) -> None:
        """Raise :class:`SettingsError` naming every listed field that is empty."""
        missing = [
            f"{self.ENV_PREFIX}_{n.upper()}: required" for n in names if not getattr(self, n)
        ]
        if missing:
            raise SettingsError(missing)

    def env_name(self, field: str) -> str:
        """The environment variable of a field."""
        return f"{self.ENV_PREFIX}_{field.upper()}"

    def public_dict(self) -> dict[str, Any]:
        """Effective settings keyed by prefixed lower-case name, secrets masked."""
        out: dict[str, Any] = {}
        for info in msgspec.structs.fields(self):
            value = getattr(self, info.name)
            if isinstance(value, Secret):
                value = "**********" if value else ""
            out[f"{self.ENV_PREFIX.lower()}_{info.name}"] = value
        return out

    # ----- loading --------------------------------------------------------------------

    @classmethod
    def from_env(
        cls: type[S],
        environ: Mapping[str, str] | None = None,
        *,
        dotenv: Path | None = Path(".env"),
        overrides: Mapping[str, Any] | None = None,
    ) -> S:
        """Build the settings from ``environ`` (default ``os.environ``) plus ``.env``.

        Raises :class:`SettingsError` listing every unknown, malformed or invalid value.
        """
        env: dict[str, str] = read_dotenv(dotenv) if dotenv is not None else {}
        env.update(os.environ if environ is None else environ)
        prefix = cls.ENV_PREFIX + "_"
        hints = typing.get_type_hints(cls, include_extras=True)
        known = {info.name for info in msgspec.structs.fields(cls)}
        problems: list[str] = []
        values: dict[str, Any] = {}
        for var in sorted(env):
            if not var.startswith(prefix):
                continue
            name = var[len(prefix) :].lower()
            if name in cls.CLIENT_VARIABLES:
                continue
            if name not in known:
                problems.append(f"{var}: unknown setting")
                continue
            try:
                values[name] = _parse(var, env[var], hints[name])
            except ValueError as exc:
                problems.append(f"{var}: {exc}")
        values.update(overrides or {})
        if problems:
            raise SettingsError(problems)
        settings = cls(**values)
        extra = settings.problems()
        if extra:
            raise SettingsError(extra)
        return settings
