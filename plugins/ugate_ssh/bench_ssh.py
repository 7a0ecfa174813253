"""Bulk transfer through ugate's SSH server and SSH dialer vs OpenSSH at both ends, per cipher.

    python plugins/ugate_ssh/bench_ssh.py [--mib 256] [--runs 3] [--ciphers C1,C2]
                                          [--side server|client|both]

(default ciphers: aes128-gcm@openssh.com,chacha20-poly1305@openssh.com)

Server side, for each cipher: ``ssh -c CIPHER -W 127.0.0.1:PORT`` downloads N MiB from a local
source server and uploads N MiB to a local sink, once through ``ugate run`` (asyncssh server,
uvloop when installed) and once through ``sshd``.

Client side, for each cipher: a plain TCP client downloads N MiB from the source and uploads N
MiB to the sink through a local port that carries them over SSH to ``sshd`` (which opens the
direct-tcpip channel): once with ugate's SSH dialer behind a ``tcp`` forward listener, once
with OpenSSH's ``ssh -N -L``. sshd offers only the cipher under test, so both clients use it.
Also printed: the CPU seconds per GiB of the ugate process and of ``ssh -L`` (less swayed by
other load on the machine than MiB/s).

sshd needs root (skipped otherwise). Prints MiB/s (best of the runs) and ugate/OpenSSH.
Everything is on loopback; processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ugate_core.testing import free_port, wait_port

SINK = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(16); print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    n = 0
    while d := c.recv(1 << 20):
        n += len(d)
    c.sendall(str(n).encode())  # the count after EOF: the uploader knows all arrived
    c.close()
"""

SOURCE = r"""
import socket, sys
n = int(sys.argv[1]); s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(16); print(s.getsockname()[1], flush=True)
buf = b"\0" * (1 << 20)
while True:
    c, _ = s.accept()
    left = n
    try:
        while left > 0:
            left -= c.send(buf[: min(left, len(buf))])
    except OSError:
        pass
    c.close()
"""


