"""The processes of the local stack, in start order, and how each is started."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

PORTS = {
    "s3": 9000,
    "node": 50051,
    "node-http": 8090,
    "scaiecho": 8081,
    "scaispeak": 8082,
    "scaiecho-worker": 9181,
    "scaispeak-worker": 9182,
    "scaikey": 8091,
    "scaidrive": 8092,
}


@dataclass(frozen=True)
class Endpoints:
    """Where the shared dependencies answer."""

    database_url: str
    redis_url: str
    s3_url: str
    scaikey_url: str
    scaidrive_url: str


@dataclass(frozen=True)
class Component:
    """One long-running process of the stack."""

    name: str
    argv: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)


def python(*args: str) -> list[str]:
    """Run this interpreter with ``args``."""
    return [sys.executable, *args]


def moto_server() -> str:
    """The ``moto_server`` executable next to this interpreter."""
    return shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")


def service_env(module: str, ep: Endpoints, state_dir: Path) -> dict[str, str]:
    """The environment of a service (API and worker) in the local stack."""
    p = module.upper()
    env = {
        f"{p}_ENV": "development",
        f"{p}_HOST": "127.0.0.1",
        f"{p}_DATABASE_URL": ep.database_url,
        f"{p}_REDIS_URL": ep.redis_url,
        f"{p}_S3_ENDPOINT_URL": ep.s3_url,
        f"{p}_S3_ACCESS_KEY": "devstack",
        f"{p}_S3_SECRET_KEY": "devstack-secret",
        f"{p}_SCAIKEY_BASE_URL": ep.scaikey_url,
        f"{p}_SCAIKEY_CLIENT_ID": module,
        f"{p}_SCAIKEY_CLIENT_SECRET": f"{module}-dev-secret",
        f"{p}_LOG_FORMAT": "console",
        f"{p}_NODES": f"127.0.0.1:{PORTS['node']}",
        f"{p}_RELAY_BASE_URL": f"http://127.0.0.1:{PORTS['node-http']}",
        f"{p}_RELAY_API_KEY": "sk-devstack",
    }
    if module == "scaispeak":
        env[f"{p}_SCAIDRIVE_URL"] = ep.scaidrive_url
        env[f"{p}_RELAY_SUPPORTS_CLONING"] = "true"
    return env


def components(ep: Endpoints, state_dir: Path) -> list[Component]:
    """Every process ``make run`` starts, in order."""
    jwks = f"{ep.scaikey_url}/api/v1/platform/.well-known/jwks.json"
    items = [
        Component(
            "s3",
            [moto_server(), "-H", "127.0.0.1", "-p", str(PORTS["s3"])],
            f"{ep.s3_url}/moto-api/",
        ),
        Component(
            "node",
            python(
                "-m",
                "scaidevstack",
                "node",
                "serve",
                "--grpc",
                f"127.0.0.1:{PORTS['node']}",
                "--http",
                f"127.0.0.1:{PORTS['node-http']}",
            ),
            f"http://127.0.0.1:{PORTS['node-http']}/readyz",
            env={"DEVSTACK_RELAY_API_KEY": "sk-devstack"},
        ),
        Component(
            "scaikey",
            python(
                "-m",
                "scaidevstack",
                "scaikey",
                "serve",
                "--port",
                str(PORTS["scaikey"]),
                "--state-dir",
                str(state_dir),
            ),
            jwks,
        ),
        Component(
            "scaidrive",
            python(
                "-m",
                "scaidevstack",
                "scaidrive",
                "serve",
                "--port",
                str(PORTS["scaidrive"]),
                "--data-dir",
                str(state_dir / "scaidrive"),
            ),
            f"{ep.scaidrive_url}/healthz",
            env={"SCAIKEY_JWKS_URL": jwks, "SCAIKEY_ISSUER": ep.scaikey_url},
        ),
    ]
    for module in ("scaiecho", "scaispeak"):
        env = service_env(module, ep, state_dir)
        items.append(
            Component(
                module,
                python("-m", module, "serve"),
                f"http://127.0.0.1:{PORTS[module]}/readyz",
                env,
            )
        )
        items.append(
            Component(
                f"{module}-worker",
                python("-m", module, "worker"),
                f"http://127.0.0.1:{PORTS[module + '-worker']}/healthz",
                env,
            )
        )
    return items


def inherited_env() -> dict[str, str]:
    """The parent environment without any service settings that could leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SCAIECHO_", "SCAISPEAK_"))}
