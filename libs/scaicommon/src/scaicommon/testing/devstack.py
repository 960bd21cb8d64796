"""Start dev ScaiKey and dev ScaiDrive (``python -m scaidevstack``) as real processes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaicommon.testing.processes import ManagedProcess, free_port

DEVSTACK_ENV = ("SCAIKEY_ISSUER_BASE", "SCAIKEY_JWKS_URL", "SCAIKEY_ISSUER")


@dataclass
class DevServer:
    """A running devstack server and its base URL."""

    base_url: str
    process: ManagedProcess

    def stop(self) -> None:
        """Stop the server."""
        self.process.stop()

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.process.output()


def start_scaikey(
    state_dir: Path, *, port: int | None = None, extra_args: Sequence[str] = ()
) -> DevServer:
    """Dev ScaiKey on a free port with its key store under ``state_dir``."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    proc = ManagedProcess(
        [
            "-m",
            "scaidevstack",
            "scaikey",
            "serve",
            "--port",
            str(port),
            "--state-dir",
            str(state_dir),
            "--issuer-base",
            base,
            *extra_args,
        ],
        env={k: "" for k in DEVSTACK_ENV},
        ready_url=f"{base}/healthz",
        name="scaikey",
    ).start()
    return DevServer(base, proc)


def start_scaidrive(
    data_dir: Path, scaikey_url: str, *, port: int | None = None, extra_args: Sequence[str] = ()
) -> DevServer:
    """Dev ScaiDrive on a free port, trusting the dev ScaiKey at ``scaikey_url``."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    proc = ManagedProcess(
        [
            "-m",
            "scaidevstack",
            "scaidrive",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *extra_args,
        ],
        env={
            "SCAIKEY_JWKS_URL": f"{scaikey_url}/api/v1/platform/.well-known/jwks.json",
            "SCAIKEY_ISSUER": scaikey_url,
            "SCAIKEY_ISSUER_BASE": "",
        },
        ready_url=f"{base}/healthz",
        name="scaidrive",
    ).start()
    return DevServer(base, proc)


def scaidrive_settings(scaikey: DevServer, scaidrive: DevServer, module: str) -> dict[str, Any]:
    """Settings overrides that give ``module`` dev ScaiDrive and token exchange at dev ScaiKey.

    The client is the one dev ScaiKey registers for the module (``<module>-dev-secret``).
    """
    return {
        "scaidrive_url": scaidrive.base_url,
        "scaikey_base_url": scaikey.base_url,
        "scaikey_client_id": module,
        "scaikey_client_secret": f"{module}-dev-secret",
    }
