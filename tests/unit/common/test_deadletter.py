"""Dead-letter decisions without a broker: why a record is refused, what counts as poison."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from pago.common.deadletter import (
    H_OFFSET,
    H_REASON,
    DeadLetter,
    Reason,
    Rejected,
    apply_isolated,
    decode,
    is_poison,
)
from pago.common.deadletter.replay import Letter, distinct
from pago.common.events import WatchAddress

GOOD = (
    b'{"network":"TRON","mode":"live","address":"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",'
    b'"session_id":"cs_1","watch_until":"2026-12-01T00:00:00Z","v":1}'
)


def record(
    value: bytes | None, headers: list[tuple[str, bytes]] | None = None, offset: int = 7
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        "chain.watchlist", 3, offset, 0, 0, b"k", value, None, 1, len(value or b""), headers or []
    )


def reason(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Reason:
    with pytest.raises(Rejected) as caught:
        decode(record(value, headers), WatchAddress.model_validate_json)
    return caught.value.reason


class TestDecode:
    def test_an_added_field_is_read(self) -> None:
        event = decode(record(GOOD[:-1] + b',"label":"new"}'), WatchAddress.model_validate_json)
        assert event.session_id == "cs_1"

    def test_reasons(self) -> None:
        assert reason(b"\xff\xfe") is Reason.UNDECODABLE
        assert reason(None) is Reason.UNDECODABLE
        assert reason(b'{"network": "TRON"}') is Reason.INVALID
        assert reason(GOOD.replace(b'"v":1', b'"v":2')) is Reason.UNSUPPORTED_VERSION
        assert reason(GOOD, [("v", b"2")]) is Reason.UNSUPPORTED_VERSION
        assert reason(GOOD, [("v", b"two")]) is Reason.INVALID

    def test_a_newer_version_that_no_longer_validates_is_unsupported_not_invalid(self) -> None:
        assert reason(b'{"v": 3, "renamed": true}') is Reason.UNSUPPORTED_VERSION

    def test_an_older_or_equal_version_is_read(self) -> None:
        assert decode(record(GOOD, [("v", b"1")]), WatchAddress.model_validate_json).v == 1


class TestPoison:
    @pytest.mark.parametrize(
        "exc",
        [
            ConnectionRefusedError(),
            TimeoutError(),
            KafkaConnectionError(),
            RequestTimedOutError(),
            RedisConnectionError(),
            OperationalError("SELECT 1", {}, Exception("server closed the connection")),
            DBAPIError("SELECT 1", {}, Exception("?"), connection_invalidated=True),
            RuntimeError("unknown"),
        ],
    )
    def test_transient_errors_are_not_poison(self, exc: BaseException) -> None:
        assert not is_poison(exc)

    @pytest.mark.parametrize(
        "exc",
        [
            ValueError("bad amount"),
            KeyError("token"),
            ZeroDivisionError(),
            IntegrityError("INSERT", {}, Exception("duplicate key")),
        ],
    )
    def test_errors_the_data_causes_are_poison(self, exc: BaseException) -> None:
        assert is_poison(exc)

    async def test_isolation_retries_then_names_the_poison_and_lets_a_transient_error_through(
        self,
    ) -> None:
        calls: list[int] = []

        async def apply(n: int) -> None:
            calls.append(n)
            if n == 2:
                raise ValueError("always")

        poisoned = await apply_isolated([1, 2, 3], apply, attempts=3, backoff=0)
        assert [(n, type(e)) for n, e in poisoned] == [(2, ValueError)]
        assert calls == [1, 2, 2, 2, 3]

        async def down(n: int) -> None:
            raise ConnectionResetError

        with pytest.raises(ConnectionResetError):
            await apply_isolated([1], down, backoff=0)
        await asyncio.sleep(0)


def test_letters_carry_the_original_and_replay_reads_one_per_record() -> None:
    original = record(b"garbage", [("event_type", b"X"), ("pago-dlq-reason", b"stale")])
    headers = DeadLetter.of(original, Rejected(Reason.UNDECODABLE, "x")).headers("g", 5)
    assert ("event_type", b"X") in headers
    assert [v for k, v in headers if k == H_REASON] == [b"undecodable"]  # stale one dropped
    assert (H_OFFSET, b"7") in headers
    letters = [
        Letter.of(
            ConsumerRecord("pago.deadletter", 0, i, 0, 0, b"k", b"garbage", None, 1, 7, headers)
        )
        for i in range(3)
    ]
    assert letters[0].headers == (("event_type", b"X"),)
    assert letters[0].origin == ("chain.watchlist", 3, 7)
    assert [x.offset for x in distinct(letters)] == [2]


def test_the_replay_command_is_installed_with_pago_common() -> None:
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[3] / "libs" / "common" / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts["pago-dlq"] == "pago.common.deadletter.__main__:main"
