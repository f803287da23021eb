"""oauth clients and signing keys for the card API (issue 13)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_clients",
        sa.Column("id", sa.Text(), nullable=False, comment="the public client_id, cli_…"),
        sa.Column("merchant_id", sa.Text(), nullable=False),
        sa.Column("mode", sa.Text(), nullable=False),
        sa.Column(
            "secret_hash",
            sa.LargeBinary(),
            nullable=True,
            comment="HMAC-SHA256(pepper); NULL for a client of an external issuer",
        ),
        sa.Column(
            "secret_hint",
            sa.Text(),
            nullable=True,
            comment="prefix and last 4 characters, for display",
        ),
        sa.Column(
            "scopes",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            comment="the scopes it may be granted",
        ),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column(
            "external_issuer",
            sa.Text(),
            nullable=True,
            comment="iss of the trusted OIDC issuer it signs in through",
        ),
        sa.Column(
            "external_subject",
            sa.Text(),
            nullable=True,
            comment="sub of its tokens at that issuer",
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["merchant_id"], ["merchants.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_hash"),
        sa.UniqueConstraint(
            "external_issuer", "external_subject", name="uq_oauth_clients_external"
        ),
        # A client authenticates one way: a secret, or an external issuer's token.
        sa.CheckConstraint(
            "(secret_hash IS NULL) = "
            "(external_issuer IS NOT NULL AND external_subject IS NOT NULL)",
            name="ck_oauth_clients_one_credential",
        ),
    )
    op.create_index("ix_oauth_clients_merchant", "oauth_clients", ["merchant_id"])
    op.create_table(
        "oauth_signing_keys",
        sa.Column("kid", sa.Text(), nullable=False),
        sa.Column("algorithm", sa.Text(), nullable=False),
        sa.Column("public_jwk", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "private_key",
            sa.LargeBinary(),
            nullable=False,
            comment="PKCS#8 PEM under AES-256-GCM (nonce || ciphertext), key from HKDF of "
            "PAGO_OAUTH_KEY_ENCRYPTION_SECRET, the kid as associated data",
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "not_before",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="signs from then on",
        ),
        sa.Column(
            "retire_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="unpublished from then on: its successor's start plus the token lifetime",
        ),
        sa.PrimaryKeyConstraint("kid"),
    )
    # Two replicas rotating at once would insert two keys for one start; the unique start is
    # the backstop behind the advisory lock.
    op.create_index(
        "ix_oauth_signing_keys_not_before", "oauth_signing_keys", ["not_before"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_oauth_signing_keys_not_before", table_name="oauth_signing_keys")
    op.drop_table("oauth_signing_keys")
    op.drop_index("ix_oauth_clients_merchant", table_name="oauth_clients")
    op.drop_table("oauth_clients")
