"""Liveness and readiness on the public port (rate limited per client IP like every route
without an API key). ``/metrics`` is served on ``PAGO_API_METRICS_PORT``, never here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from fastapi import APIRouter
from sqlalchemy import text

from pago.api.dependencies import State
from pago.api.errors import ServiceUnavailable, error_responses

log = logging.getLogger(__name__)
router = APIRouter(tags=["Operations"])

_CHECK_TIMEOUT_S = 2.0


@router.get("/healthz", summary="Liveness: the process serves requests", operation_id="healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: Postgres, Redis and Kafka are reachable",
    operation_id="readyz",
    responses=error_responses(503),
)
async def readyz(state: State) -> dict[str, object]:
    async def postgres() -> None:
        async with state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await state.redis.ping()

    async def kafka() -> None:
        await state.producer.client.fetch_all_metadata()

    checks = {"postgres": postgres(), "redis": redis(), "kafka": kafka()}
    results = await asyncio.gather(*(_timed(c) for c in checks.values()))
    status = dict(zip(checks, results, strict=True))
    failed = sorted(name for name, result in status.items() if result != "ok")
    if failed:
        raise ServiceUnavailable(f"Not ready: {', '.join(failed)} unreachable.", retry_after=5)
    return {"status": "ready", "checks": status}


async def _timed(check: Awaitable[None]) -> str:
    try:
        await asyncio.wait_for(check, _CHECK_TIMEOUT_S)
    except Exception as exc:
        log.warning("readiness check failed", extra={"error": repr(exc)})
        return "unreachable"
    return "ok"
