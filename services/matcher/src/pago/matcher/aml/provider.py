"""AML level 2: an HTTP risk provider in the style of GoPlus ``address_security``.

``GET {base}/api/v1/address_security/{address}?chain_id=<id>`` answers
``{"code": 1, "message": "ok", "result": {"sanctioned": "0", "mixer": "1", ...}}``: every flag
is a stringified number and a flag counts when it parses above zero (Solana reports ``-1`` for
"unknown", which must not count). Business errors come back as HTTP 200 with another ``code``,
so the envelope decides. Anything but a parsed answer is "unavailable", never "clear".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Protocol

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from pago.common.enums import ChainFamily, Network
from pago.common.sessions import chain_family
from pago.matcher import metrics
from pago.matcher.aml.addresses import normalize
from pago.matcher.domain import AmlOutcome, AmlVerdict

log = logging.getLogger(__name__)

DENY_FLAGS: tuple[str, ...] = (
    "blackmail_activities",
    "blacklist_doubt",
    "cybercrime",
    "darkweb_transactions",
    "fake_kyc",
    "financial_crime",
    "honeypot_related_address",
    "malicious_mining_activities",
    "mixer",
    "money_laundering",
    "number_of_malicious_contracts_created",
    "phishing_activities",
    "sanctioned",
    "stealing_attack",
)
"""Flags that refuse a sender. Contract-shape fields (``contract_address``, ``fake_token``,
``gas_abuse``, ``reinit``, ``fake_standard_interface``) describe a contract, not a payer."""

_OK = 1


class ProviderUnavailable(Exception):
    """The provider gave no usable answer (timeout, HTTP error, error code, unknown shape)."""


class RiskProvider(Protocol):
    name: str

    async def check(self, network: Network, address: str) -> AmlVerdict:
        """A ``clear`` or ``hit`` verdict; raises :class:`ProviderUnavailable` otherwise."""
        ...


def _counts(value: object) -> bool:
    try:
        return Decimal(str(value).strip()) > 0
    except (InvalidOperation, ValueError):
        return False


def verdict_from(result: Mapping[str, object]) -> AmlVerdict:
    """Reduce a ``result`` object to a verdict; flags in a stable order."""
    hits = sorted(flag for flag in DENY_FLAGS if _counts(result.get(flag)))
    return AmlVerdict.hit(*hits) if hits else AmlVerdict.clear()


class GoPlusProvider:
    """One ``address_security`` call per (network, address); no retries here (see Screener)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        chain_ids: Mapping[Network, str],
        *,
        name: str = "goplus",
        token: str | None = None,
    ) -> None:
        self.name = name
        self._client = client
        self._base = base_url.rstrip("/")
        self._chain_ids = dict(chain_ids)
        self._headers = {"Authorization": token} if token else {}

    async def check(self, network: Network, address: str) -> AmlVerdict:
        chain_id = self._chain_ids.get(network)
        if chain_id is None:
            raise ProviderUnavailable(f"no chain id configured for {network}")
        started = time.perf_counter()
        try:
            response = await self._client.get(
                f"{self._base}/api/v1/address_security/{address}",
                params={"chain_id": chain_id},
                headers=self._headers,
            )
        except httpx.TimeoutException as exc:
            metrics.AML_PROVIDER_ERRORS.labels("timeout").inc()
            raise ProviderUnavailable("timed out") from exc
        except httpx.HTTPError as exc:
            metrics.AML_PROVIDER_ERRORS.labels("transport").inc()
            raise ProviderUnavailable(f"transport error: {exc!r}") from exc
        finally:
            metrics.AML_PROVIDER_SECONDS.observe(time.perf_counter() - started)
        if response.status_code != httpx.codes.OK:
            metrics.AML_PROVIDER_ERRORS.labels(f"http_{response.status_code}").inc()
            raise ProviderUnavailable(f"HTTP {response.status_code}")
        try:
            body = response.json()
            code, result = body["code"], body["result"]
        except (ValueError, KeyError, TypeError) as exc:
            metrics.AML_PROVIDER_ERRORS.labels("bad_body").inc()
            raise ProviderUnavailable("unrecognised response body") from exc
        if code != _OK or not isinstance(result, dict):
            metrics.AML_PROVIDER_ERRORS.labels(f"code_{code}").inc()
            raise ProviderUnavailable(f"provider code {code}: {body.get('message')!r}")
        return verdict_from(result)


class VerdictCache:
    """Provider verdicts in Redis for ``ttl`` seconds (24 h by default).

    Only definitive answers are kept; a Redis failure is a cache miss, never a verdict.
    """

    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self._redis = redis
        self._ttl = ttl

    @staticmethod
    def _key(provider: str, network: Network, address: str) -> str:
        family: ChainFamily = chain_family(network)
        return f"pago:aml:{provider}:{network.value}:{normalize(family, address)}"

    async def get(self, provider: str, network: Network, address: str) -> AmlVerdict | None:
        try:
            raw = await self._redis.get(self._key(provider, network, address))
        except RedisError:
            log.warning("AML cache read failed; asking the provider", exc_info=True)
            return None
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return AmlVerdict(AmlOutcome(data["outcome"]), tuple(data["flags"]))
        except (ValueError, KeyError, TypeError):
            return None

    async def put(self, provider: str, network: Network, address: str, verdict: AmlVerdict) -> None:
        if verdict.outcome is AmlOutcome.UNAVAILABLE:
            return
        value = json.dumps({"outcome": verdict.outcome.value, "flags": list(verdict.flags)})
        try:
            await self._redis.set(self._key(provider, network, address), value, ex=self._ttl)
        except RedisError:
            log.warning("AML cache write failed", exc_info=True)
