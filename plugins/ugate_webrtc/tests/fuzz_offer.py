"""Fuzz target for the signaling's offer checks (``ugate_webrtc.peer.check_offer``) and the
answer's fingerprint filter (``one_fingerprint``).

With atheris installed: ``python fuzz_offer.py [libFuzzer flags]``. Without it:
``python fuzz_offer.py SECONDS`` mutates a browser-like offer with ``random`` for that long.
The property: any text gives an ``Offer`` or a ``ProtocolError`` with reason ``bad_sdp`` or
``no_datachannel`` (a 400 before any ICE work), never another exception; an accepted offer
keeps every line but the ``.local`` candidates it counts; ``one_fingerprint`` keeps only the
``sha-256`` fingerprint when there is one and changes nothing else.
"""

from __future__ import annotations

import random
import re
import sys

from ugate_core import ProtocolError
from ugate_core.testing import mutate_bytes, run_fuzz_target
from ugate_webrtc.peer import Offer, check_offer, one_fingerprint

OFFER = "\r\n".join([
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=msid-semantic: WMS",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2113937151 5d9f1a6e-2c3b-4c8e-9d3c-1c2b3a4d5e6f.local 50000 typ host",
    "a=candidate:2 1 udp 2113937151 127.0.0.1 50001 typ host",
    "a=ice-ufrag:abcd",
    "a=ice-pwd:0123456789abcdefghijklmn",
    "a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:"
    "67:89:AB:CD:EF:01:23:45:67:89",
    "a=fingerprint:sha-512 00:11",
    "a=setup:actpass",
    "a=mid:0",
    "a=sctp-port:5000",
    "a=max-message-size:262144",
    "",
])


def TestOneInput(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        offer = check_offer(text)
    except ProtocolError as e:
        assert e.reason in ("bad_sdp", "no_datachannel"), e.reason
    else:
        assert isinstance(offer, Offer)
        lines = text.replace("\r\n", "\n").split("\n")
        kept = offer.sdp.split("\r\n")
        assert len(kept) + offer.mdns_dropped == len(lines)
        assert all(re.search(r"\.local ", ln, re.IGNORECASE) for ln in lines if ln not in kept)
    out = one_fingerprint(text)
    before, after = text.split("\r\n"), out.split("\r\n")
    if any(ln.startswith("a=fingerprint:sha-256 ") for ln in before):
        assert [ln for ln in before if not ln.startswith("a=fingerprint:")] == \
            [ln for ln in after if not ln.startswith("a=fingerprint:")]
        assert all(ln.startswith("a=fingerprint:sha-256 ") for ln in after
                   if ln.startswith("a=fingerprint:"))
    else:
        assert out == text


def random_case(rng: random.Random) -> None:
    TestOneInput(OFFER.encode() if rng.random() < 0.02 else
                 mutate_bytes(rng, OFFER.encode(), max_len=4096))


if __name__ == "__main__":
    sys.exit(run_fuzz_target("fuzz_offer", TestOneInput, random_case))
