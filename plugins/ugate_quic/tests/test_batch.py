"""endpoint.Batch: the datagrams queued behind the one asyncio delivered, read in the same
callback, byte for byte and in order; none left is no wait."""

from __future__ import annotations

import asyncio
import socket

from ugate_quic.endpoint import BATCH, Batch


async def test_batch_reads_what_is_queued_then_stops() -> None:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    batch: list[Batch] = []
    calls: list[int] = []
    done = asyncio.Event()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            calls.append(len(got))
            got.append(data)
            got.extend(d for d, _a in batch[0].more())
            if len(got) >= BATCH + 10:
                done.set()

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    batch.append(Batch(transport))
    port = transport.get_extra_info("sockname")[1]
    sent = [bytes([i]) * (1000 + i) for i in range(BATCH + 10)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for d in sent:  # all queued before the loop reads any
            tx.sendto(d, ("127.0.0.1", port))
    await asyncio.wait_for(done.wait(), 5)
    assert got == sent
    assert calls == [0, BATCH]  # two callbacks: BATCH datagrams, then the 10 left
    assert list(batch[0].more()) == []  # nothing queued: returns at once
    transport.close()
    batch[0].close()
    assert list(batch[0].more()) == []
