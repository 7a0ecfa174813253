"""The raw lane: the commonest HTTP/1.1 exchange rewritten as bytes, with no head objects.

The express lane (``express.py``) answers common requests from callbacks, but it still parses
every head into a :class:`~ugate_http.h1.Request` / :class:`~ugate_http.h1.Response` (a field
tuple, a dataclass) and serializes a new head from them: about a third of the proxy's
Python time per request. Most requests and answers need nothing of that: a head already in
the form the parser would re-serialize to (``name: value`` with one space, CRLF line ends, no
whitespace around values), with no field the proxy acts on but ``Host`` (request) or
``Content-Length`` (response) and ``Connection: keep-alive``, comes out as its own bytes with
a line moved, the keep-alive line left out and a few lines added. The functions here check
exactly that with a few C-level regex passes and build the bytes to send; anything else
returns ``None`` and takes the parsing path.

Sans-IO and pure: :func:`request_parts` and :func:`response_head` only look at bytes. The
property tests (``tests/test_raw.py``) hold them to the parsing path byte for byte: whatever
the raw lane produces is what ``RequestParser`` + ``H1Front._fields`` + ``encode_head`` (and
``ResponseParser`` + ``rewrite.response_head``) produce for the same input.
"""

from __future__ import annotations

import re

_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_VCHAR = rb"[\x21-\x7e\x80-\xff]"
#: a field value as the parser re-serializes it: no leading or trailing whitespace
_VALUE = rb"(?:" + _VCHAR + rb"++(?:[\t ]++" + _VCHAR + rb"++)*+)?"


#: ``Connection: keep-alive``, which browsers and most servers send on HTTP/1.1 (nginx on
#: every answer): the proxy drops it (hop-by-hop; the field it names is one the raw lane
#: refuses anyway), so the raw lane takes heads with it and leaves it out
_KEEP_ALIVE = rb"(?i:connection): (?i:keep-alive)\r\n"
_KEEP_ALIVE_LINE = re.compile(_KEEP_ALIVE)


#: a plain ``Content-Length`` (a request's: the raw lane takes a body that came whole)
_LENGTH = rb"(?i:content-length): ([0-9]{1,18})\r\n"
_LENGTH_LINE = re.compile(_LENGTH)


def _others(special: bytes, length: bool = False) -> bytes:
    """Any number of field lines in the form the parser re-serializes (token, colon, one
    space, value, CRLF) whose names are none of ``special``, and ``Connection: keep-alive``
    lines (a group that is not None when there was one); with ``length``, ``Content-Length``
    lines too (a group: the last one's value)."""
    return (rb"(?:(?!(?i:" + special + rb"):)" + _TCHAR + rb"++: " + _VALUE
            + rb"\r\n|(" + _KEEP_ALIVE + rb")" + (rb"|" + _LENGTH if length else b"")
            + rb")*+")


#: request fields the proxy acts on besides Host: framing, hop-by-hop, Expect, Via (loops),
#: the X-Forwarded-For it appends to
_REQUEST_SPECIAL = (rb"host|content-length|transfer-encoding|connection|proxy-connection|"
                    rb"keep-alive|proxy-authorization|proxy-authenticate|te|trailer|upgrade|"
                    rb"expect|via|x-forwarded-for")
#: response fields the proxy acts on besides Content-Length
_RESPONSE_SPECIAL = (rb"content-length|transfer-encoding|connection|proxy-connection|"
                     rb"keep-alive|proxy-authorization|proxy-authenticate|te|trailer|upgrade")

#: a request head: origin form, HTTP/1.1, one Host among other fields; groups: method,
#: target, the lines before Host (and a keep-alive line, a Content-Length among them), its
#: value, the lines after it (likewise)
_REQUEST = re.compile(
    rb"(" + _TCHAR + rb"++) (/[\x21-\x7e]*+) HTTP/1\.1\r\n(" + _others(_REQUEST_SPECIAL, True)
    + rb")(?i:host): (" + _VALUE + rb")\r\n(" + _others(_REQUEST_SPECIAL, True) + rb")\r\n")
#: a response head: HTTP/1.1, a final status, one Content-Length (a plain number) among
#: other fields; groups: the status line and lines before Content-Length, the status, a
#: keep-alive line among them, the length, the lines after it, a keep-alive line among them
_RESPONSE = re.compile(
    rb"(HTTP/1\.1 ([2-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*+\r\n"
    + _others(_RESPONSE_SPECIAL) + rb")(?i:content-length): ([0-9]{1,18})\r\n("
    + _others(_RESPONSE_SPECIAL) + rb")\r\n")


#: a field line of a head the regexes above took, from the line feed before it
_PAIR = re.compile(rb"\n(" + _TCHAR + rb"++): ([^\r]*+)\r")


