"""Bearer extraction, token kinds, tenant context, claim/answer mapping and the §4.8 catch-all."""

from __future__ import annotations

import itertools

import pytest
from starlette.datastructures import Headers, QueryParams

from scaicommon.auth import (
    apply_tenant_header,
    check_external_ids,
    extract_bearer,
    is_failed_authentication,
    token_kind,
)
from scaicommon.errors import ScaiError
from scaicommon.jwt_verify import issuer_matches, map_claims
from scaicommon.principal import BUILTIN_ROLES, ModulePermissions, Principal
from scaicommon.scaigrid import ShapeMismatch, parse_me

# The contract's key sets (platform §4.8), spelled out here rather than imported.
ECHO = ModulePermissions(
    "scaiecho",
    frozenset({"scaiecho:transcribe", "scaiecho:diarize", "scaiecho:enroll", "scaiecho:admin"}),
    frozenset({"scaiecho:transcribe"}),
)
SPEAK = ModulePermissions(
    "scaispeak",
    frozenset(
        {
            "scaispeak:synthesize",
            "scaispeak:voice.read",
            "scaispeak:voice.write",
            "scaispeak:voice.share",
            "scaispeak:admin",
        }
    ),
    frozenset({"scaispeak:voice.read"}),
)


def _principal(module: ModulePermissions, **fields: object) -> Principal:
    base: dict[str, object] = {
        "user_id": "usr_a",
        "tenant_id": "tnt_a",
        "module": module,
        "auth_kind": "jwt",
        "request_id": "req_test",
        "token": "secret-token",
    }
    base.update(fields)
    return Principal(**base)  # type: ignore[arg-type]


def _code(exc: pytest.ExceptionInfo[ScaiError]) -> str:
    return exc.value.code


# ----- §4.1 bearer extraction -----------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    headers = Headers({"authorization": f"{scheme} abc.def.ghi"})
    assert extract_bearer(headers) == "abc.def.ghi"


def test_plain_dict_headers_are_matched_case_insensitively() -> None:
    assert extract_bearer({"Authorization": "Bearer tok"}) == "tok"


def test_missing_token() -> None:
    with pytest.raises(ScaiError) as info:
        extract_bearer(Headers({}))
    assert _code(info) == "AUTH_TOKEN_MISSING"
    assert info.value.http_status == 401


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Bearer  two-spaces", "Token abc", ""]
)
def test_bad_authorization_values_are_invalid(value: str) -> None:
    with pytest.raises(ScaiError) as info:
        extract_bearer(Headers({"authorization": value}))
    assert _code(info) == "AUTH_TOKEN_INVALID"


def test_query_token_is_read_for_websockets_only() -> None:
    query = QueryParams("token=sgk_abc")
    assert extract_bearer(Headers({}), query, websocket=True) == "sgk_abc"
    with pytest.raises(ScaiError) as info:
        extract_bearer(Headers({}), query, websocket=False)
    assert _code(info) == "AUTH_TOKEN_MISSING"


def test_header_wins_over_query_token() -> None:
    headers = Headers({"authorization": "Bearer from-header"})
    assert extract_bearer(headers, QueryParams("token=from-query"), websocket=True) == "from-header"


def test_empty_query_token_is_invalid() -> None:
    with pytest.raises(ScaiError) as info:
        extract_bearer(Headers({}), QueryParams("token="), websocket=True)
    assert _code(info) == "AUTH_TOKEN_INVALID"


def test_failed_authentications_are_the_401_codes() -> None:
    assert is_failed_authentication(ScaiError("AUTH_TOKEN_MISSING", "x"))
    assert is_failed_authentication(ScaiError("AUTH_TOKEN_INVALID", "x"))
    assert not is_failed_authentication(ScaiError("AUTH_PROVIDER_UNAVAILABLE", "x"))
    assert not is_failed_authentication(ScaiError("AUTHZ_PERMISSION_DENIED", "x"))


# ----- §4.2 token kinds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("sgk_" + "a" * 40, "api_key"),
        ("sgk_short", "api_key"),
        ("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "jwt"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "jwt"),
        ("a.b", None),
        ("a.b.c.d", None),
        ("a+b.c.d", None),
        ("plain", None),
    ],
)
def test_token_kinds(token: str, kind: str | None) -> None:
    assert token_kind(token) == kind


