"""merchant console: users, their sign-in sessions, the hosted page's branding (issue 14)

Console users belong to one merchant with a role (owner, developer, support). Passwords are
argon2id hashes; a sign-in session is stored only as the SHA-256 of its cookie token, so a
database read cannot sign anyone in. ``failed_sign_ins`` and ``locked_until`` carry the
lockout; ``totp_secret`` is encrypted at rest with the api's key-encryption secret.

``merchants.accent_color`` brands the hosted page beside ``name`` and ``logo_url``;
``underpayment_tolerance_percent`` lets a merchant state the tolerance as a share of the amount
due instead of whole tokens.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("merchant_id", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False, comment="lower-cased"),
        sa.Column("role", sa.Text(), nullable=False, comment="owner, developer or support"),
        sa.Column("password_hash", sa.Text(), nullable=False, comment="argon2id"),
        sa.Column(
            "totp_secret",
            sa.LargeBinary(),
            nullable=True,
            comment="encrypted at rest; NULL = no second factor",
        ),
        sa.Column("totp_enabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_sign_ins", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sign_in_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "role IN ('owner', 'developer', 'support')", name="console_users_role_check"
        ),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email", name="console_users_email_key"),
    )
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False, comment="SHA-256 of the cookie"),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False, comment="test or live: what the user views"),
        sa.Column(
            "second_factor_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when this session passed TOTP; NULL = password only",
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["console_users.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("console_sessions_user_idx", "console_sessions", ["user_id"])
    op.add_column(
        "merchants",
        sa.Column("accent_color", sa.Text(), nullable=True, comment="#rrggbb; NULL = Pago's"),
    )
    op.add_column(
        "merchants",
        sa.Column(
            "underpayment_tolerance_percent",
            sa.Numeric(7, 4),
            nullable=True,
            comment="percent of the amount due; NULL = the absolute tolerance applies",
        ),
    )


def downgrade() -> None:
    op.drop_column("merchants", "underpayment_tolerance_percent")
    op.drop_column("merchants", "accent_color")
    op.drop_index("console_sessions_user_idx", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.drop_table("console_users")
