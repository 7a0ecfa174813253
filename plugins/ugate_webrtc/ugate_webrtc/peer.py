"""aiortc peer connections for data channels: offer checks, ICE configuration, candidates.

* **Offer checks** (:func:`check_offer`) run before any ICE work: the size is bounded by the
  signaling handler; here the SDP must parse as a session with one ``m=application ...
  webrtc-datachannel`` section, ICE credentials and a DTLS fingerprint.
* **Host candidates**: aioice gathers on every interface but loopback (RFC 8445 5.1.1.1 forbids
  loopback candidates). ``[webrtc] host_addresses`` replaces that list — ``["127.0.0.1"]`` for
  peers on one machine. aioice has no option for it; :func:`prepare_gathering` gathers on the
  configured addresses with aioice's public ``Connection.get_component_candidates`` and marks
  the connection's gathering done, the one place this plugin touches aioice's state (checked
  by ``test_peer.py`` on every aioice release it allows).
* **mDNS candidates**: browsers hide their host addresses behind random ``<uuid>.local``
  names. Resolving them takes multicast queries on the local network; instead the offer's
  ``.local`` candidates are dropped (:func:`check_offer` counts them) and the browser's checks to
  the gateway's candidates are learnt as peer-reflexive candidates (RFC 8445 7.3.1.3), which is
  how every ICE agent meets a peer whose candidates it cannot use.
* **One fingerprint**: aiortc lists its certificate's SHA-256, SHA-384 and SHA-512
  fingerprints; libdatachannel (node-datachannel 0.33) then fails about half of the DTLS
  handshakes with "unknown ca" (seen here: 5 of 8 to 10 of 10 after keeping only SHA-256).
  Answers and offers keep only the SHA-256 line (:func:`one_fingerprint`), the one every
  browser sends; RFC 8122 allows any one of them.
* **STUN/TURN**: none unless configured (aiortc's default is a public STUN server: an empty
  list is passed explicitly, so no packet leaves without configuration).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from ugate_core import ProtocolError

from .options import WebRtcOptions

_MDNS = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ \S+\.local \d+ ", re.IGNORECASE)


@dataclass(frozen=True)
class Offer:
    sdp: str
    #: browser mDNS candidates left out (peer-reflexive discovery replaces them)
    mdns_dropped: int


def check_offer(sdp: str) -> Offer:
    """The offer, checked, with ``.local`` candidates dropped; ``ProtocolError`` (reason
    ``bad_sdp`` or ``no_datachannel``) names what is wrong."""
    lines = sdp.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "v=0":
        raise ProtocolError("offer is not SDP (it must start with 'v=0')", "bad_sdp")
    if any(ln and (len(ln) < 2 or ln[1] != "=") for ln in lines):
        bad = next(ln for ln in lines if ln and (len(ln) < 2 or ln[1] != "="))
        raise ProtocolError(f"offer has a line that is not SDP: {bad[:60]!r}", "bad_sdp")
    media = [ln for ln in lines if ln.startswith("m=")]
    dc = [m for m in media if m.startswith("m=application ") and "webrtc-datachannel" in m]
    if not dc:
        raise ProtocolError("offer has no data channel (an m=application ... "
                            "webrtc-datachannel section)", "no_datachannel")
    for need in ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:"):
        if not any(ln.startswith(need) for ln in lines):
            raise ProtocolError(f"offer has no {need[:-1]} line", "bad_sdp")
    kept, dropped = [], 0
    for ln in lines:
        if _MDNS.match(ln):
            dropped += 1
            continue
        kept.append(ln)
    return Offer("\r\n".join(kept), dropped)


def one_fingerprint(sdp: str) -> str:
    """``sdp`` with only its ``sha-256`` fingerprint lines (when it has one)."""
    lines = sdp.split("\r\n")
    if not any(ln.startswith("a=fingerprint:sha-256 ") for ln in lines):
        return sdp
    return "\r\n".join(ln for ln in lines if not ln.startswith("a=fingerprint:")
                        or ln.startswith("a=fingerprint:sha-256 "))


def new_peer(o: WebRtcOptions) -> RTCPeerConnection:
    """A peer connection with the configured STUN/TURN servers (none: an explicit empty list)."""
    servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
               for s in o.ice_servers]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


async def prepare_gathering(pc: RTCPeerConnection, addresses: tuple[str, ...]) -> None:
    """Gather host candidates on ``addresses`` now, so aiortc's own gathering (in
    ``setLocalDescription``) finds it done. Call once the SCTP transport exists (after
    ``setRemoteDescription`` of an offer, or ``createDataChannel``). Nothing to do without
    configured addresses."""
    if not addresses:
        return
    sctp = pc.sctp
    if sctp is None:
        raise ValueError("prepare_gathering: the peer connection has no SCTP transport yet")
    conn: Any = sctp.transport.transport.iceGatherer._connection  # see module docstring
    if conn._local_candidates_start:
        return
    conn._local_candidates_start = True
    cands = await conn.get_component_candidates(component=1, addresses=list(addresses))
    conn._local_candidates += cands
    conn._local_candidates_end = True
