"""The route table other plugins' paths go through (routes.py): matching and conflicts."""

from __future__ import annotations

import pytest

from ugate_core import ConfigError
from ugate_http.routes import Exchange, HttpRoute, RouteTable


async def _noop(ex: Exchange) -> None:
    return None


def test_longest_prefix_on_whole_segments() -> None:
    ws = HttpRoute("/.well-known/ugate/ws", _noop, name="ws")
    wk = HttpRoute("/.well-known/", _noop, name="wk")
    t = RouteTable([ws, wk])
    assert t.match("/.well-known/ugate/ws") is ws
    assert t.match("/.well-known/ugate/ws/example.com:443?token=x") is ws
    assert t.match("/.well-known/ugate/wsx") is wk  # not a segment boundary
    assert t.match("/.well-known") is wk
    assert t.match("/other") is None
    assert t.match("http://example.com/.well-known/ugate/ws") is None  # absolute form: proxy
    assert t.match("*") is None


def test_root_route_and_empty_table() -> None:
    root = HttpRoute("/", _noop)
    assert RouteTable([root]).match("/anything/at/all") is root
    assert not RouteTable()
    assert RouteTable().match("/x") is None


def test_two_routes_with_one_prefix_are_a_start_up_error() -> None:
    with pytest.raises(ConfigError, match="'a' and 'b'"):
        RouteTable([HttpRoute("/x/", _noop, name="a"), HttpRoute("/x", _noop, name="b")])


@pytest.mark.parametrize("bad", ["", "x/y", "/a?b", "/a#b"])
def test_a_prefix_must_be_a_path(bad: str) -> None:
    with pytest.raises(ConfigError, match="must be a path"):
        HttpRoute(bad, _noop)


def test_protocols_are_collected_for_the_h2_setting() -> None:
    t = RouteTable([HttpRoute("/ws", _noop, protocols=frozenset({"websocket"})),
                    HttpRoute("/sig", _noop)])
    assert t.protocols == {"websocket"}


def test_a_routes_query_is_left_out_of_log_lines() -> None:
    from ugate_http.routing import logged_path

    assert logged_path("/.well-known/ugate/ws/a:1?token=secret") == "/.well-known/ugate/ws/a:1?…"
    assert logged_path("/plain") == "/plain"
    assert len(logged_path("/" + "x" * 500)) == 200
