"""Authorization: which client may reach which destination. Pure: no I/O, no sockets.

Authentication and authorization are separate steps. A verified key, certificate, SSH key or
password says *who* is on the other end (``StreamMeta.peer_id``, ``.user``,
``.extra["spiffe"]``); only a rule in the config says *what they may reach*. Anyone can make a
key, so a key that merely verifies authorizes nothing.

The built-in policy (:meth:`Policy.decide`):

* a client of a listener bound to loopback, with no ``allow`` list there, is the local user:
  a local proxy, everything allowed (as ``curl -x`` on one's own machine expects);
* otherwise a destination is allowed when the listener's ``allow`` list names it (anyone who
  reaches that listener may go there), or when a ``[[rules]]`` entry for that listener names
  both the client and the destination;
* a client that is not local never reaches a *protected* address — loopback, unspecified,
  link-local, cloud metadata, or the gateway's own listeners and admin endpoint — unless the
  pattern that allowed it names the destination without a wildcard (``svc.test``,
  ``127.0.0.1:8080``, ``10.0.0.0/8``; not ``*`` or ``*.test``). The gateway checks resolved
  addresses at dial time as well (:data:`PROTECTED` here; the own-address test is the
  gateway's).

Client patterns (``clients = [...]``): ``*`` (anyone, even unauthenticated), ``id:<mesh ID>``
(the key-derived ID of a TLS client certificate or SSH key, like ``authorized_keys``),
``spiffe://<trust domain>/<path>`` (a SPIFFE ID verified against a configured CA bundle, never
the public mesh anchor; a trailing ``/*`` matches below a path), ``trust_domain:<name>``
(any SPIFFE ID of that trust domain), ``user:<name>`` (a user the gateway verified: a
SOCKS5/HTTP password, an SSH certificate principal).

Destination patterns (``to = [...]``, and a listener's ``allow``): ``HOST`` or ``HOST:PORTS``
where HOST is ``*``, ``*.suffix``, a name, an IPv4 address or CIDR, or an IPv6 address or
CIDR in brackets (``[fd00::]/8``); PORTS is ``*``, ``N`` or ``N-M``.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .ids import normalize_id

if TYPE_CHECKING:
    from .stream import StreamMeta

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

#: addresses a non-local client never reaches unless a rule names them without a wildcard
PROTECTED: tuple[tuple[IPNet, str], ...] = tuple(
    (ipaddress.ip_network(n), why) for n, why in (
        ("127.0.0.0/8", "loopback"),
        ("::1/128", "loopback"),
        ("0.0.0.0/8", "unspecified"),  # connect(0.0.0.0) reaches this host
        ("::/128", "unspecified"),
        ("169.254.0.0/16", "link-local"),  # 169.254.169.254: AWS, GCP, Azure, OpenStack metadata
        ("fe80::/10", "link-local"),
        ("fd00:ec2::254/128", "metadata"),  # AWS IMDS over IPv6
        ("100.100.100.200/32", "metadata"),  # Alibaba Cloud
        ("168.63.129.16/32", "metadata"),  # Azure WireServer
    )
)
#: names that mean this host whatever a resolver says
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


@functools.lru_cache(maxsize=4096)
def protected_ip(host: str) -> str | None:
    """Why ``host`` (an IP literal) is protected — ``loopback``, ``link-local``, ... — or
    ``None``. IPv4-mapped IPv6 (``::ffff:127.0.0.1``) counts as its IPv4 address."""
    ip = _ip(host.split("%", 1)[0])
    if ip is None:
        return None
    for net, why in PROTECTED:
        if ip.version == net.version and ip in net:
            return why
    return None


def protected_name(name: str) -> str | None:
    """``loopback`` for names that always mean this host (``localhost``, ``*.localhost``)."""
    n = name.lower().rstrip(".")
    if n in _LOCAL_NAMES or n.endswith(".localhost"):
        return "loopback"
    return protected_ip(n)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an address, an IPv4-mapped IPv6 one as its IPv4; ``None`` for a name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


# ------------------------------------------------------------------------------ destinations
@dataclass(frozen=True, slots=True)
class Target:
    """One destination pattern: a host (or network) and a port range."""

    text: str
    #: lower-case name, ``*``, ``*.suffix`` or a glob; empty when ``net`` is set
    host: str = ""
    net: IPNet | None = None
    #: inclusive port range, ``None`` for any port
    ports: tuple[int, int] | None = None

    @property
    def explicit(self) -> bool:
        """Names its destination without a wildcard: may reach protected addresses."""
        return self.net is not None or not any(c in self.host for c in "*?[")

    def matches(self, name: str, port: int | None, ips: Sequence[str] = ()) -> bool:
        """``name`` (lower-case, no trailing dot) on ``port``; a network pattern matches an
        IP literal ``name``, or a name whose every known address (``ips``) lies inside it."""
        if self.ports is not None and (port is None or not
                                       self.ports[0] <= port <= self.ports[1]):
            return False
        if self.net is not None:
            addrs = [_ip(name)] if _ip(name) is not None else [_ip(h) for h in ips]
            return bool(addrs) and all(a is not None and a.version == self.net.version and
                                       a in self.net for a in addrs)
        h = self.host
        if h == "*":
            return True
        if h.startswith("*.") and not any(c in h[2:] for c in "*?["):
            return name.endswith(h[1:])
        if any(c in h for c in "*?["):
            return fnmatch.fnmatchcase(name, h)
        if name == h:
            return True
        a, b = _ip(name), _ip(h)  # ::ffff:10.0.0.1 is 10.0.0.1
        return a is not None and a == b


def _ascii_digits(s: str) -> bool:
    """``0-9`` only: ``str.isdigit`` also takes superscript two (which ``int`` refuses) and
    Arabic-Indic digits (which it reads as numbers)."""
    return s.isascii() and s.isdigit()


def _ports(text: str, path: str, whole: str) -> tuple[int, int] | None:
    if text == "*":
        return None
    lo_s, sep, hi_s = text.partition("-")
    if not _ascii_digits(lo_s) or (sep and not _ascii_digits(hi_s)):
        raise ConfigError(path, f"{whole!r}: port {text!r} is not N, N-M or *")
    lo, hi = int(lo_s), int(hi_s) if sep else int(lo_s)
    if not 1 <= lo <= hi <= 65535:
        raise ConfigError(path, f"{whole!r}: port range {text!r} is not within 1-65535")
    return lo, hi


def parse_target(text: Any, path: str) -> Target:
    """``HOST[:PORTS]`` → :class:`Target`; raises ConfigError naming ``path``."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(path, f"{text!r} is not a destination pattern (e.g. 'svc.test:443')")
    s = text.strip()
    host, ports = s, "*"
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise ConfigError(path, f"{text!r}: missing ']'")
        host, rest = s[1:end], s[end + 1:]
        if rest.startswith("/"):  # [fd00::]/8 or [fd00::]/8:443
            bits, _, ports_s = rest[1:].partition(":")
            host, ports = f"{host}/{bits}", ports_s or "*"
        elif rest.startswith(":"):
            ports = rest[1:]
        elif rest:
            raise ConfigError(path, f"{text!r} is not [IPv6]:PORTS")
    elif s.count(":") == 1:
        host, ports = s.split(":")
    elif s.count(":") > 1:
        host = s  # a bare IPv6 address or network: no port
    port_range = _ports(ports, path, text)
    if "/" in host:
        try:
            net = ipaddress.ip_network(host, strict=False)
        except ValueError:
            raise ConfigError(path, f"{text!r}: {host!r} is not a CIDR network") from None
        return Target(text, net=net, ports=port_range)
    if not host:
        raise ConfigError(path, f"{text!r} has no host")
    return Target(text, host=host.lower().rstrip("."), ports=port_range)


