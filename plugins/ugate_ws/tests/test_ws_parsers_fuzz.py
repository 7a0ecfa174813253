"""The text this plugin parses itself — request heads, paths, tokens — on arbitrary input:
only the plugin's own errors come out, never another exception."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import AuthError, ProtocolError, id_of_public_key
from ugate_ws import make_token, target_of, verify_token
from ugate_ws.h1 import parse_head

KEY = ed25519.Ed25519PrivateKey.generate()
KEYS = {id_of_public_key(KEY.public_key()): KEY.public_key()}


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


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.integers(min_value=0, max_value=200))
def test_verify_token_raises_only_auth_errors(noise: str, cut: int) -> None:
    good = make_token(KEY, "alice", "aud", 60)
    for tok in (noise, good[:cut] + noise, noise + good[cut:]):
        try:
            assert verify_token(tok, KEYS, "aud", 3600) == "alice"
        except AuthError as e:
            assert e.reason.startswith("token_")
