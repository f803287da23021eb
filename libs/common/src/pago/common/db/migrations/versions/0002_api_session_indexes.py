"""api: session indexes (one live session per address; the merchant's own sessions)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_LIVE = "status IN ('Pending', 'Underpaid')"


def upgrade() -> None:
    # An address is live on at most one session per mode: the database enforces what address
    # allocation promises (an EVM address is the same string on all six EVM networks).
    op.create_index(
        "uq_sessions_live_pay_address",
        "checkout_sessions",
        ["mode", "pay_address"],
        unique=True,
        postgresql_where=sa.text(_LIVE),
    )
    # The default list scope is "this merchant, not its sub-merchants": a page and its total
    # are index-only ranges of this index at any table size.
    op.create_index(
        "ix_sessions_list_own",
        "checkout_sessions",
        ["merchant_id", "mode", "created_at", "id"],
        unique=False,
        postgresql_where=sa.text("sub_merchant_id IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_sessions_list_own",
        table_name="checkout_sessions",
        postgresql_where=sa.text("sub_merchant_id IS NULL"),
    )
    op.drop_index(
        "uq_sessions_live_pay_address",
        table_name="checkout_sessions",
        postgresql_where=sa.text(_LIVE),
    )
