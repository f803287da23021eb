"""card routing rules: a merchant's pin, exclusions and volume split, per mode (issue 13)

One row per merchant and mode, written by ``pago-admin card-rules`` and read by every card
session create; no row means routing by score alone. ``pago.api.cards.routing.rules``
validates a row (providers, shares summing to 100) on both sides; the checks here keep what a
hand-written row could get most wrong out of the table.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "card_routing_rules",
        sa.Column("merchant_id", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column("pin", sa.Text(), comment="always this provider when it can take the order"),
        sa.Column(
            "exclude",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'"),
            comment="providers never tried",
        ),
        sa.Column(
            "split",
            postgresql.JSONB(astext_type=sa.Text()),
            comment='{"stripe": 70, "paypal": 30}: whole percents summing to 100',
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("merchant_id", "mode"),
        sa.CheckConstraint("mode IN ('test', 'live')", name="ck_card_routing_rules_mode"),
        sa.CheckConstraint(
            "pin IS NULL OR NOT (pin = ANY (exclude))",
            name="ck_card_routing_rules_pin_not_excluded",
        ),
        comment="a merchant's say in card routing, per mode (pago-admin card-rules)",
    )


def downgrade() -> None:
    op.drop_table("card_routing_rules")
