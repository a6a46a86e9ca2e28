"""Identity conflicts of a series, the issuer of a study's patient ID, and jobs held for disk space.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 05:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.add_column(sa.Column("identity_conflicts", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("issuer_of_patient_id", sa.String(), nullable=True))
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("held_for", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("held_for")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_column("issuer_of_patient_id")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_column("identity_conflicts")
