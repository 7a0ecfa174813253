"""The TLS front of a shared port: route by SNI, pass through or terminate, dispatch by ALPN.

A connection whose first bytes are a TLS record is handled here:

1. The ClientHello is read (bounded, within the handshake deadline) without consuming it.
2. An SNI matching a ``passthrough`` pattern is relayed untouched to ``<sni>:<passthrough_port>``
   through the router: the client sees the destination's own certificate.
3. An SNI that is ours — one of this workload's FQDNs or its VIP, a DNS name of the
   ``[identity] cert_file`` leaf, a ``terminate`` pattern, a name of a configured certificate,
   or no SNI at all — is terminated with the workload certificate (TLS 1.3 only, no
   resumption), asking for an optional client certificate; the client's verified mesh ID
   becomes ``meta.peer_id``. A configured certificate's name gets
   :func:`~ugate_core.certs.public_server_context` instead: TLS 1.2 with ECDHE + AEAD suites
   too, no client certificate (docs/identity.md, "TLS versions") — unless the listener sets
   ``require_client_cert``: then it gets :func:`~ugate_core.certs.mtls_server_context`, the
   workload context's rules (TLS 1.3 only, no resumption, a client certificate that chains to
   the anchor or a trust bundle), so no SNI lets a client skip the requirement. A configured
   certificate is read again when its files change.
4. Anything else gets a TLS ``unrecognized_name`` alert, a close and a counter.

After termination the decrypted stream goes to the protocol serving the negotiated ALPN
(``ListenerType.alpn``: ``h2`` → HBONE/HTTPS, ...), else to the listener's ``target``, else it is
sniffed again among the listener's protocols (HTTP/1.1 inside TLS, SOCKS over TLS, ...).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import options as _opt
from .certs import file_signature, mtls_server_context, public_server_context
from .errors import ConfigError, ProtocolError
from .router import match_name
from .sniff import sniff_stream
from .sslstream import SslStream
from .stream import Stream, StreamClosedError
from .tls_hello import ClientHelloParser, alert, looks_like_tls
from .types import ListenerContext, Sniff

log = logging.getLogger("ugate.tls")

OPTION_KEYS = frozenset({
    "passthrough", "passthrough_port", "terminate", "certificates", "require_client_cert",
})


def sniff(prefix: bytes) -> Sniff:
    r = looks_like_tls(prefix)
    return Sniff.NEED_MORE if r is None else (Sniff.MATCH if r else Sniff.NO)


@dataclass
class CertEntry:
    names: tuple[str, ...]
    cert: str
    key: str
    context: ssl.SSLContext | None = None
    #: :func:`~ugate_core.certs.file_signature` of (cert, key) when ``context`` was built
    signature: tuple[tuple[int, int, int, int], ...] = ()


@dataclass
class FrontOptions:
    passthrough: tuple[str, ...] = ()
    passthrough_port: int = 443
    terminate: tuple[str, ...] = ()
    certificates: list[CertEntry] = field(default_factory=list)
    require_client_cert: bool = False


def _names(t: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    v = _opt.strings(t, key, path, expect="a list of names")
    return tuple(x.lower().rstrip(".") for x in v)


def parse_options(options: Mapping[str, Any], path: str) -> FrontOptions:
    o = FrontOptions()
    if "passthrough" in options:
        o.passthrough = _names(options, "passthrough", path)
    if "terminate" in options:
        o.terminate = _names(options, "terminate", path)
    if "passthrough_port" in options:
        o.passthrough_port = _opt.integer(options, "passthrough_port", path, 0, lo=1,
                                          hi=65535, expect="a port (1-65535)")
    if "require_client_cert" in options:
        o.require_client_cert = _opt.boolean(options, "require_client_cert", path, False)
    certs = options.get("certificates", [])
    if not isinstance(certs, list):
        raise ConfigError(f"{path}.certificates", "not a list of {names, cert, key} tables")
    for i, c in enumerate(certs):
        p = f"{path}.certificates[{i}]"
        if not isinstance(c, Mapping) or set(c) != {"names", "cert", "key"}:
            raise ConfigError(p, "needs exactly the keys names, cert, key")
        if not isinstance(c["cert"], str) or not isinstance(c["key"], str):
            raise ConfigError(p, "cert and key are file paths")
        o.certificates.append(CertEntry(_names(c, "names", p), c["cert"], c["key"]))
    return o


def check_options(options: Mapping[str, Any], path: str) -> None:
    parse_options(options, path)


class _Front:
    """Per-listener state: parsed options and TLS contexts, built on first use."""

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        self.opts = parse_options(ctx.options, ctx.config.path)
        gw = ctx.gateway
        self.alpn: list[str] = []
        for t in gw.listener_types.values():
            for a in t.alpn:
                if a not in self.alpn and t.serve is not None:
                    self.alpn.append(a)
        if "http/1.1" not in self.alpn:
            self.alpn.append("http/1.1")
        self._default: ssl.SSLContext | None = None

    def _configured(self, c: CertEntry) -> ssl.SSLContext:
        """The context of a configured certificate, built again when its files changed."""
        sig = file_signature(c.cert, c.key)
        if c.context is not None and sig == c.signature:
            return c.context
        try:
            if self.opts.require_client_cert:
                ident = self.ctx.gateway.identity
                ctx = mtls_server_context(c.cert, c.key, ident.trust_pem(), self.alpn)
                ident.follow_trust(ctx)
            else:
                ctx = public_server_context(c.cert, c.key, self.alpn)
        except (OSError, ssl.SSLError) as e:
            c.signature = sig  # do not retry before the files change again
            if c.context is None:
                raise ProtocolError(f"listener {self.ctx.name!r}: certificate {c.cert!r} / "
                                    f"key {c.key!r}: cannot load: {e}",
                                    "tls_certificate") from None
            log.warning("certificate_reload_failed listener=%s cert=%s key=%s error=%r: "
                        "still presenting the previous one", self.ctx.name, c.cert, c.key,
                        str(e))
            return c.context
        if c.context is not None:
            log.info("certificate_reloaded listener=%s cert=%s", self.ctx.name, c.cert)
        c.context, c.signature = ctx, sig
        return ctx

    def context_for(self, sni: str | None) -> ssl.SSLContext:
        # reloads _default in place when due, and teaches every context new trust roots
        self.ctx.gateway.identity.renew_if_needed()
        if sni:
            for c in self.opts.certificates:
                if any(match_name(n, sni) for n in c.names):
                    return self._configured(c)
        if self._default is None:
            self._default = self.ctx.gateway.identity.server_ssl_context(
                self.alpn, require_client_cert=self.opts.require_client_cert)
        return self._default

    def is_ours(self, sni: str | None) -> bool:
        if sni is None:
            return True
        ident = self.ctx.gateway.identity
        if sni in ident.fqdns or sni == str(ident.vip) or sni in ident.cert_names:
            return True
        if any(match_name(p, sni) for p in self.opts.terminate):
            return True
        return any(match_name(n, sni) for c in self.opts.certificates for n in c.names)


def _front(ctx: ListenerContext) -> _Front:
    f = getattr(ctx, "_tls_front", None)
    if f is None:
        f = _Front(ctx)
        ctx._tls_front = f  # type: ignore[attr-defined]
    return f


async def serve(stream: Stream, ctx: ListenerContext) -> None:
    gw = ctx.gateway
    front = _front(ctx)
    timeout = gw.config.gateway.handshake_timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    parser = ClientHelloParser()
    seen = 0
    hello = None
    while hello is None:
        buf = await stream.read_some_into(seen + 1, deadline)  # peek: bytes stay buffered
        if len(buf) <= seen:
            if stream.saw_eof:
                raise StreamClosedError("closed during the TLS ClientHello")
            raise TimeoutError
        hello = parser.receive_data(buf[seen:])
        seen = len(buf)
    sni = hello.sni
    stream.meta.sni = sni
    route = next((p for p in front.opts.passthrough if sni and match_name(p, sni)), None)
    if sni and route is not None:
        stream.meta.protocol = "tls-passthrough"
        # the passthrough patterns are the rule: configured routes, not client choice. But a
        # wildcard lets the client choose the name, and a name can resolve to this host: for
        # a client beyond loopback, loopback, link-local, metadata and the gateway's own
        # addresses are refused unless the route names the SNI exactly
        target = f"{sni}:{front.opts.passthrough_port}"
        stream.meta.target = target
        screen = not ctx.config.loopback and any(c in route for c in "*?[")
        up = await gw.dial(target, screen=screen)
        gw.start_relay(stream, up)  # the buffered ClientHello goes first; runs on its own
        return
    if not front.is_ours(sni):
        stream.write(alert(112))
        raise ProtocolError(f"SNI {sni!r} is neither ours nor a passthrough route",
                            "tls_unknown_sni")
    tls = SslStream(stream, front.context_for(sni), server_side=True)
    await tls.handshake(max(deadline - loop.time(), 0.01))
    peer = tls.peer_certificate()
    if peer is not None:
        from .verify import leaf_id, peer_certificates, verified_spiffe

        # the handshake already checked the chain (mesh anchor or a trust bundle) and that
        # the client holds the key: the key's hash is who it is
        tls.meta.peer_id = leaf_id(peer)
        _, chain = peer_certificates(tls.ssl)
        spiffe = verified_spiffe(peer, chain, gw.identity.trust_roots)
        if spiffe:
            tls.meta.extra["spiffe"] = spiffe
    log.debug("tls_terminated listener=%s sni=%s alpn=%s peer=%s", ctx.name, sni,
              tls.meta.alpn, tls.meta.peer_id)
    await dispatch(tls, ctx)


async def dispatch(tls: Stream, ctx: ListenerContext) -> None:
    """Hand a terminated stream to the protocol of its ALPN, the target, or a second sniff."""
    gw = ctx.gateway
    cfg = ctx.config
    allowed = None if cfg.protocols == ("*",) else set(cfg.protocols)
    alpn = tls.meta.alpn
    if alpn:
        cands = [t for t in gw.listener_types.values()
                 if alpn in t.alpn and t.serve is not None
                 and (allowed is None or t.name in allowed)]
        if cands:
            has_cert = tls.meta.peer_id is not None
            # a protocol whose wish matches beats an indifferent one beats a mismatch
            cands.sort(key=lambda t: 0 if t.tls_client_cert is has_cert
                       else 1 if t.tls_client_cert is None else 2)
            t = cands[0]
            assert t.serve is not None
            tls.meta.protocol = t.name
            await t.serve(tls, ctx)
            return
    if cfg.target:
        tls.meta.protocol = "tls"
        await gw.forward(tls, cfg.target, route=True)
        return
    inner = [t for t in gw.listener_types.values()
             if t.sniff is not None and t.serve is not None and t.name != "tls"
             and (allowed is None or t.name in allowed)]
    res = await sniff_stream(tls, inner, timeout=cfg.sniff_timeout, max_bytes=cfg.sniff_max)
    if res.listener is None or res.listener.serve is None:
        raise ProtocolError(f"nothing serves what came inside TLS (alpn={alpn!r})",
                            f"tls_inner_{res.reason or 'no_match'}")
    tls.meta.protocol = res.listener.name
    await res.listener.serve(tls, ctx)


__all__ = ["OPTION_KEYS", "check_options", "dispatch", "serve", "sniff"]
