"""Settings from the environment (§15.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaicommon.settings import SettingsError
from scaiecho.settings import EchoSettings
from scaispeak.settings import SpeakSettings

BASE = {"SCAIECHO_DATABASE_URL": "postgresql://x@127.0.0.1/db"}


def test_values_are_parsed_by_type() -> None:
    s = EchoSettings.from_env(
        {
            **BASE,
            "SCAIECHO_RATE_LIMIT_PER_KEY": "7",
            "SCAIECHO_RATE_LIMIT_ENABLED": "No",
            "SCAIECHO_NODES": " a:1 , b:2 ",
            "SCAIECHO_RELAY_API_KEY": "sk-secret",
            "SCAIECHO_RELAY_TIMEOUT_S": "2.5",
            "OTHER_THING": "ignored",
            "SCAIECHO_URL": "http://127.0.0.1:8081",
        },
        dotenv=None,
    )
    assert s.rate_limit_per_key == 7
    assert s.rate_limit_enabled is False
    assert s.nodes == ["a:1", "b:2"]
    assert s.relay_api_key.get() == "sk-secret"
    assert "sk-secret" not in repr(s)
    assert s.relay_timeout_s == 2.5
    assert s.port == 8081 and s.schema == "scaiecho" and s.bucket == "scaiecho"


def test_every_problem_is_reported_with_the_variable() -> None:
    with pytest.raises(SettingsError) as info:
        EchoSettings.from_env(
            {
                "SCAIECHO_RATE_LIMIT_PER_KEY": "ten",
                "SCAIECHO_NOT_A_SETTING": "1",
                "SCAIECHO_REDIS_URL": "localhost",
                "SCAIECHO_NODE_TLS": "maybe",
            },
            dotenv=None,
        )
    problems = info.value.problems
    assert 'SCAIECHO_RATE_LIMIT_PER_KEY: expected integer, got "ten"' in problems
    assert "SCAIECHO_NOT_A_SETTING: unknown setting" in problems
    assert any(p.startswith("SCAIECHO_REDIS_URL: expected a URL") for p in problems)
    assert any(p.startswith("SCAIECHO_NODE_TLS: expected boolean") for p in problems)


def test_required_and_cross_field_checks() -> None:
    s = EchoSettings.from_env({}, dotenv=None)
    with pytest.raises(SettingsError) as info:
        s.require("database_url", "redis_url")
    assert info.value.problems == [
        "SCAIECHO_DATABASE_URL: required",
        "SCAIECHO_REDIS_URL: required",
    ]
    with pytest.raises(SettingsError) as info:
        EchoSettings.from_env({"SCAIECHO_NODE_WARN_AFTER_S": "50"}, dotenv=None)
    assert info.value.problems[0].startswith("SCAIECHO_NODE_WARN_AFTER_S")


def test_dotenv_is_read_and_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text('SCAISPEAK_PORT=9999\nSCAISPEAK_PHASE="beta"\n# comment\n')
    s = SpeakSettings.from_env({"SCAISPEAK_PORT": "9000"}, dotenv=dotenv)
    assert s.port == 9000 and s.phase == "beta"
    assert s.preflight_min_duration_s == 5.0 and s.preflight_min_sample_rate == 16000


def test_derived_scaikey_urls_and_public_dict() -> None:
    s = SpeakSettings.from_env(
        {
            "SCAISPEAK_SCAIKEY_BASE_URL": "http://127.0.0.1:8091/",
            "SCAISPEAK_SCAIKEY_CLIENT_SECRET": "x",
        },
        dotenv=None,
    )
    assert s.jwks_url == "http://127.0.0.1:8091/api/v1/platform/.well-known/jwks.json"
    assert s.issuer == "http://127.0.0.1:8091"
    assert s.token_url == "http://127.0.0.1:8091/api/v1/platform/oauth/token"
    public = s.public_dict()
    assert public["scaispeak_scaikey_client_secret"] == "**********"
    assert public["scaispeak_port"] == 8082
