"""Training data for CO-RADS: a CSV of series with labels, read into preprocessed inputs.

CSV columns (header row required; paths relative to the CSV's folder):

``image``
    A folder of one DICOM series, or a single image file SimpleITK reads (NIfTI, MHA, NRRD).
``corads``
    The CO-RADS category reported by the radiologist, 1-5 (T§3.3.1).
``lung_mask`` (optional)
    A mask file on the image's grid; non-zero is lung.  Without it the classical lung mask of
    :mod:`models.qct.lungmask` is computed (the thesis used a learned lobe segmentation, RTSU-Net).
``lesion_map`` (optional)
    A lesion map on the image's grid (values in [0, 1]), channel 2 of the input (T§3.3.3).
``split`` (optional)
    ``train`` or ``validation``; without it the cases are split at random, stratified by
    CO-RADS (T§3.3.1: 75 % training, 25 % validation).
``patient`` (optional)
    Patient identifier; all scans of a patient land in the same split (T§3.3.1).

Each case is preprocessed once (T§3.3.4) and kept as float16 (in memory, or as ``.npy`` files
in a cache folder for data sets that do not fit in memory); float16 resolves the [0, 1] scale
to better than 0.001, i.e. about 1 HU, far below the augmentation noise of T§3.3.5.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from models.corads.preprocessing import PreprocessingConfig, preprocess
from models.corads.scoring import CATEGORIES
from models.findings import Geometry, Volume
from models.qct.lungmask import segment_lungs
from models.training_rows import optional_path, split_by_patient
from models.volume import load_series

__all__ = ["SPLITS", "CoradsCase", "CsvRow", "load_cases", "read_csv", "read_image", "read_mask", "split_rows"]

logger = logging.getLogger(__name__)

#: Accepted values of the ``split`` column.
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class CsvRow:
    """One line of the training CSV with paths resolved."""

    image: Path
    corads: int
    lung_mask: Path | None
    lesion_map: Path | None
    split: str | None
    patient: str


@dataclass(frozen=True)
class CoradsCase:
    """A preprocessed case: ``(3, slices, rows, columns)`` float16 input and its label."""

    name: str
    inputs: np.ndarray
    corads: int
    has_lesion_map: bool

    def tensor(self) -> torch.Tensor:
        """The input as a float32 tensor."""
        return torch.from_numpy(np.asarray(self.inputs, dtype=np.float32))


def read_csv(path: Path) -> list[CsvRow]:
    """Rows of a training CSV (module docstring), validated.

    Raises
    ------
    ValueError
        For missing columns, a CO-RADS outside 1-5, an unknown split or a missing file.
    """
    base = path.resolve().parent
    rows: list[CsvRow] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "corads"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        for line, record in enumerate(reader, start=2):
            try:
                corads = int(record["corads"])
            except ValueError:
                raise ValueError(f"{path}:{line}: CO-RADS {record['corads']!r} is not an integer") from None
            if corads not in CATEGORIES:
                raise ValueError(f"{path}:{line}: CO-RADS {corads} is not in 1-5")
            split = (record.get("split") or "").strip() or None
            if split is not None and split not in SPLITS:
                raise ValueError(f"{path}:{line}: split {split!r} is not one of {SPLITS}")
            image = optional_path(base, record["image"])
            if image is None or not image.exists():
                raise ValueError(f"{path}:{line}: image {record['image']!r} does not exist")
            rows.append(
                CsvRow(
                    image=image,
                    corads=corads,
                    lung_mask=optional_path(base, record.get("lung_mask")),
                    lesion_map=optional_path(base, record.get("lesion_map")),
                    split=split,
                    patient=(record.get("patient") or "").strip() or f"row{line}",
                )
            )
    if not rows:
        raise ValueError(f"{path}: no cases")
    return rows


def split_rows(rows: Sequence[CsvRow], validation_fraction: float, seed: int) -> tuple[list[CsvRow], list[CsvRow]]:
    """Training and validation rows: the ``split`` column when every row has one, otherwise a
    random split of patients stratified by CO-RADS (a patient's first label decides its stratum).

    Raises
    ------
    ValueError
        If only some rows have a split, or a split comes out empty.
    """

    def stratified(rows: Sequence[CsvRow]) -> set[str]:
        rng = np.random.default_rng(seed)
        first_label: dict[str, int] = {}
        for row in rows:
            first_label.setdefault(row.patient, row.corads)
        held_out: set[str] = set()
        for category in CATEGORIES:
            patients = sorted(p for p, c in first_label.items() if c == category)
            rng.shuffle(patients)
            held_out.update(patients[: round(validation_fraction * len(patients))])
        return held_out

    return split_by_patient(rows, stratified)


def read_image(path: Path) -> Volume:
    """A DICOM series folder (:func:`models.volume.load_series`) or an image file as a Volume."""
    if path.is_dir():
        return load_series(sorted(p for p in path.iterdir() if p.is_file()))
    image = sitk.ReadImage(str(path))
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    if hu.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D image, got {hu.ndim} dimensions")
    # SimpleITK reports (x, y, z) in LPS with the direction row-major, columns = axes, as Geometry.
    sx, sy, sz = (float(v) for v in image.GetSpacing())  # type: ignore[no-untyped-call]
    ox, oy, oz = (float(v) for v in image.GetOrigin())  # type: ignore[no-untyped-call]
    d = [float(v) for v in image.GetDirection()]  # type: ignore[no-untyped-call]
    geometry = Geometry(
        origin=(ox, oy, oz),
        spacing=(sz, sy, sx),
        direction=((d[0], d[1], d[2]), (d[3], d[4], d[5]), (d[6], d[7], d[8])),
        shape=(hu.shape[0], hu.shape[1], hu.shape[2]),
    )
    return Volume(hu=hu, geometry=geometry, source_sop_instance_uids=("",) * hu.shape[0])


def read_mask(path: Path, volume: Volume) -> np.ndarray:
    """A mask or map file's voxels, checked to lie on ``volume``'s grid.

    Raises
    ------
    ValueError
        If its shape or geometry differs from the volume's (tolerance 0.01 mm / 1e-3).
    """
    image = read_image(path)
    g, v = image.geometry, volume.geometry
    same = (
        g.shape == v.shape
        and np.allclose(g.spacing, v.spacing, atol=1e-2)
        and np.allclose(g.origin, v.origin, atol=1e-2)
        and np.allclose(g.direction, v.direction, atol=1e-3)
    )
    if not same:
        raise ValueError(f"{path} is not on the grid of its image ({g.shape} vs {v.shape} voxels, or geometry)")
    return image.hu


def _cache_key(row: CsvRow, config: PreprocessingConfig) -> str:
    facts = [str(row.image), str(row.lung_mask), str(row.lesion_map), json.dumps(config.as_dict(), sort_keys=True)]
    for path in (row.image, row.lung_mask, row.lesion_map):
        if path is not None and path.exists():
            facts.append(str(path.stat().st_mtime_ns))
    return hashlib.sha256("\n".join(facts).encode()).hexdigest()[:32]


def _prepare(row: CsvRow, config: PreprocessingConfig) -> np.ndarray:
    volume = read_image(row.image)
    if row.lung_mask is not None:
        lungs = read_mask(row.lung_mask, volume) > 0
    else:
        segmentation = segment_lungs(volume)
        lungs = segmentation.left | segmentation.right
    lesion = read_mask(row.lesion_map, volume) if row.lesion_map is not None else None
    prepared = preprocess(volume, lungs, lesion, config)
    return prepared.tensor.numpy().astype(np.float16)


def load_cases(rows: Sequence[CsvRow], config: PreprocessingConfig, cache_dir: Path | None = None) -> list[CoradsCase]:
    """Preprocess every row once (T§3.3.4); with ``cache_dir``, reuse and memory-map ``.npy`` files."""
    cases = []
    for row in rows:
        if cache_dir is None:
            inputs = _prepare(row, config)
        else:
            cache_dir.mkdir(parents=True, exist_ok=True)
            cached = cache_dir / f"{_cache_key(row, config)}.npy"
            if not cached.exists():
                np.save(cached, _prepare(row, config))
            inputs = np.load(cached, mmap_mode="r")
        logger.debug("prepared %s (CO-RADS %d)", row.image, row.corads)
        cases.append(CoradsCase(str(row.image), inputs, row.corads, row.lesion_map is not None))
    return cases
