"""Dev ScaiDrive over HTTP, with tokens from the running dev ScaiKey."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaidevstack.scaikey import KeyStore, build_user_claims, generate_signing_key

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TENANT = "tnt_drive"

TokenFactory = Callable[..., str]


@pytest.fixture(scope="module")
def share(cli: Any, drive_dir: Path, scaidrive: Any) -> dict[str, Any]:
    """A share created with the admin CLI while the server runs."""
    result = cli.run(
        "scaidrive", "share", "create", "--tenant", TENANT, "--name", "Demo",
        "--member", "usr_owner:owner", "--member", "usr_reader:reader",
        "--member", "usr_contrib:contributor", "--quota-bytes", "300000",
        "--data-dir", str(drive_dir),
    )  # fmt: skip
    created: dict[str, Any] = json.loads(result.stdout)
    return created


@pytest.fixture(scope="module")
def user_token(keystore: KeyStore, issuer_base: str) -> TokenFactory:
    """Mint a user token straight from the key store."""

    def mint(user: str = "usr_owner", tenant: str = TENANT, **kwargs: Any) -> str:
        kwargs.setdefault("scope", "files:read files:write")
        return keystore.mint(tenant=tenant, user=user, issuer_base=issuer_base, **kwargs)

    return mint


@pytest.fixture(scope="module")
def drive_token(http: httpx.Client, scaikey: Any, user_token: TokenFactory) -> TokenFactory:
    """A ScaiDrive token obtained the way the services do: RFC 8693 exchange by scaispeak."""

    def get(user: str = "usr_owner", scope: str = "files:read files:write", **kw: Any) -> str:
        answer = http.post(
            scaikey.base_url + "/api/v1/platform/oauth/token",
            data={
                "grant_type": EXCHANGE,
                "subject_token": user_token(user, **kw),
                "subject_token_type": ACCESS,
                "audience": "scaidrive",
                "scope": scope,
            },
            auth=("scaispeak", "scaispeak-dev-secret"),
        )
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    return get


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(
    http: httpx.Client,
    drive: Any,
    token: str,
    share_id: str,
    name: str,
    data: bytes,
    *,
    folder_id: str | None = None,
    content_type: str = "text/plain",
) -> httpx.Response:
    fields = {"share_id": share_id, "name": name}
    if folder_id:
        fields["folder_id"] = folder_id
    return http.post(
        drive.base_url + "/api/v1/files",
        data=fields,
        files={"file": (name, data, content_type)},
        headers=bearer(token),
    )


def children(
    http: httpx.Client, drive: Any, token: str, share_id: str, folder: str = "root", **params: Any
) -> httpx.Response:
    return http.get(
        f"{drive.base_url}/api/v1/folders/{folder}/children",
        params={"share_id": share_id, **params},
        headers=bearer(token),
    )


def test_share_cli_create_and_list(share: dict[str, Any], cli: Any, drive_dir: Path) -> None:
    assert share["id"].startswith("shr_")
    assert share["tenant_id"] == TENANT and share["owner_id"] == "usr_owner"
    assert share["quota_bytes"] == 300000 and share["used_bytes"] == 0
    listed = cli.run("scaidrive", "share", "list", "--data-dir", str(drive_dir)).stdout
    assert share["id"] in [json.loads(line)["id"] for line in listed.splitlines()]
    bad = cli.run(
        "scaidrive", "share", "create", "--tenant", TENANT, "--name", "X",
        "--member", "usr_a:reader", "--data-dir", str(drive_dir), check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "owner" in bad.stderr


def test_list_my_shares(
    http: httpx.Client, scaidrive: Any, share: dict[str, Any], drive_token: TokenFactory
) -> None:
    answer = http.get(scaidrive.base_url + "/api/v1/users/me/shares", headers=bearer(drive_token()))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    mine = next(s for s in body["shares"] if s["id"] == share["id"])
    assert set(mine) == {"id", "name", "type", "role", "owner_id", "quota_bytes", "used_bytes"}
    assert mine["role"] == "owner" and mine["name"] == "Demo"
    assert body["total"] == len(body["shares"])
    reader = http.get(
        scaidrive.base_url + "/api/v1/users/me/shares", headers=bearer(drive_token("usr_reader"))
    ).json()
    assert [s["role"] for s in reader["shares"] if s["id"] == share["id"]] == ["reader"]
    outsider = drive_token("usr_owner", tenant="tnt_other")
    other = http.get(scaidrive.base_url + "/api/v1/users/me/shares", headers=bearer(outsider))
    assert share["id"] not in [s["id"] for s in other.json()["shares"]]


def test_upload_conflict_overwrite_and_download(
    http: httpx.Client, scaidrive: Any, share: dict[str, Any], drive_token: TokenFactory
) -> None:
    token = drive_token()
    data = b"hello from scaispeak\n"
    first = upload(http, scaidrive, token, share["id"], "hello.txt", data)
    assert first.status_code == 201, first.text
    record = first.json()
    assert record["id"].startswith("fil_")
    assert record["share_id"] == share["id"] and record["folder_id"] is None
    assert record["name"] == "hello.txt" and record["path"] == "/hello.txt"
    assert record["mime_type"] == "text/plain" and record["size"] == len(data)
    assert record["checksum_sha256"] == hashlib.sha256(data).hexdigest()
    assert record["version"] == 1 and record["created_at"].endswith("Z")

    conflict = upload(http, scaidrive, token, share["id"], "hello.txt", b"other")
    assert conflict.status_code == 409
    assert conflict.json()["status"] == "error"
    assert conflict.json()["error"]["code"] == "NAME_CONFLICT"
    assert conflict.json()["error"]["message"]

    # The overwrite flow of platform.md §13.3: list, find by exact name, delete, upload again.
    items = children(http, scaidrive, token, share["id"]).json()["items"]
    existing = next(i for i in items if i["type"] == "file" and i["name"] == "hello.txt")
    assert existing["id"] == record["id"] and existing["size"] == len(data)
    deleted = http.delete(
        f"{scaidrive.base_url}/api/v1/files/{existing['id']}", headers=bearer(token)
    )
    assert deleted.status_code == 204
    new_data = b"replaced content"
    second = upload(http, scaidrive, token, share["id"], "hello.txt", new_data)
    assert second.status_code == 201, second.text
    new_id = second.json()["id"]
    assert new_id != record["id"]

    gone = http.get(f"{scaidrive.base_url}/api/v1/files/{record['id']}", headers=bearer(token))
    assert gone.status_code == 404 and "detail" in gone.json()
    meta = http.get(f"{scaidrive.base_url}/api/v1/files/{new_id}", headers=bearer(token))
    assert meta.status_code == 200 and meta.json()["size"] == len(new_data)
    content = http.get(f"{scaidrive.base_url}/api/v1/files/{new_id}/content", headers=bearer(token))
    assert content.status_code == 200
    assert content.content == new_data
    assert content.headers["content-type"].startswith("text/plain")


def test_folders_children_and_paging(
    http: httpx.Client, scaidrive: Any, share: dict[str, Any], drive_token: TokenFactory
) -> None:
    token = drive_token("usr_contrib")
    folder = http.post(
        scaidrive.base_url + "/api/v1/folders",
        json={"name": "Docs", "share_id": share["id"], "parent_id": None},
        headers=bearer(token),
    )
    assert folder.status_code == 201, folder.text
    folder_id = folder.json()["id"]
    assert folder_id.startswith("fld_") and folder.json()["path"] == "/Docs"
    again = http.post(
        scaidrive.base_url + "/api/v1/folders",
        json={"name": "Docs", "share_id": share["id"]},
        headers=bearer(token),
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "NAME_CONFLICT"
    for name in ("c.wav", "a.wav", "b.wav"):
        answer = upload(
            http, scaidrive, token, share["id"], name, b"RIFF", folder_id=folder_id,
            content_type="audio/wav",
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
        assert answer.json()["path"] == f"/Docs/{name}"
    listing = children(http, scaidrive, token, share["id"], folder_id, limit=2, offset=1).json()
    assert listing["path"] == "/Docs" and listing["total"] == 3
    assert [i["name"] for i in listing["items"]] == ["b.wav", "c.wav"]
    assert listing["items"][0]["mime_type"] == "audio/wav"
    root = children(http, scaidrive, token, share["id"]).json()
    assert root["path"] == "/"
    assert {"id": folder_id, "type": "folder", "name": "Docs"}.items() <= root["items"][0].items()
    unknown = children(http, scaidrive, token, share["id"], "fld_missing")
    assert unknown.status_code == 404


def test_scopes_and_roles(
    http: httpx.Client,
    scaidrive: Any,
    share: dict[str, Any],
    drive_token: TokenFactory,
    user_token: TokenFactory,
) -> None:
    read_only = drive_token(scope="files:read")
    refused = upload(http, scaidrive, read_only, share["id"], "r.txt", b"x")
    assert refused.status_code == 403
    assert "files:write" in refused.json()["detail"]
    assert children(http, scaidrive, read_only, share["id"]).status_code == 200

    write_only = drive_token(scope="files:write")
    assert children(http, scaidrive, write_only, share["id"]).status_code == 403

    reader = drive_token("usr_reader")
    as_reader = upload(http, scaidrive, reader, share["id"], "r.txt", b"x")
    assert as_reader.status_code == 403 and "detail" in as_reader.json()
    assert children(http, scaidrive, reader, share["id"]).status_code == 200

    stranger = drive_token("usr_stranger")
    assert children(http, scaidrive, stranger, share["id"]).status_code == 403

    # No scope claim at all counts as tenant:admin (membership still applies).
    unscoped = user_token(scope=None)
    answer = upload(http, scaidrive, unscoped, share["id"], "admin.txt", b"x")
    assert answer.status_code == 201, answer.text


def test_tenant_isolation(
    http: httpx.Client, scaidrive: Any, share: dict[str, Any], drive_token: TokenFactory
) -> None:
    mine = upload(http, scaidrive, drive_token(), share["id"], "secret.txt", b"s")
    assert mine.status_code == 201
    file_id = mine.json()["id"]
    # Same user id, other tenant: the share and its files do not exist for it.
    other = drive_token("usr_owner", tenant="tnt_other")
    assert children(http, scaidrive, other, share["id"]).status_code == 404
    assert upload(http, scaidrive, other, share["id"], "x.txt", b"x").status_code == 404
    base = f"{scaidrive.base_url}/api/v1/files/{file_id}"
    for answer in (
        http.get(base, headers=bearer(other)),
        http.get(base + "/content", headers=bearer(other)),
        http.delete(base, headers=bearer(other)),
    ):
        assert answer.status_code == 404
        assert answer.json() == {"detail": "File not found"}


def test_authentication_failures(
    http: httpx.Client,
    scaidrive: Any,
    share: dict[str, Any],
    keystore: KeyStore,
    issuer_base: str,
) -> None:
    url = scaidrive.base_url + "/api/v1/users/me/shares"
    missing = http.get(url)
    assert missing.status_code == 401 and missing.json() == {"detail": "Not authenticated"}
    good = build_user_claims(tenant=TENANT, user="usr_owner", issuer_base=issuer_base)
    bad_tokens = {
        "basic scheme": None,
        "expired": keystore.mint(
            tenant=TENANT, user="usr_owner", expired=True, issuer_base=issuer_base
        ),
        "unknown kid": generate_signing_key("RS256").sign(good),
        "wrong issuer": keystore.sign({**good, "iss": issuer_base + ".evil/tenants/" + TENANT}),
        "garbage": "abc.def.ghi",
    }
    for label, token in bad_tokens.items():
        headers = {"Authorization": "Basic abc"} if token is None else bearer(token)
        answer = http.get(url, headers=headers)
        assert answer.status_code == 401, label
        assert isinstance(answer.json()["detail"], str), label


def test_limits_use_the_envelope(
    http: httpx.Client,
    scaidrive: Any,
    share: dict[str, Any],
    drive_token: TokenFactory,
) -> None:
    token = drive_token()
    too_big = upload(http, scaidrive, token, share["id"], "big.bin", b"\0" * 1_000_001)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    # The share quota is 300000 bytes.
    over_quota = upload(http, scaidrive, token, share["id"], "q.bin", b"\0" * 300_001)
    assert over_quota.status_code == 507
    assert over_quota.json() == {
        "status": "error",
        "error": {"code": "QUOTA_EXCEEDED", "message": over_quota.json()["error"]["message"]},
    }


def test_rotated_key_is_picked_up(
    http: httpx.Client,
    scaidrive: Any,
    share: dict[str, Any],
    keystore: KeyStore,
    user_token: TokenFactory,
) -> None:
    url = scaidrive.base_url + "/api/v1/users/me/shares"
    assert http.get(url, headers=bearer(user_token())).status_code == 200
    keystore.rotate()
    time.sleep(1.1)  # ScaiDrive refetches the JWKS for an unknown kid at most once a second
    answer = http.get(url, headers=bearer(user_token()))
    assert answer.status_code == 200, answer.text
