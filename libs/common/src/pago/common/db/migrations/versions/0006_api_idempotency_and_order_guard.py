"""api: durable idempotency records, the duplicate-order guard, detection_rpc_url

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The durable half of Idempotency-Key (Redis is the fast path and the in-flight lock): one
    # row per scope and key, written in the transaction of the work it describes.
    op.create_table(
        "idempotency_records",
        sa.Column("merchant_id", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column(
            "sub_merchant_id",
            sa.Text(),
            server_default=sa.text("''"),
            nullable=False,
            comment="'' when the key was used without X-Sub-Merchant-Code",
        ),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False, comment="sha256 of method, path, body"),
        sa.Column("status_code", sa.Integer(), nullable=True, comment="NULL while claimed"),
        sa.Column("content_type", sa.Text(), nullable=True),
        sa.Column(
            "body",
            sa.LargeBinary(),
            nullable=True,
            comment="the response as replayed (webhook secrets redacted)",
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("merchant_id", "mode", "sub_merchant_id", "key"),
        comment="the durable half of Idempotency-Key; written in the transaction of its work",
    )
    op.create_index(
        "ix_idempotency_records_expires", "idempotency_records", ["expires_at"], unique=False
    )
    op.add_column(
        "merchants",
        sa.Column(
            "duplicate_order_guard",
            sa.Boolean(),
            server_default=sa.text("true"),
            nullable=False,
            comment="a repeated client_reference_id answers the existing session",
        ),
    )
    op.add_column(
        "checkout_sessions",
        sa.Column(
            "detection_rpc_url",
            sa.Text(),
            nullable=True,
            comment="from the chains registry at creation, like currency_contract",
        ),
    )
    # The guard looks up the newest session of (merchant, mode, reference) under an advisory
    # lock; this index serves it whole (equality, then the ORDER BY created_at DESC, id DESC of
    # LIMIT 1 as a backward scan), so the planner never prefers walking the merchant's list
    # index through every session of a new reference.
    op.create_index(
        "ix_sessions_order_guard",
        "checkout_sessions",
        ["merchant_id", "mode", "client_reference_id", "created_at", "id"],
        unique=False,
        postgresql_where=sa.text("client_reference_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_sessions_order_guard",
        table_name="checkout_sessions",
        postgresql_where=sa.text("client_reference_id IS NOT NULL"),
    )
    op.drop_column("checkout_sessions", "detection_rpc_url")
    op.drop_column("merchants", "duplicate_order_guard")
    op.drop_index("ix_idempotency_records_expires", table_name="idempotency_records")
    op.drop_table("idempotency_records")
