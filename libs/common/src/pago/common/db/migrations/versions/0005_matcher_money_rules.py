"""matcher: minimum credit audit, chain progress markers, block times, clock expiry flag

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "checkout_sessions",
        sa.Column(
            "timed_out",
            sa.Boolean(),
            nullable=False,
            server_default=sa.text("false"),
            comment="expired by the expiry job, not the merchant: an in-time payment still credits",
        ),
    )
    op.add_column(
        "session_transactions",
        sa.Column(
            "block_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="the block's timestamp; NULL = unknown",
        ),
    )
    op.create_table(
        "ignored_transfers",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("network", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("tx_hash", sa.Text(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Text(), sa.ForeignKey("checkout_sessions.id"), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("from_address", sa.Text(), nullable=False),
        sa.Column("amount_raw", sa.Numeric(78, 0), nullable=False, comment="base units of token"),
        sa.Column("decimals", sa.SmallInteger(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False, comment="the stage first seen"),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.UniqueConstraint(
            "network", "tx_hash", "log_index", name="uq_ignored_transfers_identity"
        ),
        comment="transfers that moved no session (dust below the minimum credit); audit only",
    )
    op.create_index("ix_ignored_transfers_session", "ignored_transfers", ["session_id"])
    op.create_table(
        "chain_progress",
        sa.Column("network", sa.Text(), primary_key=True),
        sa.Column("mode", sa.Text(), primary_key=True),
        sa.Column("partition", sa.Integer(), primary_key=True, comment="of chain.transfers"),
        sa.Column(
            "partitions",
            sa.Integer(),
            nullable=False,
            comment="the topic's count per the marker",
        ),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.Text(), nullable=False),
        sa.Column("block_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        comment="greatest ChainScanned marker consumed per partition (same transaction as "
        "transfers)",
    )


def downgrade() -> None:
    op.drop_table("chain_progress")
    op.drop_index("ix_ignored_transfers_session", table_name="ignored_transfers")
    op.drop_table("ignored_transfers")
    op.drop_column("session_transactions", "block_time")
    op.drop_column("checkout_sessions", "timed_out")
