"""The text this plugin parses itself — request heads, paths — on arbitrary input: only the
plugin's own errors come out, never another exception (tokens: core's test_tokens.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import ProtocolError
from ugate_ws import target_of
from ugate_ws.h1 import parse_head


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parse_head_raises_only_protocol_errors(head: bytes) -> None:
    try:
        _method, target, headers = parse_head(head)
    except ProtocolError as e:
        assert e.reason == "bad_request"
    else:
        assert target.startswith("/") and all(k == k.lower() for k, _ in headers)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_target_of_raises_only_bad_target(tail: str) -> None:
    try:
        t = target_of("/.well-known/ugate/ws/" + tail)
    except ProtocolError as e:
        assert e.reason == "bad_target"
    else:
        assert t.rsplit(":", 1)[1].isdigit()
