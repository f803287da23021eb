"""address pool cool-down: when each address's last session ended, and an LRU index

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "deposit_addresses",
        sa.Column(
            "released_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when its last session ended: the later of expires_at and the terminal "
            "time; NULL while leased or never used",
        ),
    )
    # Addresses whose session already ended: the last update of a terminal session is when
    # it ended (or later), so the cool-down counts from no earlier than the truth.
    op.execute(
        """
        UPDATE deposit_addresses AS d
        SET released_at = greatest(s.expires_at, s.updated_at)
        FROM checkout_sessions AS s
        WHERE s.id = d.session_id AND s.status NOT IN ('Pending', 'Underpaid')
        """
    )
    # The least-recently-used pick of a pool (merchant, family, mode) is the head of this index.
    op.create_index(
        "ix_deposit_addresses_released",
        "deposit_addresses",
        ["merchant_id", "family", "mode", "released_at", "id"],
        unique=False,
        postgresql_where=sa.text("source = 'pool' AND released_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_deposit_addresses_released", table_name="deposit_addresses")
    op.drop_column("deposit_addresses", "released_at")
