"""socks5 listener end to end: curl (a real SOCKS5 client) and raw-byte clients on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ugate_core import ConfigError, Gateway, loads
from ugate_core.testing import StartGateway, Upstream, free_port, metric, pattern, require_peer, run

BASE = """
[admin]
listen = ""
[gateway]
handshake_timeout = 5.0
"""

MIB = 1 << 20


def socks_listener(name: str = "socks", extra: str = "") -> str:
    return f"""
[listeners.{name}]
listen = "127.0.0.1:0"
protocols = ["socks5"]
{extra}
"""


async def curl(*args: str) -> bytes:
    exe = require_peer("curl")
    res = await run(exe, "-sS", "--fail", "--max-time", "30", *args, timeout=40)
    assert res.returncode == 0, f"curl {' '.join(args)}: exit {res.returncode}: {res.stderr!r}"
    return res.stdout


async def wait_metric(gw: Gateway, name: str, want: float, **labels: str) -> float:
    for _ in range(200):
        v = metric(gw, name, **labels)
        if v >= want:
            return v
        await asyncio.sleep(0.02)
    return metric(gw, name, **labels)


# ------------------------------------------------------------------ a raw SOCKS5 client


def req_bytes(host: str, port: int, cmd: int = 1) -> bytes:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        addr = bytes([3, len(host)]) + host.encode()
    else:
        addr = bytes([1 if ip.version == 4 else 4]) + ip.packed
    return bytes([5, cmd, 0]) + addr + struct.pack("!H", port)


async def read_reply(r: asyncio.StreamReader) -> tuple[int, str, int]:
    """A request reply: (code, bound host, bound port)."""
    head = await asyncio.wait_for(r.readexactly(4), 10)
    assert head[0] == 5 and head[2] == 0, head
    atyp = head[3]
    if atyp == 1:
        host = str(ipaddress.IPv4Address(await r.readexactly(4)))
    elif atyp == 4:
        host = str(ipaddress.IPv6Address(await r.readexactly(16)))
    else:
        n = (await r.readexactly(1))[0]
        host = (await r.readexactly(n)).decode()
    (port,) = struct.unpack("!H", await r.readexactly(2))
    return head[1], host, port


async def socks_open(
    port: int, host: str, dport: int, cmd: int = 1
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, tuple[int, str, int]]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"\x05\x01\x00")
    assert await asyncio.wait_for(r.readexactly(2), 10) == b"\x05\x00"
    w.write(req_bytes(host, dport, cmd))
    return r, w, await read_reply(r)


async def expect_eof(r: asyncio.StreamReader) -> None:
    try:
        assert await asyncio.wait_for(r.read(), 10) == b""
    except ConnectionResetError:
        pass


# ------------------------------------------------------------------ fixtures


@pytest.fixture
async def v6_upstream() -> AsyncIterator[tuple[int, bytes]]:
    """A one-shot HTTP/1.1 server on [::1] answering every request with 64 KiB."""
    body = pattern(65536, seed=6)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\nConnection: close\r\n\r\n"
                    + body)
            await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    try:
        server = await asyncio.start_server(handle, "::1", 0)
    except OSError as e:
        pytest.skip(f"cannot listen on [::1]: {e}")
    try:
        yield server.sockets[0].getsockname()[1], body
    finally:
        server.close()


# ------------------------------------------------------------------ curl through ugate


async def test_curl_socks5_hostname_dedicated_and_shared_port(
    start_gateway: StartGateway, http_upstream: Upstream
) -> None:
    gw = await start_gateway(BASE + socks_listener() + """
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
""")
    url = f"http://{http_upstream.address}/bytes/{MIB}"
    want = pattern(MIB)
    for ln in ("socks", "shared"):
        got = await curl("--socks5-hostname", f"127.0.0.1:{gw.port(ln)}", url)
        assert got == want, ln
        assert await wait_metric(gw, "ugate_streams_total", 1, listener=ln, end="done") == 1
        assert metric(gw, "ugate_connections_total", listener=ln, protocol="socks5") == 1
        assert metric(gw, "ugate_relay_bytes_total", listener=ln, direction="down") > MIB
    # the IP form: curl resolves and sends an IPv4 address (ATYP 1)
    got = await curl("--socks5", f"127.0.0.1:{gw.port('shared')}", url)
    assert got == want
    assert len(http_upstream.requests) == 3


async def test_shared_port_does_not_wait_for_the_sniff_deadline(
    start_gateway: StartGateway, http_upstream: Upstream
) -> None:
    gw = await start_gateway(BASE + """
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
sniff_timeout = 3.0
""")
    for _ in range(3):
        t = time.monotonic()
        got = await curl("--socks5-hostname", f"127.0.0.1:{gw.port('shared')}",
                         f"http://{http_upstream.address}/fast")
        assert got == b"hello /fast\n"
        assert time.monotonic() - t < 1.5


async def test_ipv6_target(start_gateway: StartGateway, v6_upstream: tuple[int, bytes]) -> None:
    port, body = v6_upstream
    gw = await start_gateway(BASE + socks_listener())
    proxy = f"127.0.0.1:{gw.port('socks')}"
    assert await curl("--socks5", proxy, f"http://[::1]:{port}/") == body
    assert await curl("--socks5-hostname", proxy, f"http://[::1]:{port}/") == body
    # and a raw ATYP 4 request: the reply carries the upstream socket's IPv6 address
    r, w, (code, host, bport) = await socks_open(gw.port("socks"), "::1", port)
    assert (code, host) == (0, "::1") and bport > 0
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await asyncio.wait_for(r.read(-1), 10)
    assert data.endswith(body)
    w.close()


async def test_hosts_entry_routes_a_name(
    start_gateway: StartGateway, http_upstream: Upstream
) -> None:
    # direct=false: only discovery (the hosts table) can turn svc.test into an address
    gw = await start_gateway(BASE + socks_listener() + """
