"""HTTP clients for webhooks: one small connection pool per endpoint.

httpcore's pool does bookkeeping over all of its connections for every request, which grows
with their square: measured here, 64 connections in one pool sent 155 requests/s to an
instant local receiver, 16 pools of 4 sent 410. The worker keeps at most
``endpoint_concurrency`` requests in flight per endpoint, so a pool of that size per endpoint
never queues, and keeps its connections alive between one endpoint's deliveries. Pools idle for
``idle_seconds`` are closed by ``sweep``, so a million endpoints seen once each cost nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import httpx


class ClientSource(Protocol):
    def client(self, endpoint_id: str) -> httpx.AsyncClient: ...


class SingleClient:
    """Every endpoint through one client (tests, tools)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    def client(self, endpoint_id: str) -> httpx.AsyncClient:
        return self._client


class PerEndpointClients:
    def __init__(
        self, factory: Callable[[], httpx.AsyncClient], *, idle_seconds: float = 300.0
    ) -> None:
        self._factory = factory
        self._idle_seconds = idle_seconds
        self._clients: dict[str, tuple[httpx.AsyncClient, float]] = {}

    def client(self, endpoint_id: str) -> httpx.AsyncClient:
        found = self._clients.get(endpoint_id)
        client = found[0] if found is not None else self._factory()
        self._clients[endpoint_id] = (client, time.monotonic())
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def sweep(self) -> int:
        """Close the pools not used for ``idle_seconds`` (far beyond any request's timeout, so
        none of them has a request in flight); returns how many were closed."""
        cutoff = time.monotonic() - self._idle_seconds
        idle = [key for key, (_, used) in self._clients.items() if used < cutoff]
        for key in idle:
            client, _ = self._clients.pop(key)
            await client.aclose()
        return len(idle)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client, _ in clients.values():
            await client.aclose()