# ----------------------------------------------------------------------------------- clients
CLIENT_KINDS = ("*", "id:", "spiffe://", "trust_domain:", "user:")


@dataclass(frozen=True, slots=True)
class Client:
    """One client pattern (see the module docstring)."""

    kind: str  # any | id | spiffe | trust_domain | user
    value: str = ""

    def matches(self, meta: StreamMeta) -> bool:
        k = self.kind
        if k == "any":
            return True
        if k == "id":
            return meta.peer_id is not None and meta.peer_id.upper() == self.value
        if k == "user":
            return meta.user is not None and meta.user == self.value and \
                bool(meta.extra.get("user_verified"))
        spiffe = meta.extra.get("spiffe") if meta._extra else None
        if not isinstance(spiffe, str):
            return False
        if k == "spiffe":
            v = self.value
            return spiffe == v or (v.endswith("/*") and spiffe.startswith(v[:-1]))
        # trust_domain
        return spiffe.startswith(f"spiffe://{self.value}/")

    def __str__(self) -> str:
        if self.kind == "any":
            return "*"
        return self.value if self.kind == "spiffe" else f"{self.kind}:{self.value}"


def parse_client(text: Any, path: str) -> Client:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(path, f"{text!r} is not a client pattern")
    s = text.strip()
    if s == "*":
        return Client("any")
    if s.startswith("spiffe://"):
        td = s[len("spiffe://"):].split("/", 1)[0]
        if not td or "/" not in s[len("spiffe://"):]:
            raise ConfigError(path, f"{text!r}: a SPIFFE ID is spiffe://<trust domain>/<path>")
        return Client("spiffe", s)
    kind, sep, value = s.partition(":")
    if sep and value and kind == "id":
        mesh_id = normalize_id(value)
        if mesh_id is None:
            raise ConfigError(path, f"{text!r}: not a mesh ID (52 base32 characters, as "
                              "`ugate id` prints)")
        return Client("id", mesh_id)
    if sep and value and kind == "trust_domain":
        if "/" in value or ":" in value:
            raise ConfigError(path, f"{text!r}: a trust domain is a name (cluster.local)")
        return Client("trust_domain", value.lower())
    if sep and value and kind == "user":
        return Client("user", value)
    raise ConfigError(path, f"{text!r} is not a client pattern: '*', 'id:<mesh ID>', "
                      "'spiffe://<trust domain>/<path>', 'trust_domain:<name>' or 'user:<name>'")


