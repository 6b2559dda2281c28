"""A host as --host and --metrics-host take it, in the forms a socket and a person need.

The flags take an IPv4 address, a name, or an IPv6 address with or without brackets (`::1`, `[::1]`):
a socket wants the address bare and its family, and `host:port` text wants an IPv6 address bracketed.
"""

from __future__ import annotations

import socket


def bare(host: str) -> str:
    """The host as a socket binds it: an IPv6 address without its brackets."""
    return host.strip("[]")


def family(host: str) -> socket.AddressFamily:
    """IPv6 for an address with a colon (bracketed or not), IPv4 for any other address or name."""
    return socket.AF_INET6 if ":" in bare(host) else socket.AF_INET


def address(host: str, port: int) -> str:
    """`host:port`, an IPv6 address in brackets (`[::1]:8001`), as gRPC targets and URLs write it."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
