"""Delayed, coalesced SCTP SACKs for the aiortc transports this plugin creates.

aiortc's ``RTCSctpTransport`` answers every packet that carries DATA with a SACK of its own,
each DTLS-encrypted and sent with its own ``sendto``: during a bulk transfer that was 15,581
SACKs for 15,741 packets and about 30% of the gateway's CPU (``PERFORMANCE.md``).

RFC 9260 6.2 lets a receiver delay the SACK: it SHOULD acknowledge at least every second
packet, and within 200 ms of the first unacknowledged DATA. :class:`CoalescingSctpTransport`
waits far less than 200 ms, and trades the every-second-packet rule for one SACK per burst:

* a packet of new, in-order DATA is acknowledged **once the receive path goes quiet**: after
  a loop iteration in which no packet with DATA was handled (a task started by the first
  unacknowledged packet checks). uvloop reads every datagram waiting on the socket in one
  wake-up and aiortc's DTLS task handles all the queued ones before it yields, so a burst
  read at once gets one SACK; asyncio's own loop reads one datagram per iteration, and the
  same check still covers a run of back-to-back packets. A lone packet (the first after idle,
  a DCEP OPEN) is acknowledged two loop iterations later: microseconds, not a timer;
* and at the latest on the :data:`SACK_EVERY`-th unacknowledged packet: with 16, the bench's
  SACKs fell from ~1 to ~0.1 per DATA packet and bulk throughput doubled (``PERFORMANCE.md``);
  the cap keeps a long burst from going unacknowledged;
* **at once**, with no delay, as aiortc did: a packet that leaves a gap (out-of-order TSNs;
  RFC 9260 6.7 asks for a SACK on every packet while gaps remain), that carries a duplicate
  TSN (6.2), a FORWARD TSN (RFC 3758), or a DATA chunk with the I bit (SACK-IMMEDIATELY,
  RFC 7053), or that arrives while a gap is open (the one that fills it too); the pending
  acknowledgement goes with it.

A pending SACK also rides in the packet of a small outgoing DATA chunk (at most
:data:`BUNDLE_DATA_MAX` bytes; RFC 9260 6.10 allows the bundle, the SACK goes first): the DCEP
ACK that opens a channel carries the SACK for the OPEN, one DTLS record and one ``sendto``
instead of two. When the peer closes a channel (an Outgoing SSN Reset Request), aiortc answers
it and sends its own reset request for the stream one loop iteration later, each in a packet of
its own; here the response and the request share one RE-CONFIG chunk (RFC 6525 3.1 lists that
pair among the allowed combinations), which waits like a SACK: for the end of the batch, or for
a small DATA chunk to ride with. A client that closes a channel and opens the next at once (the
close's RE-CONFIG and the next OPEN arrive together) gets the SACK, the RE-CONFIG and the DCEP
ACK in one packet: one DTLS record and one ``sendto`` per channel opened and closed, where aiortc
sent four. Our request is built with the answer, not an iteration later, so a channel this side
closes in between is reset by the next request, once the peer has answered this one (one
request outstanding, RFC 6525 5.1.1), where aiortc would have put both streams in one.

And the subclass keeps aiortc's message reassembly but skips its per-chunk scan when no message
can have completed (:class:`_InboundStream`).

Only the transports of this plugin's peer connections are switched to the subclass
(:func:`coalesce_sacks`, right after aiortc creates them, before any DATA), so other aiortc
users in the process keep aiortc's behaviour. It overrides private methods of aiortc
(``RTCSctpTransport._handle_data``, ``_receive_chunk``, ``_send_sack``, ``_send_chunk``,
``_get_inbound_stream``, ``_receive_reconfig_param``, and calls ``_transmit_reconfig``;
``InboundStream.add_chunk``, ``pop_messages``, ``prune_chunks``)
and reads its SACK state (``_sack_needed``, ``_sack_misordered``, ``_sack_duplicates``) and
packet header fields (``_local_port``, ``_remote_port``, ``_remote_verification_tag``):
``pyproject.toml`` pins aiortc to the releases checked (1.9 to 1.16 have the same methods),
and ``tests/test_sctp.py`` fails when those names or signatures change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from struct import pack
from typing import Any

from aiortc.rtcsctptransport import (
    SCTP_DATA_LAST_FRAG,
    DataChunk,
    ForwardTsnChunk,
    InboundStream,
    ReconfigChunk,
    RTCSctpTransport,
    SackChunk,
    StreamResetOutgoingParam,
)
from google_crc32c import value as crc32c

#: acknowledge at least every this many packets of DATA. RFC 9260's "every second packet"
#: (2) kept half the SACKs and gave 0.25-0.29x of node-datachannel in the bench, 16 and 64 gave
#: 0.4-0.5x; a sender's slow start grows its window per SACK (RFC 9260 7.2.1), so no more
SACK_EVERY = 16
#: a pending SACK rides in the packet of an outgoing DATA chunk of at most this many bytes (a
#: DCEP ACK, a short message), which leaves room for it under any path MTU
BUNDLE_DATA_MAX = 512
#: a bundle's chunks in bytes, at most: aiortc's largest SCTP packet (1,189 bytes, what
#: Chromium accepts) less the 12-byte common header, so a bundle is never a larger datagram
BUNDLE_MAX = 1189 - 12
#: the DATA chunk's I bit (RFC 7053): the sender asks for a SACK without delay
_SACK_IMMEDIATELY = 0x08


class _InboundStream(InboundStream):
    """aiortc's reassembly, without its scan when nothing can have completed.

    aiortc's ``pop_messages`` walks the stream's reassembly list from the start for every DATA
    chunk, so a 64 KiB message (~55 fragments) costs ~1,500 chunk visits: ~20% of the
    gateway's CPU in the bulk profile once the SACKs were coalesced. A message completes only
    with its last fragment; so when the new chunk went to the end of the list, is not a last
    fragment, and the previous ``pop_messages`` ran to its end with nothing changed since
    (``prune_chunks``, from a FORWARD TSN, may unblock a message), there is nothing to pop.
    """

    def __init__(self) -> None:
        super().__init__()
        self._ug_settled = True  # the last pop_messages ran to its end, nothing pruned since
        self._ug_skip = False

    def add_chunk(self, chunk: DataChunk) -> None:
        super().add_chunk(chunk)
        self._ug_skip = (self._ug_settled and self.reassembly[-1] is chunk
                         and not chunk.flags & SCTP_DATA_LAST_FRAG)

    def pop_messages(self) -> Iterator[tuple[int, int, bytes]]:
        if self._ug_skip:
            self._ug_skip = False
            return iter(())
        return self._ug_pop()

    def _ug_pop(self) -> Iterator[tuple[int, int, bytes]]:
        self._ug_settled = False
        yield from super().pop_messages()
        self._ug_settled = True

    def prune_chunks(self, tsn: int) -> int:
        self._ug_settled = self._ug_skip = False
        return super().prune_chunks(tsn)


class CoalescingSctpTransport(RTCSctpTransport):
    """``RTCSctpTransport`` that delays and coalesces SACKs (see the module docstring).

    ``sacks_sent`` and ``data_packets`` count SACKs sent and packets received with DATA.
    """

    #: packets of DATA received since the last SACK
    _ug_unacked = 0
    #: the packet being handled asks for a SACK at once
    _ug_now = False
    #: the packet being handled carries DATA
    _ug_data = False
    _ug_in_packet = False
    _ug_flush: asyncio.Task[None] | None = None
    #: chunks aiortc's _send_sack handed to _send_chunk while a SACK is built for bundling
    _ug_capture: list[Any] | None = None
    #: a RE-CONFIG chunk waiting for the end of the batch or the next small DATA
    _ug_ctrl: ReconfigChunk | None = None
    sacks_sent = 0
    data_packets = 0
    #: why the peer's packet ended the association (``None``: none did)
    bad_packet: str | None = None

    def _get_inbound_stream(self, stream_id: int) -> InboundStream:
        stream = self._inbound_streams.get(stream_id)
        if stream is None:
            stream = self._inbound_streams[stream_id] = _InboundStream()
        return stream

    async def _handle_data(self, data: bytes) -> None:
        # a packet after a gap is acknowledged at once, the one that fills it included
        self._ug_now = bool(self._sack_misordered)
        self._ug_data = False
        self._ug_in_packet = True
        try:
            await super()._handle_data(data)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:
            # aiortc trusts parts of a well-formed packet: a DCEP OPEN for a stream already
            # open or an ACK for none fails an assert, a label that is not UTF-8 raises
            # UnicodeDecodeError. Either ended the association with a traceback logged per
            # packet; now it ends as a lost connection, and the session says why (one line)
            self.bad_packet = f"{type(e).__name__}: {e}"[:200]
            raise ConnectionError(f"bad SCTP packet from the peer: {self.bad_packet}") from None
        finally:
            self._ug_in_packet = False

    async def _receive_chunk(self, chunk: Any) -> None:
        if isinstance(chunk, DataChunk):
            if not self._ug_data:
                self._ug_data = True
                self.data_packets += 1
            if chunk.flags & _SACK_IMMEDIATELY:
                self._ug_now = True
        elif isinstance(chunk, ForwardTsnChunk):
            self._ug_now = True
        await super()._receive_chunk(chunk)

    async def _send_sack(self) -> None:
        if (self._ug_in_packet and not self._ug_now and not self._sack_misordered
                and not self._sack_duplicates):
            if self._ug_data:
                self._ug_unacked += 1
            # a packet without DATA (the peer's own SACK) leaves the pending SACK pending
            if self._ug_unacked < SACK_EVERY:
                self._ug_schedule_flush()
                return
        await self._ug_send_sack_now()

    async def _send_chunk(self, chunk: Any) -> None:
        if self._ug_capture is not None:
            self._ug_capture.append(chunk)
            return
        if isinstance(chunk, DataChunk) and len(chunk.user_data) <= BUNDLE_DATA_MAX:
            if self._sack_needed or self._ug_ctrl is not None:
                await self._ug_send_bundle(chunk)
                return
        elif self._ug_ctrl is not None:  # a large or control chunk: what waits goes first
            await self._ug_send_bundle(None)
        await super()._send_chunk(chunk)

    async def _ug_send_bundle(self, data: Any) -> None:
        """One packet: the pending SACK, the waiting RE-CONFIG, then ``data`` (RFC 9260 6.10:
        control chunks ahead of DATA), each part only if there is one."""
        chunks: list[Any] = []
        if self._sack_needed:
            self._ug_capture = []
            try:
                await self._ug_send_sack_now()
            finally:
                captured, self._ug_capture = self._ug_capture, None
            if len(captured) == 1 and isinstance(captured[0], SackChunk):
                chunks += captured
            else:  # not a lone SACK: aiortc changed, send as it built them
                for c in captured:
                    await super()._send_chunk(c)
        if self._ug_ctrl is not None:
            chunks.append(self._ug_ctrl)
            self._ug_ctrl = None
        if data is not None:
            chunks.append(data)
        body = b"".join(bytes(c) for c in chunks) if len(chunks) > 1 else b""
        if len(body) > BUNDLE_MAX:  # a SACK with many gap blocks: one packet each
            for c in chunks:
                await super()._send_chunk(c)
        elif body:
            head = pack("!HHL", self._local_port, self._remote_port,
                        self._remote_verification_tag)
            await self.transport._send_data(
                head + pack("<L", crc32c(head + b"\0\0\0\0" + body)) + body)
        elif chunks:
            await super()._send_chunk(chunks[0])

    async def _receive_reconfig_param(self, param: Any) -> None:
        if not isinstance(param, StreamResetOutgoingParam) or self._ug_capture is not None:
            await super()._receive_reconfig_param(param)
            return
        # the peer closed streams: aiortc answers, closes the channels and queues its own
        # reset request (sent by a task one iteration later, which then finds nothing to do)
        self._ug_capture = []
        try:
            await super()._receive_reconfig_param(param)
            await self._transmit_reconfig()
        finally:
            captured, self._ug_capture = self._ug_capture, None
        if len(captured) == 2 and all(isinstance(c, ReconfigChunk) and len(c.params) == 1
                                      for c in captured):
            both = ReconfigChunk()
            both.params = [captured[0].params[0], captured[1].params[0]]
            captured = [both]
        if (self._ug_in_packet and len(captured) == 1
                and isinstance(captured[0], ReconfigChunk)):
            # it waits for the end of the batch, or for the next small DATA (the DCEP ACK of
            # a channel opened in the same batch), to share its packet and SACK
            if self._ug_ctrl is not None:  # one RE-CONFIG chunk per packet: the older goes now
                await self._ug_send_bundle(None)
            self._ug_ctrl = captured[0]
            self._ug_schedule_flush()
            return
        for c in captured:  # anything else goes as aiortc built it, in its order
            await self._send_chunk(c)

    async def _ug_send_sack_now(self) -> None:
        self._ug_unacked = 0
        self.sacks_sent += 1
        await super()._send_sack()

    def _ug_schedule_flush(self) -> None:
        if self._ug_flush is None:
            self._ug_flush = asyncio.get_running_loop().create_task(self._ug_flush_pending())

    async def _ug_flush_pending(self) -> None:
        """The end-of-batch packet: the SACK and the RE-CONFIG the batch left waiting."""
        try:
            # wait for the receive path to go quiet for one loop iteration: uvloop reads every
            # queued datagram in one wake-up, asyncio's own loop one per iteration
            seen = -1
            while seen != self.data_packets:
                seen = self.data_packets
                await asyncio.sleep(0)
            if self._sack_needed or self._ug_ctrl is not None:
                await self._ug_send_bundle(None)
        except ConnectionError:  # DTLS closed under it: nothing left to send
            pass
        finally:
            self._ug_flush = None


def coalesce_sacks(sctp: RTCSctpTransport) -> None:
    """Switch ``sctp`` (aiortc's own class, before its association starts) to
    :class:`CoalescingSctpTransport`; a transport already switched is left as it is."""
    if type(sctp) is RTCSctpTransport:
        sctp.__class__ = CoalescingSctpTransport
    elif not isinstance(sctp, CoalescingSctpTransport):
        raise TypeError(f"coalesce_sacks: unexpected SCTP transport {type(sctp).__name__}")