# ------------------------------------------------------------------------------------- rules
@dataclass(frozen=True, slots=True)
class Rule:
    """``[[rules]]``: these clients may reach these destinations (on these listeners)."""

    clients: tuple[Client, ...]
    to: tuple[Target, ...]
    #: listener names this rule applies to; empty for every listener
    listeners: tuple[str, ...] = ()
    path: str = "rules"

    def applies_to(self, listener: str) -> bool:
        return not self.listeners or listener in self.listeners


RULE_KEYS = {"clients", "to", "listeners"}


def parse_rules(v: Any) -> tuple[Rule, ...]:
    """The ``[[rules]]`` array of tables."""
    if v is None:
        return ()
    if not isinstance(v, list):
        raise ConfigError("rules", "is an array of tables: write [[rules]] for each rule")
    out = []
    for i, t in enumerate(v):
        path = f"rules[{i}]"
        if not isinstance(t, Mapping):
            raise ConfigError(path, f"{t!r} is not a table")
        for k in t:
            if k not in RULE_KEYS:
                known = ", ".join(sorted(RULE_KEYS))
                raise ConfigError(f"{path}.{k}", f"unknown key (known: {known})")
        out.append(Rule(
            clients=tuple(parse_client(c, f"{path}.clients[{j}]")
                          for j, c in enumerate(_list(t, "clients", path))),
            to=tuple(parse_target(d, f"{path}.to[{j}]")
                     for j, d in enumerate(_list(t, "to", path))),
            listeners=tuple(_list(t, "listeners", path, required=False)),
            path=path,
        ))
    return tuple(out)


def _list(t: Mapping[str, Any], key: str, path: str, required: bool = True) -> list[str]:
    v = t.get(key, [])
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{path}.{key}", f"{v!r} is not a list of strings")
    if required and not v:
        raise ConfigError(f"{path}.{key}", "missing: name at least one")
    return v


# ---------------------------------------------------------------------------------- decision
@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy said, and why (the log's and the client's error text)."""

    allowed: bool
    #: the client is the local user (loopback listener, or the embedding program)
    local: bool = False
    #: the allowing pattern names the destination without a wildcard: it may be protected
    explicit: bool = False
    why: str = ""


#: the verdict for every client of a local proxy (frozen: one for all)
_LOCAL_CLIENT = Verdict(True, local=True, explicit=True, why="local client")


def who(meta: StreamMeta) -> str:
    """The client as the policy saw it, for logs and errors."""
    parts = []
    if meta.peer_id:
        parts.append(f"id:{meta.peer_id}")
    spiffe = meta.extra.get("spiffe") if meta._extra else None
    if spiffe:
        parts.append(str(spiffe))
    if meta.user:
        verified = meta._extra and meta.extra.get("user_verified")
        parts.append(f"user:{meta.user}" + ("" if verified else " (unverified)"))
    return " ".join(parts) or "an unauthenticated client"


def local_proxy(loopback: bool | None, allow: Sequence[Target]) -> bool:
    """Whether a listener (bound to loopback or not; ``None``: no listener, the embedding
    program) serves its clients as the local user's proxy: loopback without an ``allow``."""
    return loopback is None or (loopback and not allow)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()

    def for_listener(self, listener: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.applies_to(listener))

    def decide(self, meta: StreamMeta, *, listener: str, loopback: bool | None,
               allow: Sequence[Target], name: str, port: int | None,
               ips: Sequence[str] = ()) -> Verdict:
        """The built-in decision for ``meta`` (arriving on ``listener``, which is bound to
        loopback or not; ``None``: no listener — the embedding program) to reach ``name`` on
        ``port``, whose known addresses are ``ips``."""
        if local_proxy(loopback, allow):
            return _LOCAL_CLIENT
        for t in allow:
            if t.matches(name, port, ips):
                return Verdict(True, local=bool(loopback), explicit=t.explicit,
                               why=f"listeners.{listener}.allow {t.text!r}")
        for r in self.rules:
            if not r.applies_to(listener) or not any(c.matches(meta) for c in r.clients):
                continue
            for t in r.to:
                if t.matches(name, port, ips):
                    return Verdict(True, local=bool(loopback), explicit=t.explicit,
                                   why=f"{r.path} {t.text!r}")
        return Verdict(False, local=bool(loopback),
                       why=f"no rule allows {who(meta)} on listener {listener!r} to reach "
                           f"{name}" + ("" if port is None else f":{port}"))


def targets(patterns: Iterable[str], path: str) -> tuple[Target, ...]:
    return tuple(parse_target(p, f"{path}[{i}]") for i, p in enumerate(patterns))
