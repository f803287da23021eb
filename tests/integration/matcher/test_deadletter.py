"""The matcher against the real broker: what it cannot read goes to ``pago.deadletter``.

A record with an added field is a payment like any other; a record that is garbage is
dead-lettered with its reason, its offset committed, and the payments behind it credited;
the committed offsets the broker holds are exactly the last processed offset + 1; a Postgres
outage is retried, never dead-lettered; ``pago-dlq replay`` puts a letter back and the release
that reads it credits it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from pago.common.deadletter import H_CONSUMER, H_REASON
from pago.common.deadletter.replay import read_letters
from pago.common.events import TransferObserved
from pago.common.topics import CHAIN_TRANSFERS, DEADLETTER, transfer_key
from pago.devstack.kafka_mock import KafkaServer
from pago.devstack.postgres import Database
from pago.devstack.redis_server import RedisServer
from pago.matcher.app import MatcherApp, create_app
from tests.support.kafka import assert_committed_past, dead_letters, end_offsets, header_value
from tests.support.kafka import caught_up as wait_caught_up
from tests.support.matcher import (
    USDT,
    SessionSpec,
    eventually,
    matcher_settings,
    new_session,
    publish,
    session_row,
    transfer,
)
from tests.support.pg_proxy import PostgresProxy


async def send_raw(
    producer: AIOKafkaProducer,
    session: SessionSpec,
    value: bytes,
    headers: dict[str, str] | None = None,
) -> RecordMetadata:
    """A record on the partition of ``session``'s transfers, as a watcher would key it."""
    future = await producer.send(
        CHAIN_TRANSFERS,
        value,
        key=transfer_key(session.network.value, session.pay_address).encode(),
        headers=[(k, v.encode()) for k, v in (headers or {}).items()],
    )
    return await future


async def caught_up(kafka: KafkaServer, group_id: str) -> dict[int, int | None]:
    return await wait_caught_up(kafka.bootstrap_servers, group_id, CHAIN_TRANSFERS)


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def batch_failures() -> float:
    return _metric("pago_matcher_batch_failures_total")


class TestRead:
    async def test_a_transfer_with_an_added_field_is_credited(
        self, db: AsyncEngine, matcher: MatcherApp, producer: AIOKafkaProducer
    ) -> None:
        session = await new_session(db)
        body = json.loads(transfer(session, 10 * USDT).to_bytes())
        body["gas_price"] = "a field a newer watcher sends"

        await send_raw(
            producer,
            session,
            json.dumps(body).encode(),
            {"v": "1", "event_type": "TransferObserved"},
        )

        await eventually(
            lambda: session_row(db, session.id), lambda r: r["status"] == "Paid", what="Paid"
        )

    async def test_garbage_is_dead_lettered_committed_and_what_follows_is_credited(
        self,
        db: AsyncEngine,
        kafka: KafkaServer,
        matcher: MatcherApp,
        producer: AIOKafkaProducer,
    ) -> None:
        session = await new_session(db)
        letters_before = await end_offsets(kafka.bootstrap_servers, DEADLETTER)
        garbage = await send_raw(producer, session, b"\x00\x01 not json")
        await publish(producer, transfer(session, 10 * USDT))

        await eventually(
            lambda: session_row(db, session.id), lambda r: r["status"] == "Paid", what="Paid"
        )
        [letter] = await dead_letters(
            kafka.bootstrap_servers,
            topic=CHAIN_TRANSFERS,
            partition=garbage.partition,
            offset=garbage.offset,
            since=letters_before,
        )
        assert header_value(letter, H_REASON) == "undecodable"
        assert header_value(letter, H_CONSUMER) == matcher.settings.group_id
        assert letter.value == b"\x00\x01 not json"
        assert letter.key == transfer_key(session.network.value, session.pay_address).encode()
        committed = await caught_up(kafka, matcher.settings.group_id)
        assert (committed[garbage.partition] or 0) > garbage.offset + 1


class TestCommittedOffsets:
    async def test_the_broker_holds_the_last_processed_offset_plus_one(
        self,
        db: AsyncEngine,
        kafka: KafkaServer,
        matcher: MatcherApp,
        producer: AIOKafkaProducer,
    ) -> None:
        sessions = [await new_session(db) for _ in range(8)]  # spread over partitions
        payments: list[TransferObserved] = [transfer(s, 10 * USDT) for s in sessions]
        sent: list[RecordMetadata] = [
            await send_raw(producer, s, t.to_bytes())
            for s, t in zip(sessions, payments, strict=True)
        ]

        async def statuses() -> set[str]:
            return {(await session_row(db, s.id))["status"] for s in sessions}

        await eventually(statuses, lambda found: found == {"Paid"}, what="every session Paid")
        ends = await end_offsets(kafka.bootstrap_servers, CHAIN_TRANSFERS)
        committed = await caught_up(kafka, matcher.settings.group_id)

        assert_committed_past(sent, ends, committed)


