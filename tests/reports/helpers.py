"""Factories and readers for the report tests: synthetic and real CT headers, Findings, SR walk.

``conftest.py`` exposes them as fixtures; test modules import the types and pure helpers
from here (never from each other).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from models.findings import (
    LOBE_NAMES,
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
from reports import codes
from reports.severity import ctss_for_involvement
from reports.sr_content import REGION_MEASUREMENTS, rounded

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"
REAL_SERIES = DATA_DIR / "ct" / "lung-dx-a0001-chest-5mm-s2"
DCIODVFY = "/usr/bin/dciodvfy"
VIEWERS = Path(__file__).resolve().parents[1] / "viewers"
PDFTOTEXT = "pdftotext"
PDFTOPPM = "pdftoppm"
PDFINFO = "pdfinfo"
SHA_VALID = "cd" * 32
LUNG_MASK_MODEL = "lung_mask"
VALIDATION_STATEMENT = "validated on 120 local chest CTs by Dr. Example, report QA-17"
#: Provenance, weights SHA-256, origin and validation statement of installed, validated weights.
VALIDATED_WEIGHTS = (
    "installed_validated",
    SHA_VALID,
    "installed from weights.safetensors at 2026-01-02",
    VALIDATION_STATEMENT,
)
LOBES_AND_LESIONS = ("lobes", "lesions")
#: Patient and study attributes every report object must carry exactly as its source images do (issue 14).
IDENTITY_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "StudyDescription",
)
RUN_VERSIONS = (("lobes", "2.0"), ("lesions", "3.0"), ("corads", "1.0"), ("stoic", "1.0"), ("i3dr", "1.0"))

#: result.json measurement keys and the SR concept (code value) and UCUM unit of each.
MEASUREMENT_CONCEPTS: Mapping[str, tuple[str, str]] = {
    "volume_ml": (codes.VOLUME.value, "ml"),
    "fpv_ml": (codes.FUNCTIONAL_LUNG_VOLUME.value, "ml"),
    "laa950_pct": (codes.LOW_ATTENUATION_AREA_950.value, "%"),
    "perc15_hu": (codes.PERCENTILE_15_ATTENUATION.value, "[hnsf'U]"),
    "mean_hu": (codes.ATTENUATION_COEFFICIENT.value, "[hnsf'U]"),
    "haa_pct": (codes.HIGH_ATTENUATION_AREA.value, "%"),
}

#: One SR numeric value: (tracking identifier of its group, concept code value, value, UCUM unit).
SrValue = tuple[str, str, float, str]


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


def default_models(unvalidated: bool = False, outputs: bool = False) -> dict[str, ModelRun]:
    """Model records with every status and every provenance.

    By default the lobe and lesion models ran on installed, validated weights and CO-RADS,
    STOIC2021 and I3Dr did not run (not installed, skipped, failed); with ``outputs`` they and
    the CT severity score ran on installed, validated weights.  ``unvalidated`` makes the lobe,
    lesion, CO-RADS and I3Dr models run on generated (demo) weights (severity, computed from the
    lobes and lesions, with them) and STOIC2021 on validated ones.
    """
    lung_mask = ModelRun(LUNG_MASK_MODEL, "ran", "classical thresholding and morphology", "0.1.0", "weight_free")
    if unvalidated:
        runs = [
            lung_mask,
            ModelRun("lobes", "ran", "generated weights", "2.0", "generated_weights"),
            ModelRun("lesions", "ran", "generated weights", "3.0", "generated_weights"),
            ModelRun("corads", "ran", "generated weights", "1.0", "generated_weights"),
            ModelRun("stoic", "ran", "installed weights", "1.0", *VALIDATED_WEIGHTS),
            ModelRun("i3dr", "ran", "generated weights", "1.0", "generated_weights"),
            ModelRun("severity", "ran", "from lobes and lesions", "1.0", "generated_weights", inputs=LOBES_AND_LESIONS),
        ]
    elif outputs:
        runs = [
            lung_mask,
            *(
                ModelRun(name, "ran", "installed weights", version, *VALIDATED_WEIGHTS)
                for name, version in RUN_VERSIONS
            ),
            ModelRun(
                "severity", "ran", "from lobes and lesions", "1.0", "installed_validated", inputs=LOBES_AND_LESIONS
            ),
        ]
    else:
        runs = [
            lung_mask,
            ModelRun("lobes", "ran", "installed weights", "2.0", *VALIDATED_WEIGHTS),
            ModelRun("lesions", "ran", "installed weights", "3.0", *VALIDATED_WEIGHTS),
            ModelRun("corads", "not_installed", "no weights installed", "1.0"),
            ModelRun("stoic", "skipped", "slices are 5 mm thick; STOIC2021 needs at most 3 mm", "1.0"),
            ModelRun("i3dr", "failed", "RuntimeError: out of memory", "1.0"),
        ]
    return {run.name: run for run in runs}


def mask_sources(masks: Mapping[str, np.ndarray]) -> dict[str, str]:
    """The model of each mask: lung mask, lobe model, lesion model."""
    sources = {}
    for name in masks:
        if name in ("lungs", "lung_left", "lung_right"):
            sources[name] = LUNG_MASK_MODEL
        elif name in LOBE_NAMES:
            sources[name] = "lobes"
        else:
            sources[name] = "lesions"
    return sources


def severity_from_masks(masks: Mapping[str, np.ndarray]) -> SeverityResult:
    """Involvement and CT severity score of each non-empty lobe, by the seeds/003 rules."""
    lesions = masks["lesions"]
    lobes: dict[str, dict[str, float]] = {}
    for lobe in LOBE_NAMES:
        if lobe in masks and masks[lobe].any():
            pct = 100.0 * float(np.count_nonzero(lesions & masks[lobe])) / float(np.count_nonzero(masks[lobe]))
            lobes[lobe] = {"involvement_pct": pct, "ctss": ctss_for_involvement(pct)}
    return SeverityResult(lobes=lobes, total_ctss=int(sum(v["ctss"] for v in lobes.values())))


def model_outputs() -> dict[str, Any]:
    """Hand-made CO-RADS, STOIC2021, I3Dr and severity results (the pipeline does not make them yet)."""
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


def full_i3dr() -> I3drResult:
    """I3Dr estimates of every output for the patient and all five lobes (lobes sum to about the patient)."""
    patient = {
        "pv_l": 5.6,
        "fpv_l": 4.4,
        "fev1_pre_l": 2.71,
        "fev1_post_l": 2.86,
        "fvc_pre_l": 3.92,
        "fvc_post_l": 4.05,
        "dlco": 21.4,
    }
    shares = {"LUL": 0.22, "LLL": 0.2, "RUL": 0.2, "RML": 0.1, "RLL": 0.28}
    lobes = {lobe: {key: round(value * share, 3) for key, value in patient.items()} for lobe, share in shares.items()}
    return I3drResult(patient=patient, lobes=lobes)


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


def volume_from_headers(headers: Sequence[Dataset], hu: np.ndarray | None = None) -> Volume:
    """Sort headers along the slice normal and build the ``Volume`` the pipeline would build."""
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    ordered = sorted(headers, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    positions = [np.dot(normal, np.asarray(ds.ImagePositionPatient, float)) for ds in ordered]
    dz = float(np.median(np.diff(positions))) if len(positions) > 1 else float(ordered[0].SliceThickness)
    rows, cols = int(ordered[0].Rows), int(ordered[0].Columns)
    sy, sx = (float(v) for v in ordered[0].PixelSpacing)
    ox, oy, oz = (float(v) for v in ordered[0].ImagePositionPatient)
    direction = tuple((float(a), float(b), float(c)) for a, b, c in zip(iop[:3], iop[3:], normal, strict=True))
    geometry = Geometry(
        origin=(ox, oy, oz), spacing=(dz, sy, sx), direction=direction, shape=(len(ordered), rows, cols)
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
    headers: Sequence[Dataset],
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
        inside: np.ndarray = (
            ((z - (nz - 1) / 2) / (0.48 * nz)) ** 2 + ((y - ny / 2) / (0.3 * ny)) ** 2 + ((x - cx) / (0.17 * nx)) ** 2
        ) <= 1.0
        return inside

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
        models=default_models(unvalidated, outputs),
        pipeline_version="0.1.0",
        mask_sources=mask_sources(masks),
        warnings=("synthetic test data",),
        **extra,
    )


@dataclass(frozen=True)
class RealSeries:
    """Headers and full-featured Findings of the shared 64-slice series.

    Masks are hand-made (a crude air threshold for the lungs, lobes by height, a spherical
    lesion with a consolidated core) and the model outputs are filled by hand, with the lobe,
    lesion, CO-RADS and I3Dr models on generated (demo) weights.
    """

    headers: list[Dataset]
    findings: Findings


def real_series() -> RealSeries:
    """Load the shared series (headers and pixels) and build its full-featured Findings."""
    from scipy import ndimage

    files = sorted(REAL_SERIES.glob("*.dcm"))
    full = [pydicom.dcmread(f) for f in files]
    headers: list[Dataset] = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in full}
    volume = volume_from_headers(headers)
    hu = np.stack(
        [
            by_uid[uid].pixel_array.astype(np.float32) * float(by_uid[uid].RescaleSlope)
            + float(by_uid[uid].RescaleIntercept)
            for uid in volume.source_sop_instance_uids
        ]
    )
    air = hu < -400
    labels, _ = ndimage.label(air)
    border = np.unique(
        np.concatenate([labels[:, 0].ravel(), labels[:, -1].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
    )
    lungs = ndimage.binary_opening(air & ~np.isin(labels, border), iterations=2)
    nz, _, nx = hu.shape
    columns = np.arange(nx)[None, None, :]
    slices = np.arange(nz)[:, None, None]
    left, right = lungs & (columns >= nx // 2), lungs & (columns < nx // 2)
    occupied = np.flatnonzero(lungs.any(axis=(1, 2)))
    low, high = int(occupied.min()), int(occupied.max())

    def above(fraction: float) -> np.ndarray:
        level: np.ndarray = slices >= low + fraction * (high - low)
        return level

    masks: dict[str, np.ndarray] = {
        "lungs": lungs,
        "lung_left": left,
        "lung_right": right,
        "LUL": left & above(0.45),
        "LLL": left & ~above(0.45),
        "RUL": right & above(0.6),
        "RML": right & above(0.4) & ~above(0.6),
        "RLL": right & ~above(0.4),
    }
    k = int(masks["RLL"].sum(axis=(1, 2)).argmax())
    zz, yy, xx = np.nonzero(masks["RLL"][k : k + 1])
    cy, cx = float(yy.mean()), float(xx.mean())
    z, y, x = np.ogrid[:nz, : hu.shape[1], :nx]
    distance = np.sqrt(((z - k) * 5.0 / 0.7) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)
    lesions = (distance <= 40) & lungs
    consolidation = (distance <= 18) & lungs
    masks.update({"lesions": lesions, "ggo": lesions & ~consolidation, "consolidation": consolidation})
    volume = Volume(
        hu=hu,
        geometry=volume.geometry,
        source_sop_instance_uids=volume.source_sop_instance_uids,
        slice_thickness_mm=volume.slice_thickness_mm,
    )
    voxel_ml = volume.geometry.voxel_volume_ml
    regions = [name for name in masks if name not in ("lesions", "ggo", "consolidation")]
    findings = Findings(
        volume=volume,
        masks=masks,
        measurements={name: measure(hu, masks[name], voxel_ml, name) for name in regions},
        models=default_models(unvalidated=True),
        pipeline_version="0.1.0",
        corads=CoradsResult(category=5, score=0.93, members=(0.91, 0.95)),
        stoic=StoicResult(p_covid=0.81, p_severe=0.27, members={"m1": {"p_covid": 0.8, "p_severe": 0.3}}),
        i3dr=full_i3dr(),
        severity=severity_from_masks(masks),
        mask_sources=mask_sources(masks),
        warnings=("hand-made masks and model outputs for testing",),
    )
    return RealSeries(headers=headers, findings=findings)


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


def run_dciodvfy(path: Path) -> Validation:
    """dicom3tools' dciodvfy on one file."""
    result = subprocess.run([DCIODVFY, str(path)], check=False, capture_output=True, text=True, timeout=120)
    text = result.stdout + result.stderr
    return Validation([line for line in text.splitlines() if line.strip()])


