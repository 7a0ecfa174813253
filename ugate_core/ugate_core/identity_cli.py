"""``ugate id``: print this workload's ID, VIP, names, TLSA hash and SSH key."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from . import cli
from .certs import anchor_pem


def cmd_id(args: argparse.Namespace) -> int:
    if args.anchor:  # public: needs no key
        sys.stdout.write(anchor_pem().decode("ascii"))
        return 0
    gw = cli._gateway(args)
    ident = gw.identity  # creates the key on first use, like 'ugate run'
    if args.cert:
        sys.stdout.write(ident.cert_pem().decode("ascii"))
        return 0
    if args.json:
        print(json.dumps({
            "id": ident.id,
            "vip": str(ident.vip),
            "fqdns": list(ident.fqdns),
            "spki_sha256": ident.spki_sha256,
            "pin": ident.pin_sha256,  # curl --pinnedpubkey
            "ssh_public_key": ident.ssh_public_key(),
            "public_key_pem": ident.public_key_pem().decode("ascii"),
        }, indent=1))
        return 0
    rows = [
        ("id", ident.id),
        ("vip", str(ident.vip)),
        ("fqdns", " ".join(ident.fqdns)),
        ("spki_sha256", ident.spki_sha256),
        ("tlsa", f"3 1 1 {ident.spki_sha256}"),
        ("pin", f"{ident.pin_sha256}   (curl --pinnedpubkey)"),
        ("ssh", ident.ssh_public_key()),
        ("key_type", ident.key_type),
        ("source", ident.source),
    ]
    if ident.spiffe:
        rows.insert(3, ("spiffe", ident.spiffe))
    for k, v in rows:
        print(f"{k:<12} {v}")
    return 0


def _register(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("id", help="print this workload's ID, VIP, FQDNs, SPKI SHA-256 (TLSA "
                       "3 1 1) and OpenSSH public key; creates the key on first use")
    common(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="one JSON object: id, vip, fqdns, "
                   "spki_sha256, pin, ssh_public_key, public_key_pem")
    g.add_argument("--cert", action="store_true", help="print a current certificate (PEM)")
    g.add_argument("--anchor", action="store_true", help="print the public mesh anchor "
                   "certificate (for curl --cacert together with --pinnedpubkey)")
    p.set_defaults(fn=cmd_id)


if _register not in cli._cli_extensions:
    cli._cli_extensions.append(_register)
