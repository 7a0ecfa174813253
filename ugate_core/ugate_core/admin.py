"""The admin endpoint: a small HTTP/1.1 server on loopback (no dependency).

``/metrics`` (Prometheus text), ``/healthz``, ``/readyz``, ``/plugins``, ``/streams``,
``/routes``, ``/config``, ``/listeners``. One request per connection, GET only, bounded
request size and deadline.

Who may ask, on every path (``/metrics`` too), in this order:

* ``Host`` must name this endpoint: its listen host, ``localhost``, ``127.0.0.1``, ``[::1]``
  or one of ``[admin] allowed_hosts``, with the bound port (421 otherwise). A web page that
  rebinds its own DNS name to 127.0.0.1 sends its name: refused. Bound to a wildcard address
  (``0.0.0.0``, ``[::]``) any IP literal with the port is also accepted, since that is what a
  Prometheus scraper sends for a pod address, and an IP literal is not a rebindable name.
* with ``[admin] token_file`` set (required beyond loopback), ``Authorization: Bearer
  <token>`` must match the file's content (compared in constant time; 401 otherwise). The file
  is re-read when it changes; unreadable or empty, every request is refused.

Refusals are counted as ``ugate_rejections_total{listener="admin", reason=...}`` with
reasons ``host`` and ``unauthorized`` (and ``bad_request``).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import stat
import time
from typing import TYPE_CHECKING, Any

from .config import AdminConfig, is_loopback
from .errors import ConfigError
from .options import parse_hostport
from .redact import redact

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("ugate.admin")

MAX_REQUEST = 8192
#: a token file larger than this is not a token
MAX_TOKEN = 4096
#: at most one log line per refusal reason in this many seconds
LOG_EVERY = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 421: "Misdirected Request", 503: "Service Unavailable"}
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


def read_token(path: str) -> bytes:
    """The bearer token in ``path`` (surrounding white space removed). ConfigError naming
    ``admin.token_file`` if it cannot be used."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ConfigError("admin.token_file", f"{path!r}: cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError("admin.token_file", f"{path!r}: not a regular file")
        data = os.read(fd, MAX_TOKEN + 1)
    finally:
        os.close(fd)
    token = data.strip()
    if len(data) > MAX_TOKEN:
        raise ConfigError("admin.token_file", f"{path!r}: larger than {MAX_TOKEN} bytes: not a "
                          "token")
    if not token:
        raise ConfigError("admin.token_file", f"{path!r}: empty: put the bearer token in it")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        log.warning("admin_token_file_mode path=%s mode=%04o: other users may read it; "
                    "chmod 600 recommended", path, mode)
    return token


def check(cfg: AdminConfig) -> None:
    """What ``ugate config check`` adds to the parse: the token file can be read."""
    if cfg.listen and cfg.token_file:
        read_token(cfg.token_file)


