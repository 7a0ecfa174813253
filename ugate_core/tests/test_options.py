"""ugate_core.options: one set of validators, errors naming the key path and the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import ConfigError
from ugate_core import options as opt


def err(f: Any, *a: Any, **kw: Any) -> str:
    with pytest.raises(ConfigError) as e:
        f(*a, **kw)
    return str(e.value)


def test_numbers() -> None:
    assert opt.number({"a": 2}, "a", "t", 1.0) == 2.0
    assert opt.number({}, "a", "t", 1.5) == 1.5
    assert err(opt.number, {"a": "x"}, "a", "t", 1.0) == "t.a: 'x' is not a number"
    assert err(opt.number, {"a": True}, "a", "t", 1.0) == "t.a: True is not a number"
    assert err(opt.number, {"a": -1}, "a", "t", 1.0) == "t.a: -1 is not a number >= 0"
    assert err(opt.number, {"a": 0}, "a", "t", 1.0, positive=True) == "t.a: 0 is not a number > 0"
    assert err(opt.number, {"a": 9}, "a", "", 1.0, hi=5) == "a: 9 is not a number in 0..5"
    assert err(opt.seconds, {"a": 0}, "a", "t", 1.0, positive=True) == (
        "t.a: 0 is not a number of seconds > 0")
    assert err(opt.seconds, {"a": "1s"}, "a", "t", 1.0) == "t.a: '1s' is not a number of seconds"


def test_integers() -> None:
    assert opt.integer({"n": 3}, "n", "t", 1, lo=1, hi=5) == 3
    assert err(opt.integer, {"n": 1.5}, "n", "t", 1) == "t.n: 1.5 is not an integer"
    assert err(opt.integer, {"n": 0}, "n", "t", 1, lo=1) == "t.n: 0 is not an integer >= 1"
    assert err(opt.integer, {"n": 9}, "n", "t", 1, lo=1, hi=5) == "t.n: 9 is not an integer in 1..5"
    assert err(opt.integer, {"n": 9}, "n", "t", 1, hi=5, expect="a port") == "t.n: 9 is not a port"


def test_booleans_strings_lists_choices() -> None:
    assert opt.boolean({}, "b", "t", True) is True
    assert err(opt.boolean, {"b": 1}, "b", "t", True) == "t.b: 1 is not true or false"
    assert err(opt.string, {"s": 3}, "s", "t", "") == "t.s: 3 is not a string"
    assert opt.strings({"l": "one"}, "l", "t") == ("one",)
    assert err(opt.strings, {"l": [1]}, "l", "t") == "t.l: [1] is not a list of strings"
    assert opt.one_of({"m": "b"}, "m", "t", "a", ("a", "b")) == "b"
    assert err(opt.one_of, {"m": "forwad"}, "m", "t", "forward", ("forward", "reverse")) == (
        "t.m: 'forwad' is not one of forward, reverse; did you mean 'forward'?")


def test_hostport_files_and_keys(tmp_path: Path) -> None:
    assert opt.hostport({"a": "[::1]:80"}, "a", "t") == ("::1", 80)
    assert opt.hostport({}, "a", "t") is None
    assert opt.hostport({"a": "h"}, "a", "t", default_port=53) == ("h", 53)
    assert err(opt.hostport, {"a": "h:x"}, "a", "t") == "t.a: 'h:x': port 'x' is not a number"
    f = tmp_path / "f"
    f.write_text("x")
    assert opt.existing_file({"f": str(f)}, "f", "t") == str(f)
    assert opt.existing_file({}, "f", "t") == ""
    assert err(opt.existing_file, {"f": str(tmp_path / "no")}, "f", "t").endswith("no such file")
    assert opt.existing_file({"f": "nope"}, "f", "t", must_exist=False) == "nope"
    opt.check_keys({"allow": 1}, {"allow", "listen"}, "l")
    assert err(opt.check_keys, {"alow": 1}, {"allow", "listen"}, "l") == (
        "l.alow: unknown key (known: allow, listen); did you mean 'allow'?")


@pytest.mark.parametrize("port", ["\u00b2", "\u0661\u0662", "\uff11"])
def test_a_port_is_ascii_digits(port: str) -> None:
    """``str.isdigit`` takes a superscript two (``int`` then raised ValueError, past every
    ``except ConfigError``: a data channel label or a WebSocket path is a client's) and
    Arabic-Indic or full-width digits (``int`` reads them): all are refused by name."""
    with pytest.raises(ConfigError, match="is not a number"):
        opt.parse_hostport(f"a.test:{port}", "label")


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=40))
def test_parse_hostport_gives_an_address_or_a_config_error(text: str) -> None:
    try:
        host, port = opt.parse_hostport(text, "x", 1)
    except ConfigError:
        return
    assert 0 <= port <= 65535 and host
