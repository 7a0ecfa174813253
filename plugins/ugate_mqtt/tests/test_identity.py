"""Identity and policy: a device proves its mesh ID with a client certificate or with user name
= ID and password = an ES256 token from its key; only a rule lets it reach a broker. Attacks:
a fresh key no rule names, no key, a token for someone else's ID, an expired token. Also what
the broker receives: the CONNECT unchanged, the mesh token stripped, credentials rewritten."""

from __future__ import annotations

import json
import logging
import ssl
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import id_of_public_key
from ugate_core.testing import StartGateway, metric
from ugate_mqtt.codec import (
    MQTT5,
    MQTT311,
    P_REASON_STRING,
    Connect,
    encode_connack,
    encode_connect,
    parse_connack,
)
from ugate_mqtt.token import TokenError, b64url, mint, verify

from .conftest import (
    Broker,
    FakeBroker,
    Sub,
    connack_for,
    gateway_config,
    pub,
    pub_and_receive,
)
from .fuzz_token import DEEP, WIDE
from .fuzz_token import TestOneInput as check_any_password

KEY = ec.generate_private_key(ec.SECP256R1())
DEVICE = id_of_public_key(KEY)

POLICY = f"""
[[rules]]
clients = ["id:{DEVICE}"]
to = ["broker.test:1883"]
"""


def mesh_gateway(broker: str, options: str = "") -> str:
    # beyond loopback: only a rule lets a client reach the broker
    return gateway_config(broker, listen="0.0.0.0:0", extra=POLICY, options=options)


def with_token(level: int, key: ec.EllipticCurvePrivateKey = KEY, **kw: object) -> Connect:
    user, pw = mint(key, **kw)  # type: ignore[arg-type]
    return Connect(level=level, client_id="dev1", username=user, password=pw.encode())


@pytest.mark.parametrize("level", [MQTT311, MQTT5])
async def test_token_admits_the_device_and_is_stripped(start_gateway: StartGateway,
                                                       fake_broker: FakeBroker,
                                                       level: int) -> None:
    gw = await start_gateway(mesh_gateway(fake_broker.address))
    c = with_token(level)
    ack, rest = await connack_for(gw.port("mqtt"), c)
    assert ack == encode_connack(level, 0) and rest == b"<open>"
    # the broker got the CONNECT without the mesh token (credentials = "auto")
    assert fake_broker.connects == [encode_connect(Connect(level=level, client_id="dev1"))]
    assert metric(gw, "ugate_mqtt_connects_total", listener="mqtt",
                  version={4: "3.1.1", 5: "5.0"}[level], result="ok") == 1


@pytest.mark.parametrize(("level", "code"), [(MQTT311, 5), (MQTT5, 0x87)])
async def test_fresh_key_and_no_key_are_not_authorized(start_gateway: StartGateway,
                                                       fake_broker: FakeBroker, level: int,
                                                       code: int) -> None:
    gw = await start_gateway(mesh_gateway(fake_broker.address))
    port = gw.port("mqtt")
    fresh = ec.generate_private_key(ec.SECP256R1())  # verifies, but no rule names it
    for c in (with_token(level, fresh), Connect(level=level, client_id="anon"),
              Connect(level=level, client_id="pw", username="alice", password=b"secret")):
        ack, rest = await connack_for(port, c)
        assert parse_connack(ack, level)[0] == code, c
        assert rest == b""  # closed after the CONNACK
    assert fake_broker.connects == []
    assert metric(gw, "ugate_dial_errors_total", reason="denied") == 3
    v = {4: "3.1.1", 5: "5.0"}[level]
    assert metric(gw, "ugate_mqtt_connects_total", listener="mqtt", version=v,
                  result="not_authorized") == 3


def forged(user_key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
           jwk_of: ec.EllipticCurvePrivateKey) -> bytes:
    """A token naming ``user_key``'s ID, carrying ``jwk_of``'s public key, signed by
    ``signer``."""
    header = mint(jwk_of)[1].split(".")[0]
    claims = json.dumps({"aud": "mqtt", "iat": int(time.time()), "exp": int(time.time()) + 60,
                         "sub": id_of_public_key(user_key)}).encode()
    signing = f"{header}.{b64url(claims)}"
    r, s = decode_dss_signature(signer.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}".encode()


