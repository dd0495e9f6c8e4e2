"""calls.file_size and calls.file_mtime_ns: the file as it was registered

Revision ID: b7d2e5f3a1c8
Revises: e4b1c7a9d2f6
Create Date: 2026-12-07 18:00:00+00:00

The nightly inbox scores a recording again as a new version when its content changed after it
was scored; it compares these two values first and hashes the file only when they moved.
Rows registered before this revision have neither (NULL): such a file is hashed once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7d2e5f3a1c8"
down_revision: str | None = "e4b1c7a9d2f6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("file_size", sa.BigInteger(), nullable=True))
    op.add_column("calls", sa.Column("file_mtime_ns", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("calls", "file_mtime_ns")
    op.drop_column("calls", "file_size")
