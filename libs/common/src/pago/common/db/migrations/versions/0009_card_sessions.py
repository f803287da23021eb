"""card checkout sessions, attempts, routing decisions and the provider webhook inbox (issue 13)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MINOR = "minor units of currency"


def _times() -> list[sa.Column[Any]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "card_sessions",
        sa.Column("id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("merchant_id", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column(
            "client_id", sa.Text(), nullable=False, comment="the OAuth client that created it"
        ),
        sa.Column("order_reference", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, comment="CardSessionStatus"),
        sa.Column(
            "status_rank",
            sa.SmallInteger(),
            server_default=sa.text("0"),
            nullable=False,
            comment="cards.domain.STATUS_RANK of status: a session only moves to a higher rank",
        ),
        sa.Column("currency", sa.Text(), nullable=False, comment="ISO 4217 alphabetic"),
        sa.Column(
            "exponent", sa.SmallInteger(), nullable=False, comment="ISO 4217 minor-unit digits"
        ),
        sa.Column("total", sa.BigInteger(), nullable=False, comment=MINOR),
        sa.Column("shipping", sa.BigInteger(), nullable=False, comment=MINOR),
        sa.Column("tax", sa.BigInteger(), nullable=False, comment=MINOR),
        sa.Column("billing_country", sa.Text(), nullable=False, comment="ISO 3166-1 alpha-2"),
        sa.Column(
            "order_data",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="the validated order, money as strings",
        ),
        sa.Column("success_url", sa.Text(), nullable=False),
        sa.Column("failure_url", sa.Text(), nullable=False),
        sa.Column(
            "provider",
            sa.Text(),
            nullable=True,
            comment="the live attempt's provider; NULL until one is created",
        ),
        sa.Column("provider_reference", sa.Text(), nullable=True),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column(
            "live_seq",
            sa.SmallInteger(),
            nullable=True,
            comment="card_attempts.seq of the live attempt",
        ),
        sa.Column(
            "score",
            sa.Numeric(4, 1),
            nullable=True,
            comment="the live provider's routing score, 0-100",
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        *_times(),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("id"),
        comment="card checkout sessions (POST /api/v1/sessions)",
    )
    op.create_index("ix_card_sessions_list", "card_sessions", ["merchant_id", "mode", "created_at"])
    # The expiry job's scan: only PENDING sessions, by deadline.
    op.create_index(
        "ix_card_sessions_expiring",
        "card_sessions",
        ["expires_at"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.create_table(
        "card_attempts",
        sa.Column("session_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column("seq", sa.SmallInteger(), nullable=False, comment="1, 2, … in routing order"),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False, comment="sent to the provider"),
        sa.Column(
            "status",
            sa.Text(),
            nullable=False,
            comment="creating|created|failed|timed_out|rejected|superseded|orphan_expired",
        ),
        sa.Column("reference", sa.Text(), nullable=True, comment="the provider's checkout id"),
        sa.Column("checkout_url", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        *_times(),
        sa.ForeignKeyConstraint(["session_id"], ["card_sessions.id"]),
        sa.PrimaryKeyConstraint("session_id", "seq"),
        comment="each provider create call, recorded (committed) before the call is made",
    )
    # A webhook finds its attempt by the provider's checkout id.
    op.create_index(
        "uq_card_attempts_reference",
        "card_attempts",
        ["provider", "reference"],
        unique=True,
        postgresql_where=sa.text("reference IS NOT NULL"),
    )
    # The orphan sweeper's scan: attempts whose call may have created an unreturned checkout.
    op.create_index(
        "ix_card_attempts_unsettled",
        "card_attempts",
        ["created_at"],
        postgresql_where=sa.text("status IN ('creating', 'timed_out')"),
    )
    op.create_table(
        "card_routing_decisions",
        sa.Column("session_id", postgresql.UUID(as_uuid=False), nullable=False),
        sa.Column(
            "ranked",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="candidates best first; scores as strings",
        ),
        sa.Column("rejected", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("rule", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["session_id"], ["card_sessions.id"]),
        sa.PrimaryKeyConstraint("session_id"),
    )
    op.create_table(
        "card_webhook_inbox",
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("provider_event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column(
            "session_id",
            postgresql.UUID(as_uuid=False),
            nullable=True,
            comment="NULL when no attempt matched",
        ),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("payload_sha256", sa.Text(), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("provider", "provider_event_id"),
        comment="verified provider webhooks, deduplicated on (provider, provider_event_id)",
    )


def downgrade() -> None:
    op.drop_table("card_webhook_inbox")
    op.drop_table("card_routing_decisions")
    op.drop_index("ix_card_attempts_unsettled", table_name="card_attempts")
    op.drop_index("uq_card_attempts_reference", table_name="card_attempts")
    op.drop_table("card_attempts")
    op.drop_index("ix_card_sessions_expiring", table_name="card_sessions")
    op.drop_index("ix_card_sessions_list", table_name="card_sessions")
    op.drop_table("card_sessions")
