"""SQL of the public checkout page: one session by its id alone.

The id is the capability (96 random bits): whoever has the page's URL may see the session, as
with any hosted checkout. Nothing here is scoped by merchant or mode, so nothing here may be
reached from an authenticated route by mistake; it backs only the page and its event stream.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from pago.api.sessions.repository import transactions_of
from pago.common.db.schema import checkout_sessions, merchants, sub_merchants

cs = checkout_sessions


async def find_session(
    conn: AsyncConnection, session_id: str
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], str | None] | None:
    """``(session row, merchant row, transaction rows, sub-merchant code)`` or ``None``."""
    query = (
        select(cs, merchants.c.name, merchants.c.logo_url, sub_merchants.c.code)
        .join(merchants, merchants.c.id == cs.c.merchant_id)
        .outerjoin(sub_merchants, sub_merchants.c.id == cs.c.sub_merchant_id)
        .where(cs.c.id == session_id)
    )
    row = (await conn.execute(query)).mappings().one_or_none()
    if row is None:
        return None
    session = {column.name: row[column] for column in cs.c}
    merchant = {"name": row[merchants.c.name], "logo_url": row[merchants.c.logo_url]}
    transactions = (await transactions_of(conn, [session_id])).get(session_id, [])
    return (
        session,
        merchant,
        [dataclasses.asdict(t) for t in transactions],
        row[sub_merchants.c.code],
    )
