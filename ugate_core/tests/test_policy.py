"""The authorization policy without sockets: patterns, rules, decisions, protected addresses,
the start-up refusal of a relaying listener that no rule governs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ugate_core import ConfigError, Destination, Endpoint, Gateway, StreamMeta, loads
from ugate_core.policy import (
    Policy,
    parse_client,
    parse_rules,
    parse_target,
    protected_ip,
    protected_name,
    targets,
)
from ugate_core.testing import StartGateway

ALICE = "A" * 52  # a well-formed mesh ID (32 zero-ish bytes in base32)


def meta(**kw: object) -> StreamMeta:
    m = StreamMeta(listener="main")
    for k, v in kw.items():
        if k in ("spiffe", "user_verified"):
            m.extra[k] = v
        else:
            setattr(m, k, v)
    return m


def test_targets_parse_and_match() -> None:
    t = parse_target("svc.test:443", "p")
    assert t.matches("svc.test", 443) and not t.matches("svc.test", 80)
    assert not t.matches("x.svc.test", 443) and t.explicit
    w = parse_target("*.test", "p")
    assert w.matches("a.b.test", 1) and not w.matches("test", 1) and not w.explicit
    r = parse_target("db.internal:5000-5010", "p")
    assert r.matches("db.internal", 5005) and not r.matches("db.internal", 5011)
    n = parse_target("10.0.0.0/8:443", "p")
    assert n.matches("10.1.2.3", 443) and not n.matches("11.0.0.1", 443) and n.explicit
    assert n.matches("svc", 443, ips=["10.0.0.1", "10.9.9.9"])
    assert not n.matches("svc", 443, ips=["10.0.0.1", "192.168.0.1"])  # every address inside
    assert not n.matches("svc", 443)  # a name with no known address is not in a network
    v6 = parse_target("[fd00::]/8:8080", "p")
    assert v6.matches("fd12::1", 8080) and not v6.matches("fe80::1", 8080)
    assert parse_target("[::1]:22", "p").matches("::1", 22)
    assert parse_target("fd00::1", "p").matches("fd00::1", 9)  # bare IPv6: any port
    assert parse_target("127.0.0.1", "p").matches("::ffff:127.0.0.1", 1)
    assert parse_target("*", "p").matches("anything", 1)


@pytest.mark.parametrize(("text", "error"), [
    ("", "is not a destination pattern"),
    ("svc:0", "not within 1-65535"),
    ("svc:9-1", "not within 1-65535"),
    ("svc:http", "port 'http' is not N, N-M or *"),
    ("10.0.0.0/33", "is not a CIDR network"),
    ("[fd00::1", "missing ']'"),
    (":80", "has no host"),
])
def test_bad_targets_name_path_and_value(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_target(text, "rules[0].to[1]")
    assert str(ei.value).startswith(f"rules[0].to[1]: {text!r}") and error in str(ei.value)


@given(st.text(max_size=80))
def test_target_parser_takes_any_text(text: str) -> None:
    """Whatever a config holds: a Target or a ConfigError, nothing else."""
    try:
        t = parse_target(text, "p")
    except ConfigError:
        return
    t.matches("svc.test", 443, ["10.0.0.1"])


@given(st.text(max_size=80))
def test_client_parser_takes_any_text(text: str) -> None:
    try:
        parse_client(text, "p")
    except ConfigError:
        pass


def test_clients_match_only_what_the_protocol_verified() -> None:
    c = parse_client(f"id:{ALICE.lower()}", "p")
    assert c.matches(meta(peer_id=ALICE)) and not c.matches(meta(peer_id="B" * 52))
    assert not c.matches(meta())
    u = parse_client("user:alice", "p")
    assert u.matches(meta(user="alice", user_verified=True))
    assert not u.matches(meta(user="alice"))  # an SSH login name is the client's choice
    s = parse_client("spiffe://cluster.local/ns/a/sa/b", "p")
    assert s.matches(meta(spiffe="spiffe://cluster.local/ns/a/sa/b"))
    assert not s.matches(meta(spiffe="spiffe://cluster.local/ns/a/sa/c"))
    p = parse_client("spiffe://cluster.local/ns/a/*", "p")
    assert p.matches(meta(spiffe="spiffe://cluster.local/ns/a/sa/c"))
    assert not p.matches(meta(spiffe="spiffe://cluster.local/ns/b/sa/c"))
    td = parse_client("trust_domain:cluster.local", "p")
    assert td.matches(meta(spiffe="spiffe://cluster.local/x"))
    assert not td.matches(meta(spiffe="spiffe://cluster.local.evil/x"))
    assert parse_client("*", "p").matches(meta())
    for bad in ("id:nope", "alice", "spiffe://", "spiffe://td", "trust_domain:a/b", "x:y"):
        with pytest.raises(ConfigError):
            parse_client(bad, "p")


def decide(policy: Policy, m: StreamMeta, name: str, port: int, *, loopback: bool | None = False,
           allow: tuple[str, ...] = ()) -> tuple[bool, bool, str]:
    v = policy.decide(m, listener="main", loopback=loopback, allow=targets(allow, "allow"),
                      name=name, port=port)
    return v.allowed, v.explicit, v.why


def test_decisions() -> None:
    pol = Policy(parse_rules([
        {"clients": [f"id:{ALICE}"], "to": ["svc.test:80", "*.internal"]},
        {"clients": ["user:bob"], "to": ["db.test"], "listeners": ["other"]},
    ]))
    alice = meta(peer_id=ALICE)
    assert decide(pol, alice, "svc.test", 80)[:2] == (True, True)
    assert decide(pol, alice, "a.internal", 1)[:2] == (True, False)  # wildcard: screened
    assert decide(pol, alice, "svc.test", 81) == (
        False, False, f"no rule allows id:{ALICE} on listener 'main' to reach svc.test:81")
    # a key nobody listed authorizes nothing; nor does a rule for another listener
    assert not decide(pol, meta(peer_id="B" * 52), "svc.test", 80)[0]
    assert not decide(pol, meta(user="bob", user_verified=True), "db.test", 1)[0]
    # loopback listener without allow: the local user's proxy; with allow: the list, then rules
    assert decide(pol, meta(), "anything", 1, loopback=True)[:2] == (True, True)
    assert decide(pol, meta(), "svc.test", 1, loopback=True, allow=("svc.test",))[0]
    assert not decide(pol, meta(), "x.test", 1, loopback=True, allow=("svc.test",))[0]
    assert decide(pol, alice, "a.internal", 1, loopback=True, allow=("svc.test",))[0]
    # no listener at all: the embedding program
    assert decide(pol, meta(), "anything", 1, loopback=None)[0]


def test_protected_addresses() -> None:
    for ip, why in [("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
                    ("::ffff:127.0.0.1", "loopback"), ("0.0.0.0", "unspecified"),
                    ("::", "unspecified"), ("169.254.169.254", "link-local"),
                    ("fe80::1%eth0", "link-local"), ("fd00:ec2::254", "metadata"),
                    ("100.100.100.200", "metadata"), ("168.63.129.16", "metadata")]:
        assert protected_ip(ip) == why, ip
    for ip in ("10.0.0.1", "192.168.1.1", "8.8.8.8", "fd00::1", "not-an-ip"):
        assert protected_ip(ip) is None, ip
    assert protected_name("LocalHost.") == "loopback"
    assert protected_name("app.localhost") == "loopback"
    assert protected_name("svc.test") is None


def test_gateway_refuses_protected_destinations_allowed_by_a_wildcard(tmp_path: Path) -> None:
    gw = Gateway(loads(f"""