# ----- §1.1 external ids, §4.9 tenant context ----------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"tenant_id": "tnt:evil"},
        {"user_id": "usr a"},
        {"partner_id": "prt/x"},
        {"tenant_id": "-leading-dash"},
        {"user_id": "u" * 129},
    ],
)
def test_ids_breaking_the_external_id_rule_are_invalid(fields: dict[str, object]) -> None:
    with pytest.raises(ScaiError) as info:
        check_external_ids(_principal(ECHO, **fields))
    assert _code(info) == "AUTH_TOKEN_INVALID"


def test_good_ids_pass() -> None:
    check_external_ids(_principal(ECHO, user_id="a.b@c-d_e", tenant_id=None, partner_id="prt_1"))


def test_tenant_header_is_for_super_admins_only() -> None:
    admin = _principal(ECHO, roles=frozenset({"super_admin"}), tenant_id=None)
    assert apply_tenant_header(admin, "tnt_other").tenant_id == "tnt_other"
    assert apply_tenant_header(admin, None) is admin
    for role in sorted(BUILTIN_ROLES - {"super_admin"}):
        with pytest.raises(ScaiError) as info:
            apply_tenant_header(_principal(ECHO, roles=frozenset({role})), "tnt_other")
        assert _code(info) == "AUTHZ_PERMISSION_DENIED"
        assert info.value.http_status == 403


def test_tenant_header_value_must_be_a_valid_id() -> None:
    admin = _principal(ECHO, roles=frozenset({"super_admin"}))
    with pytest.raises(ScaiError) as info:
        apply_tenant_header(admin, "tnt:x")
    assert _code(info) == "VALIDATION_ERROR"
    assert info.value.details == [{"field": "X-Tenant-ID", "message": "not a valid tenant id"}]


# ----- §4.8 the catch-all --------------------------------------------------------------------

_ALL = frozenset({"super_admin", "partner_admin", "tenant_admin"})
_VIEWERS = frozenset({"partner_viewer", "tenant_viewer"})


@pytest.mark.parametrize(
    ("module", "role", "key"),
    [
        (module, role, key)
        for module in (ECHO, SPEAK)
        for role in sorted(BUILTIN_ROLES)
        for key in sorted(module.all_keys)
    ],
)
def test_builtin_role_catch_all(module: ModulePermissions, role: str, key: str) -> None:
    principal = _principal(module, roles=frozenset({role}))
    expected = role in _ALL or (role in _VIEWERS and key in module.viewer_keys)
    assert principal.has(key) is expected
    if not expected:
        with pytest.raises(ScaiError) as info:
            principal.require(key)
        assert info.value.extras == {"required_permission": key}


@pytest.mark.parametrize("module", [ECHO, SPEAK])
def test_wildcard_grant_holds_every_key(module: ModulePermissions) -> None:
    principal = _principal(
        module, roles=frozenset({"tenant_user"}), module_permissions=frozenset({module.wildcard})
    )
    assert all(principal.has(key) for key in module.all_keys)
    assert not principal.has(f"{module.module}:not-a-key")


@pytest.mark.parametrize("module", [ECHO, SPEAK])
def test_grants_are_additive(module: ModulePermissions) -> None:
    others = sorted(module.all_keys - module.viewer_keys)
    for size in (1, 2):
        for extra in itertools.combinations(others, size):
            principal = _principal(
                module, roles=frozenset({"tenant_viewer"}), module_permissions=frozenset(extra)
            )
            assert principal.effective_permissions() == module.viewer_keys | set(extra)


def test_other_modules_grants_do_not_leak() -> None:
    principal = _principal(ECHO, module_permissions=frozenset({"scaispeak:*", "scaispeak:admin"}))
    assert not any(principal.has(key) for key in ECHO.all_keys)


def test_token_is_not_in_repr() -> None:
    assert "secret-token" not in repr(_principal(ECHO))


# ----- §4.5 issuer rule and claims mapping ----------------------------------------------------


@pytest.mark.parametrize(
    ("iss", "ok"),
    [
        ("https://scaikey.scailabs.ai", True),
        ("https://scaikey.scailabs.ai/tenants/tnt_x", True),
        ("https://scaikey.scailabs.ai.evil", False),
        ("https://scaikey.scailabs.ai.evil/tenants/tnt_x", False),
        ("https://scaikey.scailabs.aix", False),
        (None, False),
        (42, False),
    ],
)
def test_issuer_prefix_rule(iss: object, ok: bool) -> None:
    assert issuer_matches(iss, "https://scaikey.scailabs.ai") is ok


