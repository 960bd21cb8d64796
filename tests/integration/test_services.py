"""Both services as real processes: probes, CLI, auth, rate limits, readiness, worker."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time

import httpx
import psycopg
import redis

from scaicommon.testing import LocalRedis, fresh_database
from scaidevstack.scaikey import forge_unsigned, generate_signing_key
from scaiecho.app import DEFINITION

from .conftest import ScaiKey, Service, service_env


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.2):  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` returns a truthy value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def hs256_with(secret: bytes, claims: dict[str, object], kid: str) -> str:
    """The algorithm-confusion attack: HS256 keyed with the RSA public key."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}).encode())
    body = part(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(mac)}"


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert body["status"] == "error"
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    return str(body["error"]["code"])


def create_key(service: Service, *extra: str) -> dict[str, object]:
    out = service.cli(
        "apikeys",
        "create",
        "--tenant",
        "tnt_a",
        "--user",
        "usr_a",
        "--role",
        "tenant_admin",
        *extra,
    )
    return dict(json.loads(out.stdout))


def test_probes_metrics_and_openapi(echo: Service, speak: Service) -> None:
    for service in (echo, speak):
        for base in (service.url, service.mount):
            live = httpx.get(f"{base}/healthz")
            assert live.json() == {"status": "ok", "module": service.module}
            ready = httpx.get(f"{base}/readyz")
            assert ready.status_code == 200
            body = ready.json()
            assert body["status"] == "ready" and body["module"] == service.module
            assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok"
            assert body["checks"]["s3"] == "ok"
            assert body["checks"]["scaiinfer"] == "none" and "scaiinfer" in body["errors"]
            assert body["checks"]["relay"] == "unconfigured"
        metrics = httpx.get(f"{service.url}/metrics")
        assert f"{service.module}_http_requests_total" in metrics.text
        spec = httpx.get(f"{service.mount}/openapi.json").json()
        assert spec["openapi"].startswith("3.1")
        assert f"/v1/modules/{service.module}/readyz" in spec["paths"]
        assert "<html" in httpx.get(f"{service.mount}/docs").text
    assert httpx.get(f"{speak.url}/readyz").json()["checks"]["scaidrive"] == "unconfigured"


def test_api_key_lifecycle_through_the_cli(echo: Service, session_dsn: str) -> None:
    created = create_key(echo, "--permission", "scaiecho:transcribe", "--name", "ci")
    key = str(created["key"])
    assert key.startswith("sgk_") and len(key) == 44
    assert set(created) == {
        "id",
        "key",
        "name",
        "tenant_id",
        "partner_id",
        "user_id",
        "roles",
        "module_permissions",
        "expires_at",
        "created_at",
    }
    headers = {"Authorization": f"Bearer {key}"}
    r = httpx.get(f"{echo.mount}/no-such-route", headers=headers)
    assert r.status_code == 404 and error_code(r) == "NOT_FOUND"
    listed = [
        json.loads(line)
        for line in echo.cli("apikeys", "list", "--tenant", "tnt_a").stdout.splitlines()
    ]
    mine = next(row for row in listed if row["id"] == created["id"])
    assert "key_hash" not in mine and key not in json.dumps(listed)
    with psycopg.connect(session_dsn) as conn:
        rows = conn.execute("SELECT * FROM scaiecho.api_keys WHERE id = %s", (created["id"],))
        assert key not in repr(rows.fetchall())
    revoked = json.loads(echo.cli("apikeys", "revoke", str(created["id"])).stdout)
    r = httpx.get(f"{echo.mount}/no-such-route", headers=headers)
    assert r.status_code == 401 and error_code(r) == "AUTH_TOKEN_INVALID"
    again = json.loads(echo.cli("apikeys", "revoke", str(created["id"])).stdout)
    assert again["revoked_at"] == revoked["revoked_at"]
    assert (
        echo.cli("apikeys", "revoke", "apikey_01JWB3K9Q0M8X4T7ZC2N5R6V1A", check=False).returncode
        == 1
    )
    bad = echo.cli(
        "apikeys", "create", "--tenant", "t", "--user", "u", "--role", "wizard", check=False
    )
    assert bad.returncode == 2 and bad.stderr.strip()


