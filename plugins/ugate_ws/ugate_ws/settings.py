"""The ``[ws]`` table: tokens, limits and the dialer's proxy. Every key is optional::

    [ws]
    token_keys = []             # Ed25519 public keys whose signed tokens we accept: PEM files,
                                # or inline (base64 DER, "MCowBQYDK2VwAyEA...")
    token_audience = ""         # the audience a token must name ("": this workload's mesh ID)
    token_max_lifetime = 3600   # refuse tokens valid longer than this from now (seconds)
    max_message = 65536         # largest message either way (bytes); larger closes with 1009
    idle_timeout = 300.0        # close a WebSocket with no frame either way for this long
    proxy = ""                  # dialer: an HTTP proxy (host:port) reached with CONNECT
    origins = []                # browser pages (Origin) allowed besides the same origin; "*": any
    serve = {}                  # path -> listener protocol its WebSockets carry, besides the
                                # default "/mqtt" = "mqtt" ("" removes a path)
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    load_der_public_key,
    load_pem_public_key,
)

from ugate_core import ConfigError, StashKey
from ugate_core import options as opt

from .path import PREFIX

if TYPE_CHECKING:
    from ugate_core import GatewayAPI

SECTION = "ws"
KEYS = ("token_keys", "token_audience", "token_max_lifetime", "max_message", "idle_timeout",
        "proxy", "origins", "serve")
#: the served paths before ``serve``'s own entries (which add to them; ``""`` removes one):
#: the path MQTT's WebSocket clients (mqtt.js, Paho) use by default, applied only when the
#: ``mqtt`` protocol is installed (:mod:`ugate_ws.services`)
DEFAULT_SERVE = {"/mqtt": "mqtt"}
_SERVE_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


@dataclass(frozen=True)
class WsSettings:
    token_audience: str = ""
    token_max_lifetime: float = 3600.0
    max_message: int = 64 * 1024
    idle_timeout: float = 300.0
    proxy: tuple[str, int] | None = None
    origins: tuple[str, ...] = ()
    #: the config's path -> listener protocol entries (``""``: none), over ``DEFAULT_SERVE``
    serve: Mapping[str, str] = field(default_factory=dict)
    #: key id (the signer's mesh ID) -> public key
    token_keys: Mapping[str, ed25519.Ed25519PublicKey] = field(default_factory=dict, repr=False)


_INLINE = re.compile(r"MCowBQYDK2VwAyEA[A-Za-z0-9+/]{43}=")  # base64 of an Ed25519 SPKI


def load_public_key(filename: str, path: str) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key: inline (the base64 of its DER SubjectPublicKeyInfo, the body of
    its PEM form) or the name of a PEM file."""
    if _INLINE.fullmatch(filename):
        key = load_der_public_key(base64.b64decode(filename))
        assert isinstance(key, ed25519.Ed25519PublicKey)
        return key
    try:
        key = load_pem_public_key(Path(filename).expanduser().read_bytes())
    except OSError as e:
        raise ConfigError(path, f"{filename!r}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(path, f"{filename!r}: not a PEM public key: {e}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(path, f"{filename!r}: a {type(key).__name__}; token keys are Ed25519")
    return key


def parse_settings(t: Mapping[str, Any]) -> WsSettings:
    """Validate the ``[ws]`` table (reads ``token_keys``); ConfigError names key and value."""
    opt.check_keys(t, KEYS, SECTION)
    from ugate_core import id_of_public_key

    keys: dict[str, ed25519.Ed25519PublicKey] = {}
    listed = opt.strings(t, "token_keys", SECTION, expect="a list of keys (PEM files or base64)")
    for i, fn in enumerate(listed):
        k = load_public_key(fn, f"{SECTION}.token_keys[{i}]")
        keys[id_of_public_key(k)] = k
    return WsSettings(
        token_audience=opt.string(t, "token_audience", SECTION, ""),
        token_max_lifetime=opt.seconds(t, "token_max_lifetime", SECTION, 3600.0, hi=7 * 86400,
                                       positive=True),
        max_message=opt.integer(t, "max_message", SECTION, 64 * 1024, lo=1, hi=16 << 20,
                                expect="a number of bytes in 1..16777216"),
        idle_timeout=opt.seconds(t, "idle_timeout", SECTION, 300.0, hi=86400, positive=True),
        proxy=opt.hostport(t, "proxy", SECTION),
        origins=tuple(o.rstrip("/").lower() for o in opt.strings(
            t, "origins", SECTION, expect="a list of origins (https://app.example)")),
        token_keys=keys,
        serve=parse_serve(t),
    )


def parse_serve(t: Mapping[str, Any]) -> dict[str, str]:
    """``serve``: a table of path -> protocol name (``""`` takes a default path out)."""
    v = t.get("serve", {})
    if not isinstance(v, Mapping):
        raise ConfigError(f"{SECTION}.serve", f"{v!r} is not a table of paths to protocols "
                          '({ "/mqtt" = "mqtt" })')
    out: dict[str, str] = {}
    for path, proto in v.items():
        kp = f'{SECTION}.serve."{path}"'
        if not isinstance(proto, str):
            raise ConfigError(kp, f"{proto!r} is not a protocol name")
        norm = path.rstrip("/") or "/"
        if not _SERVE_PATH.fullmatch(path) or norm == "/":
            raise ConfigError(kp, "not a path: '/' then a name (\"/mqtt\"), no query")
        if norm == PREFIX or norm.startswith(PREFIX + "/") or PREFIX.startswith(norm + "/"):
            raise ConfigError(kp, f"overlaps the destination paths {PREFIX}/<host>:<port>")
        if norm in out:
            raise ConfigError(kp, f"{norm!r} is given twice")
        out[norm] = proto
    return out


_SETTINGS: StashKey[WsSettings] = StashKey("ugate_ws.settings")


def settings_of(gateway: GatewayAPI) -> WsSettings:
    """The gateway's ``[ws]`` settings, parsed once."""
    s = gateway.stash.get(_SETTINGS, None)
    if s is None:
        s = gateway.stash[_SETTINGS] = parse_settings(gateway.config.section(SECTION))
    return s


def audience_of(gateway: GatewayAPI) -> str:
    """The audience tokens must name here: ``token_audience`` or this workload's mesh ID."""
    return settings_of(gateway).token_audience or gateway.identity.id
