"""One error root for everything ugate raises on purpose.

Messages name the thing and the value: ``listeners.main.port: 99999 is not a port (1-65535)``.
"""

from __future__ import annotations


class UgateError(Exception):
    """Root of every error ugate raises on purpose."""


class ConfigError(UgateError):
    """The configuration is invalid; the message starts with the key path."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class PluginError(UgateError):
    """A plugin could not be loaded or broke its contract."""


class DialError(UgateError):
    """A destination could not be reached.

    ``reason`` is a short, stable word used in counters and mapped to protocol replies:
    ``no_route``, ``refused``, ``unreachable``, ``timeout``, ``denied``, ``identity``,
    ``bad_address``, ``no_dialer``, ``insecure`` (an ``https`` request whose destination is
    reached without TLS), ``tls_alert`` (the peer refused the TLS handshake with an alert,
    named in the message); from discoveries (:class:`DiscoveryError`): ``dnssec_bogus``,
    ``dns_unavailable``.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class DiscoveryError(DialError):
    """A discovery knows the name but cannot answer safely, so nothing may be dialed.

    Raised by ``Discovery.resolve``: the router ends the lookup with it (it does not ask the
    next discovery, nor fall back to a direct dial through the system resolver), does not cache
    it, and the dial fails with it. ``reason`` says why, e.g. ``dnssec_bogus`` (the answer
    failed DNSSEC validation), ``dns_unavailable`` (no server gave a usable answer in time);
    the message names the discovery, the name and what failed.
    """


class ProtocolError(UgateError):
    """A peer sent bytes that break the protocol. ``reason`` is the counter label."""

    def __init__(self, message: str, reason: str = "protocol") -> None:
        self.reason = reason
        super().__init__(message)


class AuthError(UgateError):
    """A peer failed to prove who it is, or is not allowed."""

    def __init__(self, message: str, reason: str = "auth") -> None:
        self.reason = reason
        super().__init__(message)
