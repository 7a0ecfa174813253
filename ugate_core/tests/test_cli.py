"""The ugate command: help, config check, dial, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from ugate_core.testing import connect_when_listening, free_port, pattern

UGATE = [sys.executable, "-m", "ugate_core.cli"]


def ugate(*args: str, input: bytes | None = None, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*UGATE, *args], input=input, capture_output=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_help_explains_each_command() -> None:
    out = ugate("--help").stdout.decode()
    for cmd in ("run", "plugins", "config", "dial"):
        assert f"    {cmd}" in out


def test_config_check_names_key_and_value(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[listeners.main]\nlisten = "127.0.0.1:99999"\n')
    res = ugate("config", "check", str(bad))
    assert res.returncode == 2
    err = res.stderr.decode()
    assert err == ("ugate: config error: listeners.main.listen: '127.0.0.1:99999': port 99999 "
                   "is not a port (0-65535)\n")
    good = tmp_path / "good.toml"
    good.write_text(ugate("config", "default").stdout.decode())
    res = ugate("config", "check", str(good))
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().endswith(": ok (1 listeners, 0 hosts)\n")


def test_config_check_open_relay_and_unknown_protocol(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[listeners.x]\nlisten = "127.0.0.1:0"\nprotocols = ["gopher"]\n')
    res = ugate("config", "check", str(f))
    assert res.returncode == 2
    assert "listeners.x.protocols[0]: 'gopher' is not an installed protocol" in res.stderr.decode()
    assert b"Traceback" not in res.stderr


async def test_dial_is_netcat_through_routing(echo_server: tuple[str, int], tmp_path: Path
                                              ) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[hosts."echo.test"]\nendpoints = ["127.0.0.1:{echo_server[1]}"]\n')
    data = pattern(200_000, 3)
    p = await asyncio.create_subprocess_exec(
        *UGATE, "dial", "-c", str(cfg), "echo.test:1", stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(data), 30)
    assert p.returncode == 0, err
    assert out == data


def test_dial_failure_is_one_clear_line(tmp_path: Path) -> None:
    res = ugate("dial", f"127.0.0.1:{free_port()}")
    assert res.returncode == 1
    assert res.stderr.decode().startswith("ugate: dial failed (refused): 127.0.0.1: ")


async def test_sigterm_drains_live_streams_then_exits_0(
    echo_server: tuple[str, int], tmp_path: Path
) -> None:
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[admin]\nlisten = ""\n[gateway]\ndrain_timeout = 5.0\n'
                   f'[listeners.fwd]\nlisten = "127.0.0.1:{port}"\nprotocols = ["tcp"]\n'
                   f'target = "127.0.0.1:{echo_server[1]}"\n')
    p = await asyncio.create_subprocess_exec(
        *UGATE, "run", "-c", str(cfg), env={**os.environ, "UGATE_STATE_DIR": str(tmp_path)},
        stderr=subprocess.PIPE)
    try:
        r, w = await connect_when_listening("127.0.0.1", port)
        w.write(b"before")
        assert await r.readexactly(6) == b"before"
        p.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # new connections are refused, the live stream still works
        try:
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(r2.read(), 2) == b""
            w2.close()
        except OSError:
            pass
        w.write(b"during")
        assert await r.readexactly(6) == b"during"
        w.write_eof()
        assert await r.read() == b""
        w.close()
        assert await asyncio.wait_for(p.wait(), 10) == 0
        assert p.stderr is not None
        log = (await p.stderr.read()).decode()
        assert "draining streams=1" in log
        assert "stream_closed listener=fwd" in log and "up=12 down=12 end=done" in log
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
