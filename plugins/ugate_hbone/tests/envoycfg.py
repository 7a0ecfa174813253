"""Envoy bootstraps (as dicts) for the HBONE interop tests and the bench.

* :func:`hbone_client`: a TCP listener whose ``tcp_proxy`` tunnels every connection as an
  HTTP/2 CONNECT (``tunneling_config``) to an HBONE server — Envoy as an HBONE client.
* :func:`hbone_server`: an HTTP/2 listener that terminates CONNECT (``connect_matcher`` +
  ``upgrade_configs`` with ``connect_config``) and sends the bytes to a fixed TCP cluster —
  Envoy as an HBONE server.

Both take an optional TLS block (mTLS, TLS 1.3 only, ALPN h2). Listeners bind port 0; read the
port back from the admin API (``Envoy.listener_port``).
"""

from __future__ import annotations

from typing import Any

TLS13 = {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"}


def _addr(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _cluster(name: str, host: str, port: int, *, h2: bool = False,
             tls: dict[str, Any] | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "connect_timeout": "5s",
        "type": "STATIC",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": _addr(host, port)}}]}]},
    }
    if h2:
        c["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                         "HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {
                    "initial_stream_window_size": 16 << 20,
                    "initial_connection_window_size": 32 << 20,
                }},
            }}
    if tls is not None:
        c["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "UpstreamTlsContext",
            **tls,
        }}
    return c


def tls_context(cert: str, key: str, ca: str, *, spki_pins: list[str] | None = None,
                sans: list[str] | None = None) -> dict[str, Any]:
    """A ``common_tls_context`` (TLS 1.3, ALPN h2) presenting ``cert``/``key`` and verifying
    the peer against ``ca``, pinned by SPKI (base64 SHA-256) and/or exact URI SANs."""
    vc: dict[str, Any] = {"trusted_ca": {"filename": ca}}
    if spki_pins:
        vc["verify_certificate_spki"] = spki_pins
    if sans:
        vc["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": s}} for s in sans]
    return {"common_tls_context": {
        "tls_params": TLS13,
        "alpn_protocols": ["h2"],
        "tls_certificates": [{"certificate_chain": {"filename": cert},
                              "private_key": {"filename": key}}],
        "validation_context": vc,
    }}


def hbone_client(peer_host: str, peer_port: int, hostname: str, *,
                 tls: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Envoy listener ``tcp_in`` → CONNECT ``hostname`` over HTTP/2 to the peer."""
    tunneling: dict[str, Any] = {"hostname": hostname}
    if headers:
        tunneling["headers_to_add"] = [
            {"header": {"key": k, "value": v}} for k, v in headers.items()]
    return {"static_resources": {
        "listeners": [{
            "name": "tcp_in",
            "address": _addr("127.0.0.1", 0),
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.tcp_proxy",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy."
                             "v3.TcpProxy",
                    "stat_prefix": "tcp",
                    "cluster": "hbone_peer",
                    "tunneling_config": tunneling,
                },
            }]}],
        }],
        "clusters": [_cluster("hbone_peer", peer_host, peer_port, h2=True, tls=tls)],
    }}


def hbone_server(target_host: str, target_port: int, *,
                 tls: dict[str, Any] | None = None) -> dict[str, Any]:
    """Envoy listener ``connect_in``: HTTP/2 CONNECT terminated, bytes to the target."""
    chain: dict[str, Any] = {"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                     "http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "hcm",
            "codec_type": "HTTP2",
            "stream_idle_timeout": "0s",
            "http2_protocol_options": {
                "initial_stream_window_size": 16 << 20,
                "initial_connection_window_size": 32 << 20,
            },
            "route_config": {"virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{
                    "match": {"connect_matcher": {}},
                    "route": {"cluster": "target", "timeout": "0s",
                              "upgrade_configs": [{"upgrade_type": "CONNECT",
                                                   "connect_config": {}}]},
                }],
            }]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        },
    }]}
    if tls is not None:
        chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                     "DownstreamTlsContext",
            "require_client_certificate": True,
            **tls,
        }}
    return {"static_resources": {
        "listeners": [{"name": "connect_in", "address": _addr("127.0.0.1", 0),
                       "filter_chains": [chain]}],
        "clusters": [_cluster("target", target_host, target_port)],
    }}