[admin]
listen = ""
[listeners.main]
listen = "0.0.0.0:0"
protocols = ["*"]
[[rules]]
clients = ["id:{ALICE}"]
to = ["*.test", "app.local:8080", "10.0.0.0/8"]
"""), state_dir=str(tmp_path))
    alice = meta(peer_id=ALICE)

    def dest(name: str, *eps: str) -> Destination:
        return Destination(name, tuple(Endpoint(e) for e in eps) or (Endpoint(name),))

    assert gw.decide(alice, dest("web.test", "10.1.1.1"), 80).allowed
    v = gw.decide(alice, dest("evil.test", "127.0.0.1"), 80)
    assert not v.allowed and "is a loopback address" in v.why and "'*.test'" in v.why
    assert not gw.decide(alice, dest("meta.test", "169.254.169.254"), 80).allowed
    assert not gw.decide(alice, dest("localhost.test", "::1"), 80).allowed
    # named without a wildcard: the operator meant it
    assert gw.decide(alice, dest("app.local", "127.0.0.1"), 8080).allowed
    assert not gw.decide(meta(peer_id="B" * 52), dest("web.test", "10.1.1.1"), 80).allowed


def test_relaying_listener_beyond_loopback_needs_a_rule(tmp_path: Path) -> None:
    base = '[admin]\nlisten = ""\n'
    hbone = base + '[listeners.mesh]\nlisten = "0.0.0.0:0"\nprotocols = ["hbone"]\n'
    with pytest.raises(ConfigError) as ei:
        Gateway(loads(hbone), state_dir=str(tmp_path)).check()
    assert str(ei.value).startswith("listeners.mesh.listen: '0.0.0.0:0' is reachable beyond "
                                    "loopback and relays (hbone) but no rule says who may reach "
                                    "what")
    # a rule for another listener does not count; one for this listener (or all) does
    other = '[[rules]]\nlisteners = ["x"]\nclients = ["*"]\nto = ["a.test"]\n'
    with pytest.raises(ConfigError, match=r"rules\[0\]\.listeners\[0\]: 'x' is not a listener"):
        loads(hbone + other)
    Gateway(loads(hbone + f'[[rules]]\nclients = ["id:{ALICE}"]\nto = ["a.test"]\n'),
            state_dir=str(tmp_path)).check()
    # loopback, and listeners that do not relay, need none
    Gateway(loads(base + '[listeners.l]\nlisten = "127.0.0.1:0"\nprotocols = ["*"]\n'),
            state_dir=str(tmp_path)).check()
    Gateway(loads(base + '[listeners.t]\nlisten = "0.0.0.0:0"\nprotocols = ["tcp"]\n'
                  'target = "127.0.0.1:1"\n'), state_dir=str(tmp_path)).check()


def test_rules_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"^rules: is an array of tables"):
        loads('[rules]\nclients = ["*"]\n')
    with pytest.raises(ConfigError, match=r"^rules\[0\]\.too: unknown key"):
        loads('[[rules]]\nclients = ["*"]\ntoo = ["x"]\n')
    with pytest.raises(ConfigError, match=r"^rules\[0\]\.to: missing"):
        loads('[[rules]]\nclients = ["*"]\n')
    with pytest.raises(ConfigError, match=r"^listeners\.m\.allow\[0\]: 'a:b:c:d/99'"):
        loads('[listeners.m]\nlisten = "127.0.0.1:0"\nallow = ["a:b:c:d/99"]\n')


async def test_fixed_target_listener_beyond_loopback_relays(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    """A listener's fixed ``target`` is the operator's route, not a client's choice: a tcp
    forward listener beyond loopback relays without a rule (it chooses nothing for anyone)."""
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.fwd]
listen = "0.0.0.0:0"
protocols = ["tcp"]
target = "{echo_server[0]}:{echo_server[1]}"
""")
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("fwd"))
    w.write(b"ping")
    assert await asyncio.wait_for(r.readexactly(4), 5) == b"ping"
    (rec,) = [x for x in gw.streams.values() if x.listener == "fwd"]
    assert rec.client.target == f"{echo_server[0]}:{echo_server[1]}"
    w.close()


async def test_admin_endpoint_is_one_of_the_gateways_own_addresses(
        start_gateway: StartGateway) -> None:
    """The admin port counts as the gateway's own, as its listeners' do: a client beyond
    loopback allowed by a wildcard or a network never reaches it at this host's addresses."""
    from ugate_core.testing import free_port
    admin = free_port()
    gw = await start_gateway(f'[admin]\nlisten = "127.0.0.1:{admin}"\n[listeners.l]\n'
                             'listen = "127.0.0.1:0"\nprotocols = ["*"]\n')
    assert gw.own_address("127.0.0.1", admin)
    assert gw.own_address("127.0.0.1", gw.port("l"))
    assert not gw.own_address("127.0.0.1", free_port())


def test_a_rule_port_is_ascii_digits() -> None:
    from ugate_core import ConfigError
    from ugate_core.policy import parse_target

    for bad in ("a.test:\u00b2", "a.test:1-\u00b2", "a.test:\u0661"):
        with pytest.raises(ConfigError, match="is not N, N-M or"):
            parse_target(bad, "rules[0].to[0]")
