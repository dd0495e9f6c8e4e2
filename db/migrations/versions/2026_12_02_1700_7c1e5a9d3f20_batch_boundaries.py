"""batch boundaries: analyst session limits (placeholder, filled by the batch-boundaries work)

Revision ID: 7c1e5a9d3f20
Revises: 5e7a0c1d2b3f
Create Date: 2026-12-02 17:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "7c1e5a9d3f20"
down_revision: str | None = "5e7a0c1d2b3f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
