"""``[identity] cert_file``: a CA-issued chain + key from files, presented on the ``tls``
listener and dialer and on the shared port's TLS front, read again when the files change;
SPIFFE IDs believed only when they chain to ``trust_bundles``, never to the public anchor."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ugate_core import ConfigError, DialError, ExpectedIdentity, Gateway, StreamRecord, hookimpl
from ugate_core.certs import anchor_certificate, anchor_pem, issue_leaf
from ugate_core.identity import (
    FileIdentitySource,
    IdentityError,
    generate_key,
    load_trust_bundles,
)
from ugate_core.ids import id_of_public_key
from ugate_core.testca import TestCA, write_files
from ugate_core.testing import StartGateway, metric
from ugate_core.verify import verified_spiffe, verify_peer

TD = "cluster.local"
SA_A = f"spiffe://{TD}/ns/default/sa/a"
SA_B = f"spiffe://{TD}/ns/default/sa/b"


class Recorder:
    def __init__(self) -> None:
        self.records: list[StreamRecord] = []

    @hookimpl
    def ugate_stream_opened(self, gateway: Gateway, record: StreamRecord) -> None:
        self.records.append(record)


def identity_section(chain: Path, key: Path, ca: TestCA, extra: str = "") -> str:
    return f"""
[identity]
cert_file = "{chain}"
key_file = "{key}"
trust_bundles = ["{ca.root_file}"]
{extra}
"""


def listener(target: str, extra: str = "") -> str:
    return f"""
[admin]
listen = ""
[listeners.mtls]
listen = "127.0.0.1:0"
protocols = ["tls"]
target = "{target}"
{extra}
"""


def dialer(name: str, port: int, identity: str) -> str:
    return f"""
[admin]
listen = ""
[routing]
direct = false
[discovery]
order = ["local"]
[hosts."{name}"]
endpoints = ["127.0.0.1:{port}"]
protocol = "tls"
identity = ["{identity}"]
"""


async def presented(port: int, ca: TestCA, sni: str | None = None,
                    cert: tuple[Path, Path] | None = None) -> x509.Certificate:
    """Connect with Python's ssl verifying against the test CA; the leaf the server sent."""
    ctx = ssl.create_default_context(cafile=str(ca.root_file))
    ctx.check_hostname = False
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                          server_hostname=sni or "")
    der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
    w.close()
    return x509.load_der_x509_certificate(der)


