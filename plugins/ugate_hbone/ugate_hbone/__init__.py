"""ugate-hbone: HTTP/2 CONNECT tunnels (Istio HBONE over mTLS, hbonec over h2c)."""

from .authority import AuthorityError, parse_authority
from .h2stream import H2Stream
from .session import H2Session
from .settings import HboneSettings, parse_settings

__all__ = [
    "AuthorityError",
    "H2Session",
    "H2Stream",
    "HboneSettings",
    "parse_authority",
    "parse_settings",
]
