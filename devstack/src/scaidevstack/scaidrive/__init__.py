"""Dev ScaiDrive: the shares/folders/files API on local disk, behind ScaiKey JWTs."""

from scaidevstack.scaidrive.auth import Caller, JwksVerifier, caller_from_claims
from scaidevstack.scaidrive.store import Actor, DriveStore

__all__ = ["Actor", "Caller", "DriveStore", "JwksVerifier", "caller_from_claims"]
