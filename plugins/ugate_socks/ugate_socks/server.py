"""The asyncio side of the socks5 listener: handshake, auth, dial through the router, relay."""

from __future__ import annotations

import logging

from ugate_core import (
    AuthError,
    Deadline,
    DialError,
    ListenerContext,
    ProtocolError,
    Stream,
    StreamClosedError,
)

from .options import has_auth, password_ok, users_of
from .protocol import (
    METHOD_NO_AUTH,
    METHOD_NONE_ACCEPTABLE,
    METHOD_USERPASS,
    REP_CONNECTION_REFUSED,
    REP_GENERAL_FAILURE,
    REP_HOST_UNREACHABLE,
    REP_NOT_ALLOWED,
    REP_SUCCEEDED,
    AuthReceived,
    Event,
    GreetingReceived,
    RequestReceived,
    Socks5Error,
    Socks5Server,
)

log = logging.getLogger("ugate.socks5")

#: DialError.reason -> RFC 1928 reply code. A connect timeout is "host unreachable" (0x04):
#: "TTL expired" (0x06) names an IP-layer event the gateway never sees.
REPLY_FOR_REASON = {
    "no_route": REP_HOST_UNREACHABLE,
    "unreachable": REP_HOST_UNREACHABLE,
    "timeout": REP_HOST_UNREACHABLE,
    "bad_address": REP_HOST_UNREACHABLE,
    "refused": REP_CONNECTION_REFUSED,
    "denied": REP_NOT_ALLOWED,
}

_READ = 4096


def reply_code(reason: str) -> int:
    """The reply for a failed dial; unknown reasons (identity, no_dialer, ...) are 0x01."""
    return REPLY_FOR_REASON.get(reason, REP_GENERAL_FAILURE)


async def serve(stream: Stream, ctx: ListenerContext) -> None:
    """Serve one SOCKS5 client: handshake within the deadline, then CONNECT and relay."""
    gw = ctx.gateway
    p = Socks5Server()
    try:
        with Deadline(gw.config.gateway.handshake_timeout):  # asyncio.timeout, cheaper
            req = await _handshake(stream, p, ctx)
    except Socks5Error as e:
        stream.write(e.reply)
        raise
    try:
        up = await gw.dial(req.address, source=stream.meta)
    except DialError as e:
        stream.write(p.reply(reply_code(e.reason)))
        raise
    host, port = up.local_address() or ("0.0.0.0", 0)
    stream.write(p.reply(REP_SUCCEEDED, host, port))
    stream.unread(p.leftover())
    gw.start_relay(stream, up)  # runs on without this task


async def _next(stream: Stream, p: Socks5Server) -> Event:
    events = p.receive_data(b"")
    while not events:
        data = await stream.read(_READ)
        if not data:
            raise StreamClosedError(f"client closed during the SOCKS5 handshake "
                                    f"(state {p.state.value})")
        events = p.receive_data(data)
    return events[0]


def _offered(ev: GreetingReceived) -> str:
    """The methods a client offered, for a refusal's message (not formatted otherwise)."""
    return ", ".join(f"{m:#04x}" for m in ev.methods)


async def _handshake(stream: Stream, p: Socks5Server, ctx: ListenerContext) -> RequestReceived:
    ev = await _next(stream, p)
    assert isinstance(ev, GreetingReceived)
    if has_auth(ctx.options):
        if METHOD_USERPASS not in ev.methods:
            stream.write(p.select_method(METHOD_NONE_ACCEPTABLE))
            raise AuthError(f"socks5 client offered methods [{_offered(ev)}]; listener "
                            f"{ctx.name!r} requires username/password (0x02)", "auth_required")
        stream.write(p.select_method(METHOD_USERPASS))
        auth = await _next(stream, p)
        assert isinstance(auth, AuthReceived)
        ok = password_ok(users_of(ctx.options, ctx.config.path), auth.user, auth.password)
        stream.write(p.auth_reply(ok))
        if not ok:
            raise AuthError(f"socks5 user {auth.user!r}: unknown user or wrong password",
                            "auth_failed")
        stream.meta.user = auth.user
        stream.meta.extra["user_verified"] = True  # a password: [[rules]] user:<name>
    else:
        if METHOD_NO_AUTH not in ev.methods:
            stream.write(p.select_method(METHOD_NONE_ACCEPTABLE))
            raise ProtocolError(f"socks5 client offered methods [{_offered(ev)}]; listener "
                                f"{ctx.name!r} accepts only no-auth (0x00)",
                                "no_acceptable_method")
        stream.write(p.select_method(METHOD_NO_AUTH))
    req = await _next(stream, p)
    assert isinstance(req, RequestReceived)
    stream.meta.target = req.address
    log.debug("socks5_request listener=%s user=%s target=%s", ctx.name, stream.meta.user,
              req.address)
    return req
