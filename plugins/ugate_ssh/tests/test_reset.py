"""``ssh -W`` (OpenSSH) through the gateway to an upstream that sends 64 KiB and then resets
(SO_LINGER 0): the gateway closes the channel without EOF, which is how an SSH channel says
"aborted"; a normal end sends EOF before the close."""

from __future__ import annotations

import asyncio

import asyncssh

from ugate_core.testing import RESET_BYTES, StartGateway, metric, pattern, read_to_end

from .conftest import OpenSsh, gateway_host_key_line


async def test_ssh_w_to_an_upstream_that_resets(
        start_gateway: StartGateway, openssh: OpenSsh, reset_server: tuple[str, int],
        echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.ssh]
listen = "127.0.0.1:0"
protocols = ["ssh"]
authorized_keys = ["{openssh.pub("alice")}"]
[hosts."cut.test"]
endpoints = ["127.0.0.1:{reset_server[1]}"]
[hosts."echo.test"]
endpoints = ["127.0.0.1:{echo_server[1]}"]
""")
    port = gw.port("ssh")
    kh = openssh.known_hosts(gateway_host_key_line(gw, port))
    cut = await openssh.run(openssh.args(port, "alice", kh, "-W",
                                         f"cut.test:{reset_server[1]}"), input=b"")
    ok = await openssh.run(openssh.args(port, "alice", kh, "-W",
                                        f"echo.test:{echo_server[1]}"), input=b"hello")
    print(f"ssh -W cut: exit {cut.returncode}, {len(cut.stdout)} bytes, "
          f"stderr {cut.stderr[-300:]!r}; clean: exit {ok.returncode}, {ok.stdout!r}")
    assert cut.stdout == pattern(RESET_BYTES)[:len(cut.stdout)]
    assert (ok.returncode, ok.stdout) == (0, b"hello")
    assert metric(gw, "ugate_streams_total", listener="ssh", end="reset") == 1
    assert metric(gw, "ugate_streams_total", listener="ssh", end="done") == 1


class _Session(asyncssh.SSHTCPSession[bytes]):
    """An asyncssh TCP session that records whether the channel sent EOF before closing."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def test_channel_closed_without_eof_when_the_upstream_resets(
        start_gateway: StartGateway, openssh: OpenSsh, reset_server: tuple[str, int],
        echo_server: tuple[str, int]) -> None:
    """What the SSH client is told, seen with asyncssh: a reset upstream → CHANNEL_CLOSE
    without CHANNEL_EOF; a normal end → EOF, then close."""
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.ssh]
listen = "127.0.0.1:0"
protocols = ["ssh"]
authorized_keys = ["{openssh.pub("alice")}"]
[hosts."cut.test"]
endpoints = ["127.0.0.1:{reset_server[1]}"]
[hosts."echo.test"]
endpoints = ["127.0.0.1:{echo_server[1]}"]
""")
    key = asyncssh.read_private_key(str(openssh.key("alice")))
    async with asyncssh.connect("127.0.0.1", gw.port("ssh"), username="alice",
                                client_keys=[key], known_hosts=None, agent_path=None) as conn:
        chan, cut = await conn.create_connection(_Session, "cut.test", reset_server[1])
        await asyncio.wait_for(cut.closed, 10)
        assert not cut.eof, "a reset upstream must not look like a clean end (EOF)"
        assert bytes(cut.data) == pattern(RESET_BYTES)[:len(cut.data)]
        chan, ok = await conn.create_connection(_Session, "echo.test", echo_server[1])
        chan.write(b"hello")
        chan.write_eof()
        await asyncio.wait_for(ok.closed, 10)
        assert ok.eof and bytes(ok.data) == b"hello"


async def test_client_channel_abort_resets_the_upstream(
        start_gateway: StartGateway, openssh: OpenSsh) -> None:
    """The other way: a client that closes its channel without EOF (an abort) makes the
    upstream see ECONNRESET, where a write_eof makes it see a clean EOF."""
    ends: asyncio.Queue[str] = asyncio.Queue()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"ready")
        _, end = await read_to_end(r)
        await ends.put(end)
        w.close()

    up = await asyncio.start_server(handle, "127.0.0.1", 0)
    uport = up.sockets[0].getsockname()[1]
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.ssh]
listen = "127.0.0.1:0"
protocols = ["ssh"]
authorized_keys = ["{openssh.pub("alice")}"]
[hosts."up.test"]
endpoints = ["127.0.0.1:{uport}"]
""")
    key = asyncssh.read_private_key(str(openssh.key("alice")))
    try:
        async with asyncssh.connect("127.0.0.1", gw.port("ssh"), username="alice",
                                    client_keys=[key], known_hosts=None,
                                    agent_path=None) as conn:
            for how, want in (("abort", "reset"), ("eof", "eof")):
                chan, s = await conn.create_connection(_Session, "up.test", uport)
                for _ in range(100):
                    if s.data:
                        break
                    await asyncio.sleep(0.02)
                chan.write(b"some bytes")
                if how == "abort":
                    chan.abort()
                else:
                    chan.write_eof()
                assert await asyncio.wait_for(ends.get(), 10) == want, how
                chan.close()
    finally:
        up.close()
