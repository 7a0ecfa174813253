"""The TXT metadata format: examples, errors, and hypothesis round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_dns import TxtError, UgateTxt, format_txt, parse_txt, select_txt

ID = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZPI"


def test_example_record() -> None:
    meta = parse_txt([b"ugate=1 proto=ssh id=" + ID.lower().encode(), b"label.app=web%20ui"])
    assert meta == UgateTxt(proto="ssh", id=ID, labels={"app": "web ui"})


def test_foreign_and_future_records_are_skipped() -> None:
    assert parse_txt([b"v=spf1 -all"]) is None
    assert parse_txt([]) is None
    assert parse_txt([b"ugate=2 whatever-format"]) == UgateTxt(version=2)
    got = select_txt([[b"v=spf1 -all"], [b"ugate=2 x"], [b"ugate=1 proto=hbone"]])
    assert got is not None and got.proto == "hbone"
    assert select_txt([[b"hello"]]) is None


def test_unknown_keys_are_kept_aside() -> None:
    meta = parse_txt([b"ugate=1 proto=tcp weight=5"])
    assert meta is not None and meta.extra == {"weight": "5"} and meta.proto == "tcp"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"ugate=x", "version is not a number"),
        (b"ugate=1 proto", "token 'proto': not key=value"),
        (b"ugate=1 Proto=tcp", "key 'Proto' is not"),
        (b"ugate=1 proto=tcp proto=ssh", "key 'proto' given twice"),
        (b"ugate=1 proto=TCP!", "proto='TCP!': not a protocol name"),
        (b"ugate=1 id=abc", "not a base32 mesh ID"),
        (b"ugate=1 label.=x", "empty label name"),
        (b"ugate=1 label.a=%zz", "bad percent-escape"),
        (b"ugate=1 label.a=%ff", "not UTF-8"),
        (b"ugate=1 label.a=\xc3\xa9", "not printable ASCII"),
    ],
)
def test_errors_name_the_token(record: bytes, message: str) -> None:
    with pytest.raises(TxtError, match=message.replace("(", r"\(").replace("!", "!")):
        parse_txt([record])


def test_two_v1_records_are_ambiguous() -> None:
    with pytest.raises(TxtError, match="two ugate=1 TXT records"):
        select_txt([[b"ugate=1 proto=tcp"], [b"ugate=1 proto=ssh"]])


def test_long_records() -> None:
    with pytest.raises(TxtError, match="longer than 4096"):
        parse_txt([b"ugate=1 ", b"label.a=" + b"x" * 250] * 20)
    assert parse_txt([b"v=spf1 " + b"x" * 250] * 20) is None


_label_key = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
_meta = st.builds(
    UgateTxt,
    proto=st.none() | st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True),
    id=st.none() | st.from_regex(r"[A-Z2-7]{16,64}", fullmatch=True),
    labels=st.dictionaries(_label_key, st.text(max_size=40), max_size=8),
    extra=st.dictionaries(
        _label_key.filter(lambda k: k not in ("proto", "id", "ugate")), st.text(max_size=20),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None)
@given(_meta)
def test_format_then_parse_round_trips(meta: UgateTxt) -> None:
    try:
        strings = format_txt(meta)
    except TxtError as e:
        # one value percent-encodes past a TXT character-string (up to 12 bytes a character)
        assert "longer than 255 bytes" in str(e)
        return
    assert all(len(s) <= 255 for s in strings)
    assert parse_txt(strings) == meta


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_arbitrary_bytes_parse_or_fail_cleanly(strings: list[bytes]) -> None:
    try:
        meta = parse_txt(strings)
    except TxtError:
        return
    assert meta is None or isinstance(meta, UgateTxt)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"ugate=1", b"proto=tcp", b"id=" + ID.encode(), b"label.a=b",
                                 b"label.a=c", b"%", b"=", b"x=%41", b" ", b"\t", b"ugate=2"]),
                max_size=8))
def test_token_soup_parses_or_fails_cleanly(tokens: list[bytes]) -> None:
    try:
        parse_txt([b"ugate=1 " + b" ".join(tokens)])
    except TxtError as e:
        assert str(e)
