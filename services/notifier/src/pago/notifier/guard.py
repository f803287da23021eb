"""SSRF guard: webhook requests reach only public addresses, and exactly the address checked.

A merchant chooses the URL, so without a guard a webhook could be aimed at the notifier's own
network: cloud metadata (``169.254.169.254``), Postgres, Redis, the kubelet. The guard has two
layers:

- ``url_refusal``: http(s) only, https for live-mode endpoints, no credentials in the URL;
- ``GuardedBackend``: the httpcore network backend under the notifier's one HTTP client. Its
  ``connect_tcp`` resolves the host itself, refuses if *any* address is loopback, private,
  link-local, shared, reserved, multicast, unspecified or a metadata address, then connects to
  an address it just checked. Because resolution and connection are one step, a DNS answer that
  changes between a check and the connect (rebinding) cannot slip through; the URL, ``Host``
  header and TLS SNI/certificate check keep the original host name. Redirects are never
  followed (a 3xx is a failed attempt), so a public URL cannot bounce the request inward.

Embedded IPv4 addresses (IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4, Teredo) are judged by the
IPv4 address inside them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""``(host, port)`` → the addresses it resolves to, in preference order."""

METADATA_ADDRESSES: frozenset[IpAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.169.123",  # AWS time sync
        "168.63.129.16",  # Azure wireserver: a *public* address that answers only inside Azure
        "100.100.100.200",  # Alibaba Cloud metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
    )
)
"""Refused even when an operator allows the private range they sit in."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class AddressRefused(httpcore.ConnectError):
    """The URL's host is, or resolves to, an address webhooks must not reach."""


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


class EgressPolicy:
    """Which addresses a webhook may connect to."""

    def __init__(
        self, *, allow_loopback: bool = False, allowed_networks: Iterable[IpNetwork] = ()
    ) -> None:
        self.allow_loopback = allow_loopback
        self.allowed_networks = tuple(allowed_networks)

    def refusal(self, ip: IpAddress) -> str | None:
        """Why ``ip`` is refused, or ``None`` when a webhook may connect to it."""
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = self.refusal(inner)
            return f"{ip} embeds {reason}" if reason else None
        if ip in METADATA_ADDRESSES:
            return f"{ip} is a cloud metadata address"
        if ip.is_loopback:
            return None if self.allow_loopback else f"{ip} is a loopback address"
        if any(ip in net for net in self.allowed_networks):
            return None
        if ip.is_unspecified:
            return f"{ip} is the unspecified address"
        if ip.is_link_local:
            return f"{ip} is a link-local address"
        if ip.is_multicast:
            return f"{ip} is a multicast address"
        if ip.is_private:
            return f"{ip} is a private address"
        if not ip.is_global:
            return f"{ip} is not a public address"
        return None


def url_refusal(url: str, *, live: bool) -> str | None:
    """Why ``url`` may not be called at all (before any resolution), or ``None``."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        return "the URL is not valid"
    if parsed.scheme not in ("http", "https"):
        return "only http and https URLs are allowed"
    if live and parsed.scheme != "https":
        return "live-mode endpoints must use https"
    if not parsed.host:
        return "the URL has no host"
    if parsed.userinfo:
        return "credentials in the URL are not allowed"
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    addresses: list[str] = []
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks and connects in one step (see the module docstring)."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver = system_resolver,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def checked_addresses(self, host: str, port: int) -> list[IpAddress]:
        """The addresses of ``host``, all of them allowed; raises ``AddressRefused``."""
        literal = _literal(host)
        if literal is not None:
            candidates: Sequence[IpAddress] = [literal]
        else:
            try:
                resolved = await self._resolver(host, port)
            except OSError as exc:
                raise httpcore.ConnectError(f"could not resolve {host}: {exc}") from exc
            candidates = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolved]
            if not candidates:
                raise httpcore.ConnectError(f"{host} resolves to no address")
        for ip in candidates:
            reason = self._policy.refusal(ip)
            if reason is not None:
                # One bad answer refuses the host: a name that mixes public and private
                # answers is either misconfigured or aimed at us.
                raise AddressRefused(f"refused {host}: {reason}")
        return list(candidates)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.checked_addresses(host, port)
        last: Exception = httpcore.ConnectError(f"could not connect to {host}")
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(ip),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not allowed for webhooks")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a pool whose every connection goes through ``GuardedBackend``.

    httpx does not take a network backend, so the pool it builds is replaced by an equivalent
    one that has ours (``handle_async_request`` and httpx's error mapping stay httpx's own).
    """

    def __init__(
        self,
        backend: GuardedBackend,
        *,
        limits: httpx.Limits,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # Loading the CA bundle takes ~25 ms: one context serves every endpoint's pool.
        context = ssl_context or httpx.create_ssl_context(trust_env=False)
        super().__init__(verify=context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=backend,
        )


def refused(exc: BaseException) -> str | None:
    """The guard's reason when ``exc`` (an httpx error) is one of its refusals."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, AddressRefused):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return None