[routing]
direct = false
[hosts."svc.test"]
endpoints = ["127.0.0.1"]
""")
    got = await curl("--socks5-hostname", f"127.0.0.1:{gw.port('socks')}",
                     f"http://svc.test:{http_upstream.port}/named")
    assert got == b"hello /named\n"
    assert http_upstream.requests[-1][2]["host"] == f"svc.test:{http_upstream.port}"
    assert metric(gw, "ugate_discovery_lookups_total", discovery="local", result="hit") == 1


async def test_username_password(start_gateway: StartGateway, http_upstream: Upstream) -> None:
    gw = await start_gateway(BASE + socks_listener("auth", """
users = { alice = "s3cret" }
"""))
    p = gw.port("auth")
    url = f"http://{http_upstream.address}/bytes/4096"
    got = await curl("-x", f"socks5h://alice:s3cret@127.0.0.1:{p}", url)
    assert got == pattern(4096)
    got = await curl("--socks5-hostname", f"127.0.0.1:{p}", "--proxy-user", "alice:s3cret", url)
    assert got == pattern(4096)

    exe = require_peer("curl")
    bad = await run(exe, "-sS", "--max-time", "10", "-x", f"socks5h://alice:wrong@127.0.0.1:{p}",
                    url, timeout=20)
    assert bad.returncode != 0 and bad.stdout == b""
    assert b"rejected" in bad.stderr, bad.stderr
    assert await wait_metric(gw, "ugate_rejections_total", 1, listener="auth",
                             reason="auth_failed") == 1
    none = await run(exe, "-sS", "--max-time", "10", "--socks5-hostname", f"127.0.0.1:{p}", url,
                     timeout=20)
    assert none.returncode != 0 and none.stdout == b""
    assert await wait_metric(gw, "ugate_rejections_total", 1, listener="auth",
                             reason="auth_required") == 1
    assert len(http_upstream.requests) == 2

    # raw: the exact bytes of a refusal, then the close
    r, w = await asyncio.open_connection("127.0.0.1", p)
    w.write(b"\x05\x01\x02\x01\x05alice\x03bad")
    assert await asyncio.wait_for(r.readexactly(4), 10) == b"\x05\x02\x01\x01"
    await expect_eof(r)
    w.close()
    r, w = await asyncio.open_connection("127.0.0.1", p)
    w.write(b"\x05\x01\x00")
    assert await asyncio.wait_for(r.read(100), 10) == b"\x05\xff"
    await expect_eof(r)
    w.close()
    assert await wait_metric(gw, "ugate_rejections_total", 2, listener="auth",
                             reason="auth_failed") == 2


async def test_users_file(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path
) -> None:
    f = tmp_path / "socks-users"
    f.write_text("# name:password\nbob:hunter2\n")
    gw = await start_gateway(BASE + socks_listener("auth", f'users_file = "{f}"\n'))
    got = await curl("-x", f"socks5h://bob:hunter2@127.0.0.1:{gw.port('auth')}",
                     f"http://{http_upstream.address}/file")
    assert got == b"hello /file\n"


# ------------------------------------------------------------------ reply codes (raw bytes)


async def test_reply_codes(start_gateway: StartGateway, http_upstream: Upstream) -> None:
    gw = await start_gateway(BASE + socks_listener() + socks_listener("strict", """
