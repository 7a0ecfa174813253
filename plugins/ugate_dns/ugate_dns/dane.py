"""DANE TLSA records (RFC 6698, 7671) → the identities a dial must see (no I/O).

Usage 3 (DANE-EE) pins the server's own key or certificate; usage 2 (DANE-TA) names the CA
its chain must end at, which we can use only when the record holds the whole CA certificate
(selector 0, matching type 0). Usages 0 and 1 (PKIX-TA/EE) also need the public CA store,
which a mesh gateway does not consult: they are skipped, with a reason.
"""

from __future__ import annotations

from collections.abc import Iterable

import dns.rdtypes.ANY.TLSA
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ugate_core import ExpectedIdentity

#: (selector, matching type) → identity kind
_KINDS = {
    (1, 1): "spki_sha256", (1, 2): "spki_sha512", (1, 0): "spki",
    (0, 1): "cert_sha256", (0, 2): "cert_sha512", (0, 0): "cert",
}
_LEN = {1: 32, 2: 64}


def tlsa_identity(usage: int, selector: int, mtype: int, data: bytes) -> ExpectedIdentity | str:
    """One TLSA record → an :class:`ExpectedIdentity`, or the reason it cannot be used."""
    rec = f"TLSA {usage} {selector} {mtype}"
    if mtype in _LEN and len(data) != _LEN[mtype]:
        return f"{rec}: {len(data)} bytes of data, matching type {mtype} needs {_LEN[mtype]}"
    if usage == 3:
        kind = _KINDS.get((selector, mtype))
        if kind is None:
            return f"{rec}: selector {selector} / matching type {mtype} not supported"
        return ExpectedIdentity(kind, data.hex())
    if usage == 2:
        if (selector, mtype) != (0, 0):
            return (f"{rec}: DANE-TA is used only with the full CA certificate in the record "
                    "(2 0 0); a hash cannot be checked without the chain's CA at hand")
        try:
            cert = x509.load_der_x509_certificate(data)
        except ValueError as e:
            return f"{rec}: not a DER certificate: {e}"
        return ExpectedIdentity("ca", cert.public_bytes(Encoding.PEM).decode("ascii"))
    if usage in (0, 1):
        return f"{rec}: PKIX usages need the public CA store, not used by ugate"
    return f"{rec}: unknown usage {usage}"


def tlsa_identities(
    records: Iterable[dns.rdtypes.ANY.TLSA.TLSA],
) -> tuple[tuple[ExpectedIdentity, ...], list[str]]:
    """All usable identities of a TLSA set (any one of them accepts) and why others were not."""
    ids: list[ExpectedIdentity] = []
    skipped: list[str] = []
    for r in records:
        got = tlsa_identity(r.usage, r.selector, r.mtype, r.cert)
        if isinstance(got, str):
            skipped.append(got)
        elif got not in ids:
            ids.append(got)
    return tuple(ids), skipped