@pytest.mark.parametrize(("level", "code"), [(MQTT311, 4), (MQTT5, 0x86)])
async def test_forged_and_expired_tokens_are_bad_credentials(
        start_gateway: StartGateway, fake_broker: FakeBroker, level: int, code: int) -> None:
    gw = await start_gateway(mesh_gateway(fake_broker.address))
    port = gw.port("mqtt")
    attacker = ec.generate_private_key(ec.SECP256R1())
    cases = {
        # the attacker's own key in the header, signed by it, for the device's ID
        "other key": forged(KEY, attacker, attacker),
        # the device's public key in the header, signed by the attacker
        "bad signature": forged(KEY, attacker, KEY),
        "expired": mint(KEY, now=time.time() - 4000, lifetime=300)[1].encode(),
        "too long-lived": mint(KEY, lifetime=86400 * 2)[1].encode(),
        "other audience": mint(KEY, audience="kafka")[1].encode(),
        # inputs that once raised past the check (fuzz_token.py): a refusal, not a drop
        "nested header": DEEP.encode(),
        "jwk beyond ASCII": WIDE.encode(),
    }
    for name, pw in cases.items():
        c = Connect(level=level, client_id="dev1", username=DEVICE, password=pw)
        ack, rest = await connack_for(port, c)
        got, _sp, props = parse_connack(ack, level)
        assert (got, rest) == (code, b""), name
        if level == MQTT5:  # the reason string says no more than the code
            assert props == ((P_REASON_STRING, "bad user name or password"),)
    assert fake_broker.connects == []
    assert metric(gw, "ugate_rejections_total", listener="mqtt", reason="bad_token") == 7


def test_token_verify_errors_name_the_cause() -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    for pw, text in (
        (forged(KEY, attacker, attacker), f"the token's key is not the key of {DEVICE}"),
        (forged(KEY, attacker, KEY), f"token signature does not verify with the key of "
                                     f"{DEVICE}"),
        (mint(KEY, now=1000.0)[1].encode(), "token expired"),
        (mint(KEY, audience="x")[1].encode(), "token audience 'x' is not 'mqtt'"),
        (b"eyJ.e30.", "token header is not JSON"),
    ):
        with pytest.raises(TokenError) as ei:
            verify(DEVICE, pw, audience="mqtt", max_lifetime=3600)
        assert text in str(ei.value)
    user, pw = mint(KEY)
    assert verify(user.lower(), pw.encode(), audience="mqtt", max_lifetime=3600) == DEVICE


async def test_mtls_client_certificate_is_the_identity(start_gateway: StartGateway,
                                                       fake_broker: FakeBroker) -> None:
    device = await start_gateway('[admin]\nlisten = ""\n')  # only for its mesh certificate
    rules = f"""
[[rules]]
clients = ["id:{device.identity.id}"]
to = ["broker.test:1883"]
"""
    cfg = gateway_config(fake_broker.address, listen="0.0.0.0:0", protocols='["*"]',
                         extra=rules)
    gw = await start_gateway(cfg)
    port = gw.port("mqtt")
    c = Connect(level=MQTT5, client_id="tls-dev")
    ack, rest = await connack_for(port, c, device.identity.client_ssl_context(["mqtt"]))
    assert (ack, rest) == (encode_connack(MQTT5, 0), b"<open>")
    assert fake_broker.connects == [encode_connect(c)]  # unchanged
    # the same client without its certificate is nobody
    plain = ssl.create_default_context()
    plain.check_hostname = False
    plain.verify_mode = ssl.CERT_NONE
    plain.set_alpn_protocols(["mqtt"])
    ack, rest = await connack_for(port, c, plain)
    assert (parse_connack(ack, MQTT5)[0], rest) == (0x87, b"")
    # a token for another ID on a certificate's connection is refused
    ack, _ = await connack_for(port, with_token(MQTT5),
                               device.identity.client_ssl_context(["mqtt"]))
    assert parse_connack(ack, MQTT5)[0] == 0x86


async def test_credentials_forward_and_rewrite(start_gateway: StartGateway,
                                               fake_broker: FakeBroker) -> None:
    c = Connect(level=MQTT311, client_id="x", username="alice", password=b"pw")
    gw = await start_gateway(gateway_config(fake_broker.address))
    await connack_for(gw.port("mqtt"), c)
    gw2 = await start_gateway(gateway_config(
        fake_broker.address, options='credentials = "rewrite"\nbroker_username = "svc"\n'
        'broker_password = "s3cret"'))
    await connack_for(gw2.port("mqtt"), c)
    gw3 = await start_gateway(gateway_config(fake_broker.address,
                                             options='credentials = "strip"'))
    await connack_for(gw3.port("mqtt"), c)
    assert fake_broker.connects == [
        encode_connect(c),
        encode_connect(Connect(level=MQTT311, client_id="x", username="svc",
                               password=b"s3cret")),
        encode_connect(Connect(level=MQTT311, client_id="x")),
    ]


async def test_require_identity_with_mosquitto_pub(start_gateway: StartGateway,
                                                   mosquitto: Broker, tmp_path: Path) -> None:
    gw = await start_gateway(gateway_config(mosquitto.address,
                                            options="require_identity = true"))
    f = tmp_path / "m"
    f.write_bytes(b"x")
    port = gw.port("mqtt")
    for v, rc, text in (("31", 5, "Connection Refused: not authorised."),
                        ("311", 5, "Connection Refused: not authorised."),
                        ("5", 135, "Connection error: Not authorized")):
        res = await pub(port, "t", v, f)
        assert res.returncode == rc and text in res.stderr.decode(), (v, res)
    # a token makes the same client someone (a loopback listener: then anything goes)
    user, pw = mint(KEY)
    res = await pub(port, "t", "311", f, "-u", user, "-P", pw)
    assert res.returncode == 0, res.stderr
    res = await pub(port, "t", "311", f, "-u", user, "-P", pw[:-4] + "AAAA")
    assert (res.returncode, "bad user name or password" in res.stderr.decode()) == (4, True)
    assert metric(gw, "ugate_rejections_total", listener="mqtt",
                  reason="identity_required") == 3