def test_missing_and_malformed_tokens(echo: Service) -> None:
    r = httpx.get(f"{echo.mount}/anything")
    assert r.status_code == 401 and error_code(r) == "AUTH_TOKEN_MISSING"
    for value in ("Bearer", "Basic abc", "Bearer not-a-token", "Bearer sgk_short"):
        r = httpx.get(f"{echo.mount}/anything", headers={"Authorization": value})
        assert r.status_code == 401 and error_code(r) == "AUTH_TOKEN_INVALID", value


def test_jwts_from_dev_scaikey(echo: Service, scaikey: ScaiKey) -> None:
    def status(token: str) -> tuple[int, str]:
        r = httpx.get(f"{echo.mount}/nope", headers={"Authorization": f"Bearer {token}"})
        return r.status_code, error_code(r)

    good = scaikey.mint(tenant="tnt_a", user="usr_j", roles=["tenant_admin"])
    assert status(good) == (404, "NOT_FOUND")
    # Rotation first: it uses the one JWKS refetch that the 30 s rate limit allows.
    rotate = [sys.executable, "-m", "scaidevstack", "scaikey", "rotate"]
    subprocess.run([*rotate, "--state-dir", str(scaikey.state_dir)], check=True)
    rotated = scaikey.mint(tenant="tnt_a", user="usr_j", roles=["tenant_admin"])
    assert status(rotated) == (404, "NOT_FOUND")
    assert status(good) == (404, "NOT_FOUND")
    invalid = (401, "AUTH_TOKEN_INVALID")
    assert status(scaikey.mint(tenant="tnt_a", user="usr_j", expired=True)) == invalid
    wrong_iss = scaikey.keys.mint(tenant="tnt_a", user="usr_j", issuer_base="http://evil.test")
    assert status(wrong_iss) == invalid
    claims = {"sub": "usr_j", "tenant_id": "tnt_a", "iss": scaikey.url, "exp": time.time() + 600}
    current = scaikey.keys.current()
    public_pem = current.jwk.as_pem(is_private=False)
    assert status(hs256_with(public_pem, claims, current.kid)) == invalid
    assert status(forge_unsigned(claims)) == invalid
    assert status(generate_signing_key("RS256").sign(claims)) == invalid
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    assert status(tampered) == invalid


def test_x_tenant_id_is_for_super_admins_only(echo: Service, scaikey: ScaiKey) -> None:
    admin = scaikey.mint(tenant="tnt_a", user="usr_j", roles=["tenant_admin"])
    r = httpx.get(
        f"{echo.mount}/nope", headers={"Authorization": f"Bearer {admin}", "X-Tenant-ID": "tnt_b"}
    )
    assert r.status_code == 403 and error_code(r) == "AUTHZ_PERMISSION_DENIED"
    root = scaikey.mint(tenant="tnt_a", user="usr_root", roles=["super_admin"])
    r = httpx.get(
        f"{echo.mount}/nope", headers={"Authorization": f"Bearer {root}", "X-Tenant-ID": "tnt_b"}
    )
    assert r.status_code == 404


