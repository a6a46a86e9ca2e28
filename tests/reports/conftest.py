"""Factories for the report tests: synthetic CT headers and Findings, the real series, dciodvfy.

Everything is exposed as fixtures (factories where a test needs variants), so test modules
import nothing from each other.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from models.findings import (
    CoradsResult,
    Findings,
    Geometry,
    I3drResult,
    ModelRun,
    RegionMeasurements,
    SeverityResult,
    StoicResult,
    Volume,
)
from reports.identity import ReportContext

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_SERIES = DATA_DIR / "ct" / "lung-dx-a0001-chest-5mm-s2"
DCIODVFY = "/usr/bin/dciodvfy"
SHA_DEMO = "ab" * 32
SHA_VALID = "cd" * 32


def measure(hu: np.ndarray, mask: np.ndarray, voxel_ml: float, region: str) -> RegionMeasurements:
    """Weight-free measurements of one region, as the pipeline defines them."""
    values = hu[mask]
    count = int(values.size)
    if count == 0:
        return RegionMeasurements(region, 0, 0.0, None, None, None, None, None, note="region is empty")
    return RegionMeasurements(
        region=region,
        voxel_count=count,
        volume_ml=count * voxel_ml,
        fpv_ml=float(np.count_nonzero((values >= -950) & (values <= -500))) * voxel_ml,
        laa950_pct=100.0 * float(np.count_nonzero(values < -950)) / count,
        perc15_hu=float(np.percentile(values, 15)),
        mean_hu=float(values.mean()),
        haa_pct=100.0 * float(np.count_nonzero((values >= -700) & (values <= -250))) / count,
    )


def default_models(unvalidated: bool = False) -> dict[str, ModelRun]:
    """Model records with every status; ``unvalidated`` makes CO-RADS and I3Dr run on demo weights."""
    runs = [
        ModelRun("lung_mask", "ran", "classical thresholding and morphology", True, "0.1.0"),
        ModelRun("corads", "not_installed", "no weights installed", False, "1.0"),
        ModelRun("stoic", "skipped", "slices are 5 mm thick; STOIC2021 needs at most 3 mm", False, "1.0"),
        ModelRun("i3dr", "failed", "RuntimeError: out of memory", False, "1.0"),
    ]
    if unvalidated:
        runs[1:] = [
            ModelRun("corads", "ran", "generated weights", False, "1.0", SHA_DEMO),
            ModelRun("stoic", "ran", "installed weights", True, "1.0", SHA_VALID),
            ModelRun("i3dr", "ran", "generated weights", False, "1.0", SHA_DEMO),
        ]
    return {run.name: run for run in runs}


def model_outputs() -> dict[str, object]:
    """Hand-made CO-RADS, STOIC2021, I3Dr and severity results (the pipeline sets them None today)."""
    outputs = {"fev1_pre_l": 2.9, "fvc_pre_l": 3.8, "dlco": 24.5, "pv_l": 5.1}
    return {
        "corads": CoradsResult(category=4, score=0.71, members=(0.7, 0.72)),
        "stoic": StoicResult(p_covid=0.62, p_severe=0.18, members={"m1": {"p_covid": 0.6}}),
        "i3dr": I3drResult(
            patient=outputs,
            lobes={"LUL": {"fev1_pre_l": 0.6, "dlco": 5.0}, "RLL": {"fvc_pre_l": 0.9}},
        ),
        "severity": SeverityResult(
            lobes={"RLL": {"involvement_pct": 12.5, "ctss": 2}, "LUL": {"involvement_pct": 0.0, "ctss": 0}},
            total_ctss=2,
        ),
    }


def ct_headers(
    shape: tuple[int, int, int] = (10, 48, 64),
    spacing: tuple[float, float, float] = (2.5, 0.75, 0.7),
    origin: tuple[float, float, float] = (-22.4, -18.0, -100.0),
    patient_name: str = "Doe^Jane",
    charset: str = "ISO_IR 100",
) -> list[Dataset]:
    """Axial CT headers (no Pixel Data) of a synthetic series, returned in descending z order.

    They carry a Referenced Study Sequence without Referenced SOP Class UID, like the shared
    Lung-PET-CT-Dx data, which must not reach our objects.
    """
    nz, ny, nx = shape
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    headers = []
    for k in range(nz):
        ds = Dataset()
        ds.SpecificCharacterSet = charset
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Modality = "CT"
        ds.Manufacturer = "Synthetic"
        ds.PatientName = patient_name
        ds.PatientID = "SYN-0001"
        ds.PatientBirthDate = "19600102"
        ds.PatientSex = "F"
        ds.PatientAge = "064Y"
        ds.StudyInstanceUID = study
        ds.StudyDate = "20240305"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "ACC123"
        ds.ReferringPhysicianName = "House^Gregory"
        ds.StudyID = "S1"
        ds.StudyDescription = "CT chest"
        ref = Dataset()
        ref.ReferencedSOPInstanceUID = generate_uid()
        ds.ReferencedStudySequence = [ref]
        ds.SeriesInstanceUID = series
        ds.SeriesNumber = 3
        ds.SeriesDescription = "Thorax 2.5 mm"
        ds.InstanceNumber = nz - k
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        headers.append(ds)
    return headers[::-1]


def volume_from_headers(headers: list[Dataset], hu: np.ndarray | None = None) -> Volume:
    """Sort headers along the slice normal and build the ``Volume`` the pipeline would build."""
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ordered = sorted(headers, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    positions = [np.dot(normal, np.asarray(ds.ImagePositionPatient, float)) for ds in ordered]
    dz = float(np.median(np.diff(positions))) if len(positions) > 1 else float(ordered[0].SliceThickness)
    rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
    sy, sx = (float(v) for v in ordered[0].PixelSpacing)
    geometry = Geometry(
        origin=tuple(float(v) for v in ordered[0].ImagePositionPatient),
        spacing=(dz, sy, sx),
        direction=tuple(zip(iop[:3], iop[3:], normal, strict=True)),
        shape=(len(ordered), rows, cols),
    )
    if hu is None:
        hu = np.full(geometry.shape, -1000.0, dtype=np.float32)
    return Volume(
        hu=hu.astype(np.float32),
        geometry=geometry,
        source_sop_instance_uids=tuple(str(ds.SOPInstanceUID) for ds in ordered),
        slice_thickness_mm=float(ordered[0].SliceThickness),
    )


def synthetic_findings(
    headers: list[Dataset],
    *,
    lobes: bool = True,
    lesion: bool = True,
    outputs: bool = False,
    unvalidated: bool = False,
) -> Findings:
    """Findings with two ellipsoid lungs, optional lobes and lesion, and every model status."""
    volume = volume_from_headers(headers)
    nz, ny, nx = volume.geometry.shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    rng = np.random.default_rng(7)
    hu = np.full(volume.geometry.shape, -1000.0, dtype=np.float32)
    body = ((y - ny / 2) / (0.45 * ny)) ** 2 + ((x - nx / 2) / (0.47 * nx)) ** 2 <= 1.0
    hu[body] = 40.0

    def ellipsoid(cx: float) -> np.ndarray:
        return (
            ((z - (nz - 1) / 2) / (0.48 * nz)) ** 2 + ((y - ny / 2) / (0.3 * ny)) ** 2 + ((x - cx) / (0.17 * nx)) ** 2
        ) <= 1.0

    right = ellipsoid(0.28 * nx)  # patient right = low column index (LPS +x is patient left)
    left = ellipsoid(0.72 * nx)
    lungs = left | right
    hu[lungs] = -860.0 + rng.normal(0.0, 60.0, int(lungs.sum())).astype(np.float32)
    masks: dict[str, np.ndarray] = {"lungs": lungs, "lung_left": left, "lung_right": right}
    if lobes:
        upper = z >= nz // 2
        masks.update(
            {
                "LUL": left & upper,
                "LLL": left & ~upper,
                "RUL": right & (z >= 2 * nz // 3),
                "RML": np.zeros_like(lungs),
                "RLL": right & (z < 2 * nz // 3),
            }
        )
    if lesion:
        sphere = ((z - 2) ** 2 + (y - ny / 2) ** 2 + (x - 0.28 * nx) ** 2) <= 9
        sphere &= right
        hu[sphere] = -300.0
        masks["lesions"] = sphere
    volume = Volume(
        hu=hu,
        geometry=volume.geometry,
        source_sop_instance_uids=volume.source_sop_instance_uids,
        slice_thickness_mm=volume.slice_thickness_mm,
    )
    voxel_ml = volume.geometry.voxel_volume_ml
    measurements = {name: measure(hu, mask, voxel_ml, name) for name, mask in masks.items() if name != "lesions"}
    extra = model_outputs() if outputs else {}
    return Findings(
        volume=volume,
        masks=masks,
        measurements=measurements,
        models=default_models(unvalidated),
        pipeline_version="0.1.0",
        warnings=("synthetic test data",),
        **extra,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class RealSeries:
    """Headers and Findings of the shared 64-slice series (masks from a crude threshold)."""

    headers: list[Dataset]
    findings: Findings


def _real_series() -> RealSeries:
    from scipy import ndimage

    files = sorted(REAL_SERIES.glob("*.dcm"))
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    full = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in files)}
    volume = volume_from_headers(headers)
    hu = np.stack(
        [
            full[uid].pixel_array.astype(np.float32) * float(full[uid].RescaleSlope) + float(full[uid].RescaleIntercept)
            for uid in volume.source_sop_instance_uids
        ]
    )
    air = hu < -400
    labels, _ = ndimage.label(air)
    border = np.unique(
        np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
    )
    lungs = air & ~np.isin(labels, border)
    lungs = ndimage.binary_opening(lungs, iterations=2)
    nx = hu.shape[2]
    columns = np.arange(nx)[None, None, :]
    left, right = lungs & (columns >= nx // 2), lungs & (columns < nx // 2)
    volume = Volume(
        hu=hu,
        geometry=volume.geometry,
        source_sop_instance_uids=volume.source_sop_instance_uids,
        slice_thickness_mm=volume.slice_thickness_mm,
    )
    masks = {"lungs": lungs, "lung_left": left, "lung_right": right}
    voxel_ml = volume.geometry.voxel_volume_ml
    findings = Findings(
        volume=volume,
        masks=masks,
        measurements={name: measure(hu, mask, voxel_ml, name) for name, mask in masks.items()},
        models=default_models(),
        pipeline_version="0.1.0",
    )
    return RealSeries(headers=headers, findings=findings)


@pytest.fixture(scope="session")
def real_series() -> RealSeries:
    """The shared Lung-PET-CT-Dx series, skipped when the data are not on this machine."""
    if not REAL_SERIES.is_dir():
        pytest.skip(f"real CT series not present at {REAL_SERIES}")
    return _real_series()


@pytest.fixture()
def context() -> ReportContext:
    return ReportContext(software_version="0.1.0", institution_name="Test Hospital")


@pytest.fixture()
def make_headers() -> Callable[..., list[Dataset]]:
    return ct_headers


@pytest.fixture()
def make_findings() -> Callable[..., Findings]:
    return synthetic_findings


@pytest.fixture()
def headers() -> list[Dataset]:
    return ct_headers()


@pytest.fixture()
def findings(headers: list[Dataset]) -> Findings:
    return synthetic_findings(headers)


@dataclass(frozen=True)
class Validation:
    """Output of dciodvfy for one file."""

    lines: list[str]

    @property
    def errors(self) -> list[str]:
        return [line for line in self.lines if "Error" in line]

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.lines if "Warning" in line]


@pytest.fixture()
def dciodvfy() -> Iterator[Callable[[Path], Validation]]:
    """Run dicom3tools' dciodvfy on a file (skips when the tool is absent)."""
    if shutil.which(DCIODVFY) is None:
        pytest.skip(f"{DCIODVFY} not installed")

    def run(path: Path) -> Validation:
        result = subprocess.run([DCIODVFY, str(path)], check=False, capture_output=True, text=True, timeout=120)
        text = result.stdout + result.stderr
        return Validation([line for line in text.splitlines() if line.strip()])

    yield run


def pdf_text(pdf: bytes) -> str:
    """Literal strings of an uncompressed PDF's text operators, joined by spaces."""
    raw = pdf.decode("latin-1")
    strings = re.findall(r"\(((?:[^()\\]|\\.)*)\)\s*T[jJ]", raw)
    unescaped = [re.sub(r"\\([()\\])", r"\1", s) for s in strings]
    return re.sub(r"\s+", " ", " ".join(unescaped))


@pytest.fixture()
def extract_pdf_text() -> Callable[[bytes], str]:
    return pdf_text


@pytest.fixture(autouse=True)
def strict_pydicom() -> Iterator[None]:
    """Write and read our objects with pydicom's strict value validation (house rule 15)."""
    settings = pydicom.config.settings
    saved = (settings.reading_validation_mode, settings.writing_validation_mode)
    settings.reading_validation_mode = pydicom.config.RAISE
    settings.writing_validation_mode = pydicom.config.RAISE
    yield
    settings.reading_validation_mode, settings.writing_validation_mode = saved