def download(ssh_args: list[str], cipher: str, src_port: int, nbytes: int) -> float:
    t0 = time.perf_counter()
    # counted by wc: reading ssh's stdout from Python was slower than either server
    p = subprocess.Popen([*ssh_args[:-1], "-c", cipher, "-W", f"127.0.0.1:{src_port}",
                          ssh_args[-1]], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    wc = subprocess.run(["wc", "-c"], stdin=p.stdout, capture_output=True, timeout=300)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    err = p.stderr.read()
    p.wait(10)
    dt = time.perf_counter() - t0
    got = int(wc.stdout.split()[0])
    if got != nbytes:
        raise SystemExit(f"got {got} of {nbytes} bytes: {err.decode()[-500:]}")
    return nbytes / dt / (1 << 20)


def upload(ssh_args: list[str], cipher: str, sink_port: int, nbytes: int) -> float:
    t0 = time.perf_counter()
    head = subprocess.Popen(["head", "-c", str(nbytes), "/dev/zero"], stdout=subprocess.PIPE)
    p = subprocess.run([*ssh_args[:-1], "-c", cipher, "-W", f"127.0.0.1:{sink_port}",
                        ssh_args[-1]], stdin=head.stdout, capture_output=True, timeout=300)
    head.wait()
    dt = time.perf_counter() - t0
    if p.returncode != 0 or p.stdout != str(nbytes).encode():
        raise SystemExit(f"upload failed: the sink counted {p.stdout[:40]!r}: "
                         f"{p.stderr.decode()[-500:]}")
    return nbytes / dt / (1 << 20)


def tcp_download(port: int, nbytes: int) -> float:
    t0 = time.perf_counter()
    n = 0
    with socket.create_connection(("127.0.0.1", port), 10) as c:
        c.settimeout(300)
        while d := c.recv(1 << 20):
            n += len(d)
    dt = time.perf_counter() - t0
    if n != nbytes:
        raise SystemExit(f"client-side download: got {n} of {nbytes} bytes")
    return nbytes / dt / (1 << 20)


def tcp_upload(port: int, nbytes: int) -> float:
    buf = memoryview(b"\0" * (1 << 20))
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), 10) as c:
        c.settimeout(300)
        left = nbytes
        while left > 0:
            left -= c.send(buf[: min(left, len(buf))])
        c.shutdown(socket.SHUT_WR)
        got = b""
        while d := c.recv(64):
            got += d
    dt = time.perf_counter() - t0
    if got != str(nbytes).encode():
        raise SystemExit(f"client-side upload: the sink counted {got!r}, not {nbytes}")
    return nbytes / dt / (1 << 20)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def start_sshd(tmp: Path, keygen: str, pub: str, cipher: str | None,
               procs: list[Any]) -> tuple[int, Path]:
    """An sshd on a free loopback port that accepts ``pub`` (and offers only ``cipher``)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    Path("/run/sshd").mkdir(exist_ok=True)
    d = tmp / f"sshd-{len(procs)}"
    d.mkdir()
    hk = d / "hk"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(hk)], check=True)
    sp = free_port()
    (d / "ak").write_text(pub + "\n")
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {sp}\nHostKey {hk}\nUsePAM no\n"
        f"StrictModes no\nPermitRootLogin prohibit-password\nPidFile {d}/pid\n"
        f"AuthorizedKeysFile {d}/ak\nAllowTcpForwarding yes\n"
        + (f"Ciphers {cipher}\n" if cipher else ""))
    procs.append(subprocess.Popen([sshd, "-D", "-f", str(d / "sshd_config"), "-E",
                                   str(d / "sshd.log")], stderr=subprocess.DEVNULL))
    wait_port(sp)
    return sp, hk


def client_side(a: argparse.Namespace, tmp: Path, keygen: str, ssh: str, ugate: str,
                src_port: int, sink_port: int, procs: list[Any]) -> None:
    """ugate's SSH dialer vs OpenSSH's ``ssh -L``, both to the same sshd."""
    import asyncssh

    from ugate_ssh.keys import mesh_id

    nbytes = a.mib << 20
    key = tmp / "cid"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    state = tmp / "cstate"
    info = json.loads(subprocess.run([ugate, "id", "--json", "--state-dir", str(state)],
                                     check=True, capture_output=True).stdout)
    user = os.environ.get("USER", "root")
    print(f"bulk transfer of {a.mib} MiB through the SSH client side, best of {a.runs} "
          "(OpenSSH sshd at the other end; TCP client -> local port -> SSH -> sshd -> "
          "source/sink)")
    for cipher in a.ciphers.split(","):
        pub = (tmp / "cid.pub").read_text().strip() + "\n" + info["ssh_public_key"]
        sp, hk = start_sshd(tmp, keygen, pub, cipher, procs)
        sshd_id = mesh_id(asyncssh.read_public_key(str(hk) + ".pub"))
        kh = tmp / f"kh-{sp}"
        alg, b64 = (Path(str(hk) + ".pub")).read_text().split()[:2]
        kh.write_text(f"[127.0.0.1]:{sp} {alg} {b64}\n")
        res: dict[str, dict[str, float]] = {"download": {}, "upload": {}}
        for way, target in (("download", src_port), ("upload", sink_port)):
            # ugate: tcp forward listener -> router -> ssh dialer -> sshd
            gw_port = free_port()
            cfg = tmp / f"c-{sp}-{way}.toml"
            cfg.write_text(
                f'[admin]\nlisten = ""\n[ssh]\nuser = "{user}"\n'
                f'[listeners.fwd]\nlisten = "127.0.0.1:{gw_port}"\nprotocols = ["tcp"]\n'
                f'target = "127.0.0.1:{target}"\n'
                f'[hosts."127.0.0.1"]\nendpoints = ["127.0.0.1:{sp}"]\nprotocol = "ssh"\n'
                f'identity = ["id:{sshd_id}"]\n')
            gw = subprocess.Popen([ugate, "--log-level", "warning", "run", "-c", str(cfg),
                                   "--state-dir", str(state)])
            procs.append(gw)
            wait_port(gw_port)
            # OpenSSH: ssh -N -L
            lp = free_port()
            fwd = subprocess.Popen([ssh, "-F", "/dev/null", "-N", "-p", str(sp), "-i", str(key),
                                    "-c", cipher, "-o", "BatchMode=yes",
                                    "-o", f"UserKnownHostsFile={kh}",
                                    "-o", "StrictHostKeyChecking=yes",
                                    "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                                    "-o", "Compression=no", "-o", "ExitOnForwardFailure=yes",
                                    "-L", f"127.0.0.1:{lp}:127.0.0.1:{target}",
                                    "-l", user, "127.0.0.1"], stdin=subprocess.DEVNULL)
            procs.append(fwd)
            wait_port(lp)
            run = tcp_download if way == "download" else tcp_upload
            # best of the runs: the first ugate run also sets up the pooled SSH connection
            best = {"ugate": 0.0, "openssh": 0.0}
            cpu = {"ugate": 1e9, "openssh": 1e9}  # CPU s/GiB of the process, least of the runs
            for _ in range(a.runs):  # interleaved: drift hits both alike
                for name, port, proc in (("ugate", gw_port, gw), ("openssh", lp, fwd)):
                    c0 = cpu_seconds(proc.pid)
                    best[name] = max(best[name], run(port, nbytes))
                    cpu[name] = min(cpu[name], (cpu_seconds(proc.pid) - c0) * 1024 / a.mib)
            res[way] = best
            for p in (fwd, gw):
                p.terminate()
                p.wait(5)
            line = f"{cipher:30} {way:8} " + "  ".join(
                f"{k}={v:8.1f} MiB/s" for k, v in best.items())
            line += f"  ugate/openssh={best['ugate'] / best['openssh']:.2f}x"
            line += f"  CPU s/GiB ugate={cpu['ugate']:.2f} ssh={cpu['openssh']:.2f}"
            print(line, flush=True)


def server_side(a: argparse.Namespace, tmp: Path, keygen: str, ssh: str, ugate: str,
                src_port: int, sink_port: int, procs: list[Any]) -> None:
    """OpenSSH's ``ssh -W`` through ugate's SSH server vs through sshd."""
    nbytes = a.mib << 20
    key = tmp / "id"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp / "id.pub").read_text().strip()
    gw_port = free_port()
    cfg = tmp / "ugate.toml"
    cfg.write_text(f'[admin]\nlisten = ""\n[listeners.ssh]\nlisten = "127.0.0.1:{gw_port}"'
                   f'\nprotocols = ["ssh"]\nauthorized_keys = ["{pub}"]\n')
    state = tmp / "state"
    info = json.loads(subprocess.run([ugate, "id", "--json", "--state-dir", str(state)],
                                     check=True, capture_output=True).stdout)
    gw = subprocess.Popen([ugate, "--log-level", "warning", "run", "-c", str(cfg),
                           "--state-dir", str(state)])
    procs.append(gw)
    wait_port(gw_port)
    kh = tmp / "known_hosts"
    lines = [f"[127.0.0.1]:{gw_port} {info['ssh_public_key']}"]
    targets = {"ugate": gw_port}
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if os.geteuid() == 0 and os.path.exists(sshd):
        sp, hk = start_sshd(tmp, keygen, pub, None, procs)
        alg, b64 = Path(f"{hk}.pub").read_text().split()[:2]
        lines.append(f"[127.0.0.1]:{sp} {alg} {b64}")
        targets["openssh"] = sp
    else:
        print("sshd not available (needs root): ugate numbers only")
    kh.write_text("\n".join(lines) + "\n")
    print(f"bulk transfer of {a.mib} MiB through the SSH server, best of {a.runs} "
          "(OpenSSH client at the other end)")
    for cipher, way in [(c, w) for c in a.ciphers.split(",")
                        for w in ("download", "upload")]:
        res = dict.fromkeys(targets, 0.0)
        for _ in range(a.runs):  # interleaved: drift hits both alike
            for name, port in targets.items():
                args = [ssh, "-F", "/dev/null", "-p", str(port), "-i", str(key),
                        "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={kh}",
                        "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
                        "-o", "IdentityAgent=none", "-o", "Compression=no",
                        "-l", os.environ.get("USER", "root"), "127.0.0.1"]
                if way == "download":
                    r = download(args, cipher, src_port, nbytes)
                else:
                    r = upload(args, cipher, sink_port, nbytes)
                res[name] = max(res[name], r)
        line = f"{cipher:30} {way:8} " + "  ".join(
            f"{k}={v:8.1f} MiB/s" for k, v in res.items())
        if "openssh" in res:
            line += f"  ugate/openssh={res['ugate'] / res['openssh']:.2f}x"
        print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ciphers", default="aes128-gcm@openssh.com,chacha20-poly1305@openssh.com")
    ap.add_argument("--side", choices=["server", "client", "both"], default="both")
    a = ap.parse_args()
    nbytes = a.mib << 20
    ssh, keygen = shutil.which("ssh"), shutil.which("ssh-keygen")
    if not ssh or not keygen:
        raise SystemExit("needs openssh-client (apt-get install openssh-client)")
    ugate = str(Path(sys.executable).with_name("ugate"))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        try:
            src = subprocess.Popen([sys.executable, "-c", SOURCE, str(nbytes)],
                                   stdout=subprocess.PIPE)
            procs.append(src)
            assert src.stdout is not None
            src_port = int(src.stdout.readline())
            sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE)
            procs.append(sink)
            assert sink.stdout is not None
            sink_port = int(sink.stdout.readline())
            sshd = shutil.which("sshd") or "/usr/sbin/sshd"
            have_sshd = os.geteuid() == 0 and os.path.exists(sshd)
            if a.side in ("server", "both"):
                server_side(a, tmp, keygen, ssh, ugate, src_port, sink_port, procs)
            if a.side in ("client", "both"):
                if have_sshd:
                    client_side(a, tmp, keygen, ssh, ugate, src_port, sink_port, procs)
                else:
                    print("client side skipped: sshd not available (needs root)")
        finally:
            for p in reversed(procs):
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