@pytest.fixture
async def proxy(database: Database) -> AsyncIterator[PostgresProxy]:
    front = PostgresProxy(database)
    await front.start()
    try:
        yield front
    finally:
        await front.stop()


class TestTransientFailures:
    async def test_a_postgres_outage_is_retried_never_dead_lettered(
        self,
        db: AsyncEngine,
        database: Database,
        redis_server: RedisServer,
        kafka: KafkaServer,
        producer: AIOKafkaProducer,
        proxy: PostgresProxy,
    ) -> None:
        settings = matcher_settings(
            database,
            redis_server,
            kafka,
            database_url=proxy.url,
            group_id=f"pago-matcher-outage-{uuid.uuid4().hex[:8]}",
        )
        app = create_app(settings, run_relay=False)
        await app.start()
        try:
            await caught_up(kafka, settings.group_id)  # whatever earlier tests left is behind it
            session = await new_session(db)
            failures = _metric("pago_matcher_batch_failures_total")
            await proxy.cut()

            sent = await send_raw(producer, session, transfer(session, 10 * USDT).to_bytes())
            await eventually(
                batch_failures,
                lambda n: n >= failures + 2,
                what="the batch to fail against the cut database, twice",
            )
            await proxy.restore()

            await eventually(
                lambda: session_row(db, session.id), lambda r: r["status"] == "Paid", what="Paid"
            )
            await caught_up(kafka, settings.group_id)
        finally:
            await app.stop()
        letters = await read_letters(kafka.bootstrap_servers)
        assert not [
            x for x in letters if x.origin == (CHAIN_TRANSFERS, sent.partition, sent.offset)
        ], "a transient failure was dead-lettered"


class TestReplay:
    @pytest.mark.slow
    async def test_a_replayed_letter_is_credited_by_the_release_that_reads_it(
        self,
        db: AsyncEngine,
        database: Database,
        redis_server: RedisServer,
        kafka: KafkaServer,
        producer: AIOKafkaProducer,
        server_env: dict[str, str],
    ) -> None:
        settings = matcher_settings(
            database, redis_server, kafka, group_id=f"pago-matcher-replay-{uuid.uuid4().hex[:8]}"
        )
        session = await new_session(db)
        # Written by a watcher of a future major version: this matcher must not guess at it.
        future = transfer(session, 10 * USDT).model_copy(update={"v": 2})
        letters_before = await end_offsets(kafka.bootstrap_servers, DEADLETTER)
        sent = await send_raw(producer, session, future.to_bytes(), {"v": "2"})

        current = create_app(settings, run_relay=False)
        await current.start()
        try:
            [letter] = await dead_letters(
                kafka.bootstrap_servers,
                topic=CHAIN_TRANSFERS,
                partition=sent.partition,
                offset=sent.offset,
                since=letters_before,
            )
            await caught_up(kafka, settings.group_id)
        finally:
            await current.stop()
        assert header_value(letter, H_REASON) == "unsupported_version"
        assert (await session_row(db, session.id))["status"] == "Pending"

        listed = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "pago.common.deadletter",
                "list",
                "--reason",
                "unsupported_version",
            ],
            env=server_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        # One line per original record, however often it was dead-lettered (at-least-once).
        [line] = [
            x
            for x in listed.stdout.splitlines()
            if f"{CHAIN_TRANSFERS}[{sent.partition}]@{sent.offset}\t" in x
        ]
        offset = int(line.split("\t")[0])
        assert line.split("\t")[3:5] == ["unsupported_version", settings.group_id]

        upgraded = create_app(settings, run_relay=False, schema_version=2)
        await upgraded.start()
        try:
            replayed = await asyncio.to_thread(
                subprocess.run,
                [
                    sys.executable,
                    "-m",
                    "pago.common.deadletter",
                    "replay",
                    "--offset",
                    str(offset),
                ],
                env=server_env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert replayed.stdout.startswith(
                f"replayed {offset} -> {CHAIN_TRANSFERS}[{sent.partition}]@"
            )

            await eventually(
                lambda: session_row(db, session.id),
                lambda r: r["status"] == "Paid",
                timeout=20,
                what="the replayed transfer to be credited",
            )
        finally:
            await upgraded.stop()