async def test_predial_is_used_only_when_the_connect_changes_nothing(
        start_gateway: StartGateway, fake_broker: FakeBroker,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "ugate.mqtt")
    gw = await start_gateway(gateway_config(fake_broker.address, options="predial = true"))
    port = gw.port("mqtt")
    plain = Connect(level=MQTT311, client_id="early")
    assert await connack_for(port, plain, linger=0.01) == (encode_connack(MQTT311, 0),
                                                           b"<open>")
    # a token changes who the client is: the early connection is closed unused, and the
    # broker gets the CONNECT (without the token) on a connection dialed for the device
    assert (await connack_for(port, with_token(MQTT5), linger=0.01))[0] == encode_connack(
        MQTT5, 0)
    # a forged token: refused, and the early connection never carries a byte
    bad = Connect(level=MQTT5, client_id="dev1", username=DEVICE,
                  password=mint(KEY, audience="other")[1].encode())
    assert parse_connack((await connack_for(port, bad))[0], MQTT5)[0] == 0x86
    assert fake_broker.connects == [encode_connect(plain),
                                    encode_connect(Connect(level=MQTT5, client_id="dev1"))]
    lines = [r.getMessage() for r in caplog.records if r.name == "ugate.mqtt"]
    assert [ln.rsplit(" ", 1)[1] for ln in lines] == ["predial=used", "predial=discarded"]
    assert f"peer={DEVICE}" in lines[1]


def test_predial_needs_a_fixed_broker() -> None:
    from ugate_core import ConfigError
    from ugate_mqtt.options import parse_options

    with pytest.raises(ConfigError) as ei:
        parse_options({"predial": True}, "listeners.m")
    assert str(ei.value) == ("listeners.m.predial: predial needs a fixed broker (the broker "
                             "key)")


async def test_a_wildcard_rule_never_reaches_a_loopback_broker(start_gateway: StartGateway,
                                                               fake_broker: FakeBroker) -> None:
    wide = f'[[rules]]\nclients = ["id:{DEVICE}"]\nto = ["*"]\n'
    gw = await start_gateway(gateway_config(fake_broker.address, listen="0.0.0.0:0",
                                            extra=wide))
    ack, rest = await connack_for(gw.port("mqtt"), with_token(MQTT311))
    assert (ack, rest) == (b"\x20\x02\x00\x05", b"")  # not authorised
    assert fake_broker.connects == []
    assert metric(gw, "ugate_mqtt_connects_total", listener="mqtt", version="3.1.1",
                  result="not_authorized") == 1


async def test_mosquitto_clients_with_a_mesh_certificate(start_gateway: StartGateway,
                                                         mosquitto: Broker, subs: list[Sub],
                                                         tmp_path: Path) -> None:
    """mosquitto_pub/_sub speak TLS with ALPN mqtt and the device's mesh certificate on the
    shared port; its key's ID is who it is, and a rule lets it reach the broker."""
    from ugate_core.certs import anchor_pem

    device = await start_gateway('[admin]\nlisten = ""\n')  # its state holds a mesh key
    rules = (f'[[rules]]\nclients = ["id:{device.identity.id}"]\n'
             'to = ["broker.test:1883"]\n')
    gw = await start_gateway(gateway_config(
        mosquitto.address, listen="0.0.0.0:0", protocols='["*"]',
        options='terminate = ["localhost"]', extra=rules))
    (tmp_path / "ca.pem").write_bytes(anchor_pem())
    (tmp_path / "cert.pem").write_bytes(device.identity.cert_pem())
    (tmp_path / "key.pem").write_bytes(device.identity.private_key_pem())
    tls = ["-h", "localhost", "--cafile", str(tmp_path / "ca.pem"), "--insecure",
           "--tls-alpn", "mqtt"]
    mesh = [*tls, "--cert", str(tmp_path / "cert.pem"), "--key", str(tmp_path / "key.pem")]
    port = gw.port("mqtt")
    await pub_and_receive(port, "t/tls", b"inside TLS \x00\xff", tmp_path, subs, *mesh)
    # the same client without its certificate is nobody, and no rule names nobody
    f = tmp_path / "m"
    f.write_bytes(b"x")
    res = await pub(port, "t/tls", "311", f, *tls)
    assert (res.returncode, "not authorised" in res.stderr.decode()) == (5, True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_password_is_the_id_or_a_token_error(data: bytes) -> None:
    """fuzz_token.py's property under hypothesis, also for the bytes behind ``eyJ``."""
    check_any_password(data)
    check_any_password(b"eyJ" + data)
