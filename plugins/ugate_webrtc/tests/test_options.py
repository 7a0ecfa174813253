"""[webrtc] validation, offer checks: pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import ConfigError, ProtocolError
from ugate_webrtc.options import parse
from ugate_webrtc.peer import check_offer, one_fingerprint

from .fuzz_offer import OFFER as BROWSER_OFFER
from .fuzz_offer import TestOneInput


@pytest.mark.parametrize(("table", "words"), [
    ({"host_adresses": []}, "webrtc.host_adresses: unknown key"),
    ({"host_addresses": ["localhost"]}, "'localhost' is not an IP address"),
    ({"ice_servers": ["http://x"]}, "not a stun:, turn: or turns: URL"),
    ({"max_sdp": 10}, "webrtc.max_sdp: 10 is not an integer"),
    ({"dial_path": "x"}, "must start with '/'"),
])
def test_bad_values_name_the_key(table: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse(table)


def test_defaults_use_no_ice_server() -> None:
    o = parse({})
    assert o.ice_servers == () and o.host_addresses == ()
    s = parse({"ice_servers": ["stun:127.0.0.1:3478",
                               {"urls": "turn:127.0.0.1:3478", "username": "u",
                                "credential": "p"}]})
    assert [x.urls for x in s.ice_servers] == ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478"]


def test_token_secret_file_moved_to_core() -> None:
    with pytest.raises(ConfigError) as ei:
        parse({"token_secret_file": "/etc/ugate/webrtc-secret"})
    assert str(ei.value) == ("webrtc.token_secret_file: moved to [tokens] trusted_keys (signed "
                             "tokens: 'ugate token')")


OFFER = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
         "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=ice-ufrag:u\r\na=ice-pwd:p\r\n"
         "a=fingerprint:sha-256 AA\r\na=fingerprint:sha-512 BB\r\n"
         "a=candidate:1 1 udp 2122260223 9b36eaac-bb2e-49bb-bb78-21c41c499900.local 50000 typ "
         "host\r\na=candidate:2 1 udp 2122260223 127.0.0.1 50001 typ host\r\n")


def test_offer_checks_and_mdns_candidates() -> None:
    o = check_offer(OFFER)
    assert o.mdns_dropped == 1
    assert ".local" not in o.sdp and "127.0.0.1 50001" in o.sdp
    assert one_fingerprint(o.sdp).count("a=fingerprint:") == 1
    assert "sha-256 AA" in one_fingerprint(o.sdp)
    for bad, reason in [("x", "bad_sdp"), (OFFER.replace("webrtc-datachannel", "x"),
                                           "no_datachannel"),
                        (OFFER.replace("a=ice-pwd:p\r\n", ""), "bad_sdp"),
                        (OFFER + "garbage\r\n", "bad_sdp")]:
        with pytest.raises(ProtocolError) as e:
            check_offer(bad)
        assert e.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_is_an_offer_or_a_clear_400(text: str) -> None:
    """fuzz_offer.py's property under hypothesis: an Offer or ProtocolError (bad_sdp,
    no_datachannel), never another exception, for any text and for the offer with a line
    inserted anywhere."""
    TestOneInput(text.encode())
    lines = BROWSER_OFFER.split("\r\n")
    at = len(text) % len(lines)
    TestOneInput("\r\n".join([*lines[:at], text, *lines[at:]]).encode())
