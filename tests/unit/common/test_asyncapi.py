"""The AsyncAPI document: complete (every topic, every event) and committed as generated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

from pago.common import asyncapi
from pago.common.events import (
    AnySessionEvent,
    CardProviderEventReceived,
    CardSessionEvent,
    ChainScanned,
    CursorCommitted,
    TransferObserved,
    WatchAddress,
)
from pago.common.topics import TOPICS

DOC = Path(__file__).resolve().parents[3] / "docs" / "asyncapi.json"
EVENTS = {
    *(t.__name__ for t in get_args(AnySessionEvent)),
    *(t.__name__ for t in (WatchAddress, TransferObserved, ChainScanned, CursorCommitted)),
    *(t.__name__ for t in (CardSessionEvent, CardProviderEventReceived)),
}


def _operations(action: str) -> dict[str, set[str]]:
    """Per topic, the services with an operation of ``action`` on it."""
    doc = asyncapi.document()
    found: dict[str, set[str]] = {}
    for name, operation in doc["operations"].items():
        if operation["action"] == action:
            channel = doc["channels"][operation["channel"]["$ref"].rsplit("/", 1)[1]]
            found.setdefault(channel["address"], set()).add(name.rsplit("-by-", 1)[1])
    return found


class TestDocument:
    def test_the_committed_copy_is_what_the_code_generates(self) -> None:
        assert DOC.read_text() == asyncapi.document_json(), (
            "docs/asyncapi.json is stale: python -m pago.common.asyncapi > docs/asyncapi.json"
        )

    def test_it_lists_every_topic_with_who_writes_and_reads_it(self) -> None:
        assert _operations("send") == {
            "checkout.sessions": {"pago-api", "pago-matcher"},
            "chain.watchlist": {"pago-api", "pago-matcher"},
            "chain.transfers": {"pago-watcher", "pago-api"},
            "chain.cursors": {"pago-watcher"},
            "card.sessions": {"pago-api"},
            "card.provider_events": {"pago-api"},
            "pago.deadletter": {"pago-matcher", "pago-notifier", "pago-watcher"},
        }
        assert _operations("receive") == {
            "checkout.sessions": {"pago-notifier"},
            "chain.watchlist": {"pago-watcher"},
            "chain.transfers": {"pago-matcher"},
            "chain.cursors": {"pago-watcher"},
            "card.sessions": {"pago-notifier"},
            "pago.deadletter": {"pago-dlq"},
        }
        assert set(_operations("send")) == {topic.name for topic in TOPICS}

    def test_every_event_has_its_schema(self) -> None:
        schemas = asyncapi.document()["components"]["schemas"]
        assert set(schemas) >= EVENTS
        for name in EVENTS:
            assert "v" in schemas[name]["properties"], name
        sessions = json.dumps(schemas["checkout.sessions:read-by-pago-notifier:Message:Payload"])
        for event in get_args(AnySessionEvent):
            assert f"#/components/schemas/{event.__name__}" in sessions

    def test_card_sessions_carry_the_card_session_event(self) -> None:
        doc = asyncapi.document()
        schemas = doc["components"]["schemas"]
        read = doc["components"]["messages"]["card.sessions:read-by-pago-notifier:SubscribeMessage"]
        assert read["payload"] == {"$ref": "#/components/schemas/CardSessionEvent"}
        letters = json.dumps(schemas["pago.deadletter:written-by-pago-notifier:Message:Payload"])
        assert "#/components/schemas/CardSessionEvent" in letters
        snapshot = schemas["CardSessionSnapshot"]["properties"]
        assert snapshot["amount"] == {"$ref": "#/components/schemas/CardAmountSnapshot"}
