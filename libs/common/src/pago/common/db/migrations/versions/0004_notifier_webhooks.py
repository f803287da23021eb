"""notifier: delivery log index, last attempt time, endpoint description and disable reason

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "webhook_endpoints",
        sa.Column("description", sa.Text(), nullable=True, comment="the merchant's own label"),
    )
    op.add_column(
        "webhook_endpoints",
        sa.Column(
            "disabled_reason",
            sa.Text(),
            nullable=True,
            comment="why disabled_at is set: the merchant, or the endpoint answered 410",
        ),
    )
    op.add_column(
        "webhook_deliveries",
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
    )
    # The delivery log of one endpoint, newest first, is a range of this index.
    op.create_index(
        "ix_webhook_deliveries_endpoint",
        "webhook_deliveries",
        ["endpoint_id", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_endpoint", table_name="webhook_deliveries")
    op.drop_column("webhook_deliveries", "last_attempt_at")
    op.drop_column("webhook_endpoints", "disabled_reason")
    op.drop_column("webhook_endpoints", "description")