def test_rate_limit_per_key(echo: Service) -> None:
    key = str(create_key(echo)["key"])
    headers = {"Authorization": f"Bearer {key}"}
    remaining = []
    for _ in range(5):
        r = httpx.get(f"{echo.mount}/nope", headers=headers)
        assert r.status_code == 404
        assert r.headers["x-scaigrid-ratelimit-limit"] == "5"
        remaining.append(int(r.headers["x-scaigrid-ratelimit-remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    r = httpx.get(f"{echo.mount}/nope", headers=headers)
    assert r.status_code == 429 and error_code(r) == "RATE_LIMITED"
    body = r.json()["error"]
    assert body["limit_level"] == "api_key" and body["limit"] == 5
    assert int(r.headers["retry-after"]) == body["retry_after"] >= 1
    assert int(r.headers["x-scaigrid-ratelimit-reset"]) > time.time()


def test_readyz_follows_redis(echo: Service, private_redis: LocalRedis) -> None:
    private_redis.stop()
    try:
        down = wait_for(lambda: (r := httpx.get(f"{echo.url}/readyz")).status_code == 503 and r)
        body = down.json()
        assert body["status"] == "not_ready" and body["checks"]["redis"] == "error"
        assert body["checks"]["database"] == "ok" and "redis" in body["errors"]
    finally:
        private_redis.start()
    wait_for(lambda: httpx.get(f"{echo.url}/readyz").status_code == 200)


def test_no_token_in_service_logs(echo: Service, scaikey: ScaiKey) -> None:
    key = str(create_key(echo)["key"])
    jwt = scaikey.mint(tenant="tnt_a", user="usr_j", roles=["tenant_admin"])
    httpx.get(f"{echo.mount}/nope?token={jwt}", headers={"Authorization": f"Bearer {key}"})
    httpx.get(f"{echo.mount}/nope?api_key={key}", headers={"Authorization": f"Bearer {jwt}"})
    assert echo.process is not None
    wait_for(lambda: "api_key=[REDACTED]" in echo.process.output())  # type: ignore[union-attr]
    output = echo.process.output()
    assert key not in output and jwt not in output
    assert "token=[REDACTED]" in output


def test_worker_runs_and_heartbeats(speak: Service, redis_server_url: str) -> None:
    from scaicommon.testing import ManagedProcess

    port = speak.env["SCAISPEAK_WORKER_HTTP_PORT"]
    worker = ManagedProcess(
        ["-m", "scaispeak", "worker"],
        env=speak.env,
        ready_url=f"http://127.0.0.1:{port}/readyz",
        name="worker",
    ).start()
    client = redis.Redis.from_url(redis_server_url)
    try:
        keys = wait_for(lambda: client.keys("scai:scaispeak:workers:*"))
        seen = json.loads(client.get(keys[0]))
        assert seen["seen_at_ms"] > 0
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["module"] == "scaispeak"
    finally:
        assert worker.stop() == 0
    assert client.keys("scai:scaispeak:workers:*") == []


def test_concurrent_migrate_processes(pg_admin_dsn: str, redis_server_url: str) -> None:
    with fresh_database(pg_admin_dsn) as dsn:
        env = service_env(
            "scaiecho",
            dsn=dsn,
            redis_url=redis_server_url,
            s3=__import__("scaicommon.testing").testing.S3Endpoint("http://x", "a", "b"),
            scaikey_url="http://127.0.0.1:1",
            port=1,
        )
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "scaiecho", "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [json.loads(p.communicate(timeout=60)[0])["applied"] for p in procs]
        assert all(p.returncode == 0 for p in procs)
        applied = sorted(outputs[0] + outputs[1])
        expected = [
            f"{owner}:{entry.name[:3]}"
            for owner, directory in DEFINITION.migration_sources()
            for entry in directory.iterdir()
            if entry.name.endswith(".sql")
        ]
        assert applied == sorted(expected)
        with psycopg.connect(dsn) as conn:
            count = conn.execute("SELECT count(*) FROM scaiecho.schema_migrations").fetchone()
        assert count == (len(expected),)


def test_bad_settings_stop_start_up_with_the_variable_named() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SCAIECHO_")}
    env.update(
        {
            "SCAIECHO_RATE_LIMIT_PER_KEY": "ten",
            "SCAIECHO_DATABASE_URL": "postgresql://x/y",
            "SCAIECHO_REDIS_URL": "redis://127.0.0.1:1/0",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "scaiecho", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert 'SCAIECHO_RATE_LIMIT_PER_KEY: expected integer, got "ten"' in done.stderr
    env.pop("SCAIECHO_RATE_LIMIT_PER_KEY")
    env["SCAIECHO_RELAY_API_KEY"] = "sk-top-secret"
    shown = subprocess.run(
        [sys.executable, "-m", "scaiecho", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and "sk-top-secret" not in shown.stdout
    assert json.loads(shown.stdout)["scaiecho_relay_api_key"] == "**********"
