"""Fixtures that run the real dev ScaiKey and dev ScaiDrive servers as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from scaicommon.testing import DevServer, start_scaidrive, start_scaikey
from scaidevstack.scaikey import KeyStore

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENTS_TOML = REPO_ROOT / "devstack" / "scaikey.toml"
_DEVSTACK_ENV = ("SCAIKEY_ISSUER_BASE", "SCAIKEY_JWKS_URL", "SCAIKEY_ISSUER")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without devstack settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in _DEVSTACK_ENV}
    env.update(extra or {})
    return env


class Cli:
    """Runs ``python -m scaidevstack ...`` from the repository root."""

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion and capture its output."""
        result = subprocess.run(
            [sys.executable, "-m", "scaidevstack", *args],
            cwd=REPO_ROOT,
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"scaidevstack {args} exited {result.returncode}: {result.stderr}")
        return result

    def popen(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        """Start a command with stdout piped; the caller waits for it."""
        return subprocess.Popen(
            [sys.executable, "-m", "scaidevstack", *args],
            cwd=REPO_ROOT,
            env=clean_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The devstack ``--state-dir`` shared by the servers and the in-process KeyStore."""
    return tmp_path_factory.mktemp("devstack")


@pytest.fixture(scope="session")
def scaikey(state_dir: Path) -> Iterator[DevServer]:
    """A running dev ScaiKey; its issuer base is its own base URL."""
    keys = KeyStore(state_dir)
    keys.ensure()
    server = start_scaikey(state_dir, extra_args=["--clients", str(CLIENTS_TOML)])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keystore(state_dir: Path, scaikey: DevServer) -> KeyStore:
    """The same key store the running ScaiKey serves."""
    return KeyStore(state_dir)


@pytest.fixture(scope="session")
def issuer_base(scaikey: DevServer) -> str:
    """The platform issuer of the running ScaiKey."""
    return scaikey.base_url


@pytest.fixture(scope="session")
def drive_dir(state_dir: Path) -> Path:
    """ScaiDrive's ``--data-dir``."""
    return state_dir / "scaidrive"


@pytest.fixture(scope="session")
def scaidrive(state_dir: Path, drive_dir: Path, scaikey: DevServer) -> Iterator[DevServer]:
    """A running dev ScaiDrive trusting the running ScaiKey (1 MB upload limit)."""
    server = start_scaidrive(
        drive_dir, scaikey.base_url, extra_args=["--max-file-bytes", str(1_000_000)]
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cli() -> Cli:
    """Runs devstack CLI commands as subprocesses."""
    return Cli()


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client."""
    with httpx.Client(timeout=10.0) as client:
        yield client