# ------------------------------------------------------------------------------ loading
def test_the_key_of_the_chain_is_the_identity(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca")
    chain, key = ca.issue("a", SA_A, dns=("a.default.svc",))
    src = FileIdentitySource({"cert_file": str(chain), "key_file": str(key),
                              "trust_bundles": [str(ca.root_file)]})
    ident = src.load(_FakeGateway(tmp_path))  # type: ignore[arg-type]
    leaf = x509.load_pem_x509_certificates(chain.read_bytes())[0]
    assert ident.id == id_of_public_key(leaf.public_key())
    assert ident.spiffe == SA_A and ident.cert_names == ("a.default.svc",)
    assert ident.cert_chain() == (leaf, *ca.intermediates)  # leaf + intermediate presented
    assert not ident.renew_if_needed()  # nothing changed: no reload


class _FakeGateway:
    def __init__(self, d: Path) -> None:
        self.state_dir = d / "state"

        class _C:
            @staticmethod
            def section(_name: str) -> dict[str, object]:
                return {}

        self.config = _C()


def test_unusable_files_are_refused_naming_them(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca")
    chain, key = ca.issue("a", SA_A)
    _, other_key = ca.issue("b", SA_B)
    gw = _FakeGateway(tmp_path)

    def load(**kw: object) -> None:
        FileIdentitySource(kw).load(gw)  # type: ignore[arg-type]

    with pytest.raises(IdentityError, match=r"cert_file .*a\.crt.*the leaf .* is for key .* "
                       r"not for the key in identity.key_file .*b\.key"):
        load(cert_file=str(chain), key_file=str(other_key))
    with pytest.raises(IdentityError, match=r"key_file .*missing\.key.*missing"):
        load(cert_file=str(chain), key_file=str(tmp_path / "missing.key"))
    assert not (tmp_path / "missing.key").exists()  # no key is created for a cert_file
    with pytest.raises(IdentityError, match="mode 0644"):
        key.chmod(0o644)
        load(cert_file=str(chain), key_file=str(key))
    key.chmod(0o600)
    now = dt.datetime.now(dt.UTC)
    old, k = ca.leaf(SA_A, valid=(now - dt.timedelta(days=3), now - dt.timedelta(days=1)))
    write_files(chain, key, (old, *ca.intermediates), k)
    with pytest.raises(IdentityError, match=r"valid .* not now"):
        load(cert_file=str(chain), key_file=str(key))
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(IdentityError, match=r"junk\.pem.*not a PEM certificate bundle"):
        load(cert_file=str(tmp_path / "junk.pem"), key_file=str(key))


# ------------------------------------------------------------------------------ tls listener
async def test_tls_listener_presents_the_chain_and_reloads_it_when_rotated(
    start_gateway: StartGateway, echo_server: tuple[str, int], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ugate.identity")
    ca = TestCA.create(tmp_path / "ca")
    chain, key = ca.issue("b", SA_B)
    b = await start_gateway(listener("{}:{}".format(*echo_server))
                            + identity_section(chain, key, ca))
    port = b.port("mtls")
    first = await presented(port, ca)
    assert first == x509.load_pem_x509_certificates(chain.read_bytes())[0]
    old_id = b.identity.id

    # rotation with a new key (SPIRE, Istio, cert-manager rotationPolicy Always)
    ca.issue("b", SA_B)
    second = await presented(port, ca)
    assert second.serial_number != first.serial_number
    assert b.identity.id == id_of_public_key(second.public_key()) != old_id
    assert "identity_key_changed" in caplog.text

    # half-written (the new certificate, the old key): refused, the current chain stays
    new_leaf, _ = ca.leaf(SA_B)
    chain.write_bytes(new_leaf.public_bytes(serialization.Encoding.PEM))
    assert (await presented(port, ca)).serial_number == second.serial_number
    assert "certificate_reload_failed" in caplog.text
    # a mesh peer dialing by ID reaches the current key
    a = await start_gateway(dialer(f"{b.identity.id.lower()}.m", port, f"id:{b.identity.id}"))
    s = await a.dial(f"{b.identity.id.lower()}.m:7")
    assert s.meta.peer_id == b.identity.id
    s.close()


async def test_spiffe_is_believed_only_from_the_ca_never_from_the_anchor(
    start_gateway: StartGateway, echo_server: tuple[str, int], tmp_path: Path,
) -> None:
    """A dials B with its CA-issued certificate (SPIFFE a); C's certificate is anchor-issued
    and carries the same SPIFFE URI (``trust_domain`` + ``service_account = "a"``): an
    impostor. B names A's SPIFFE ID in ``peers``, and a second listener allows any client."""
    ca = TestCA.create(tmp_path / "ca")
    b_chain, b_key = ca.issue("b", SA_B)
    a_chain, a_key = ca.issue("a", SA_A)
    target = "{}:{}".format(*echo_server)
    b = await start_gateway(listener(target, f'peers = ["{SA_A}"]') + f"""
[listeners.open]
listen = "127.0.0.1:0"
protocols = ["tls"]
target = "{target}"
""" + identity_section(b_chain, b_key, ca))
    rec = Recorder()
    b.pm.register(rec)
    hosts = f"""
[hosts."open.test"]
endpoints = ["127.0.0.1:{b.port("open")}"]
protocol = "tls"
identity = ["{SA_B}"]
"""
    a = await start_gateway(dialer("b.test", b.port("mtls"), SA_B) + hosts
                            + identity_section(a_chain, a_key, ca))
    s = await a.dial("b.test:7")
    assert s.meta.peer_id == b.identity.id
    s.write(b"ping")
    assert await s.read(4) == b"ping"
    s.close()
    assert rec.records[-1].client.extra["spiffe"] == SA_A
    assert rec.records[-1].client.peer_id == a.identity.id

    impostor = await start_gateway(dialer("b.test", b.port("mtls"), SA_B) + hosts + f"""
[identity]
trust_domain = "{TD}"
service_account = "a"
trust_bundles = ["{ca.root_file}"]
""")
    assert impostor.identity.spiffe == SA_A  # its anchor-issued leaf carries the URI
    with pytest.raises((DialError, ConnectionError)):
        s = await impostor.dial("b.test:7")
        s.write(b"ping")
        assert await asyncio.wait_for(s.read(4), 10) == b""
        raise ConnectionError("closed")
    assert metric(b, "ugate_rejections_total", listener="mtls", reason="identity") >= 1
    # where any verified key may connect, it is its key, not a SPIFFE ID
    n = len(rec.records)
    s = await impostor.dial("open.test:7")
    s.write(b"ping")
    assert await s.read(4) == b"ping"
    s.close()
    client = rec.records[n].client
    assert client.peer_id == impostor.identity.id
    assert "spiffe" not in client.extra


async def test_dialer_refuses_a_server_from_another_ca_or_with_the_wrong_spiffe_id(
    start_gateway: StartGateway, echo_server: tuple[str, int], tmp_path: Path,
) -> None:
    ca, other = TestCA.create(tmp_path / "ca"), TestCA.create(tmp_path / "other", "Other CA")
    target = "{}:{}".format(*echo_server)
    foreign = await start_gateway(listener(target) + identity_section(
        *other.issue("b", SA_B), ca))
    wrong = await start_gateway(listener(target) + identity_section(
        *ca.issue("c", f"spiffe://{TD}/ns/default/sa/c"), ca))
    a_chain, a_key = ca.issue("a", SA_A)
    for server, why in ((foreign, "chain does not verify"), (wrong, "presented")):
        a = await start_gateway(dialer("b.test", server.port("mtls"), SA_B)
                                + identity_section(a_chain, a_key, ca))
        with pytest.raises(DialError) as ei:
            await a.dial("b.test:7")
        assert ei.value.reason == "identity"
        assert f"expected spiffe {SA_B}" in str(ei.value) and why in str(ei.value)


# ------------------------------------------------------------------------------ TLS front
async def test_shared_port_presents_the_chain_and_terminates_its_names(
    start_gateway: StartGateway, echo_server: tuple[str, int], tmp_path: Path,
) -> None:
    ca = TestCA.create(tmp_path / "ca")
    chain, key = ca.issue("b", SA_B, dns=("b.default.svc.cluster.local",))
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
target = "{echo_server[0]}:{echo_server[1]}"
""" + identity_section(chain, key, ca))
    port = gw.port("shared")
    leaf = await presented(port, ca, "b.default.svc.cluster.local")
    assert leaf.serial_number == x509.load_pem_x509_certificates(
        chain.read_bytes())[0].serial_number
    ca.issue("b", SA_B, dns=("b.default.svc.cluster.local",))
    assert (await presented(port, ca)).serial_number != leaf.serial_number


async def test_configured_certificates_honour_require_client_cert(
    start_gateway: StartGateway, echo_server: tuple[str, int], tmp_path: Path,
) -> None:
    """With ``require_client_cert`` a per-SNI certificate gets the mesh rules (TLS 1.3, a
    client certificate from the anchor or a trust bundle); its files are read again when they
    change."""
    ca = TestCA.create(tmp_path / "ca")
    pub_chain, pub_key = ca.issue("pub", dns=("www.public.test",))
    client = ca.issue("a", SA_A)
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
require_client_cert = true
target = "{echo_server[0]}:{echo_server[1]}"
certificates = [{{names = ["www.public.test"], cert = "{pub_chain}", key = "{pub_key}"}}]
[identity]
trust_bundles = ["{ca.root_file}"]
""")
    rec = Recorder()
    gw.pm.register(rec)
    port = gw.port("shared")
    first = await presented(port, ca, "www.public.test", client)
    for _ in range(50):  # the relay starts after the handshake
        if rec.records:
            break
        await asyncio.sleep(0.05)
    assert rec.records[0].client.extra["spiffe"] == SA_A

    async def refused(ctx: ssl.SSLContext) -> None:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                 server_hostname="www.public.test")
            w.write(b"x")  # TLS 1.3: the server's refusal arrives after the client's Finished
            await w.drain()
            if not await asyncio.wait_for(r.read(1), 10):
                raise ConnectionError("closed")

    no_cert = ssl.create_default_context(cafile=str(ca.root_file))
    await refused(no_cert)
    tls12 = ssl.create_default_context(cafile=str(ca.root_file))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    tls12.load_cert_chain(str(client[0]), str(client[1]))
    await refused(tls12)
    ca.issue("pub", dns=("www.public.test",))  # rotated by cert-manager
    again = await presented(port, ca, "www.public.test", client)
    assert again.serial_number != first.serial_number


def test_spiffe_chains_to_a_configured_bundle_never_to_the_anchor(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "ca")
    now = dt.datetime.now(dt.UTC)
    impostor = issue_leaf(generate_key("p256"), common_name="x", dns_names=[], uris=[SA_A],
                          not_before=now - dt.timedelta(hours=1),
                          not_after=now + dt.timedelta(hours=1))
    der = impostor.public_bytes(serialization.Encoding.DER)
    anchor = anchor_certificate()
    anchor_der = anchor.public_bytes(serialization.Encoding.DER)
    for chain, roots in (((), (ca.root,)), ((anchor_der,), (ca.root,)), ((), (anchor,)),
                         ((anchor_der,), (anchor, ca.root))):
        assert verified_spiffe(der, chain, roots) is None, (chain, roots)
    with pytest.raises(DialError, match=r"chain does not verify|no trust roots"):
        verify_peer(der, [ExpectedIdentity("spiffe", SA_A)], "impostor", chain=(anchor_der,),
                    trust_roots=(anchor, ca.root))
    real, _ = ca.leaf(SA_A)
    real_der = real.public_bytes(serialization.Encoding.DER)
    inter = tuple(c.public_bytes(serialization.Encoding.DER) for c in ca.intermediates)
    assert verified_spiffe(real_der, inter, (ca.root,)) == SA_A
    assert verified_spiffe(real_der, (), (ca.root,)) is None  # the intermediate is needed
    (tmp_path / "anchor.pem").write_bytes(anchor_pem())
    with pytest.raises(ConfigError, match="public mesh anchor"):
        load_trust_bundles([str(tmp_path / "anchor.pem")])


async def test_trust_bundles_are_read_again_when_they_change(
    start_gateway: StartGateway, echo_server: tuple[str, int], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A root rotation: B trusts only the old CA, A holds a certificate from the new one.
    Adding the new root lets A in with its SPIFFE ID; removing it again makes A's SPIFFE ID
    worthless (OpenSSL cannot forget the root, ugate's check does)."""
    caplog.set_level(logging.INFO, "ugate.identity")
    old, new = TestCA.create(tmp_path / "old", "Old CA"), TestCA.create(tmp_path / "new", "New")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(old.root_file.read_bytes())
    b_chain, b_key = old.issue("b", SA_B)
    b = await start_gateway(listener("{}:{}".format(*echo_server), f'peers = ["{SA_A}"]') + f"""
[identity]
cert_file = "{b_chain}"
key_file = "{b_key}"
trust_bundles = ["{bundle}"]
""")
    a_chain, a_key = new.issue("a", SA_A)
    a = await start_gateway(dialer("b.test", b.port("mtls"), SA_B)
                            + identity_section(a_chain, a_key, old))

    async def exchange() -> bytes:
        try:
            s = await a.dial("b.test:7")
            s.write(b"ping")
            got = await asyncio.wait_for(s.read(4), 10)
            s.close()
            return got
        except (DialError, ConnectionError):
            return b""

    assert await exchange() == b""  # the new root is not trusted yet
    bundle.write_bytes(old.root_file.read_bytes() + new.root_file.read_bytes())
    assert await exchange() == b"ping"
    assert "trust_bundles_reloaded roots=2 added=1 removed=0" in caplog.text
    bundle.write_bytes(old.root_file.read_bytes())
    assert await exchange() == b""
    assert metric(b, "ugate_rejections_total", listener="mtls", reason="identity") >= 1
    bundle.write_text("not a bundle")  # a broken rewrite keeps the previous roots
    assert await exchange() == b""
    assert "trust_bundles_reload_failed" in caplog.text
    assert len(b.identity.trust_roots) == 1


def test_a_rotation_to_another_key_type_waits_for_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    ca = TestCA.create(tmp_path / "ca")
    chain, key = ca.issue("a", SA_A)
    ident = FileIdentitySource({"cert_file": str(chain), "key_file": str(key)}).load(
        _FakeGateway(tmp_path))  # type: ignore[arg-type]
    serial = ident.cert_chain()[0].serial_number
    ca.issue("a", SA_A, key=generate_key("ed25519"))
    assert not ident.renew_if_needed()
    assert ident.cert_chain()[0].serial_number == serial and ident.key_type == "p256"
    assert "key type changed from p256" in caplog.text
