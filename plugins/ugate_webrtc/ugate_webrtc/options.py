"""The ``[webrtc]`` table: signaling limits, ICE, the dialer's credentials (browser tokens are
core's ``[tokens]``, :mod:`ugate_core.tokens`).

Read once per gateway (:func:`parse`) and validated by ``ugate config check`` through the
``ugate_config_sections`` hook, so a typo is a start-up error naming the key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ugate_core import ConfigError
from ugate_core import options as opt

SECTION = "webrtc"
#: the signaling path (WHIP style, RFC 9725): POST an offer here, DELETE the Location
PATH = "/.well-known/ugate/webrtc"

KEYS = frozenset({
    "host_addresses", "ice_servers", "allow_origins", "max_sdp",
    "rate", "burst", "connect_timeout", "max_sessions", "max_channels", "max_message",
    "max_unread", "idle_timeout", "dial_token", "dial_path",
})
#: keys that moved to core's ``[tokens]`` (one table for every plugin's browser tokens)
MOVED = {"token_secret_file": "[tokens] trusted_keys (signed tokens: 'ugate token')"}


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server (``urls`` as in the browser's ``RTCIceServer``)."""

    urls: str
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class WebRtcOptions:
    #: addresses to gather host candidates on; empty: every interface but loopback (aioice's
    #: choice, RFC 8445 5.1.1.1). ``["127.0.0.1"]`` is what tests on one machine need.
    host_addresses: tuple[str, ...] = ()
    #: STUN/TURN servers; none by default, so no packet leaves unless configured
    ice_servers: tuple[IceServer, ...] = ()
    #: page origins allowed to signal from another origin (CORS); ``"*"``: any
    allow_origins: tuple[str, ...] = ()
    #: the largest SDP offer accepted, bytes
    max_sdp: int = 16 * 1024
    #: signaling requests per second per client address, and the burst allowed above it
    rate: float = 5.0
    burst: int = 20
    #: seconds from the answer until ICE, DTLS and SCTP must be up, else the session is freed
    connect_timeout: float = 15.0
    #: seconds a connected session may have no open data channel before it is freed (a
    #: closed page sends nothing a gateway can rely on; ICE consent checks notice it only
    #: after about 30 s)
    idle_timeout: float = 30.0
    max_sessions: int = 256
    #: data channels per session (each is one stream)
    max_channels: int = 256
    #: the largest data-channel message sent or accepted (a larger write is split)
    max_message: int = 64 * 1024
    #: bytes a channel may deliver while its destination does not read, before it is cut
    #: (aiortc cannot pause one channel's sender: see :mod:`ugate_webrtc.channel`)
    max_unread: int = 4 * 1024 * 1024
    #: the bearer token the ``webrtc`` dialer sends to the far gateway's signaling (a core
    #: token the far gateway trusts: ``ugate token``)
    dial_token: str = ""
    #: the path the ``webrtc`` dialer posts its offers to
    dial_path: str = PATH


def _ice_servers(t: Mapping[str, Any], path: str) -> tuple[IceServer, ...]:
    raw = t.get("ice_servers", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{path}.ice_servers", f"{raw!r} is not a list of tables "
                          "(urls, username, credential)")
    out = []
    for i, s in enumerate(raw):
        p = f"{path}.ice_servers[{i}]"
        if isinstance(s, str):
            s = {"urls": s}
        if not isinstance(s, Mapping):
            raise ConfigError(p, f"{s!r} is not a table or a URL string")
        opt.check_keys(s, {"urls", "username", "credential"}, p)
        urls = opt.string(s, "urls", p, "")
        if not urls.startswith(("stun:", "turn:", "turns:")):
            raise ConfigError(f"{p}.urls", f"{urls!r} is not a stun:, turn: or turns: URL")
        user = opt.string(s, "username", p, "") or None
        cred = opt.string(s, "credential", p, "") or None
        out.append(IceServer(urls, user, cred))
    return tuple(out)


def parse(t: Mapping[str, Any], path: str = SECTION) -> WebRtcOptions:
    """Check the ``[webrtc]`` table and return it typed."""
    opt.moved(t, MOVED, path)
    opt.check_keys(t, KEYS, path)
    hosts = opt.strings(t, "host_addresses", path, expect="a list of IP addresses")
    for h in hosts:
        try:
            ipaddress.ip_address(h)
        except ValueError:
            raise ConfigError(f"{path}.host_addresses", f"{h!r} is not an IP address") from None
    sdp_path = opt.string(t, "dial_path", path, PATH)
    if not sdp_path.startswith("/"):
        raise ConfigError(f"{path}.dial_path", f"{sdp_path!r} must start with '/'")
    return WebRtcOptions(
        host_addresses=hosts,
        ice_servers=_ice_servers(t, path),
        allow_origins=opt.strings(t, "allow_origins", path),
        max_sdp=opt.integer(t, "max_sdp", path, 16 * 1024, lo=1024, hi=1024 * 1024),
        rate=opt.number(t, "rate", path, 5.0, positive=True),
        burst=opt.integer(t, "burst", path, 20, lo=1),
        connect_timeout=opt.seconds(t, "connect_timeout", path, 15.0, lo=0.1, hi=600),
        idle_timeout=opt.seconds(t, "idle_timeout", path, 30.0, lo=0.1, hi=86400),
        max_sessions=opt.integer(t, "max_sessions", path, 256, lo=1),
        max_channels=opt.integer(t, "max_channels", path, 256, lo=1, hi=65534),
        max_message=opt.integer(t, "max_message", path, 64 * 1024, lo=1024,
                                hi=256 * 1024),
        max_unread=opt.integer(t, "max_unread", path, 4 * 1024 * 1024, lo=64 * 1024),
        dial_token=opt.string(t, "dial_token", path, ""),
        dial_path=sdp_path,
    )
