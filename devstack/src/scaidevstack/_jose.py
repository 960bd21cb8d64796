"""Single import point for ``authlib.jose``.

authlib marks ``authlib.jose`` as deprecated in favour of ``joserfc``; the platform contract still
names authlib for JWT work, so the import happens here once, with that warning silenced.
"""

from __future__ import annotations

import warnings

import authlib.deprecate  # installs authlib's "always" filter; ours below must come after it

with warnings.catch_warnings():
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.jose import JoseError, JsonWebKey, JsonWebToken, KeySet

__all__ = ["JoseError", "JsonWebKey", "JsonWebToken", "KeySet"]
