"""phone-robust training: clip_features.variant (augmented copies of a clip)

Revision ID: b3a7e2c9d5f4
Revises: 9d2f6b1c4e81
Create Date: 2026-12-02 17:20:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3a7e2c9d5f4"
down_revision: str | None = "9d2f6b1c4e81"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PK = ["clip_id", "feature_set_id", "seg_start_s", "seg_end_s"]


def upgrade() -> None:
    # Existing rows are the clips as recorded: variant 0.
    op.add_column("clip_features", sa.Column("variant", sa.Integer(), server_default="0",
                                             nullable=False))
    op.drop_constraint("pk_clip_features", "clip_features", type_="primary")
    op.create_primary_key("pk_clip_features", "clip_features", [*_PK, "variant"])


def downgrade() -> None:
    # Augmented copies have no place in the old key: they are dropped, recorded clips kept.
    op.execute("DELETE FROM clip_features WHERE variant <> 0")
    op.drop_constraint("pk_clip_features", "clip_features", type_="primary")
    op.create_primary_key("pk_clip_features", "clip_features", _PK)
    op.drop_column("clip_features", "variant")