class _TokenFile:
    """The token, re-read when the file changes (inode, size or time)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._sig: tuple[int, int, int] | None = None
        self.token: bytes | None = read_token(path)
        self._sig = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def current(self) -> bytes | None:
        """The token now, ``None`` if the file went bad (then nothing is accepted)."""
        sig = self._stat()
        if sig != self._sig:
            self._sig = sig
            try:
                self.token = read_token(self.path)
                log.info("admin_token_reloaded path=%s", self.path)
            except ConfigError as e:
                self.token = None
                log.warning("admin_token_unusable error=%r: refusing every admin request",
                            str(e))
        return self.token


def _host_part(host: str) -> str:
    """A host as it appears in a ``Host`` header: lower case, IPv6 in brackets."""
    h = host.lower()
    try:
        ip = ipaddress.ip_address(h.strip("[]"))
    except ValueError:
        return h
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` header → (host part as in :func:`_host_part`, port or None); None if bad."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        host, rest = v[: end + 1], v[end + 1 :]
    else:
        host, sep, port_s = v.partition(":")
        rest = sep + port_s
    if rest:
        if not rest.startswith(":") or not (rest[1:].isascii() and rest[1:].isdigit()) \
                or len(rest) > 6:
            return None
        port: int | None = int(rest[1:])
    else:
        port = None
    if not host:
        return None
    return _host_part(host), port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class AdminServer:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.cfg = gateway.config.admin
        self.server: asyncio.Server | None = None
        self._token = _TokenFile(self.cfg.token_file) if self.cfg.token_file else None
        self._hosts: frozenset[str] = frozenset()
        self._ports: frozenset[int] = frozenset()
        self._any_ip = False
        self._logged: dict[str, float] = {}

    async def start(self, listen: str) -> None:
        host, port = parse_hostport(listen, "admin.listen")
        if not is_loopback(host) and not (self.cfg.allow_remote and self._token is not None):
            # parse() refuses this already; a config built another way must not slip through
            raise ConfigError("admin.listen", f"{listen!r} is beyond loopback: needs [admin] "
                              "allow_remote = true and token_file")
        try:
            self.server = await asyncio.start_server(self._handle, host, port,
                                                     reuse_address=True, limit=MAX_REQUEST)
        except OSError as e:
            # the default config and every example use 127.0.0.1:15000: a second gateway on
            # the machine lands here, and must say which key to change
            raise ConfigError("admin.listen", f"cannot listen on {listen!r}: "
                              f"{os.strerror(e.errno) if e.errno else e} (set [admin] "
                              "listen to a free address, "
                              "or \"\" to turn the admin endpoint off)") from None
        addrs = self.addresses()
        self._ports = frozenset(p for _, p in addrs)
        self._hosts = frozenset({_host_part(host), "localhost", "127.0.0.1", "[::1]",
                                 *(_host_part(h) for h, _ in addrs), *self.cfg.allowed_hosts})
        self._any_ip = host in _WILDCARDS or any(h in _WILDCARDS for h, _ in addrs)
        log.info("admin listening address=%s token=%s", ",".join(f"{h}:{p}" for h, p in addrs),
                 "required" if self._token else "none")

    def addresses(self) -> list[tuple[str, int]]:
        if self.server is None:
            return []
        return [s.getsockname()[:2] for s in self.server.sockets]

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 1)
            except TimeoutError:
                pass

    # ------------------------------------------------------------------------ who may ask
    def host_ok(self, value: str | None) -> bool:
        """Does a request's ``Host`` name this endpoint? (DNS rebinding defence)"""
        if value is None:
            return False
        hp = _split_host(value)
        if hp is None:
            return False
        host, port = hp
        if (port if port is not None else 80) not in self._ports:
            return False
        return host in self._hosts or (self._any_ip and _is_ip(host))

    def authorized(self, value: str | None) -> bool:
        """Does ``Authorization`` carry the token (always, if none is configured)?"""
        if self._token is None:
            return True
        token = self._token.current()
        if token is None or value is None:
            return False
        scheme, _, given = value.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("latin-1"), token)

    def _refuse(self, reason: str, detail: str, peer: Any) -> None:
        self.gw.metrics.reject("admin", reason)
        now = time.monotonic()
        if now - self._logged.get(reason, -LOG_EVERY) >= LOG_EVERY:
            self._logged[reason] = now
            log.info("rejected listener=admin reason=%s client=%s detail=%r (logged at most "
                     "every %gs per reason)", reason, peer, detail[:200], LOG_EVERY)

    def route(self, path: str) -> tuple[int, str, bytes]:
        gw = self.gw
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", gw.metrics.render()
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            return (200, "text/plain", b"ready\n") if gw.ready else (
                503, "text/plain", b"not ready\n")
        body: Any
        if path == "/plugins":
            body = {
                "plugins": [p.as_dict() for p in gw.plugins],
                "listener_types": sorted(gw.listener_types),
                "dialer_types": sorted(gw.dialer_types),
                "discoveries": [d.name for d in gw.discoveries],
            }
        elif path == "/streams":
            body = [r.as_dict() for r in list(gw.streams.values())]
        elif path == "/routes":
            body = gw.router.routes() if gw.router else []
        elif path == "/listeners":
            body = {n: [f"{h}:{p}" for h, p in ln.addresses()] for n, ln in gw.listeners.items()}
        elif path == "/config":
            body = {"source": gw.config.source, "config": redact(gw.config.raw)}
        else:
            return 404, "text/plain", b"not found\n"
        return 200, "application/json", json.dumps(body, indent=1, default=str).encode() + b"\n"

    def answer(self, head: bytes, peer: Any) -> tuple[int, str, bytes, list[str]]:
        """One request head → (status, content type, body, extra header lines)."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        fields: dict[str, list[str]] = {}
        for ln in lines[1:]:
            name, sep, value = ln.partition(":")
            if sep:
                fields.setdefault(name.strip().lower(), []).append(value.strip())
        hosts, auths = fields.get("host", []), fields.get("authorization", [])
        if len(parts) != 3 or len(hosts) > 1 or len(auths) > 1:
            self._refuse("bad_request", lines[0][:100], peer)
            return 400, "text/plain", b"bad request\n", []
        if not self.host_ok(hosts[0] if hosts else None):
            self._refuse("host", f"Host: {hosts[0] if hosts else '(none)'}", peer)
            return 421, "text/plain", b"wrong Host: this is the ugate admin endpoint\n", []
        if not self.authorized(auths[0] if auths else None):
            self._refuse("unauthorized", "bad token" if auths else "no Authorization", peer)
            return (401, "text/plain", b"unauthorized\n",
                    ['WWW-Authenticate: Bearer realm="ugate-admin"'])
        if parts[0] not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n", ["Allow: GET, HEAD"]
        return (*self.route(parts[1]), [])

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        peer = w.get_extra_info("peername")
        try:
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            status, ctype, body, extra = self.answer(head, peer)
            more = "".join(f"{x}\r\n" for x in extra)
            w.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n{more}Connection: close\r\n\r\n".encode()
            )
            if not head.startswith(b"HEAD "):
                w.write(body)
            await w.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        except Exception:
            log.exception("admin_error")
        finally:
            w.close()
