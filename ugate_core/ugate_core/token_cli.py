"""``ugate token SUBJECT``: mint a signed token (:mod:`ugate_core.tokens`) and print it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import cli
from .errors import UgateError
from .keyfiles import read_key_file
from .tokens import make_token


def cmd_token(args: argparse.Namespace) -> int:
    if not 0 < args.lifetime <= 10 * 365 * 86400:
        raise UgateError(f"--lifetime {args.lifetime:g}: not a number of seconds > 0")
    gw = cli._gateway(args)
    if args.key:
        key = read_key_file(Path(args.key).expanduser())  # 0600, like the workload key
        if key is None:
            raise UgateError(f"key file {args.key}: no such file")
    else:
        key = gw.identity.key  # the workload key, created on first use like 'ugate id'
    audience = args.audience if args.audience is not None else gw.token_audience
    max_lifetime = gw.config.tokens.max_lifetime
    if args.lifetime > max_lifetime:
        print(f"ugate: warning: --lifetime {args.lifetime:g} s is more than [tokens] "
              f"max_lifetime ({max_lifetime:g} s): this gateway refuses the token",
              file=sys.stderr)
    print(make_token(key, args.subject, audience, args.lifetime))
    return 0


def _register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("token", help="print a signed token naming SUBJECT (a browser's "
                       "user:<SUBJECT>) for gateways that trust the signing key "
                       "([tokens] trusted_keys)")
    common(p)
    p.add_argument("subject", metavar="SUBJECT", help="who the bearer is (rules: user:SUBJECT)")
    p.add_argument("--audience", help="the gateway the token is for (default: [tokens] "
                   "audience, else this gateway's mesh ID)")
    p.add_argument("--lifetime", type=float, default=300.0, metavar="S",
                   help="seconds until it expires (default 300)")
    p.add_argument("--key", metavar="FILE", help="PEM private key to sign with, Ed25519 or "
                   "P-256, mode 0600 (default: this workload's key)")
    p.set_defaults(fn=cmd_token)


if _register not in cli._cli_extensions:
    cli._cli_extensions.append(_register)
