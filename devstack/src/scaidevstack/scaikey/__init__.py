"""Dev ScaiKey: a real JWT issuer with JWKS, OIDC discovery and RFC 8693 token exchange."""

from scaidevstack.scaikey.clients import Client, ClientRegistry
from scaidevstack.scaikey.keys import (
    KeyStore,
    SigningKey,
    forge_unsigned,
    generate_signing_key,
    sign_hs256,
)
from scaidevstack.scaikey.tokens import build_user_claims, default_issuer_base, tenant_issuer

__all__ = [
    "Client",
    "ClientRegistry",
    "KeyStore",
    "SigningKey",
    "build_user_claims",
    "default_issuer_base",
    "forge_unsigned",
    "generate_signing_key",
    "sign_hs256",
    "tenant_issuer",
]
