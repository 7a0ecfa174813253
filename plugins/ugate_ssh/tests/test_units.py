"""In-memory tests: sniffing, the auth policy, key lists, options, the channel adapter."""

from __future__ import annotations

import base64
import struct
import time

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ugate_core import ConfigError, Sniff
from ugate_ssh.auth import Accepted, AuthPolicy, Refused, evaluate, key_algorithm
from ugate_ssh.client import expected_for, key_matches, parse_section
from ugate_ssh.keys import load_key_list, mesh_id, parse_key_line, public_line
from ugate_ssh.server import parse_options, sniff


def test_sniff() -> None:
    assert sniff(b"SSH-2.0-OpenSSH_9.2\r\n") is Sniff.MATCH
    assert sniff(b"SSH-2.0-") is Sniff.MATCH
    assert sniff(b"SSH-2") is Sniff.NEED_MORE
    assert sniff(b"S") is Sniff.NEED_MORE
    assert sniff(b"SSH-1.5-old") is Sniff.NO
    assert sniff(b"\x05\x01\x00") is Sniff.NO
    assert sniff(b"GET / HTTP/1.1") is Sniff.NO


@given(st.binary(max_size=40))
def test_sniff_total(prefix: bytes) -> None:
    r = sniff(prefix)
    if prefix.startswith(b"SSH-2.0-"):
        assert r is Sniff.MATCH
    elif b"SSH-2.0-".startswith(prefix) and prefix:
        assert r is Sniff.NEED_MORE
    elif prefix:
        assert r is Sniff.NO


def blob(key: asyncssh.SSHKey | asyncssh.SSHCertificate) -> bytes:
    return base64.b64decode(key.export_public_key("openssh").split()[1]) \
        if isinstance(key, asyncssh.SSHKey) else base64.b64decode(
            key.export_certificate("openssh").split()[1])


def entry(key: asyncssh.SSHKey, ca: bool = False) -> object:
    return parse_key_line(("cert-authority " if ca else "") + public_line(key), "t")


ALICE = asyncssh.generate_private_key("ssh-ed25519")
MALLORY = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
CA = asyncssh.generate_private_key("ssh-ed25519")


def test_keys_ids_and_certificates() -> None:
    pol = AuthPolicy(keys=(entry(ALICE),), cas=(entry(CA, ca=True),),  # type: ignore[arg-type]
                     allow_ids=frozenset({mesh_id(MALLORY)}))
    v = evaluate(pol, "alice", blob(ALICE))
    assert isinstance(v, Accepted) and v.how == "authorized_key" and v.peer_id == mesh_id(ALICE)
    v = evaluate(pol, "x", blob(MALLORY))
    assert isinstance(v, Accepted) and v.how == "allow_id"
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    v = evaluate(pol, "x", blob(stranger))
    assert isinstance(v, Refused) and v.reason == "auth_unknown_key"
    assert mesh_id(stranger) in v.detail
    now = int(time.time())
    cert = CA.generate_user_certificate(stranger, "k", principals=["bob"])
    v = evaluate(pol, "bob", blob(cert))
    assert isinstance(v, Accepted) and v.how == "certificate" and v.peer_id == mesh_id(stranger)
    v = evaluate(pol, "carol", blob(cert))
    assert isinstance(v, Refused) and v.reason == "auth_cert_principal"
    old = CA.generate_user_certificate(stranger, "k", principals=["bob"],
                                       valid_after=now - 7200, valid_before=now - 3600)
    assert evaluate(pol, "bob", blob(old)).reason == "auth_cert_expired"  # type: ignore[union-attr]
    future = CA.generate_user_certificate(stranger, "k", principals=["bob"],
                                          valid_after=now + 3600, valid_before=now + 7200)
    assert evaluate(pol, "bob", blob(future)).reason == "auth_cert_not_yet_valid"  # type: ignore[union-attr]
    rogue = MALLORY.generate_user_certificate(stranger, "k", principals=["bob"])
    assert evaluate(pol, "bob", blob(rogue)).reason == "auth_cert_untrusted_ca"  # type: ignore[union-attr]
    host = CA.generate_host_certificate(stranger, "k", principals=["bob"])
    assert evaluate(pol, "bob", blob(host)).reason == "auth_cert_type"  # type: ignore[union-attr]
    anyone = CA.generate_user_certificate(stranger, "k", principals=[])
    assert evaluate(pol, "bob", blob(anyone)).reason == "auth_cert_principal"  # type: ignore[union-attr]
    # configured principals replace the user-name check
    pol2 = AuthPolicy(cas=pol.cas, principals=("ops",))
    ops = CA.generate_user_certificate(stranger, "k", principals=["ops"])
    assert isinstance(evaluate(pol2, "whoever", blob(ops)), Accepted)
    assert evaluate(pol2, "bob", blob(cert)).reason == "auth_cert_principal"  # type: ignore[union-attr]


@given(st.binary(max_size=300))
def test_evaluate_never_raises_on_garbage(data: bytes) -> None:
    v = evaluate(AuthPolicy(keys=(entry(ALICE),)), "u", data)  # type: ignore[arg-type]
    assert isinstance(v, Refused)


@given(st.text(max_size=20), st.binary(max_size=200))
def test_evaluate_garbage_after_valid_algorithm(alg: str, rest: bytes) -> None:
    a = alg.encode()
    data = struct.pack(">I", len(a)) + a + rest
    v = evaluate(AuthPolicy(cas=(entry(CA, ca=True),)), "u", data)  # type: ignore[arg-type]
    assert isinstance(v, Refused)
    for name in ("ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com"):
        n = name.encode()
        v = evaluate(AuthPolicy(), "u", struct.pack(">I", len(n)) + n + rest)
        assert isinstance(v, Refused)


