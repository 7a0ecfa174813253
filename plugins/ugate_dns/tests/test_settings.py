"""The [dns] table: defaults, and errors that name the key and the value."""

from __future__ import annotations

from typing import Any

import dns.name
import pytest

from ugate_core import ConfigError
from ugate_dns import parse_settings
from ugate_dns.settings import names_for

DS = "test.zone. DS 28579 13 2 873df8e917839a66bf81f0990e43b6f8e23405ab25db94dbfa69243083a21e8c"


def test_defaults_and_values() -> None:
    s = parse_settings({"servers": ["127.0.0.1:5300", "[::1]"], "zones": ["Test.Zone."],
                        "search": ["svc.local"], "trust_anchor": DS})
    assert s.servers == (("127.0.0.1", 5300), ("::1", 53))
    assert s.zones == (dns.name.from_text("test.zone"), dns.name.from_text("svc.local"))
    assert s.deadline == 1.8 and s.timeout == 0.5 and s.retries == 1
    a = s.anchor_for(dns.name.from_text("_443._tcp.svc.test.zone"))
    assert a is not None and len(a.ds) == 1 and a.zone == dns.name.from_text("test.zone")
    assert s.anchor_for(dns.name.from_text("other.zone")) is None
    assert [n.to_text() for n in names_for(s, "svc.test.zone")] == ["svc.test.zone."]
    assert [n.to_text() for n in names_for(s, "db")] == ["db.svc.local."]
    assert names_for(s, "example.com") == []


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"sever": []}, "dns.sever: unknown key"),
        ({"servers": ["1.2.3.4:x"]}, "dns.servers[0]: '1.2.3.4:x': port 'x' is not a number"),
        ({"zones": [""]}, "dns.zones[0]: '' is not a domain name"),
        ({"timeout": "1s"}, "dns.timeout: '1s' is not a number"),
        ({"timeout": 1.0, "deadline": 0.5}, "dns.timeout: 1s is longer than dns.deadline"),
        ({"deadline": 5}, "dns.deadline: 5s must be below discovery.timeout (2s)"),
        ({"cache_min_ttl": 10, "cache_max_ttl": 5}, "dns.cache_max_ttl: 5 is below"),
        ({"trust_anchor": ["test.zone. A 1.2.3.4"]}, "record type must be DS or DNSKEY"),
        ({"trust_anchor": ["test.zone. DS 1 2"]}, "bad DS data"),
        ({"trust_anchor": ["test.zone. DNSKEY 0 3 13 AAAA"]}, "without the zone-key flag"),
        ({"trust_anchor_file": "/nonexistent/ta"}, "dns.trust_anchor_file: '/nonexistent/ta'"),
        ({"ptr_confirm": "yes"}, "dns.ptr_confirm: 'yes' is not true or false"),
    ],
)
def test_errors(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings(table, 2.0)
    assert message in str(e.value)


def test_anchor_file(tmp_path: Any) -> None:
    p = tmp_path / "ta"
    p.write_text(f"; from keymgr\n{DS}\n\n")
    s = parse_settings({"servers": [], "trust_anchor_file": str(p)})
    assert list(s.anchors) == [dns.name.from_text("test.zone")]


def test_defaults_follow_a_small_discovery_timeout() -> None:
    s = parse_settings({}, 0.2)
    assert s.deadline == 0.18 and s.timeout == 0.18
    with pytest.raises(ConfigError, match=r"dns.timeout: 0.5s is longer than dns.deadline "
                       r"\(0.18s, from discovery.timeout\)"):
        parse_settings({"timeout": 0.5}, 0.2)


def test_config_check_reports_dns_errors(tmp_path: Any) -> None:
    from ugate_core import Gateway, loads

    gw = Gateway(loads('[admin]\nlisten = ""\n[dns]\nzones = ["a"]\nsever = 1\n'),
                 state_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"dns.sever: unknown key \(known: cache_max_ttl"):
        gw.check()
