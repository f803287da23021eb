"""Pool depth is visible: a metric with a low-water warning, and ``pago-admin pool depth``."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.api.addresses.pool import PoolMonitor
from pago.api.admin.cli import main
from pago.api.settings import ApiSettings
from pago.devstack.postgres import Database
from tests.integration.api.addresses.support import (
    DAY,
    URL,
    cool,
    created,
    pay,
    pool_merchant,
    spec_of,
)


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def mixed_pool(client: httpx.AsyncClient, db: AsyncEngine, settings: ApiSettings) -> str:
    """A test-mode Solana pool of 5: 1 leased, 1 cooling, 1 held by an open payment exception,
    1 cooled down, 1 never used — so 2 available."""
    merchant = await pool_merchant(db, settings, 5)
    sessions = [await created(client, merchant) for _ in range(4)]
    for s in sessions[1:]:
        await client.post(f"{URL}/{s['id']}/expire", headers=merchant.headers())
    await pay(db, spec_of(sessions[2], merchant))  # a late payment: an open exception
    await cool(db, sessions[2]["pay_address"], 40 * DAY)
    await cool(db, sessions[3]["pay_address"], 40 * DAY)
    return merchant.id  # the fifth address was never used


class TestMetric:
    async def test_depth_by_state_and_a_low_water_warning_once(
        self,
        client: httpx.AsyncClient,
        db: AsyncEngine,
        settings: ApiSettings,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        merchant_id = await mixed_pool(client, db, settings)
        monitor = PoolMonitor(db, cooldown=settings.address_cooldown, low_water=3, refiller=None)
        with caplog.at_level(logging.WARNING, logger="pago.api.addresses.pool"):
            [depth] = [d for d in await monitor.check() if d.mode == "test"]
        assert (depth.available, depth.cooling, depth.held, depth.leased, depth.total) == (
            2,
            1,
            1,
            1,
            5,
        )
        key = {"merchant_id": merchant_id, "family": "solana", "mode": "test"}
        for state, value in (("available", 2), ("cooling", 1), ("held", 1), ("leased", 1)):
            assert gauge("pago_address_pool_addresses", **key, state=state) == value
        assert gauge("pago_address_pool_low_water") == 3
        assert gauge("pago_address_pool_below_low_water", **key) == 1
        # The live-mode pool of 5 is untouched and above the mark.
        live = {**key, "mode": "live"}
        assert gauge("pago_address_pool_below_low_water", **live) == 0
        warned = [r for r in caplog.records if "low-water" in r.getMessage()]
        assert len(warned) == 1
        assert warned[0].__dict__["merchant_id"] == merchant_id
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pago.api.addresses.pool"):
            await monitor.check()
        assert not [r for r in caplog.records if "low-water" in r.getMessage()]  # no repeats


class TestAdminCommand:
    async def test_pool_depth_per_merchant_family_and_mode(
        self,
        client: httpx.AsyncClient,
        db: AsyncEngine,
        settings: ApiSettings,
        database: Database,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        merchant_id = await mixed_pool(client, db, settings)
        monkeypatch.setenv("DATABASE_URL", database.url)
        monkeypatch.setenv("PAGO_ENV", "test")
        monkeypatch.setenv("PAGO_ADDRESS_POOL_LOW_WATER", "3")

        async def run(*argv: str) -> str:
            """The CLI in-process (it runs its own event loop, so on a thread of its own)."""
            await asyncio.to_thread(main, list(argv))  # exits only on failure
            out, _ = capsys.readouterr()
            return out

        rows = json.loads(await run("--json", "pool", "depth", merchant_id))
        test_row = next(r for r in rows if r["mode"] == "test")
        assert test_row == {
            "merchant_id": merchant_id,
            "family": "solana",
            "mode": "test",
            "available": 2,
            "never_used": 1,
            "cooled": 1,
            "cooling": 1,
            "held": 1,
            "leased": 1,
            "total": 5,
            "derived": False,
            "low": True,
        }
        table = await run("pool", "depth")
        assert "AVAILABLE" in table
        assert "LOW" in table
        assert "cool-down 30 days; low-water mark 3 available" in table
