"""The ``ugate`` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

from .config import Config, load, load_default
from .errors import ConfigError, DialError, UgateError
from .gateway import Gateway

log = logging.getLogger("ugate")


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def use_fast_loop() -> str:
    """Install uvloop when present (the ``ugate-core[fast]`` extra); return the loop's name."""
    if os.environ.get("UGATE_LOOP", "") == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run_loop(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    use_fast_loop()
    return asyncio.run(main())


def _config(args: argparse.Namespace) -> Config:
    path = getattr(args, "config", None) or os.environ.get("UGATE_CONFIG")
    return load(path) if path else load_default()


def _gateway(args: argparse.Namespace, cfg: Config | None = None) -> Gateway:
    return Gateway(cfg if cfg is not None else _config(args),
                   state_dir=getattr(args, "state_dir", None))


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)

    async def main() -> int:
        gw = _gateway(args, cfg)
        log.info("starting config=%s loop=%s", cfg.source, type(asyncio.get_running_loop())
                 .__module__.split(".")[0])
        # started, the daemon's long-lived heap (modules, plugins, config) is built: keep it
        # out of the collector's passes, which otherwise walk it again and again while
        # connections come and go (~4.8k instructions per connection)
        await gw.serve(on_ready=gc.freeze)
        return 0

    return run_loop(main)


def cmd_plugins(args: argparse.Namespace) -> int:
    gw = _gateway(args)
    gw.load()
    if args.json:
        print(json.dumps({
            "plugins": [p.as_dict() for p in gw.plugins],
            "listener_types": {n: t.plugin for n, t in sorted(gw.listener_types.items())},
            "dialer_types": {n: t.plugin for n, t in sorted(gw.dialer_types.items())},
            "discoveries": [d.name for d in gw.discoveries],
        }, indent=1))
        return 0
    for p in gw.plugins:
        state = "ok" if p.loaded else f"FAILED: {p.error}"
        dist = f"{p.distribution} {p.version}".strip()
        print(f"{p.name:<12} {dist:<28} {state}")
    print()
    for n, t in sorted(gw.listener_types.items()):
        sniff = " (shared port)" if t.sniff else ""
        print(f"listener {n:<12} from {t.plugin}{sniff}")
    for n, d in sorted(gw.dialer_types.items()):
        print(f"dialer   {n:<12} from {d.plugin}")
    for disc in gw.discoveries:
        print(f"discovery {disc.name}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "default":
        from .config import default_text

        sys.stdout.write(default_text())
        return 0
    cfg = load(args.file)
    Gateway(cfg).check()
    print(f"{args.file}: ok ({len(cfg.listeners)} listeners, {len(cfg.hosts)} hosts)")
    return 0


def cmd_dial(args: argparse.Namespace) -> int:
    """netcat through the gateway's routing: stdin → destination → stdout."""

    async def main() -> int:
        gw = _gateway(args)
        gw.load()
        up = await gw.dial(args.address)
        loop = asyncio.get_running_loop()

        async def pump_in() -> None:
            fd = sys.stdin.fileno()
            while True:
                data = await loop.run_in_executor(None, os.read, fd, 65536)
                if not data:
                    up.write_eof()
                    return
                up.write(data)
                await up.drain()

        t = asyncio.create_task(pump_in())
        out = sys.stdout.buffer
        while True:
            data = await up.read()
            if not data:
                break
            out.write(data)
            out.flush()
        if not t.done():
            t.cancel()
        up.close()
        return 0

    return run_loop(main)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ugate",
        description="ugate: one process that accepts many protocols, routes by FQDN and relays "
        "streams with verified identities.",
    )
    p.add_argument("--log-level", default=os.environ.get("UGATE_LOG_LEVEL", "info"),
                   help="debug, info, warning, error (env UGATE_LOG_LEVEL)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("-c", "--config", help="TOML config file (env UGATE_CONFIG; default: "
                        "the embedded config, see 'ugate config default')")
        sp.add_argument("--state-dir", help="where the key lives (env UGATE_STATE_DIR)")

    r = sub.add_parser("run", help="run the gateway until SIGTERM/SIGINT")
    common(r)
    r.set_defaults(fn=cmd_run)
    pl = sub.add_parser("plugins", help="list installed plugins, what they give, what failed")
    common(pl)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(fn=cmd_plugins)
    c = sub.add_parser("config", help="'config check FILE' validates; 'config default' prints "
                       "the embedded default")
    c.add_argument("action", choices=["check", "default"])
    c.add_argument("file", nargs="?")
    c.set_defaults(fn=cmd_config)
    d = sub.add_parser("dial", help="connect stdin/stdout to HOST:PORT through the gateway's "
                       "routing (like netcat)")
    common(d)
    d.add_argument("address", help="name:port")
    d.set_defaults(fn=cmd_dial)
    for hook in _cli_extensions:
        hook(sub, common)
    return p


#: core modules add subcommands here (``identity_cli`` adds ``id``, ``token_cli`` ``token``)
_cli_extensions: list[Callable[[Any, Callable[[argparse.ArgumentParser], None]], None]] = []


def _quiet_library_warnings() -> None:
    """Plugins' libraries still name cryptography's DSA types, deprecated since
    cryptography 46 (dnspython's ``dnssecalgs``, asyncssh's key modules): every command
    printed a dozen warning lines about them, about nothing a user can change. Only those
    are silenced, only for the command line; other warnings still show."""
    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                            module=r"(dns|asyncssh)\.")


def main(argv: list[str] | None = None) -> int:
    from . import identity_cli, token_cli  # noqa: F401  (register 'ugate id', 'ugate token')

    _quiet_library_warnings()

    p = build_parser()
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    if not getattr(args, "fn", None):
        p.print_help()
        return 2
    if args.cmd == "config" and args.action == "check" and not args.file:
        p.error("config check needs FILE")
    try:
        return int(args.fn(args))
    except ConfigError as e:
        print(f"ugate: config error: {e}", file=sys.stderr)
        return 2
    except DialError as e:
        print(f"ugate: dial failed ({e.reason}): {e}", file=sys.stderr)
        return 1
    except UgateError as e:
        print(f"ugate: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # run the imported module's main, so subcommands that other modules register into
    # ugate_core.cli (``ugate id``) exist under ``python -m ugate_core.cli`` too
    from ugate_core.cli import main as _main

    sys.exit(_main())
