"""JWT verification against the real dev ScaiKey process (platform §18, §17.3)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from scaicommon.auth import Authenticator
from scaicommon.errors import ScaiError
from scaicommon.principal import ModulePermissions
from scaicommon.settings import CommonSettings
from scaicommon.testing import ManagedProcess, free_port
from scaidevstack.scaikey.keys import KeyStore, sign_hs256
from scaidevstack.scaikey.tokens import build_user_claims

ECHO = ModulePermissions(
    "scaiecho",
    frozenset({"scaiecho:transcribe", "scaiecho:diarize", "scaiecho:enroll", "scaiecho:admin"}),
    frozenset({"scaiecho:transcribe"}),
)


class Devstack:
    def __init__(self, state: Path, base: str) -> None:
        self.state = state
        self.base = base
        self.keys = KeyStore(state)

    def mint(self, **kwargs: object) -> str:
        """A token exactly as ``scaikey mint`` makes it (the CLI calls this same method)."""
        options: dict[str, object] = {
            "tenant": "tnt_demo",
            "user": "usr_demo",
            "roles": ["tenant_admin"],
            "issuer_base": self.base,
        }
        options.update(kwargs)
        return self.keys.mint(**options)  # type: ignore[arg-type]

    def rotate(self) -> None:
        """``python -m scaidevstack scaikey rotate``: the running server picks the key up."""
        subprocess.run(
            [
                sys.executable,
                "-m",
                "scaidevstack",
                "scaikey",
                "rotate",
                "--state-dir",
                str(self.state),
            ],
            check=True,
            capture_output=True,
        )


@pytest.fixture(scope="module")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devstack]:
    state = tmp_path_factory.mktemp("devstack")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with ManagedProcess(
        ["-m", "scaidevstack", "scaikey", "serve", "--port", str(port), "--state-dir", str(state)],
        ready_url=f"{base}/healthz",
        ready_status=200,
        name="scaikey",
    ):
        yield Devstack(state, base)


@pytest.fixture
async def auth(devstack: Devstack) -> AsyncIterator[Authenticator]:
    settings = CommonSettings(scaikey_base_url=devstack.base, scaikey_audience=["scaiecho"])
    authenticator = Authenticator.from_settings(settings, ECHO, pool=None)
    yield authenticator
    await authenticator.aclose()


async def test_dev_scaikey_tokens(devstack: Devstack, auth: Authenticator) -> None:
    for alg in ("RS256", "ES256"):
        token = devstack.mint(alg=alg, audience="scaiecho", partner="prt_demo")
        principal = await auth.authenticate(token, request_id="req_dev")
        assert (principal.user_id, principal.tenant_id, principal.partner_id) == (
            "usr_demo",
            "tnt_demo",
            "prt_demo",
        )
        assert principal.is_super_admin is False
        assert principal.has("scaiecho:admin")

    refused = [
        devstack.mint(audience="scaiecho", expired=True),
        devstack.mint(audience="scaidrive"),
        devstack.mint(),  # no aud while an audience is configured
        sign_hs256(
            build_user_claims(
                tenant="tnt_demo", user="usr_demo", audience="scaiecho", issuer_base=devstack.base
            ),
            "secret",
        ),
        KeyStore(devstack.state / "elsewhere").mint(
            tenant="tnt_demo", user="usr_demo", audience="scaiecho", issuer_base=devstack.base
        ),  # unknown kid
        devstack.keys.mint(
            tenant="tnt_demo",
            user="usr_demo",
            audience="scaiecho",
            issuer_base=devstack.base + ".evil",
        ),
    ]
    for token in refused:
        with pytest.raises(ScaiError) as info:
            await auth.authenticate(token, request_id="req_dev")
        assert info.value.code == "AUTH_TOKEN_INVALID"


async def test_rotated_key_is_accepted(devstack: Devstack, auth: Authenticator) -> None:
    await auth.authenticate(devstack.mint(audience="scaiecho"), request_id="r")
    devstack.rotate()
    principal = await auth.authenticate(devstack.mint(audience="scaiecho"), request_id="r")
    assert principal.user_id == "usr_demo"
