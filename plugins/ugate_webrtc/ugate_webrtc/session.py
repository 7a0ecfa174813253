"""WebRTC sessions: one peer connection per signaling exchange, one stream per data channel.

A session remembers who signaled (the token's user, the client certificate's mesh ID, the
client address and the HTTP listener): every data channel it accepts is a stream from that
client, dialed through discovery and policy like any other, so a verified identity reaches
only what ``[[rules]]`` allow it. The DTLS fingerprint of the answer went back in the answer
to that authenticated request, so only the peer that signaled can complete DTLS.

A session ends on ``DELETE``, when the peer closes (DTLS close, SCTP abort: a closed page),
when ICE fails or misses the connect deadline, and at shutdown; its streams end with it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from ugate_core import ConfigError, DialError, MessageStream, StashKey, StreamMeta
from ugate_core import options as opt

from .channel import channel_stream
from .options import SECTION, WebRtcOptions, parse
from .peer import Offer, new_peer, one_fingerprint, prepare_gathering

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

    from ugate_core import GatewayAPI, StreamRecord

log = logging.getLogger("ugate.webrtc")


class WebRtcState:
    """Per gateway: options, live sessions, the signaling rate limiter, metrics."""

    def __init__(self, gateway: GatewayAPI) -> None:
        self.gateway = gateway
        self.options: WebRtcOptions = parse(gateway.config.section(SECTION))
        self.sessions: dict[str, Session] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        r = gateway.metrics.registry
        self.sessions_gauge = Gauge("ugate_webrtc_sessions", "WebRTC sessions now open",
                                    registry=r)
        self.channels_gauge = Gauge("ugate_webrtc_channels",
                                    "WebRTC data channels now open (one stream each)",
                                    registry=r)
        self.signaling = Counter("ugate_webrtc_signaling",
                                 "WebRTC signaling requests by answer status",
                                 ["method", "code"], registry=r)
        self.ended = Counter("ugate_webrtc_sessions_ended", "WebRTC sessions by how they ended",
                             ["reason"], registry=r)

    def allow_rate(self, source: str, now: float | None = None) -> bool:
        """A token bucket per client address: ``rate`` per second, ``burst`` at most."""
        o = self.options
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(source, (float(o.burst), now))
        tokens = min(float(o.burst), tokens + (now - last) * o.rate)
        if len(self._buckets) > 10_000:  # bounded: forget the full (idle) buckets
            self._buckets = {k: v for k, v in self._buckets.items()
                             if v[0] + (now - v[1]) * o.rate < o.burst}
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            return False
        self._buckets[source] = (tokens - 1.0, now)
        return True

    async def close_all(self) -> None:
        for s in list(self.sessions.values()):
            await s.close("shutdown")


STATE: StashKey[WebRtcState] = StashKey("webrtc")


def state_of(gateway: GatewayAPI) -> WebRtcState:
    return gateway.stash.get_or_create(STATE, lambda: WebRtcState(gateway))


class Session:
    """One peer connection set up by one signaling request (see the module docstring)."""

    def __init__(self, st: WebRtcState, meta: StreamMeta) -> None:
        self.st = st
        self.id = secrets.token_urlsafe(18)
        self.meta = meta
        self.pc: RTCPeerConnection = new_peer(st.options)
        self.streams: set[MessageStream] = set()
        self.opened = 0
        self.closed = False
        self._deadline: asyncio.TimerHandle | None = None
        self._idle: asyncio.TimerHandle | None = None
        self.pc.on("datachannel", self._on_channel)
        self.pc.on("connectionstatechange", self._on_state)

    # ------------------------------------------------------------------ set-up
    async def answer(self, offer: Offer) -> str:
        """Take the offer, gather, and return the answer SDP (ICE candidates included)."""
        from aiortc import RTCSessionDescription

        from .sctp import coalesce_sacks

        st = self.st
        st.sessions[self.id] = self
        st.sessions_gauge.inc()
        await self.pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
        if self.pc.sctp is not None:
            coalesce_sacks(self.pc.sctp)
        await prepare_gathering(self.pc, st.options.host_addresses)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        self._deadline = asyncio.get_running_loop().call_later(
            st.options.connect_timeout, self._check_connected)
        return one_fingerprint(str(self.pc.localDescription.sdp))

    def _check_connected(self) -> None:
        if self.pc.connectionState != "connected" and not self.closed:
            self.st.gateway.reject(self.meta.listener, "ice_timeout",
                                   f"session {self.id[:8]} not connected within "
                                   f"{self.st.options.connect_timeout:g}s", self.meta)
            self.st.gateway.spawn(self.close("ice_timeout"))

    def _on_state(self) -> None:
        s = self.pc.connectionState
        log.debug("webrtc_session id=%s state=%s", self.id[:8], s)
        if s in ("failed", "closed") and not self.closed:
            self.st.gateway.spawn(self.close("ice_failed" if s == "failed" else "peer_closed"))
        elif s == "connected":
            if not self.streams:
                self._arm_idle()
            sctp = self.pc.sctp
            if sctp is not None:  # a closed page: DTLS close_notify or SCTP abort
                sctp.transport.on("statechange", self._on_dtls_state)

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self.st.options.idle_timeout,
                                                            self._check_idle)

    def _check_idle(self) -> None:
        if not self.streams and not self.closed:
            self.st.gateway.spawn(self.close("idle"))

    def _on_dtls_state(self) -> None:
        sctp = self.pc.sctp
        if sctp is not None and sctp.transport.state in ("closed", "failed") and not self.closed:
            self.st.gateway.spawn(self.close("peer_closed"))

    # ------------------------------------------------------------------ streams
    def _on_channel(self, ch: Any) -> None:
        st, gw = self.st, self.st.gateway
        label = str(ch.label)
        if self.closed:
            ch.close()
            return
        if len(self.streams) >= st.options.max_channels:
            gw.reject(self.meta.listener, "too_many_channels",
                      f"session {self.id[:8]}: over {st.options.max_channels} channels",
                      self.meta)
            ch.close()
            return
        try:
            opt.parse_hostport(label, "data channel label")
        except ConfigError as e:
            gw.reject(self.meta.listener, "bad_label", str(e), self.meta)
            ch.close()
            return
        meta = StreamMeta(protocol="webrtc", listener=self.meta.listener,
                          local=self.meta.local, remote=self.meta.remote,
                          peer_id=self.meta.peer_id, user=self.meta.user,
                          target=label).copy_extra(self.meta)
        stream = channel_stream(ch, meta, st.options.max_message, st.options.max_unread)
        self.streams.add(stream)
        self.opened += 1
        st.channels_gauge.inc()
        gw.spawn(self._dial(stream, label))

    async def _dial(self, stream: MessageStream, label: str) -> None:
        gw = self.st.gateway
        try:
            up = await gw.dial(label, source=stream.meta)
        except DialError as e:
            gw.log_refusal(self.meta.listener, e.reason, "webrtc_dial_failed session=%s "
                           "target=%s reason=%s %s", self.id[:8], label, e.reason, e)
            stream.reset()
            self._forget(stream)
            return
        if self.closed or stream.is_lost:
            up.close()
            self._forget(stream)
            return
        gw.start_relay(stream, up, then=self._ended(stream))

    def _ended(self, stream: MessageStream) -> Callable[[StreamRecord], None]:
        return lambda _rec: self._forget(stream)

    def _forget(self, stream: MessageStream) -> None:
        if stream in self.streams:
            self.streams.discard(stream)
            self.st.channels_gauge.dec()
            if not self.streams and not self.closed:
                self._arm_idle()

    # ------------------------------------------------------------------ end
    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        st = self.st
        # a peer's SCTP packet that aiortc could not take ends the association as if closed
        bad = getattr(self.pc.sctp, "bad_packet", None) if reason == "peer_closed" else None
        if bad is not None:
            reason = "bad_packet"
            st.gateway.reject(self.meta.listener, reason, f"session {self.id[:8]}: {bad}",
                              self.meta)
        for timer in (self._deadline, self._idle):
            if timer is not None:
                timer.cancel()
        if st.sessions.pop(self.id, None) is not None:
            st.sessions_gauge.dec()
        st.ended.labels(reason).inc()
        for s in list(self.streams):
            s.reset()
            self._forget(s)
        log.info("webrtc_session_closed id=%s reason=%s channels=%d client=%s", self.id[:8],
                 reason, self.opened, self.meta.peer_id or self.meta.user or self.meta.remote)
        await self.pc.close()
