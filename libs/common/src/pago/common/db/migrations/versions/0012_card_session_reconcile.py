"""card sessions: when the reconciliation pass next asks the live provider (issue 13)

A PENDING session whose provider webhook was lost, or whose PayPal capture failed after the
payer approved, is healed by the api's reconciliation pass; this column spaces its checks out
(a compare-and-set claim, so replicas never ask twice for the same session at once).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "card_sessions",
        sa.Column(
            "reconcile_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when the reconciliation pass next asks the live provider; NULL: not yet"
            " asked (due at created_at + the first delay)",
        ),
    )


def downgrade() -> None:
    op.drop_column("card_sessions", "reconcile_at")