def have_poppler() -> bool:
    return all(shutil.which(tool) for tool in (PDFTOTEXT, PDFTOPPM, PDFINFO))


def pdf_pages(path: Path) -> int:
    """Number of pages (pdfinfo)."""
    info = subprocess.run([PDFINFO, str(path)], check=True, capture_output=True, text=True, timeout=60).stdout
    match = re.search(r"^Pages:\s+(\d+)", info, re.MULTILINE)
    assert match is not None, info
    return int(match.group(1))


def pdf_page_text(path: Path, page: int) -> str:
    """Text of one page (pdftotext -layout, so table rows stay rows), whitespace collapsed."""
    out = subprocess.run(
        [PDFTOTEXT, "-layout", "-f", str(page), "-l", str(page), "-enc", "UTF-8", str(path), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return re.sub(r"\s+", " ", out)


def render_page(path: Path, page: int, out_dir: Path, dpi: int = 100) -> Path:
    """PNG of one page (pdftoppm), written as ``out_dir/<pdf stem>-page<N>.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{path.stem}-page{page}"
    subprocess.run(
        [PDFTOPPM, "-f", str(page), "-l", str(page), "-r", str(dpi), "-png", "-singlefile", str(path), str(stem)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return stem.with_suffix(".png")


def render_dir(default: Path) -> Path:
    """Where page renders go: ``$LUNGCDS_RENDER_DIR`` when set, else ``default``."""
    configured = os.environ.get("LUNGCDS_RENDER_DIR")
    return Path(configured) if configured else default


def pdf_text(pdf: bytes) -> str:
    """Text of every page in content-stream order (pdftotext -raw), whitespace collapsed; skips without poppler.

    The report's fonts are embedded TrueType subsets, whose text strings are glyph codes, not
    characters: only a PDF reader (here poppler) turns them back into text.
    """
    if not have_poppler():
        pytest.skip("poppler-utils (pdftotext) not installed")
    out = subprocess.run(
        [PDFTOTEXT, "-raw", "-enc", "UTF-8", "-", "-"],
        input=pdf,
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout.decode("utf-8")
    return re.sub(r"\s+", " ", out)


def _code_value(item: Dataset, keyword: str) -> str:
    return str(getattr(item, keyword)[0].CodeValue)


def _tracking_identifier(group: Dataset) -> str:
    for child in group.ContentSequence:
        if child.ValueType == "TEXT" and _code_value(child, "ConceptNameCodeSequence") == "112039":
            return str(child.TextValue)
    raise AssertionError("measurement group without Tracking Identifier")


def measurement_groups(sr: Dataset) -> list[Dataset]:
    """The TID 1501/1411 "Measurement Group" containers (DCM 125007) of a TID 1500 SR."""
    groups = []
    for item in sr.ContentSequence:
        if item.ValueType == "CONTAINER" and _code_value(item, "ConceptNameCodeSequence") == "126010":
            groups += [
                child
                for child in item.ContentSequence
                if child.ValueType == "CONTAINER" and _code_value(child, "ConceptNameCodeSequence") == "125007"
            ]
    return groups


def sr_values(sr: Dataset) -> list[SrValue]:
    """Walk an SR and collect every numeric measurement as (region, concept, value, unit).

    ``region`` is the Tracking Identifier of the measurement group; nested items are searched
    too, in case a measurement sits below another item.
    """
    found: list[SrValue] = []

    def walk(region: str, items: Sequence[Dataset]) -> None:
        for item in items:
            if item.ValueType == "NUM":
                measured = item.MeasuredValueSequence[0]
                found.append(
                    (
                        region,
                        _code_value(item, "ConceptNameCodeSequence"),
                        float(measured.NumericValue),
                        str(measured.MeasurementUnitsCodeSequence[0].CodeValue),
                    )
                )
            if "ContentSequence" in item:
                walk(region, item.ContentSequence)

    for group in measurement_groups(sr):
        walk(_tracking_identifier(group), group.ContentSequence)
    return found


def sr_codes(sr: Dataset, region: str) -> list[tuple[str, str]]:
    """(concept, coded value) of the CODE items directly in the group of ``region``."""
    for group in measurement_groups(sr):
        if _tracking_identifier(group) == region:
            return [
                (_code_value(c, "ConceptNameCodeSequence"), _code_value(c, "ConceptCodeSequence"))
                for c in group.ContentSequence
                if c.ValueType == "CODE"
            ]
    raise AssertionError(f"no group {region!r}")


def sr_texts(sr: Dataset, region: str) -> list[tuple[str, str]]:
    """(concept, text) of the TEXT items directly in the group of ``region``."""
    for group in measurement_groups(sr):
        if _tracking_identifier(group) == region:
            return [
                (_code_value(c, "ConceptNameCodeSequence"), str(c.TextValue))
                for c in group.ContentSequence
                if c.ValueType == "TEXT"
            ]
    raise AssertionError(f"no group {region!r}")


def report_statements(sr: Dataset) -> list[tuple[str, str]]:
    """(concept, text or coded value) of the report-level "Qualitative Evaluations" container."""
    containers = [
        item
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER" and _code_value(item, "ConceptNameCodeSequence") == "C0034375"
    ]
    assert len(containers) == 1
    out = []
    for child in containers[0].ContentSequence:
        concept = _code_value(child, "ConceptNameCodeSequence")
        value = str(child.TextValue) if child.ValueType == "TEXT" else _code_value(child, "ConceptCodeSequence")
        out.append((concept, value))
    return out


def model_groups(sr: Dataset) -> list[str]:
    """Tracking identifiers of the model groups ("model <name>"), in document order."""
    return [name for name in map(_tracking_identifier, measurement_groups(sr)) if name.startswith("model ")]


def _not_run_texts(item: Dataset) -> list[Dataset]:
    """The "Model not run" texts below ``item``, checked to be HAS PROPERTIES TEXT items of that concept."""
    children = list(item.get("ContentSequence", []))
    for child in children:
        concept = _code_value(child, "ConceptNameCodeSequence")
        assert (child.ValueType, child.RelationshipType, concept) == ("TEXT", "HAS PROPERTIES", "MODELNOTRUN")
    return children


def not_run_summaries(sr: Dataset) -> dict[str, dict[str, list[str]]]:
    """The models that did not run, as the report-level container states them.

    Coded "Model run status" value (e.g. "NOTINSTALLED") -> {text of each "Model not run" item below
    it: texts of the items below that one (a STOIC2021 ensemble's members)}.  Asserts one coded item
    per status and that every item below one is a HAS PROPERTIES "Model not run" text.
    """
    containers = [
        item
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER" and _code_value(item, "ConceptNameCodeSequence") == "C0034375"
    ]
    (container,) = containers
    out: dict[str, dict[str, list[str]]] = {}
    for item in container.ContentSequence:
        if item.ValueType != "CODE" or _code_value(item, "ConceptNameCodeSequence") != "MODELSTATUS":
            continue
        status = _code_value(item, "ConceptCodeSequence")
        assert status not in out, f"two summaries of {status}"
        out[status] = {
            str(text.TextValue): [str(member.TextValue) for member in _not_run_texts(text)]
            for text in _not_run_texts(item)
        }
    return out


def expected_values(result: Mapping[str, Any]) -> list[SrValue]:
    """Every number of a result.json-like dict (``Findings.as_dict()``) as the SR should carry it.

    ``measurements[region][key]`` -> (region, concept, value rounded as the SR rounds it, unit) for the six measurements
    (``voxel_count`` and ``note`` are not measurements; a None value is stated in words);
    ``i3dr.patient`` -> region "lungs", ``i3dr.lobes[lobe]`` -> the lobe; ``severity.lobes`` ->
    involvement (%) and score (1) of the lobe, ``severity.total_ctss`` -> "lungs";
    ``corads.score`` and the STOIC2021 probabilities -> the model's group; a STOIC2021 member's
    own probabilities -> the member's group when the member has a run record that says it ran.
    """
    expected: list[SrValue] = []
    digits = {spec.attribute: spec.digits for spec in REGION_MEASUREMENTS}
    for region, values in result["measurements"].items():
        for key, (concept, unit) in MEASUREMENT_CONCEPTS.items():
            if values[key] is not None:
                expected.append((region, concept, rounded(values[key], digits[key]), unit))
    if "i3dr" in result:
        sites = [("lungs", result["i3dr"]["patient"])] + list(result["i3dr"]["lobes"].items())
        for region, values in sites:
            for key, value in values.items():
                expected.append(
                    (region, codes.I3DR_OUTPUT_CODES[key].value, float(value), codes.I3DR_OUTPUT_UNITS[key].value)
                )
    if "severity" in result:
        for lobe, values in result["severity"]["lobes"].items():
            expected.append((lobe, codes.LOBE_INVOLVEMENT.value, float(values["involvement_pct"]), "%"))
            expected.append((lobe, codes.CT_SEVERITY_SCORE.value, float(values["ctss"]), "1"))
        expected.append(("lungs", codes.CT_SEVERITY_SCORE.value, float(result["severity"]["total_ctss"]), "1"))
    if "corads" in result:
        expected.append(("model corads", codes.CORADS_SCORE.value, float(result["corads"]["score"]), "1"))
    if "stoic" in result:
        concepts = {"p_covid": codes.PROBABILITY_COVID19.value, "p_severe": codes.PROBABILITY_SEVERE_OUTCOME.value}
        sources = [("model stoic", result["stoic"])]
        sources += [
            (f"model {name}", values)
            for name, values in result["stoic"]["members"].items()
            if result["models"].get(name, {}).get("status") == "ran"
        ]
        for region, values in sources:
            for key, concept in concepts.items():
                if values.get(key) is not None:
                    expected.append((region, concept, float(values[key]), "1"))
    return expected


def algorithm_of(item: Dataset) -> dict[str, list[str]]:
    """TID 4019 rows directly below a content item: {"name": [...], "version": [...], "parameters": [...]}."""
    keys = {"111001": "name", "111003": "version", "111002": "parameters"}
    out: dict[str, list[str]] = {"name": [], "version": [], "parameters": []}
    for child in item.get("ContentSequence", []):
        concept = _code_value(child, "ConceptNameCodeSequence")
        if child.ValueType == "TEXT" and concept in keys:
            out[keys[concept]].append(str(child.TextValue))
    return out


def run_node_script(script: str, *arguments: Path) -> dict[str, Any]:
    """The JSON a script of ``tests/viewers`` prints (dcmjs under Node); skips when Node or dcmjs is
    not installed."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (VIEWERS / "node_modules" / "dcmjs").is_dir():
        pytest.skip(f"dcmjs is not installed: run `npm ci --prefix {VIEWERS}`")
    completed = subprocess.run(
        ["node", str(VIEWERS / script), *map(str, arguments)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    parsed: dict[str, Any] = json.loads(completed.stdout)
    return parsed


def read_with_dcmjs(kind: str, path: Path) -> dict[str, Any]:
    """What dcmjs (OHIF's DICOM library) reads from a SEG or SR (``tests/viewers/read_dicom.js``)."""
    return run_node_script("read_dicom.js", Path(kind), path)
