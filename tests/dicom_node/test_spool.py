"""Spool: durable layout, duplicates, refusals, full disk and failed writes leave nothing behind."""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import threading
from collections import namedtuple
from pathlib import Path
from typing import Self

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_dataset
from pydicom.uid import MRImageStorage

from dicom_node.header import InstanceHeader
from dicom_node.spool import OutOfResources, Spool
from dicom_node.statuses import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
)
from dicom_node.validation import InvalidInstance
from tests.dicom_node.helpers import SERIES_J2K, dataset_bytes, make_ct, series_files

DiskUsage = namedtuple("DiskUsage", "total used free")


def part10(ds: object) -> bytes:
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)  # type: ignore[arg-type]
    return buffer.getvalue()


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_store_writes_study_series_sop_layout_unchanged(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ds = make_ct()
    data = part10(ds)

    stored = spool.store(data)

    expected = tmp_path / "spool" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert stored.path == expected
    assert expected.read_bytes() == data
    assert stored.size == len(data)
    assert stored.duplicate is False
    assert stored.header.sop_instance_uid == ds.SOPInstanceUID
    assert all_files(tmp_path / "spool") == [expected]


def test_duplicate_is_stored_once_and_not_rewritten(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    data = part10(make_ct())
    first = spool.store(data)
    before = first.path.stat()

    again = spool.store(data)

    assert again.duplicate is True
    assert again.path == first.path
    after = first.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(all_files(tmp_path / "spool")) == 1


def test_concurrent_stores_of_one_instance_write_it_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    data = part10(make_ct(size=128))
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(spool.store(data).duplicate)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [False] + [True] * 7
    assert len(all_files(tmp_path / "spool")) == 1


def test_invalid_instance_is_refused_before_writing(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ds = make_ct()
    ds.StudyInstanceUID = ""

    with pytest.raises(InvalidInstance) as caught:
        spool.store(part10(ds))

    assert caught.value.reason == "Study Instance UID (0020,000D) is empty"
    assert all_files(tmp_path / "spool") == []


def test_meta_sop_class_must_match_data_set(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ds = make_ct()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.preamble = b"\x00" * 128
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=False)

    with pytest.raises(InvalidInstance) as caught:
        spool.store(buffer.getvalue())

    assert caught.value.status == DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert all_files(tmp_path / "spool") == []


def test_stream_without_part10_header_is_refused(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(InvalidInstance) as caught:
        spool.store(b"\x08\x00\x16\x00" + b"\x00" * 200)
    assert caught.value.status == CANNOT_UNDERSTAND


def test_low_free_space_refuses_without_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=1_000_000)
    data = part10(make_ct())
    monkeypatch.setattr(shutil, "disk_usage", lambda _: DiskUsage(10**9, 10**9 - 1_000_000, 1_000_000))

    with pytest.raises(OutOfResources) as caught:
        spool.store(data)

    assert caught.value.status == OUT_OF_RESOURCES == 0xA700
    assert all_files(tmp_path / "spool") == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_failed_write_leaves_no_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    spool = Spool(tmp_path / "spool")
    ds = make_ct(size=256)
    data = part10(ds)
    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        # The first fsync after writing is the file's: fail it as a full disk would.
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).endswith(".part"):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    # The file is flushed with fdatasync where the platform has it, else fsync: fail either.
    monkeypatch.setattr(os, "fsync", failing_fsync)
    monkeypatch.setattr(os, "fdatasync", failing_fsync, raising=False)

    with pytest.raises(OutOfResources) as caught:
        spool.store(data)

    assert errno.errorcode[code] in caught.value.reason
    assert calls["n"] >= 1
    assert all_files(tmp_path / "spool") == []

    monkeypatch.undo()
    assert spool.store(data).duplicate is False


def test_failed_short_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path / "spool")
    data = part10(make_ct(size=256))
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, handle: object) -> None:
            self._handle = handle

        def __enter__(self) -> Self:
            return self

        def __exit__(self, *args: object) -> None:
            self._handle.close()  # type: ignore[attr-defined]

        def write(self, chunk: bytes) -> int:
            self._handle.write(chunk[: len(chunk) // 2])  # type: ignore[attr-defined]
            self._handle.flush()  # type: ignore[attr-defined]
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))

    with pytest.raises(OutOfResources) as caught:
        spool.store(data)

    assert "ENOSPC" in caught.value.reason
    assert all_files(tmp_path / "spool") == []


