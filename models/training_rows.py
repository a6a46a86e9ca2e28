"""What every training CSV of ``lungcds train`` shares: paths relative to the CSV, and the patient split.

The CO-RADS, I3Dr and STOIC recipes each read their own columns, but resolve an optional path
column the same way and split training from validation the same way: the CSV's ``split`` column
when every row has one (a site's own fixed split), otherwise at random by patient, so that no
patient is on both sides (thesis 2.4.3 and 3.3.6: splits "at a subject level").  How the random
split draws its patients (stratified by CO-RADS, or not) is the recipe's own choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

__all__ = ["SplitRow", "optional_path", "split_by_patient"]


class SplitRow(Protocol):
    """A CSV row with the patient it belongs to and its ``split`` cell (None when empty)."""

    @property
    def split(self) -> str | None: ...

    @property
    def patient(self) -> str: ...


RowT = TypeVar("RowT", bound=SplitRow)


def optional_path(base: Path, value: str | None) -> Path | None:
    """An optional path cell, relative to the CSV's folder; None when the cell is empty."""
    text = (value or "").strip()
    return (base / text).resolve() if text else None


def split_by_patient(
    rows: Sequence[RowT], held_out: Callable[[Sequence[RowT]], set[str]]
) -> tuple[list[RowT], list[RowT]]:
    """Training and validation rows: the ``split`` column when every row has one, otherwise the
    patients ``held_out(rows)`` chooses go to validation.

    Raises
    ------
    ValueError
        If only some rows have a split, or a split comes out empty.
    """
    given = [row.split for row in rows]
    if all(s is not None for s in given):
        train = [r for r in rows if r.split == "train"]
        validation = [r for r in rows if r.split == "validation"]
    elif any(s is not None for s in given):
        raise ValueError("either every row or no row must have a split")
    else:
        patients = held_out(rows)
        train = [r for r in rows if r.patient not in patients]
        validation = [r for r in rows if r.patient in patients]
    if not train or not validation:
        raise ValueError(f"empty split: {len(train)} training and {len(validation)} validation cases")
    return train, validation
