"""matcher: case-insensitive address lookup, resolution requests on payment exceptions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sessions_pay_address_ci",
        "checkout_sessions",
        ["network", "mode", sa.text("lower(pay_address)")],
        unique=False,
    )
    op.add_column(
        "payment_exceptions",
        sa.Column(
            "token",
            sa.Text(),
            nullable=True,
            comment="token of amount; may differ from the session's (wrong_token)",
        ),
    )
    op.add_column(
        "payment_exceptions",
        sa.Column(
            "requested_action",
            sa.Text(),
            nullable=True,
            comment="an operator's resolution the matcher has to apply",
        ),
    )
    op.add_column(
        "payment_exceptions",
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.add_column(
        "payment_exceptions",
        sa.Column(
            "resolution_error",
            sa.Text(),
            nullable=True,
            comment="why the matcher refused the requested action",
        ),
    )
    op.create_index(
        "ix_payment_exceptions_session", "payment_exceptions", ["session_id"], unique=False
    )
    op.create_index(
        "ix_payment_exceptions_requested",
        "payment_exceptions",
        ["requested_at"],
        unique=False,
        postgresql_where=sa.text("requested_action IS NOT NULL AND status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_payment_exceptions_requested",
        table_name="payment_exceptions",
        postgresql_where=sa.text("requested_action IS NOT NULL AND status = 'open'"),
    )
    op.drop_index("ix_payment_exceptions_session", table_name="payment_exceptions")
    op.drop_column("payment_exceptions", "resolution_error")
    op.drop_column("payment_exceptions", "requested_at")
    op.drop_column("payment_exceptions", "requested_action")
    op.drop_column("payment_exceptions", "token")
    op.drop_index("ix_sessions_pay_address_ci", table_name="checkout_sessions")
