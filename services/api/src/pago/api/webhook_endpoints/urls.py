"""What a webhook URL may be, checked when a merchant sets it (no DNS lookup here).

The notifier enforces the full rule at every attempt — it resolves the host and connects only
to the addresses it checked (``pago.notifier.guard``). Here the api refuses early what can be
known from the URL alone, with the same address classes: another scheme than http(s), http in
live mode, credentials in the URL, an IP literal or ``localhost`` name that is loopback,
private, link-local, shared, reserved, multicast, unspecified or a cloud metadata address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: frozenset[IpAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "169.254.169.123",
        "168.63.129.16",
        "100.100.100.200",
        "fd00:ec2::254",
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: IpAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def address_problem(
    ip: IpAddress, *, allow_loopback: bool, allowed_networks: Sequence[IpNetwork]
) -> str | None:
    inner = _embedded_ipv4(ip)
    if inner is not None:
        return address_problem(
            inner, allow_loopback=allow_loopback, allowed_networks=allowed_networks
        )
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if any(ip in net for net in allowed_networks):
        return None
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def url_problem(
    url: str, *, live: bool, allow_loopback: bool, allowed_networks: Sequence[IpNetwork]
) -> str | None:
    """Why ``url`` cannot be a webhook endpoint, or ``None``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError:
        return "must be a valid absolute http(s) URL"
    if parts.scheme not in ("http", "https") or not host:
        return "must be an absolute http(s) URL"
    if live and parts.scheme != "https":
        return "must use https in live mode"
    if parts.username is not None or parts.password is not None:
        return "must not contain credentials (the signature authenticates webhooks)"
    if host == "localhost" or host.endswith(".localhost"):
        return None if allow_loopback else "must not point at localhost"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: the notifier checks what it resolves to at every attempt
    problem = address_problem(ip, allow_loopback=allow_loopback, allowed_networks=allowed_networks)
    return f"must not point at {problem} ({ip})" if problem else None
