"""ugate DNS discovery: endpoints from A/AAAA/SRV, metadata from TXT, identities from TLSA.

See ``docs/dns.md`` in the project for the record formats and the ``[dns]`` config table.
"""

from .dane import tlsa_identities, tlsa_identity
from .discovery import DnsDiscovery
from .resolver import Answer, DnsError, Resolver
from .settings import DnsSettings, parse_settings
from .txt import TxtError, UgateTxt, format_txt, parse_txt, select_txt

__all__ = [
    "Answer",
    "DnsDiscovery",
    "DnsError",
    "DnsSettings",
    "Resolver",
    "TxtError",
    "UgateTxt",
    "format_txt",
    "parse_settings",
    "parse_txt",
    "select_txt",
    "tlsa_identities",
    "tlsa_identity",
]
