"""ugate metadata in DNS TXT records: a small, versioned ``key=value`` format (no I/O).

One TXT record at the destination's name carries it::

    svc.example.  TXT  "ugate=1 proto=ssh id=MFRGG... label.app=web label.team=a%20b"

* The record's character-strings are joined with one space, then split on ASCII whitespace
  into tokens; a token never spans two strings (each string is at most 255 bytes).
* The first token is ``ugate=<version>``. Records that do not start with ``ugate=`` are not
  ours (SPF and friends live at the same name) and are ignored. Version ``1`` is this format;
  records of other versions are skipped, so a zone can publish ``ugate=2`` beside ``ugate=1``.
* Every other token is ``key=value``. Keys are lower-case ``[a-z0-9][a-z0-9._-]*``, each at
  most once. Values are percent-encoded UTF-8 (``%20`` for a space, ``%25`` for ``%``).
* Known keys: ``proto`` (the dialer to use: ``tcp``, ``ssh``, ``hbone``, ...), ``id`` (the
  mesh ID the peer must prove: RFC 4648 base32, no padding), ``label.<name>`` (free-form
  labels). Unknown keys are kept in ``extra`` and ignored, so later minor additions do not
  break old gateways.

Anything else is a :class:`TxtError` naming the token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote_to_bytes

VERSION = 1
#: longest record we parse (bytes, all strings together)
MAX_LENGTH = 4096

_KEY = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
_PROTO = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
_ID = re.compile(r"[A-Z2-7]{16,128}\Z")
_VALUE_SAFE = "!$&'()*+,-./:;<>?@[]^_`{|}~"


class TxtError(ValueError):
    """A TXT record that starts with ``ugate=`` but breaks the format."""


@dataclass(frozen=True, kw_only=True)
class UgateTxt:
    """The metadata of one ``ugate=`` TXT record."""

    version: int = VERSION
    proto: str | None = None
    id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    #: keys this version does not know (ignored, kept for logs)
    extra: Mapping[str, str] = field(default_factory=dict)


def _decode_value(raw: str, token: str) -> str:
    if "%" in raw and re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        raise TxtError(f"token {token!r}: bad percent-escape")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise TxtError(f"token {token!r}: value is not UTF-8 after percent-decoding") from None


def parse_txt(strings: Sequence[bytes]) -> UgateTxt | None:
    """Parse one TXT record (its character-strings); ``None`` if it is not a ugate record."""
    total = sum(len(s) for s in strings)
    if total > MAX_LENGTH:
        head = b" ".join(strings)[:6]
        if head.startswith(b"ugate="):
            raise TxtError(f"record is {total} bytes, longer than {MAX_LENGTH}")
        return None
    raw = b" ".join(strings)
    tokens = raw.split()
    if not tokens or not tokens[0].startswith(b"ugate="):
        return None
    for t in tokens:
        if any(c > 0x7E or c < 0x21 for c in t):
            raise TxtError(f"token {t[:40]!r}: not printable ASCII (percent-encode it)")
    text = [t.decode("ascii") for t in tokens]
    vs = text[0][len("ugate=") :]
    if not vs.isdigit() or len(vs) > 6:
        raise TxtError(f"token {text[0]!r}: version is not a number")
    version = int(vs)
    if version != VERSION:
        return UgateTxt(version=version)
    seen: dict[str, str] = {}
    for tok in text[1:]:
        key, sep, rawv = tok.partition("=")
        if not sep:
            raise TxtError(f"token {tok!r}: not key=value")
        if not _KEY.match(key):
            raise TxtError(f"token {tok!r}: key {key!r} is not [a-z0-9][a-z0-9._-]*")
        if key in seen:
            raise TxtError(f"token {tok!r}: key {key!r} given twice")
        seen[key] = _decode_value(rawv, tok)
    proto = seen.pop("proto", None)
    if proto is not None and not _PROTO.match(proto):
        raise TxtError(f"proto={proto!r}: not a protocol name ([a-z0-9][a-z0-9_-]{{0,31}})")
    ident = seen.pop("id", None)
    if ident is not None:
        ident = ident.upper()
        if not _ID.match(ident):
            raise TxtError(f"id={ident!r}: not a base32 mesh ID (A-Z, 2-7, no padding)")
    labels: dict[str, str] = {}
    extra: dict[str, str] = {}
    for k, v in seen.items():
        if k.startswith("label."):
            name = k[len("label.") :]
            if not name:
                raise TxtError(f"key {k!r}: empty label name")
            labels[name] = v
        else:
            extra[k] = v
    return UgateTxt(version=version, proto=proto, id=ident, labels=labels, extra=extra)


def select_txt(records: Sequence[Sequence[bytes]]) -> UgateTxt | None:
    """The one ``ugate=1`` record among all TXT records at a name (``None`` if none).

    Records of other versions and foreign records are skipped; two ``ugate=1`` records are
    an error (which one would win is not defined).
    """
    found: UgateTxt | None = None
    for strings in records:
        meta = parse_txt(strings)
        if meta is None or meta.version != VERSION:
            continue
        if found is not None:
            raise TxtError("two ugate=1 TXT records at one name: publish exactly one")
        found = meta
    return found


def format_txt(meta: UgateTxt) -> list[bytes]:
    """The character-strings of a TXT record for ``meta`` (the inverse of :func:`parse_txt`)."""

    def enc(v: str) -> str:
        return quote(v, safe=_VALUE_SAFE.replace("%", ""))

    tokens = [f"ugate={meta.version}"]
    if meta.proto is not None:
        tokens.append(f"proto={enc(meta.proto)}")
    if meta.id is not None:
        tokens.append(f"id={enc(meta.id)}")
    for k, v in meta.labels.items():
        tokens.append(f"label.{k}={enc(v)}")
    for k, v in meta.extra.items():
        tokens.append(f"{k}={enc(v)}")
    out: list[bytes] = []
    cur = b""
    for t in tokens:
        b = t.encode("ascii")
        if len(b) > 255:
            raise TxtError(f"token {t[:40]!r}...: longer than 255 bytes")
        if cur and len(cur) + 1 + len(b) > 255:
            out.append(cur)
            cur = b
        else:
            cur = cur + b" " + b if cur else b
    out.append(cur)
    return out