def test_store_file_adds_file_meta_to_a_bare_data_set(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ds = make_ct()
    bare = tmp_path / "bare.dcm"
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_dataset(buffer, ds)
    bare.write_bytes(buffer.getvalue())

    stored = spool.store_file(bare)

    again = dcmread(stored.path)
    assert again.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert again.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert dataset_bytes(stored.path.read_bytes()) == buffer.getvalue()


def test_store_file_keeps_part10_bytes(tmp_path: Path) -> None:
    source = series_files(SERIES_J2K)[0]
    spool = Spool(tmp_path / "spool")
    ds = dcmread(source)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.5"
    fixed = tmp_path / "fixed.dcm"
    ds.save_as(fixed)

    stored = spool.store_file(fixed)

    assert stored.path.read_bytes() == fixed.read_bytes()
    assert stored.header.transfer_syntax_uid == "1.2.840.10008.1.2.4.90"


def test_store_file_refuses_the_empty_uid_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    for path in series_files(SERIES_J2K):
        with pytest.raises(InvalidInstance):
            spool.store_file(path)
    assert all_files(tmp_path / "spool") == []


def test_store_file_reports_unreadable_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(InvalidInstance) as caught:
        spool.store_file(tmp_path / "nope.dcm")
    assert caught.value.status == CANNOT_UNDERSTAND


def _ct_file(tmp_path: Path, name: str, **changes: object) -> bytes:
    """A small real CT instance as Part 10 bytes, with ``changes`` applied to its data set."""
    ds = make_ct(study_uid="1.2.826.0.1.3680043.8.498.41", series_uid="1.2.826.0.1.3680043.8.498.42")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    path = tmp_path / name
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def test_the_spool_keeps_a_resend_and_refuses_other_content_under_the_same_uid(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    original = _ct_file(tmp_path, "a.dcm")
    first = spool.store(original)
    assert not first.duplicate
    assert spool.store(original).duplicate

    renamed = _ct_file(tmp_path, "b.dcm", PatientName="Other^Patient", PatientID="OTHER")
    with pytest.raises(InvalidInstance) as refused:
        spool.store(renamed)
    assert refused.value.status == DUPLICATE_SOP_INSTANCE
    assert "patient_id" in refused.value.reason and "patient_name" in refused.value.reason
    assert refused.value.detail["received"]["patient_id"] == "OTHER"  # type: ignore[index]

    ds = dcmread(tmp_path / "a.dcm")
    ds.PixelData = bytes(len(ds.PixelData))
    ds.save_as(tmp_path / "c.dcm", enforce_file_format=True)
    with pytest.raises(InvalidInstance, match="pixel data differ"):
        spool.store((tmp_path / "c.dcm").read_bytes())

    assert first.path.read_bytes() == original, "the stored instance is never replaced"
    assert sorted(p.name for p in first.path.parent.iterdir()) == [first.path.name], "nothing else is left"


def test_the_spool_admission_hook_refuses_before_anything_is_written(tmp_path: Path) -> None:
    def refuse(header: InstanceHeader) -> None:
        raise InvalidInstance("refused by the owner", DUPLICATE_SOP_INSTANCE)

    spool = Spool(tmp_path / "spool", min_free_bytes=0, admit=refuse)
    with pytest.raises(InvalidInstance, match="refused by the owner"):
        spool.store(_ct_file(tmp_path, "a.dcm"))
    assert not any(p.is_file() for p in (tmp_path / "spool").rglob("*"))


def test_a_discarded_file_leaves_nothing_behind(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    stored = spool.store(_ct_file(tmp_path, "a.dcm"))
    spool.discard(stored)
    assert not stored.path.exists()
    with pytest.raises(ValueError, match="duplicate"):
        spool.discard(dataclasses.replace(stored, duplicate=True))
