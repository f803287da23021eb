"""The session object of a stored session: ``pago.common.sessions.build_session_snapshot``.

The api (responses, ``session.created``, ``session.updated`` on expiry) and the matcher (every
later event) build it with that one function, so a webhook and ``GET
/v1/checkout/sessions/{id}`` show the same bytes for the same state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pago.api.sessions.repository import SessionRecord, TransactionRecord
from pago.common.events import SessionSnapshot
from pago.common.sessions import build_session_snapshot

_SESSION_FIELDS = tuple(f.name for f in dataclasses.fields(SessionRecord))
_TRANSACTION_FIELDS = tuple(f.name for f in dataclasses.fields(TransactionRecord))


def _row(record: object, names: tuple[str, ...]) -> dict[str, object]:
    # Not dataclasses.asdict: that deep-copies every value (~1 ms per session).
    return {name: getattr(record, name) for name in names}


def build_snapshot(
    record: SessionRecord, transactions: Sequence[TransactionRecord], *, checkout_base_url: str
) -> SessionSnapshot:
    return build_session_snapshot(
        _row(record, _SESSION_FIELDS),
        merchant={"name": record.merchant_name, "logo_url": record.merchant_logo_url},
        transactions=[_row(tx, _TRANSACTION_FIELDS) for tx in transactions],
        checkout_base_url=checkout_base_url,
        sub_merchant_code=record.sub_merchant_code,
    )
