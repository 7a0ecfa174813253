"""SSH keys: the host key (= the workload key), mesh IDs of SSH keys, key lists from config.

The gateway's SSH host key and SSH user key are the workload key, so ``ugate id`` is enough to
write a ``known_hosts`` line, and a peer's mesh ID is the hash of the key it signs with.
"""

from __future__ import annotations

import binascii
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from cryptography.hazmat.primitives import serialization

from ugate_core import ConfigError, GatewayAPI, id_of_public_key

log = logging.getLogger("ugate.ssh")

def crypto_public_key(key: asyncssh.SSHKey) -> Any:
    """The cryptography public key behind an asyncssh key (or certificate's key)."""
    der = key.export_public_key("pkcs8-der")
    return serialization.load_der_public_key(der)


def mesh_id(key: asyncssh.SSHKey) -> str:
    """Mesh ID of an SSH public key (the same rule as TLS peers: core's ``id_of_public_key``)."""
    return id_of_public_key(crypto_public_key(key))


def spki_sha256(key: asyncssh.SSHKey) -> str:
    return hashlib.sha256(key.export_public_key("pkcs8-der")).hexdigest()


def fqdn_of_id(peer_id: str) -> str:
    """The mesh name of an ID: ``<id-lower>.m``."""
    return f"{peer_id.lower()}.m"


def host_key(gateway: GatewayAPI, path: str = "") -> asyncssh.SSHKey:
    """The SSH host/user key: ``path`` if given, else the workload key (``ugate id``)."""
    if path:
        try:
            return asyncssh.read_private_key(Path(path).expanduser())
        except (OSError, asyncssh.KeyImportError) as e:
            raise ConfigError("ssh.host_key", f"{path!r}: cannot read private key: {e}") from None
    return asyncssh.import_private_key(gateway.identity.private_key_pem())


def public_line(key: asyncssh.SSHKey) -> str:
    """OpenSSH one-line public key, no comment."""
    data: bytes = key.export_public_key("openssh")
    alg, b64 = data.decode("ascii").split()[:2]
    return f"{alg} {b64}"


def known_hosts_line(key: asyncssh.SSHKey, hosts: Sequence[str]) -> str:
    """A ``known_hosts`` line for ``hosts`` (``name``, ``[name]:port``) with this key."""
    return ",".join(hosts) + " " + public_line(key)


# ---------------------------------------------------------------------------------- key lists
KEY_PREFIXES = ("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-", "rsa-sha2-")


@dataclass(frozen=True)
class KeyEntry:
    """One line of an authorized-keys style list: the key, and for a CA its principals."""

    key: asyncssh.SSHKey
    comment: str = ""
    #: ``cert-authority``: the key signs user certificates
    ca: bool = False
    #: ``principals="a,b"``: certificates need one of these principals (else: the user name)
    principals: tuple[str, ...] = ()
    source: str = ""


def _split_options(line: str) -> tuple[str, str]:
    """``opts keytype b64 comment`` → (opts, rest); quotes may hold spaces and commas."""
    if line.startswith(KEY_PREFIXES):
        return "", line
    quoted = False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c in " \t" and not quoted:
            return line[:i], line[i:].strip()
    return line, ""


def _parse_options(opts: str, where: str) -> tuple[bool, tuple[str, ...]]:
    ca, principals = False, tuple[str, ...]()
    items: list[str] = []
    cur, quoted = "", False
    for c in opts:
        if c == '"':
            quoted = not quoted
            cur += c
        elif c == "," and not quoted:
            items.append(cur)
            cur = ""
        else:
            cur += c
    if cur:
        items.append(cur)
    for it in items:
        name, _, value = it.partition("=")
        name = name.lower()
        if name == "cert-authority" and not value:
            ca = True
        elif name == "principals" and value:
            principals = tuple(p for p in value.strip('"').split(",") if p)
        else:
            raise ConfigError(where, f"option {it!r} is not supported (supported: "
                              "cert-authority, principals=\"...\")")
    return ca, principals


def parse_key_line(line: str, where: str, *, ca_default: bool = False) -> KeyEntry | None:
    """One authorized-keys line → KeyEntry; ``None`` for blank and comment lines."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    opts, rest = _split_options(line)
    ca, principals = _parse_options(opts, where) if opts else (False, ())
    parts = rest.split(None, 2)
    if len(parts) < 2:
        raise ConfigError(where, f"{line[:60]!r} is not 'KEYTYPE BASE64 [comment]'")
    try:
        key = asyncssh.import_public_key(f"{parts[0]} {parts[1]}")
    except (asyncssh.KeyImportError, binascii.Error, ValueError) as e:
        raise ConfigError(where, f"{parts[0]} key {parts[1][:16]!r}...: not a valid public "
                          f"key ({e})") from None
    return KeyEntry(key, parts[2] if len(parts) > 2 else "", ca or ca_default, principals, where)


def load_key_list(value: Any, path: str, *, ca: bool = False) -> list[KeyEntry]:
    """Config value → keys: a string names a file (authorized_keys format); a list holds
    key lines (``ssh-ed25519 AAAA... comment``) or file paths (starting with ``/``, ``~``, ``.``).
    """
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ConfigError(path, f"{value!r} is not a file name or a list of key lines")
    out: list[KeyEntry] = []
    for i, item in enumerate(items):
        where = path if isinstance(value, str) else f"{path}[{i}]"
        if isinstance(value, str) or item.startswith(("/", "~", ".")):
            p = Path(item).expanduser()
            try:
                text = p.read_text(encoding="utf-8")
            except OSError as e:
                raise ConfigError(where, f"{item!r}: cannot read: {e.strerror}") from None
            for n, line in enumerate(text.splitlines(), 1):
                e2 = parse_key_line(line, f"{where} ({p}:{n})", ca_default=ca)
                if e2 is not None:
                    out.append(e2)
        else:
            e3 = parse_key_line(item, where, ca_default=ca)
            if e3 is not None:
                out.append(e3)
    return out


def id_list(value: Any, path: str) -> frozenset[str]:
    """``allow_ids``: mesh IDs (base32, any case; ``<id>.m`` names accepted too)."""
    if value is None:
        return frozenset()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ConfigError(path, f"{value!r} is not a list of mesh IDs")
    out = set()
    for i, v in enumerate(items):
        s = v.strip().upper()
        if s.endswith(".M"):
            s = s[:-2]
        if not s or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in s):
            raise ConfigError(f"{path}[{i}]", f"{v!r} is not a mesh ID (base32)")
        out.add(s)
    return frozenset(out)


def as_mapping(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}