def request_parts(data: bytes, max_header_bytes: int, max_fields: int, max_body: int
                  ) -> tuple[bytes, bytes, bytes, bytes, int] | None:
    """``data`` is exactly one HTTP/1.1 request: a head in canonical form with one ``Host``,
    no field the proxy acts on but ``Connection: keep-alive`` and at most one plain
    ``Content-Length``, then all of that body (up to ``max_body``) → (method, target, host,
    the other field lines, the body's length or -1 without the field); else None. The head
    to send upstream is ``method target HTTP/1.1``, ``Host`` first, the other lines, then
    what the proxy adds and the ``Content-Length``; the body is the end of ``data``."""
    if len(data) > max_header_bytes + max_body:
        return None
    m = _REQUEST.match(data)
    if m is None:
        return None
    method, target, before, ka1, n1, host, after, ka2, n2 = m.groups()
    end = m.end()
    if method == b"CONNECT" or end > max_header_bytes \
            or data.count(b"\n", 0, end) - 2 > max_fields:
        return None
    rest = before + after
    if n1 is not None or n2 is not None:
        if len(_LENGTH_LINE.findall(rest)) != 1:  # (equal repeats: the parsing path's)
            return None
        length = int(n1 if n1 is not None else n2)
        rest = _LENGTH_LINE.sub(b"", rest)
    else:
        length = -1
    if len(data) - end != max(length, 0) or length > max_body:
        return None
    if ka1 is not None or ka2 is not None:
        rest = _KEEP_ALIVE_LINE.sub(b"", rest)
    return method, target, host, rest, length


def request_head(method: bytes, target: bytes, host: bytes, rest: bytes, length: int,
                 extra: bytes) -> bytes:
    """The head to send upstream for :func:`request_parts`' result: ``Host`` first, the other
    fields, then ``extra`` (whole CRLF-ended lines: ``Forwarded``, ``Via``, ...) and the
    ``Content-Length`` (as the pool writes it: last)."""
    if length < 0:
        return b"%b %b HTTP/1.1\r\nHost: %b\r\n%b%b\r\n" % (method, target, host, rest, extra)
    return b"%b %b HTTP/1.1\r\nHost: %b\r\n%b%bContent-Length: %d\r\n\r\n" % (
        method, target, host, rest, extra, length)


def _whole_answer(data: bytes, max_header_bytes: int, max_fields: int) -> re.Match[bytes] | None:
    """``_RESPONSE``'s match if ``data`` is exactly one whole answer the raw lane takes (an
    HTTP/1.1 final status other than 204/304, within the head bounds, with exactly
    Content-Length body bytes), else None."""
    m = _RESPONSE.match(data)
    if m is None:
        return None
    end = m.end()
    if int(m.group(4)) != len(data) - end or end > max_header_bytes:
        return None
    status = m.group(2)
    if status == b"204" or status == b"304" or data.count(b"\n", 0, end) - 2 > max_fields:
        return None
    return m


def response_head(data: bytes, max_header_bytes: int, max_fields: int
                  ) -> tuple[int, bytes, int] | None:
    """``data`` is exactly one whole answer to a GET-like request (not HEAD or CONNECT): an
    HTTP/1.1 final status other than 204/304, a head in canonical form whose only field the
    proxy acts on is one ``Content-Length``, and exactly that many body bytes → (status, the
    head to send the client, where the body starts in ``data``); else None. The head is the
    upstream's with ``Content-Length`` moved last, as the parsing path writes it."""
    m = _whole_answer(data, max_header_bytes, max_fields)
    if m is None:
        return None
    first, status, ka1, length, after, ka2 = m.groups()  # (no length groups: see _others)
    if ka1 is not None or ka2 is not None:
        first = _KEEP_ALIVE_LINE.sub(b"", first)
        after = _KEEP_ALIVE_LINE.sub(b"", after)
    return int(status), b"%b%bContent-Length: %d\r\n\r\n" % (first, after, int(length)), m.end()


def response_fields(data: bytes, max_header_bytes: int, max_fields: int
                    ) -> tuple[int, list[tuple[bytes, bytes]], int] | None:
    """:func:`response_head` for the HTTP/2 front: the same answers qualify; → (status, the
    h2 header list — ``:status``, the fields with lower-case names, ``content-length`` last,
    as ``h2msg.response_headers`` makes it — where the body starts in ``data``)."""
    m = _whole_answer(data, max_header_bytes, max_fields)
    if m is None:
        return None
    end = m.end()
    out = [(b":status", m.group(2))]
    out += [(k.lower(), v) for k, v in _PAIR.findall(data, 0, m.start(4))]
    out += [(k.lower(), v) for k, v in _PAIR.findall(data, m.end(4), end)]
    if m.group(3) is not None or m.group(6) is not None:
        out = [f for f in out if f[0] != b"connection"]
    out.append((b"content-length", b"%d" % int(m.group(4))))
    return int(m.group(2)), out, end
