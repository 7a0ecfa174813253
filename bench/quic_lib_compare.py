"""aioquic vs qh3: bulk over one QUIC stream on loopback, the same script for both.

    .venv/bin/pip install qh3  # not a dependency of ugate: only for this comparison
    .venv/bin/python bench/quic_lib_compare.py aioquic 64
    .venv/bin/python bench/quic_lib_compare.py qh3 64
    .venv/bin/python bench/quic_lib_compare.py qh3 64 --echo

Server and client run in one process (one CPU, like a gateway's event loop): the client sends
N MiB on one bidirectional stream with FIN, the server counts and answers one byte at the end
(``--echo``: the server echoes everything and the client keeps at most 1 MiB unanswered).
Prints MiB/s. The library is imported by name, so the code path is identical for both.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def cert(tmp: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
         .public_key(key.public_key()).serial_number(1)
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
         .sign(key, hashes.SHA256()))
    (tmp / "c.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
    (tmp / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(tmp / "c.pem"), str(tmp / "k.pem")


async def main(lib: str, mib: int) -> float:
    aio: Any = importlib.import_module(f"{lib}.asyncio")
    cfgmod: Any = importlib.import_module(f"{lib}.quic.configuration")
    ev: Any = importlib.import_module(f"{lib}.quic.events")

    class Server(aio.QuicConnectionProtocol):  # type: ignore[misc,name-defined]
        got = 0

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, ev.StreamDataReceived):
                self.got += len(event.data)
                if ECHO:
                    self._quic.send_stream_data(event.stream_id, event.data)
                if event.end_stream:
                    self._quic.send_stream_data(event.stream_id, b"k", end_stream=True)
                self.transmit()

    tmp = Path(tempfile.mkdtemp())
    cf, kf = cert(tmp)
    scfg = cfgmod.QuicConfiguration(is_client=False, alpn_protocols=["bench"])
    scfg.load_cert_chain(cf, kf)
    server = await aio.serve("127.0.0.1", 0, configuration=scfg, create_protocol=Server)
    port = server._transport.get_extra_info("sockname")[1]
    ccfg = cfgmod.QuicConfiguration(is_client=True, alpn_protocols=["bench"],
                                    verify_mode=ssl.CERT_NONE)
    async with aio.connect("127.0.0.1", port, configuration=ccfg) as client:
        reader, writer = await client.create_stream()
        chunk = b"x" * 65536
        t0 = time.perf_counter()
        if ECHO:  # at most 1 MiB unanswered: the echo paces the sender
            back = 0
            for i in range(mib * 16):
                writer.write(chunk)
                while (i + 1) * 65536 - back > 1 << 20:
                    back += len(await asyncio.wait_for(reader.read(1 << 20), 60))
            writer.write_eof()
            rest = await asyncio.wait_for(reader.read(), 120)
            assert back + len(rest) == mib * (1 << 20) + 1 and rest.endswith(b"k")
        else:
            for _ in range(mib * 16):
                writer.write(chunk)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 120) == b"k"
        dt = time.perf_counter() - t0
    server.close()
    return mib / dt


ECHO = "--echo" in sys.argv

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--echo"]
    lib, mib = args[0], int(args[1]) if len(args) > 1 else 64
    rate = asyncio.run(main(lib, mib))
    mod = importlib.import_module(lib)
    print(f"{lib} {getattr(mod, '__version__', '?')}: {mib} MiB one stream"
          f"{' echo (1 MiB window)' if ECHO else ''} "
          f"{rate:.1f} MiB/s ({rate * 8.388608:.0f} Mbit/s)")