def test_claims_mapping_table() -> None:
    claims = {
        "iss": "https://k.test/tenants/tnt_iss",
        "sub": "usr_1",
        "tenant_id": "tnt_claim",
        "partner_id": "prt_1",
        "roles": ["tenant_viewer"],
        "role": "tenant_user",
        "module_permissions": ["scaiecho:enroll"],
        "permissions": "scaiecho:diarize files:read scaispeak:admin",
        "scope": "files:read  files:write",
        "client_id": "app_1",
        "act": {"sub": "scaiecho", "client_id": "scaiecho"},
        "email": "a@b.test",
        "exp": 2_000_000_000,
    }
    ident = map_claims(claims, "scaiecho")
    assert ident.user_id == "usr_1"
    assert ident.tenant_id == "tnt_claim"
    assert ident.partner_id == "prt_1"
    assert ident.roles == {"tenant_viewer", "tenant_user"}
    assert ident.module_permissions == {"scaiecho:enroll", "scaiecho:diarize"}
    assert ident.core_permissions == {"files:read", "scaispeak:admin"}
    assert ident.scopes == {"files:read", "files:write"}
    assert ident.client_id == "app_1"
    assert ident.actor == {"sub": "scaiecho", "client_id": "scaiecho"}
    assert ident.email == "a@b.test"
    assert ident.service is False
    assert ident.expires_at.timestamp() == 2_000_000_000


def test_permissions_claim_may_be_a_list() -> None:
    ident = map_claims(
        {"sub": "u", "exp": 1, "permissions": ["scaiecho:admin", "core:x"]}, "scaiecho"
    )
    assert ident.module_permissions == {"scaiecho:admin"}
    assert ident.core_permissions == {"core:x"}


@pytest.mark.parametrize(
    ("iss", "tenant"),
    [
        ("https://k.test/tenants/tnt_x", "tnt_x"),
        ("https://k.test/api/v1/auth/tenants/tnt_y", "tnt_y"),
        ("https://k.test", None),
        ("https://k.test/tenants/", None),
    ],
)
def test_tenant_from_issuer_path(iss: str, tenant: str | None) -> None:
    assert map_claims({"iss": iss, "sub": "u", "exp": 1}, "scaiecho").tenant_id == tenant


@pytest.mark.parametrize(
    ("claims", "service"),
    [
        ({"sub": "app_1", "client_id": "app_1"}, True),
        ({"sub": "usr_1", "client_id": "app_1", "token_type": "client_credentials"}, True),
        ({"sub": "usr_1", "client_id": "app_1"}, False),
        ({"sub": "usr_1"}, False),
    ],
)
def test_service_tokens(claims: dict[str, object], service: bool) -> None:
    assert map_claims({**claims, "exp": 1}, "scaiecho").service is service


# ----- §4.6 /v1/me mapping ----------------------------------------------------------------------

_ME = {
    "id": "usr_me",
    "tenant_id": "tnt_me",
    "partner_id": "prt_me",
    "email": "me@x.test",
    "roles": ["tenant_user"],
    "role": "tenant_viewer",
    "permissions": ["files:read"],
    "module_permissions": ["scaiecho:diarize", "scaispeak:admin"],
    "api_key_id": "key_1",
    "enabled_modules": ["scaiecho"],
}


@pytest.mark.parametrize("body", [_ME, {"status": "ok", "data": _ME}])
def test_me_envelope_and_bare_shapes(body: dict[str, object]) -> None:
    me = parse_me(body, "scaiecho")
    assert me.user_id == "usr_me"
    assert me.tenant_id == "tnt_me"
    assert me.partner_id == "prt_me"
    assert me.email == "me@x.test"
    assert me.roles == {"tenant_user", "tenant_viewer"}
    assert me.core_permissions == {"files:read"}
    assert me.module_permissions == {"scaiecho:diarize"}
    assert me.api_key_id == "key_1"
    assert me.enabled_modules == frozenset({"scaiecho"})


def test_me_module_permissions_object_keeps_only_this_module() -> None:
    body = {
        "user_id": "usr_1",
        "module_permissions": {"scaiecho": ["scaiecho:enroll", "admin"], "scaispeak": ["x"]},
    }
    me = parse_me(body, "scaiecho")
    assert me.module_permissions == {"scaiecho:enroll", "scaiecho:admin"}
    assert me.tenant_id is None
    assert me.roles == frozenset()
    assert me.enabled_modules is None


@pytest.mark.parametrize("body", [{"tenant_id": "t"}, [], "x", {"status": "ok", "data": {}}])
def test_me_without_user_is_a_shape_mismatch(body: object) -> None:
    with pytest.raises(ShapeMismatch):
        parse_me(body, "scaiecho")
