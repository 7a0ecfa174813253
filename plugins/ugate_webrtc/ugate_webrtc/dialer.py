"""The ``webrtc`` dialer: reach a gateway (or any WHIP-style data-channel answerer) through ICE.

A destination with ``protocol = "webrtc"`` names the far side's signaling address as its
endpoint (``host:port`` of its HTTP listener; ``labels.webrtc_url`` overrides the whole URL).
The first stream offers a peer connection there (``POST`` of the offer, ``201`` with the
answer); every later stream to the same URL is one more data channel on it, so a stream costs
one DCEP round trip, not an ICE and DTLS handshake. The channel's label is the destination as
the client asked for it (``name:port``): the far gateway dials it through its own discovery
and policy.

**Who answers.** The answer carries the DTLS fingerprint the data channels are then bound to,
so the signaling exchange decides who the channels reach. When the destination expects an
identity (``identity = [...]`` in its ``hosts`` entry, or a mesh name such as ``<id>.m``) the
offer goes over ``https://`` through core's ``tls`` dialer: the far gateway proves that
identity before it sees the offer, and this gateway presents its own workload certificate, so
the far side's rules can name it (``id:<ID>``) with no token at all. ``http://`` (a
destination that expects no identity, or an explicit ``webrtc_url``) is dialed with the
``tcp`` dialer and proves nothing, like any ``tcp`` destination; a destination that expects an
identity is never signaled over it. ``[webrtc] dial_token`` is sent as the bearer token when
set (a far side that wants a token rather than a certificate).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ugate_core import (
    IDENTITY_KINDS,
    DialError,
    DialerType,
    Endpoint,
    StashKey,
    Stream,
    StreamMeta,
    expected_identities_for,
    format_hostport,
)

from .channel import channel_stream
from .peer import new_peer, one_fingerprint, prepare_gathering
from .sctp import coalesce_sacks
from .session import state_of

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from ugate_core import DialRequest

log = logging.getLogger("ugate.webrtc")

_MAX_ANSWER = 64 * 1024


class FarPeer:
    """One peer connection to one signaling URL, shared by the streams dialed there."""

    def __init__(self, url: str, pc: RTCPeerConnection) -> None:
        self.url = url
        self.pc = pc
        self.location: str | None = None

    @property
    def usable(self) -> bool:
        return self.pc.connectionState in ("new", "connecting", "connected")


class Pool:
    def __init__(self) -> None:
        self.peers: dict[str, FarPeer] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def close(self) -> None:
        for p in list(self.peers.values()):
            await p.pc.close()
        self.peers.clear()


POOL: StashKey[Pool] = StashKey("webrtc.dialer")


async def _post(stream: Stream, path: str, authority: str, sdp: str, token: str,
                timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 ``POST`` of an offer on ``stream``; (status, headers, body)."""
    try:
        body = sdp.encode()
        head = [f"POST {path} HTTP/1.1", f"Host: {authority}",
                "Content-Type: application/sdp", f"Content-Length: {len(body)}",
                "Connection: close"]
        if token:
            head.append(f"Authorization: Bearer {token}")
        stream.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        raw = b""
        async with asyncio.timeout(timeout):
            while len(raw) < _MAX_ANSWER + 8192:
                more = await stream.read(_MAX_ANSWER)
                if not more:
                    break
                raw += more
    finally:
        stream.close()
    head_b, sep, rest = raw.partition(b"\r\n\r\n")
    lines = head_b.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2) if lines else []
    if not sep or len(parts) < 2 or not (parts[1].isascii() and parts[1].isdigit()):
        raise DialError("refused", f"webrtc signaling at {authority}{path}: not an HTTP "
                        "answer")
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = headers.get("content-length")
    return int(parts[1]), headers, rest[: int(n)] if n and n.isascii() and n.isdigit() else rest


def _expects_identity(req: DialRequest) -> bool:
    dest = req.destination
    return bool(dest.identities or expected_identities_for(dest.name))


