"""Helpers for the DICOM node tests: shared data paths, DCMTK runners, test objects, a recording sink."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    EncapsulatedPDFStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from dicom_node.scp import AssociationInfo, StorageSCP
from dicom_node.spool import Spool, StoredInstance

__all__ = [
    "CT_DIR",
    "DATA_DIR",
    "DCMCJPEG",
    "ECHOSCU",
    "SCP_AET",
    "SERIES_J2K",
    "SERIES_S2",
    "STORESCP",
    "STORESCU",
    "RecordingSink",
    "RunningSCP",
    "dataset_bytes",
    "dcmtk_env",
    "free_port",
    "make_basic_text_sr",
    "make_ct",
    "make_encapsulated_pdf",
    "require",
    "run_storescu",
    "series_files",
    "wait_for_port",
]

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
CT_DIR = DATA_DIR / "ct"
SERIES_S2 = CT_DIR / "lung-dx-a0001-chest-5mm-s2"
SERIES_J2K = CT_DIR / "abdomen-jpeg2000-3mm"

STORESCU = Path("/usr/bin/storescu")
ECHOSCU = Path("/usr/bin/echoscu")
STORESCP = Path("/usr/bin/storescp")
DCMCJPEG = Path("/usr/bin/dcmcjpeg")

SCP_AET = "LUNGCDS"


def dcmtk_env() -> dict[str, str]:
    """Environment for DCMTK tools: TCP_NODELAY avoids ~43 ms per file."""
    return {**os.environ, "TCP_NODELAY": "1"}


def series_files(directory: Path) -> list[Path]:
    """The files of a shared test series, or skip when the shared data is absent."""
    if not directory.is_dir():
        pytest.skip(f"shared test data not found at {directory}")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        pytest.skip(f"no files in {directory}")
    return files


def require(tool: Path) -> Path:
    """Skip unless a DCMTK tool is installed."""
    if not tool.exists():
        pytest.skip(f"DCMTK tool {tool} is not installed")
    return tool


def free_port() -> int:
    """An ephemeral TCP port that was free a moment ago (for peers that cannot bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


def make_ct(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    z: float = 0.0,
    size: int = 16,
) -> Dataset:
    """A small, valid CT Image Storage data set with file meta (explicit VR LE)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "TEST-0001"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 1.0
    ds.Rows = size
    ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.PixelData = (np.arange(size * size, dtype=np.uint16) % 4096).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def make_basic_text_sr() -> Dataset:
    """A minimal Basic Text SR (PS3.3 A.35.1) for storage-class negotiation tests."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    concept = Dataset()
    concept.CodeValue = "18748-4"
    concept.CodingSchemeDesignator = "LN"
    concept.CodeMeaning = "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = [concept]
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def make_encapsulated_pdf() -> Dataset:
    """A minimal Encapsulated PDF (PS3.3 A.45.1) for storage-class negotiation tests."""
    ds = Dataset()
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DOC"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


@dataclass
class RecordingSink:
    """An InstanceSink that records calls and can be told to fail."""

    fail_with: Exception | None = None
    stored: list[tuple[StoredInstance, AssociationInfo]] = field(default_factory=list)
    ended: list[tuple[AssociationInfo, frozenset[str], bool]] = field(default_factory=list)
    refused: list[tuple[str, int, str]] = field(default_factory=list)
    _condition: threading.Condition = field(default_factory=threading.Condition)

    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        with self._condition:
            self.stored.append((stored, assoc))
            self._condition.notify_all()

    def instance_refused(
        self,
        sop_instance_uid: str,
        status: int,
        reason: str,
        assoc: AssociationInfo,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        with self._condition:
            self.refused.append((sop_instance_uid, status, reason))

    def association_ended(self, assoc: AssociationInfo, series_uids: frozenset[str], released: bool) -> None:
        with self._condition:
            self.ended.append((assoc, series_uids, released))
            self._condition.notify_all()

    def wait_for_ended(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` associations have been reported ended."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.ended) >= count, timeout):
                raise AssertionError(f"only {len(self.ended)} of {count} associations reported ended")

    def wait_for_stored(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` instances have been reported stored."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.stored) >= count, timeout):
                raise AssertionError(f"only {len(self.stored)} of {count} instances reported stored")


@dataclass
class RunningSCP:
    """A started StorageSCP with its spool, sink and port."""

    scp: StorageSCP
    spool: Spool
    sink: RecordingSink
    port: int

    def spooled_files(self) -> list[Path]:
        """Every ``.dcm`` file in the spool."""
        return sorted(self.spool.root.rglob("*.dcm"))

    def leftovers(self) -> list[Path]:
        """Every file in the spool that is not a ``.dcm`` (temporary files)."""
        return [p for p in self.spool.root.rglob("*") if p.is_file() and p.suffix != ".dcm"]


def run_storescu(
    port: int, files: list[Path], *options: str, aet: str = "STORESCU"
) -> subprocess.CompletedProcess[str]:
    """Run DCMTK storescu against 127.0.0.1:port."""
    require(STORESCU)
    return subprocess.run(
        [str(STORESCU), "-aet", aet, "-aec", SCP_AET, *options, "127.0.0.1", str(port), *map(str, files)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def dataset_bytes(part10: bytes) -> bytes:
    """The data set part of a Part 10 stream: everything after the file meta information group."""
    assert part10[128:132] == b"DICM"
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length :]