allow = ["svc.test"]
""") + """
[hosts."svc.test"]
endpoints = ["127.0.0.1"]
""")
    p = gw.port("socks")
    # success: the bound address is the upstream socket's local address
    r, w, (code, host, bport) = await socks_open(p, "127.0.0.1", http_upstream.port)
    assert (code, host) == (0, "127.0.0.1") and bport not in (0, http_upstream.port)
    w.write(b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(r.read(-1), 10)).endswith(b"hello /x\n")
    w.close()

    dead = free_port()
    r, w, (code, _, _) = await socks_open(p, "127.0.0.1", dead)
    assert code == 0x05  # connection refused
    await expect_eof(r)
    w.close()
    assert metric(gw, "ugate_dial_errors_total", reason="refused") == 1

    # allow list: svc.test may be reached, an IP may not (0x02: not allowed by ruleset)
    r, w, (code, _, _) = await socks_open(gw.port("strict"), "127.0.0.1", http_upstream.port)
    assert code == 0x02
    await expect_eof(r)
    w.close()
    assert metric(gw, "ugate_dial_errors_total", reason="denied") == 1
    got = await curl("--socks5-hostname", f"127.0.0.1:{gw.port('strict')}",
                     f"http://svc.test:{http_upstream.port}/ok")
    assert got == b"hello /ok\n"

    # BIND and UDP ASSOCIATE: 0x07 command not supported
    for cmd in (2, 3):
        r, w, (code, _, _) = await socks_open(p, "127.0.0.1", 1, cmd=cmd)
        assert code == 0x07
        await expect_eof(r)
        w.close()
    assert await wait_metric(gw, "ugate_rejections_total", 2, listener="socks",
                             reason="unsupported_command") == 2

    # SOCKS4 gets a SOCKS4 refusal (91) on a dedicated port
    r, w = await asyncio.open_connection("127.0.0.1", p)
    w.write(b"\x04\x01\x00\x50\x7f\x00\x00\x01root\x00")
    assert await asyncio.wait_for(r.readexactly(8), 10) == b"\x00\x5b" + bytes(6)
    await expect_eof(r)
    w.close()
    assert await wait_metric(gw, "ugate_rejections_total", 1, listener="socks",
                             reason="socks4") == 1


async def test_unknown_name_without_direct_routing_is_host_unreachable(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(BASE + socks_listener() + """
[routing]
direct = false
""")
    r, w, (code, host, port) = await socks_open(gw.port("socks"), "nowhere.test", 80)
    assert (code, host, port) == (0x04, "0.0.0.0", 0)
    await expect_eof(r)
    w.close()
    assert metric(gw, "ugate_dial_errors_total", reason="no_route") == 1


async def test_handshake_deadline_on_a_dedicated_port(start_gateway: StartGateway) -> None:
    gw = await start_gateway(BASE.replace("5.0", "0.3") + socks_listener())
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("socks"))
    w.write(b"\x05\x01")  # half a greeting, then silence
    await expect_eof(r)
    w.close()
    assert await wait_metric(gw, "ugate_rejections_total", 1, listener="socks",
                             reason="handshake_timeout") == 1


# ------------------------------------------------------------------ half-close


async def test_half_close_through_socks(
    start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    gw = await start_gateway(BASE + socks_listener())
    host, port = echo_server
    data = pattern(MIB, seed=3)
    # greeting, request and the first payload bytes in one write: nothing may be lost
    sock = socket.create_connection(("127.0.0.1", gw.port("socks")))
    sock.setblocking(False)
    r, w = await asyncio.open_connection(sock=sock)
    w.write(b"\x05\x01\x00" + req_bytes(host, port) + data[:1000])
    assert await asyncio.wait_for(r.readexactly(2), 10) == b"\x05\x00"
    code, _, _ = await read_reply(r)
    assert code == 0
    w.write(data[1000:])
    await w.drain()
    sock.shutdown(socket.SHUT_WR)  # half-close: the whole echo must still arrive
    got = await asyncio.wait_for(r.read(-1), 30)
    assert len(got) == len(data) and got == data
    w.close()
    assert await wait_metric(gw, "ugate_streams_total", 1, listener="socks", end="done") == 1
    assert metric(gw, "ugate_relay_bytes_total", listener="socks", direction="up") == len(data)


# ------------------------------------------------------------------ config


def test_refuses_open_relay_beyond_loopback(tmp_path: Path) -> None:
    cfg = loads(BASE + """
