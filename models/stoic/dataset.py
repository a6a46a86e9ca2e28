"""The STOIC2021 training CSV and its cases as member inputs, shared by every member's training.

One CSV format serves all eight members (header row required; paths relative to the CSV's folder):

``image``
    A DICOM series folder or an image file SimpleITK reads (NIfTI, MHA, NRRD).
``lung_mask`` (optional)
    On the image's grid: 1 = right lung, 2 = left lung (the lungmask U-Net R231 labels the authors
    used), or any other non-zero labelling (e.g. a binary mask), which is then split into left and
    right by the two largest components' side.  Without it the pipeline's classical lung mask is
    computed.
``lesion_mask`` (optional)
    On the image's grid, non-zero = lesion (etro and uaux2 need it).
``age``, ``sex`` (optional)
    Years (empty or absent when unknown; each member puts it into its STOIC bin) and M / F /
    anything else (upper-cased, as DICOM Patient's Sex is).
``covid``, ``severe``
    0 or 1 each (RT-PCR result; death or intubation within one month); severe implies COVID-19.

A case is loaded exactly as a member receives a series at inference (:class:`MemberInputs`), so
that training and inference inputs cannot drift apart.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from models.corads.data import read_image, read_mask
from models.findings import Volume
from models.qct.lungmask import segment_lungs
from models.stoic.member import MemberInputs
from models.training_rows import optional_path

__all__ = ["StoicCase", "case_inputs", "read_stoic_csv", "split_lungs"]


@dataclass(frozen=True)
class StoicCase:
    """One CSV row with paths resolved (module docstring)."""

    image: Path
    lung_mask: Path | None
    lesion_mask: Path | None
    age_years: float | None
    sex: str | None
    covid: int
    severe: int


def _binary(record: dict[str, str], column: str, where: str) -> int:
    text = (record.get(column) or "").strip()
    if text not in ("0", "1"):
        raise ValueError(f"{where}: {column} must be 0 or 1, got {text!r}")
    return int(text)


def _case(base: Path, record: dict[str, str], where: str) -> StoicCase:
    """One validated row (see :func:`read_stoic_csv` for what is refused)."""
    image = optional_path(base, record["image"])
    if image is None or not image.exists():
        raise ValueError(f"{where}: image {record['image']!r} does not exist")
    covid, severe = _binary(record, "covid", where), _binary(record, "severe", where)
    if severe and not covid:
        raise ValueError(f"{where}: severe without COVID-19 (STOIC's severe implies COVID-19)")
    age_text = (record.get("age") or "").strip()
    try:
        age = float(age_text) if age_text else None
    except ValueError:
        raise ValueError(f"{where}: age {age_text!r} is not a number") from None
    return StoicCase(
        image=image,
        lung_mask=optional_path(base, record.get("lung_mask")),
        lesion_mask=optional_path(base, record.get("lesion_mask")),
        age_years=age,
        sex=(record.get("sex") or "").strip().upper() or None,
        covid=covid,
        severe=severe,
    )


def read_stoic_csv(path: Path) -> list[StoicCase]:
    """The cases of a training CSV (module docstring), validated before any image is read.

    Raises
    ------
    ValueError
        For missing columns or files, labels other than 0/1, severe without COVID-19, a
        non-numeric age, or no rows.
    """
    base = path.resolve().parent
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "covid", "severe"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        cases = [_case(base, record, f"{path}:{line}") for line, record in enumerate(reader, start=2)]
    if not cases:
        raise ValueError(f"{path}: no cases")
    return cases


def split_lungs(mask: np.ndarray, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Left and right lungs of a label file: R231 labels 1 (right) and 2 (left) when present,
    otherwise the two largest 26-connected components, the one lying more to the patient's left
    (larger LPS x) being the left lung, so that a binary mask does not become all right lung."""
    labels = np.asarray(mask)
    if np.any(labels == 1) and np.any(labels == 2) and set(np.unique(labels)) <= {0, 1, 2}:
        return labels == 2, labels == 1
    components, count = ndimage.label(labels > 0, structure=np.ones((3, 3, 3), dtype=bool))
    if count == 0:
        empty = np.zeros(labels.shape, dtype=bool)
        return empty, empty
    sizes = np.bincount(components.ravel())[1:]
    largest = [int(i) + 1 for i in np.argsort(sizes)[::-1][:2]]
    if len(largest) == 1:
        return np.zeros(labels.shape, dtype=bool), components == largest[0]
    side = []
    for index in largest:
        centre = np.argwhere(components == index).mean(axis=0)
        side.append(volume.geometry.index_to_patient((centre[0], centre[1], centre[2]))[0])
    left, right = (largest[0], largest[1]) if side[0] > side[1] else (largest[1], largest[0])
    return components == left, components == right


def case_inputs(case: StoicCase) -> MemberInputs:
    """A case's CT, masks, age and sex as a member receives them at inference (the classical lung
    mask when the CSV gives none)."""
    volume = read_image(case.image)
    if case.lung_mask is not None:
        left, right = split_lungs(read_mask(case.lung_mask, volume), volume)
    else:
        segmentation = segment_lungs(volume)
        left, right = segmentation.left, segmentation.right
    lesions = read_mask(case.lesion_mask, volume) > 0 if case.lesion_mask is not None else None
    return MemberInputs(
        volume=volume,
        lungs=left | right,
        lung_left=left,
        lung_right=right,
        lesions=lesions,
        age_years=case.age_years,
        sex=case.sex,
    )
