"""card routing statistics: outcomes per provider, currency and country (issue 13)

Hourly buckets, so "recent" is a sum over the last N hours and old hours can be pruned; counts
are exact integers.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "card_route_stats",
        sa.Column("currency", sa.Text(), nullable=False, comment="ISO 4217 alphabetic"),
        sa.Column("country", sa.Text(), nullable=False, comment="billing ISO 3166-1 alpha-2"),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column(
            "window_start",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="the hour (UTC, truncated) the counts happened in",
        ),
        sa.Column(
            "attempts",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("0"),
            comment="provider checkouts created (payers sent to the provider)",
        ),
        sa.Column("completed", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column(
            "failed",
            sa.BigInteger(),
            nullable=False,
            server_default=sa.text("0"),
            comment="declined or expired at the provider",
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("currency", "country", "provider", "window_start"),
        comment="what routing's conversion component learns from: one row per route and hour",
    )
    op.create_index("ix_card_route_stats_window", "card_route_stats", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_card_route_stats_window", table_name="card_route_stats")
    op.drop_table("card_route_stats")
