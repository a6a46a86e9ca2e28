"""Acceptance rules shared by the SCP and folder import: parse errors, UIDs, SOP class mismatches."""

from __future__ import annotations

import pytest
from pydicom import config
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import CTImageStorage, MRImageStorage

from dicom_node.statuses import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS
from dicom_node.validation import InvalidInstance, check_uid, parse_instance, validate_dataset
from tests.dicom_node.helpers import SERIES_J2K, make_ct, series_files


def part10(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "uid",
    ["1.2.840.10008.5.1.4.1.1.2", "0.0", "2.25.329800735698586629295641978511506172918", "1" * 64],
)
def test_valid_uids(uid: str) -> None:
    assert check_uid(uid) is None


@pytest.mark.parametrize(
    ("uid", "problem"),
    [
        ("1." + "2" * 63, "longer than 64"),
        ("1.2.840.01", "leading zero"),
        ("1.2..3", "empty component"),
        ("1.2.3.", "empty component"),
        ("1.2.abc", "other than digits"),
        ("1.2 .3", "other than digits"),
    ],
)
def test_invalid_uids(uid: str, problem: str) -> None:
    result = check_uid(uid)
    assert result is not None and problem in result


@pytest.mark.parametrize(
    ("keyword", "name"),
    [
        ("SOPClassUID", "SOP Class UID (0008,0016)"),
        ("SOPInstanceUID", "SOP Instance UID (0008,0018)"),
        ("StudyInstanceUID", "Study Instance UID (0020,000D)"),
        ("SeriesInstanceUID", "Series Instance UID (0020,000E)"),
    ],
)
def test_missing_empty_and_invalid_uids_are_named(keyword: str, name: str) -> None:
    missing = make_ct()
    delattr(missing, keyword)
    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(missing)
    assert caught.value.reason == f"{name} is missing"
    assert caught.value.status == DATASET_DOES_NOT_MATCH_SOP_CLASS

    empty = make_ct()
    setattr(empty, keyword, "")
    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(empty)
    assert caught.value.reason == f"{name} is empty"

    invalid = make_ct()
    setattr(invalid, keyword, "1.2.03.4")
    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(invalid)
    assert caught.value.reason.startswith(f"{name} is not a valid UID")
    assert "'1.2.03.4'" in caught.value.reason


def test_sop_class_must_match_the_request() -> None:
    ds = make_ct()
    validate_dataset(ds, request_sop_class_uid=CTImageStorage, request_sop_instance_uid=ds.SOPInstanceUID)

    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(ds, request_sop_class_uid=MRImageStorage)
    assert caught.value.status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert CTImageStorage in caught.value.reason and MRImageStorage in caught.value.reason


def test_sop_instance_must_match_the_request() -> None:
    ds = make_ct()
    with pytest.raises(InvalidInstance) as caught:
        validate_dataset(ds, request_sop_instance_uid="1.2.3.4")
    assert caught.value.status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "'1.2.3.4'" in caught.value.reason


@pytest.mark.parametrize(
    "data",
    [b"", b"hello, this is not DICOM at all" * 4, b"\x00" * 132 + b"junk", bytes(range(256)) * 4],
)
def test_garbage_cannot_be_understood(data: bytes) -> None:
    with pytest.raises(InvalidInstance) as caught:
        parse_instance(data)
    assert caught.value.status == CANNOT_UNDERSTAND
    assert caught.value.reason.startswith("pydicom could not parse the data set: ")


def test_truncated_stream_is_refused() -> None:
    data = part10(make_ct(size=64))

    with pytest.raises(InvalidInstance) as caught:
        parse_instance(data[: len(data) - 1000])
    assert caught.value.status == CANNOT_UNDERSTAND
    assert "truncated" in caught.value.reason

    with pytest.raises(InvalidInstance) as caught:
        parse_instance(data[:300])
    assert caught.value.status == CANNOT_UNDERSTAND


def test_truncated_encapsulated_pixel_data_is_refused() -> None:
    data = series_files(SERIES_J2K)[0].read_bytes()

    with pytest.raises(InvalidInstance) as caught:
        parse_instance(data[:-500])
    assert caught.value.status == CANNOT_UNDERSTAND
    assert caught.value.reason.startswith("pydicom could not parse the data set: ")


def test_bare_data_set_without_file_meta_parses() -> None:
    ds = make_ct()
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = True
    write_dataset(buffer, ds)

    parsed, header = parse_instance(buffer.getvalue())

    assert header.sop_instance_uid == ds.SOPInstanceUID
    assert header.transfer_syntax_uid == "1.2.840.10008.1.2"
    validate_dataset(parsed)


def test_real_jpeg2000_files_with_empty_uids_are_refused_by_name() -> None:
    for path in series_files(SERIES_J2K):
        ds, header = parse_instance(path)
        assert header.transfer_syntax_uid == "1.2.840.10008.1.2.4.90"
        with pytest.raises(InvalidInstance) as caught:
            validate_dataset(ds)
        assert caught.value.reason == "SOP Class UID (0008,0016) is empty"


def test_validation_works_with_strict_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)
    ds = make_ct()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Bad^Name"
    data = part10(ds).replace(b"Bad^Name", b"Bad\xff\xfeNam")

    parsed, header = parse_instance(data)
    validate_dataset(parsed)

    assert header.patient_name is not None and "\ufffd" in header.patient_name

    ds = make_ct()
    ds.SliceThickness = "1.25"
    ds.InstanceNumber = "17"
    strict = part10(ds).replace(b"DS\x04\x001.25", b"DS\x04\x00ab.c").replace(b"IS\x02\x0017", b"IS\x02\x00x7")
    _, header = parse_instance(strict)
    assert header.slice_thickness is None and header.instance_number is None
    assert header.rows == 16