def test_key_algorithm() -> None:
    assert key_algorithm(blob(ALICE)) == "ssh-ed25519"
    assert key_algorithm(b"\x00\x00\x00\x05ab") is None
    assert key_algorithm(b"") is None


def test_key_lists(tmp_path: object) -> None:
    from pathlib import Path

    p = Path(str(tmp_path)) / "keys"
    p.write_text(f"# comment\n\n{public_line(ALICE)} alice@laptop\n"
                 f'cert-authority,principals="ops,dev" {public_line(CA)} ca\n')
    keys = load_key_list(str(p), "x")
    assert [k.comment for k in keys] == ["alice@laptop", "ca"]
    assert keys[1].ca and keys[1].principals == ("ops", "dev")
    with pytest.raises(ConfigError, match=r"x\[0\].*not a valid public key"):
        load_key_list(["ssh-ed25519 AAAAnotakey"], "x")
    with pytest.raises(ConfigError, match=r"option 'from=\"10.0.0.0/8\"' is not supported"):
        load_key_list([f'from="10.0.0.0/8" {public_line(ALICE)}'], "x")
    with pytest.raises(ConfigError, match="cannot read"):
        load_key_list("/nonexistent/keys", "x")


def test_options_errors_name_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"listeners.s.max_channels: 0 is not an integer >= 1"):
        parse_options({"max_channels": 0}, "listeners.s")
    with pytest.raises(ConfigError, match=r"listeners.s.allow_ids\[0\]: 'not-an-id!'"):
        parse_options({"allow_ids": ["not-an-id!"]}, "listeners.s")
    with pytest.raises(ConfigError, match=r"did you mean 'authorized_keys'"):
        parse_options({"authorised_keys": []}, "listeners.s")
    parse_options({"users": {}}, "listeners.s")  # another protocol's key on a shared port
    s = parse_options({"allow_ids": [mesh_id(ALICE).lower() + ".m"]}, "l")
    assert s.policy.allow_ids == {mesh_id(ALICE)}


def test_section_errors() -> None:
    with pytest.raises(ConfigError, match=r"ssh.upstreams\[0\].address"):
        parse_section({"upstreams": [{"address": "nohost"}]}, set())
    with pytest.raises(ConfigError, match=r"ssh.upstreams\[0\].forward.22: '@nope'"):
        parse_section({"upstreams": [{"address": "h:1", "identity": "id:X",
                                      "forward": {"22": "@nope"}}]}, {"ssh"})
    with pytest.raises(ConfigError, match=r"ssh.upstreams\[0\].identity: missing"):
        parse_section({"upstreams": ["gw.example:2222"]}, {"ssh"})
    pid = mesh_id(ALICE)
    s = parse_section({"upstreams": [f"{pid.lower()}.m:22",
                                     {"address": "gw.example:2222", "identity": f"id:{pid}"}]},
                      {"ssh"})
    assert s.upstreams[0].forward == {22: "@ssh"}
    assert s.upstreams[1].identities[0].value == pid


def test_expected_identity_from_name_and_match() -> None:
    from ugate_core import ExpectedIdentity

    pid = mesh_id(ALICE)
    exp = expected_for((), f"{pid.lower()}.m", "svc.example")
    assert exp == (ExpectedIdentity("id", pid),)
    assert key_matches(ALICE, exp)
    assert not key_matches(MALLORY, exp)
    assert expected_for((), "gw.example") == ()


@given(st.text(max_size=200))
def test_key_line_parser_total(line: str) -> None:
    """Any text: a key entry, nothing (blank/comment), or a ConfigError naming the place."""
    try:
        parse_key_line(line, "here")
    except ConfigError as e:
        assert str(e).startswith("here: ")


@given(st.lists(st.text(max_size=60), max_size=4))
def test_id_list_total(values: list[str]) -> None:
    from ugate_ssh.keys import id_list

    try:
        ids = id_list(values, "allow_ids")
    except ConfigError as e:
        assert str(e).startswith("allow_ids[")
    else:
        assert all(i.isupper() or i.isdigit() for i in ids)


async def test_reverse_dial_refuses_a_forward_that_is_not_the_expected_identity() -> None:
    """ssh-reverse proves ``id`` only by comparing the forwarding client's verified ID with
    what the destination expects (a hosts entry may name another ID than its endpoint)."""
    from ugate_core import Destination, DialError, DialRequest, Endpoint, ExpectedIdentity
    from ugate_ssh.reverse import Forward, ReverseRegistry, dial_reverse

    reg = ReverseRegistry()
    conn: asyncssh.SSHServerConnection = None  # type: ignore[assignment]  # never reached
    reg.add(Forward(conn=conn, peer_id="AAAA", fqdn="aaaa.m", listen_host="", port=22))
    dest = Destination("aaaa.m", (Endpoint("aaaa.m"),), protocol="ssh-reverse",
                       identities=(ExpectedIdentity("id", "BBBB"),))
    req = DialRequest(None, dest, dest.endpoints[0], 22, 1.0)  # type: ignore[arg-type]
    with pytest.raises(DialError) as ei:
        await dial_reverse(reg, req)
    assert ei.value.reason == "identity"
    assert "id:AAAA" in str(ei.value)
