"""The certificate hashes on ugate-http's listeners, for pages (loaded only with ugate-http).

``GET /.well-known/ugate/wt-hashes`` answers the JSON of :func:`~.session.hashes_json`, with
``access-control-allow-origin: *``: the hashes are public (anyone can connect and see the
certificate), and a page from any origin needs them for ``serverCertificateHashes``.
"""

from __future__ import annotations

from ugate_core import GatewayAPI
from ugate_http.routes import Exchange, HttpRoute

from .session import HASHES_PATH, hashes_json


def routes(gateway: GatewayAPI) -> list[HttpRoute]:
    async def hashes(ex: Exchange) -> None:
        await ex.respond(200, [("content-type", "application/json"),
                               ("access-control-allow-origin", "*"),
                               ("cache-control", "max-age=3600")], hashes_json(gateway))

    return [HttpRoute(HASHES_PATH, hashes, methods=frozenset({"GET"}))]