[listeners.open]
listen = "0.0.0.0:0"
protocols = ["socks5"]
""")
    with pytest.raises(ConfigError) as ei:
        Gateway(cfg, state_dir=str(tmp_path)).check()
    assert str(ei.value) == (
        "listeners.open.listen: '0.0.0.0:0' is reachable beyond loopback and relays (socks5) "
        "but no rule says who may reach what: add 'allow = [...]' to listeners.open or a "
        "[[rules]] entry (clients, to) for it (docs/security.md); refusing to run an open relay"
    )
    # users say who, not what they may reach: alone they are no rule
    with pytest.raises(ConfigError, match="no rule says who may reach what"):
        Gateway(loads(BASE + '[listeners.open]\nlisten = "0.0.0.0:0"\nprotocols = ["socks5"]\n'
                      'users = { a = "b" }\n'), state_dir=str(tmp_path)).check()
    # with an allow list, or a rule for this listener, it passes the check (not started)
    for extra in ('allow = ["svc.test"]',
                  'users = { a = "b" }\n[[rules]]\nclients = ["user:a"]\nto = ["svc.test:80"]',
                  '[[rules]]\nlisteners = ["open"]\nclients = ["*"]\nto = ["svc.test"]'):
        ok = loads(BASE + f"""
[listeners.open]
listen = "0.0.0.0:0"
protocols = ["socks5"]
{extra}
""")
        Gateway(ok, state_dir=str(tmp_path)).check()


async def test_bad_options_name_the_key(start_gateway: StartGateway) -> None:
    with pytest.raises(ConfigError, match=r"^listeners\.s\.users\.alice: int value: the password "
                       "must be a string$"):
        await start_gateway(BASE + socks_listener("s", "users = { alice = 3 }"))
    with pytest.raises(ConfigError, match=r"^listeners\.s\.user: unknown key \(core knows: "
                       r"allow, .*; protocols socks5 know: users, users_file\); did you mean "
                       r"'users'\?$"):
        await start_gateway(BASE + socks_listener("s", 'user = { alice = "x" }'))
