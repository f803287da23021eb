"""One webhook attempt: sign, POST through the guarded client, and judge the answer.

- 2xx: delivered.
- 410 Gone: the receiver says the endpoint no longer exists; the delivery fails and the endpoint
  is disabled (re-enable it through the API).
- 429 and 503: retried no sooner than their ``Retry-After`` (capped at a day) and no sooner
  than the schedule says.
- Anything else — other statuses, 3xx (redirects are not followed), timeouts, connection
  errors, SSRF refusals — is retried on the schedule until it is exhausted.

The whole attempt, from name resolution to the response head, is bounded by ``timeout``
(10 s); at most ``RESPONSE_EXCERPT`` bytes of a failing response are read, for the delivery log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from pago.common.enums import Mode
from pago.notifier import metrics
from pago.notifier.clients import ClientSource
from pago.notifier.guard import refused, url_refusal
from pago.notifier.repository import Claimed, Outcome, Verdict
from pago.notifier.schedule import RetryPolicy, parse_retry_after
from pago.notifier.signing import signature_headers

log = logging.getLogger(__name__)

USER_AGENT = "Pago-Webhooks/1.0"
RESPONSE_EXCERPT = 512
"""Bytes of a non-2xx response body kept in ``last_error``."""
_RETRY_AFTER_STATUSES = (429, 503)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()


class Sender:
    def __init__(
        self,
        clients: ClientSource,
        retry: RetryPolicy,
        *,
        timeout: float,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._clients = clients
        self._retry = retry
        self._timeout = timeout
        self._clock = clock

    async def attempt(self, delivery: Claimed) -> Outcome:
        """Make the attempt and return its outcome (never raises for the receiver's faults)."""
        reason = url_refusal(delivery.url, live=delivery.mode is Mode.LIVE)
        if reason is not None:
            return self._failure(delivery, None, f"refused: {reason}", "refused")
        now = self._clock()
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **signature_headers(
                delivery.secrets(now),
                msg_id=delivery.event_id,
                timestamp=timestamp,
                body=delivery.payload,
            ),
        }
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                async with self._clients.client(delivery.endpoint_id).stream(
                    "POST", delivery.url, content=delivery.payload, headers=headers
                ) as response:
                    status = response.status_code
                    # Read even a 2xx body (up to the excerpt size): a small body read to its
                    # end lets the connection go back to the pool for the next delivery.
                    excerpt = await _excerpt(response)
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (TimeoutError, httpx.TimeoutException):
            return self._failure(delivery, None, f"timed out after {self._timeout:g} s", "timeout")
        except httpx.HTTPError as exc:
            guard = refused(exc)
            if guard is not None:
                log.warning(
                    "webhook refused by the SSRF guard",
                    extra={"delivery_id": delivery.id, "endpoint_id": delivery.endpoint_id},
                )
                return self._failure(delivery, None, guard, "refused")
            return self._failure(delivery, None, f"{type(exc).__name__}: {exc}"[:500], "error")
        finally:
            metrics.ATTEMPT_SECONDS.observe(time.perf_counter() - started)
        if 200 <= status < 300:
            metrics.ATTEMPTS.labels("succeeded").inc()
            if delivery.attempt == 1:
                metrics.DELIVERY_DELAY_SECONDS.observe(
                    max(0.0, (self._clock() - delivery.created_at).total_seconds())
                )
            return Outcome(
                delivery.id, delivery.endpoint_id, delivery.attempt, Verdict.SUCCEEDED, status, None
            )
        error = f"HTTP {status}" + (f": {_printable(excerpt)}" if excerpt else "")
        if status == 410:
            metrics.ATTEMPTS.labels("gone").inc()
            metrics.ENDPOINTS_DISABLED.inc()
            log.warning(
                "endpoint answered 410 Gone; disabling it",
                extra={"endpoint_id": delivery.endpoint_id, "delivery_id": delivery.id},
            )
            return Outcome(
                delivery.id, delivery.endpoint_id, delivery.attempt, Verdict.GONE, status, error
            )
        honoured = retry_after if status in _RETRY_AFTER_STATUSES else None
        return self._failure(delivery, status, error, "retry", retry_after=honoured)

    def _failure(
        self,
        delivery: Claimed,
        status: int | None,
        error: str,
        label: str,
        *,
        retry_after: float | None = None,
    ) -> Outcome:
        delay = self._retry.next_delay(delivery.attempt, retry_after)
        if delay is None:
            metrics.ATTEMPTS.labels("failed").inc()
            return Outcome(
                delivery.id, delivery.endpoint_id, delivery.attempt, Verdict.FAILED, status, error
            )
        metrics.ATTEMPTS.labels(label).inc()
        return Outcome(
            delivery.id,
            delivery.endpoint_id,
            delivery.attempt,
            Verdict.RETRY,
            status,
            error,
            retry_in=delay,
        )


async def _excerpt(response: httpx.Response) -> bytes:
    body = b""
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= RESPONSE_EXCERPT:
            break
    return body[:RESPONSE_EXCERPT]
