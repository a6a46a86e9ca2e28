"""Age and sex for the STOIC2021 members: real headers, malformed ones, and STOIC's ten-year bins."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from models.stoic.member import age_bin
from models.stoic.patient import patient_inputs

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ct"


def _header(**elements: str) -> Dataset:
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ("lung-dx-a0001-chest-5mm-s2", (58.0, "M")),
        ("lung-dx-a0002-thorax-8mm-b40f", (53.0, "F")),
        ("abdomen-jpeg2000-3mm", (None, None)),  # empty Patient's Age and Sex
    ],
)
def test_real_headers(series: str, expected: tuple[float | None, str | None]) -> None:
    folder = DATA / series
    if not folder.is_dir():
        pytest.skip(f"shared test data absent: {folder}")
    first = sorted(p for p in folder.iterdir() if p.is_file())[0]
    assert patient_inputs(pydicom.dcmread(first, stop_before_pixels=True)) == expected


@pytest.mark.parametrize(
    ("elements", "age"),
    [
        ({"PatientAge": "058Y"}, 58.0),
        ({"PatientAge": "006M"}, 0.5),
        ({"PatientAge": "052W"}, pytest.approx(52 * 7 / 365.25, rel=1e-3)),
        ({"PatientBirthDate": "19490101", "StudyDate": "20070404"}, pytest.approx(58.26, abs=0.01)),
        ({"PatientAge": "58"}, None),  # no unit: not an Age String
        ({"PatientAge": "XYZY"}, None),
        ({"PatientAge": "999Y"}, None),  # implausible
        ({"PatientBirthDate": "20200101", "StudyDate": "20100101"}, None),  # born after the study
        ({"PatientBirthDate": "1949-01-01", "StudyDate": "20070404"}, None),  # not a DA value
        ({}, None),
    ],
)
def test_ages_from_well_formed_and_malformed_headers(elements: dict[str, str], age: object) -> None:
    assert patient_inputs(_header(**elements))[0] == age


@pytest.mark.parametrize(("raw", "sex"), [("M", "M"), ("F", "F"), ("f ", "F"), ("O", None), ("", None), ("X", None)])
def test_sex_other_or_missing_is_unknown(raw: str, sex: str | None) -> None:
    assert patient_inputs(_header(PatientSex=raw)) == (None, sex)


def test_a_malformed_age_does_not_cost_the_sex() -> None:
    ds = _header(PatientSex="F")
    # Undecodable bytes in Patient's Age, kept raw as pydicom keeps an element read from a file.
    ds[Tag(0x0010, 0x1010)] = RawDataElement(Tag(0x0010, 0x1010), "AS", 4, b"\xff\xfe5Y", 0, True, True)
    assert patient_inputs(ds) == (None, "F")


@pytest.mark.parametrize(
    ("age", "label"),
    [
        (None, None),
        (float("nan"), None),
        (-1.0, None),
        (12.0, 35),
        (39.9, 35),
        (40.0, 45),
        (58.0, 55),
        (85.0, 85),
        (101.0, 85),
    ],
)
def test_stoic_ten_year_bins(age: float | None, label: int | None) -> None:
    assert age_bin(age) == label