async def _signaling_stream(req: DialRequest, url: str, what: str) -> Stream:
    """A stream to the signaling URL's host: through core's ``tls`` dialer (the far side
    proves the destination's identity, this gateway presents its own) for ``https://``, the
    ``tcp`` dialer for ``http://``."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise DialError("bad_address", f"{what}: signaling URLs are http:// or https://")
    secure = u.scheme == "https"
    if not secure and _expects_identity(req):
        raise DialError("identity", f"{what}: the destination expects an identity and "
                        "http:// signaling proves none (use https://)")
    port = u.port or (443 if secure else 80)
    # the hop is to the far gateway, not to the destination: named by the URL's host (its SNI,
    # none for an address), expected to prove the identity the destination names
    dest = req.destination
    hop = dataclasses.replace(
        dest, name=u.hostname,
        identities=tuple(dest.identities or expected_identities_for(dest.name)))
    sreq = dataclasses.replace(req, destination=hop, endpoint=Endpoint(u.hostname, port))
    dialer = req.gateway.dialer_types["tls" if secure else "tcp"]
    return await dialer.dial(sreq)


async def _open(ch: Any, timeout: float, what: str) -> None:
    if ch.readyState == "open":
        return
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bool] = loop.create_future()

    def settle(ok: bool) -> None:
        if not fut.done():
            fut.set_result(ok)

    ch.on("open", lambda: settle(True))
    ch.on("close", lambda: settle(False))
    try:
        ok = await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        ch.close()
        raise DialError("timeout", f"{what}: data channel not open within {timeout:g}s") \
            from None
    if not ok:
        raise DialError("refused", f"{what}: the far side closed the data channel")


async def dial(req: DialRequest) -> Stream:
    gw = req.gateway
    st = state_of(gw)
    o = st.options
    pool = gw.stash.get_or_create(POOL, Pool)
    host, port = req.host, req.target_port
    scheme = "https" if _expects_identity(req) else "http"
    url = req.destination.labels.get("webrtc_url") or \
        f"{scheme}://{format_hostport(host, port)}{o.dial_path}"
    label = f"{req.destination.name}:{req.port}"
    what = f"webrtc {label} via {url}"
    lock = pool.locks.setdefault(url, asyncio.Lock())
    async with lock:
        far = pool.peers.get(url)
        if far is not None and far.usable:
            ch = far.pc.createDataChannel(label, ordered=True)
        else:
            far, ch = await _connect(req, url, label, what)
            pool.peers[url] = far
    await _open(ch, req.timeout, what)
    meta = StreamMeta(protocol="webrtc", target=label, remote=(host, port))
    return channel_stream(ch, meta, o.max_message, o.max_unread)


async def _connect(req: DialRequest, url: str, label: str, what: str) -> tuple[FarPeer, Any]:
    o = state_of(req.gateway).options
    u = urlsplit(url)
    stream = await _signaling_stream(req, url, what)
    try:
        pc = new_peer(o)
    except BaseException:
        stream.abort()
        raise
    ch = pc.createDataChannel(label, ordered=True)
    if pc.sctp is not None:
        coalesce_sacks(pc.sctp)
    try:
        await prepare_gathering(pc, o.host_addresses)
        await pc.setLocalDescription(await pc.createOffer())
        offer = one_fingerprint(str(pc.localDescription.sdp))
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        try:
            status, headers, body = await _post(stream, path, u.netloc, offer, o.dial_token,
                                                req.timeout)
        except (OSError, TimeoutError) as e:
            raise DialError("unreachable", f"{what}: signaling: {e or type(e).__name__}") \
                from None
        if status != 201:
            text = body[:200].decode(errors="replace").strip()
            raise DialError("denied" if status in (401, 403) else "refused",
                            f"{what}: signaling answered {status}: {text}")
        from aiortc import RTCSessionDescription

        await pc.setRemoteDescription(RTCSessionDescription(body.decode(), "answer"))
    except BaseException:
        stream.abort()
        await pc.close()
        raise
    far = FarPeer(url, pc)
    far.location = headers.get("location")
    log.info("webrtc_dialed url=%s location=%s peer=%s", url, far.location,
             stream.meta.peer_id or "-")
    return far, ch


def dialer_type() -> DialerType:
    return DialerType(name="webrtc", dial=dial,
                      description="WebRTC data channel to a gateway's WHIP-style signaling "
                      "(one peer connection per far side, one channel per stream; https "
                      "signaling proves the far side's identity)",
                      # through the tls dialer, whose verification it is; the data channels
                      # are bound to the DTLS fingerprint of the answer it carried
                      verifies=frozenset(IDENTITY_KINDS))
