"""Single import point for ``authlib.jose``.

authlib marks ``authlib.jose`` as deprecated in favour of ``joserfc``; the platform contract still
names authlib for JWT work, so the import happens here once, with that warning silenced.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from authlib.jose import JoseError, JsonWebKey, JsonWebToken, KeySet

__all__ = ["JoseError", "JsonWebKey", "JsonWebToken", "KeySet"]
