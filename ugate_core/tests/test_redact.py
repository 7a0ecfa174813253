"""What /config shows: the config's shape, never its secrets."""

from __future__ import annotations

import json

from ugate_core.redact import REDACTED, redact, redact_value, secret_key

PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY-----\n"


def test_secret_key_names() -> None:
    for name in ("password", "users", "token", "api_key", "apiKey", "client-secret", "psk",
                 "PRIVATE_KEY", "credentials", "authorization", "db_passwd"):
        assert secret_key(name), name
    for name in ("listen", "token_file", "users_file", "key_type", "public_key", "keepalive",
                 "authorized_keys", "ca_keys", "monkey", "secret-service.example", "passthrough",
                 "user", "identity"):
        assert not secret_key(name), name


def test_values_that_look_like_credentials() -> None:
    assert redact_value(PEM) == REDACTED
    assert redact_value("Bearer abc.def") == REDACTED
    assert redact_value("basic YWxpY2U6cHc=") == REDACTED
    assert redact_value("redis://alice:s3cret@db.test:6379/0") == (
        f"redis://alice:{REDACTED}@db.test:6379/0")
    assert redact_value("alice:hunter22") == REDACTED
    for keep in ("127.0.0.1:15008", "echo.test:8080", "[::1]:80", "id:ABCDEFGHIJKLMNOP",
                 "spiffe://td/ns/x/sa/y", "http://web.test/path", "tcp", "/etc/ugate/token"):
        assert redact_value(keep) == keep


def test_redact_keeps_shape_and_drops_secrets() -> None:
    raw = {
        "admin": {"listen": "127.0.0.1:0", "token_file": "/run/admin.token"},
        "listeners": {
            "socks": {"listen": "127.0.0.1:1080", "protocols": ["socks5"],
                      "users": {"alice": "pw-alice-1", "bob": "pw-bob-2"}},
            "web": {"listen": "127.0.0.1:8080", "users": [{"name": "carol", "password": "x1"}]},
        },
        "hosts": {"secret-service.example": {"endpoints": ["10.0.0.1:80"], "protocol": "tcp"}},
        "myplugin": {"nested": {"api_token": "t0k", "psk": ["a", "b"], "port": 3,
                                "header": "Bearer zzz", "key": PEM}},
    }
    out = redact(raw)
    text = json.dumps(out)
    for secret in ("pw-alice-1", "pw-bob-2", "x1", "t0k", "zzz", "PRIVATE KEY"):
        assert secret not in text
    socks = out["listeners"]["socks"]
    assert socks["users"] == {"alice": REDACTED, "bob": REDACTED}  # names stay visible
    assert socks["protocols"] == ["socks5"] and socks["listen"] == "127.0.0.1:1080"
    assert out["listeners"]["web"]["users"] == [{"name": REDACTED, "password": REDACTED}]
    assert out["admin"] == raw["admin"]
    assert out["hosts"] == raw["hosts"]
    assert out["myplugin"]["nested"]["psk"] == [REDACTED, REDACTED]
    assert out["myplugin"]["nested"]["port"] == 3
    assert raw["listeners"]["socks"]["users"]["alice"] == "pw-alice-1"  # a copy, not in place
