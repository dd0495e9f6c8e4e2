"""phone-robust training: augmented feature variants (placeholder, filled by the training work)

Revision ID: b3a7e2c9d5f4
Revises: 9d2f6b1c4e81
Create Date: 2026-12-02 17:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "b3a7e2c9d5f4"
down_revision: str | None = "9d2f6b1c4e81"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
