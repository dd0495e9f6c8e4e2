"""trustworthy scores: abstained segments, scored coverage and confidence (placeholder)

Revision ID: 9d2f6b1c4e81
Revises: 7c1e5a9d3f20
Create Date: 2026-12-02 17:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "9d2f6b1c4e81"
down_revision: str | None = "7c1e5a9d3f20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
