"""models.qct.acquisition: the kernel heuristic's table, the caveats, and the header of real series.

The expected classifications are the vendors' naming conventions as the issue lists them (Siemens
two-digit sharpness, 50 and above sharp; Philips single letters; GE words; Canon FC numbers), not
the code's output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models.findings import AcquisitionHeader, Geometry, Volume
from models.qct.acquisition import THICK_SLICE_MM, classify_kernel, describe_acquisition
from models.volume import load_series

#: (kernel, manufacturer, sharp): True sharp, False soft, None unclassified.
KERNELS: tuple[tuple[str | None, str | None, bool | None], ...] = (
    ("B40f", "SIEMENS", False),
    ("B70f", "SIEMENS", True),
    ("Br38f", "Siemens Healthineers", False),
    ("I70f", "SIEMENS", True),
    ("B50f", None, True),  # the boundary: 50 counts as sharp
    ("B45f", None, False),
    ("Br38f\\3", "SIEMENS", False),  # several values: the first is the kernel
    ("L", "Philips", True),
    ("B", "Philips Medical Systems", False),
    ("C", "Philips", None),
    ("YC", "Philips", True),
    ("LUNG", "GE MEDICAL SYSTEMS", True),
    ("BONE", "GE MEDICAL SYSTEMS", True),
    ("BONEPLUS", "GE MEDICAL SYSTEMS", True),
    ("STANDARD", "GE MEDICAL SYSTEMS", False),
    ("SOFT", "GE MEDICAL SYSTEMS", False),
    ("FC13", "TOSHIBA", False),
    ("FC52", "CANON_MEC", True),
    ("FC30", "TOSHIBA", None),  # between body and lung: unclassified, not guessed
    ("XQ9", "ACME", None),
    ("", "SIEMENS", None),
    (None, None, None),
)


@pytest.mark.parametrize(("kernel", "manufacturer", "sharp"), KERNELS)
def test_kernel_classification(kernel: str | None, manufacturer: str | None, sharp: bool | None) -> None:
    decided, rule = classify_kernel(kernel, manufacturer)
    assert decided is sharp
    assert rule  # the rule that decided is always said in words


def test_single_letter_kernels_need_philips_as_manufacturer() -> None:
    """A bare "L" or "B" is Philips' convention only when the manufacturer says Philips."""
    assert classify_kernel("L", None)[0] is None
    assert classify_kernel("B", "GE MEDICAL SYSTEMS")[0] is None


def _volume(thickness: float | None, header: AcquisitionHeader | None) -> Volume:
    geometry = Geometry(
        (0.0, 0.0, 0.0), (thickness or 2.0, 0.7, 0.7), ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)), (2, 3, 3)
    )
    return Volume(
        hu=np.zeros((2, 3, 3), dtype=np.float32),
        geometry=geometry,
        source_sop_instance_uids=("1.2.3.1", "1.2.3.2"),
        slice_thickness_mm=thickness,
        header=header,
    )


def _caveat(caveats: tuple[str, ...], word: str) -> list[str]:
    return [c for c in caveats if word in c]


def test_thick_slices_get_a_caveat_thin_ones_do_not() -> None:
    soft = AcquisitionHeader(manufacturer="SIEMENS", convolution_kernel="B30f", contrast_agent=None)
    thick = describe_acquisition(_volume(5.0, soft))
    assert len(_caveat(thick.caveats, "5 mm slices")) == 1
    assert thick.slice_thickness_mm == 5.0 and thick.slice_spacing_mm == 5.0
    assert thick.pixel_spacing_mm == (0.7, 0.7) and thick.voxel_volume_ml == pytest.approx(5.0 * 0.49 / 1000)
    for thickness in (1.0, THICK_SLICE_MM):  # at the threshold a slice is not yet thick
        thin = describe_acquisition(_volume(thickness, soft))
        assert not _caveat(thin.caveats, "slices") and not _caveat(thin.caveats, "slice thickness"), thickness
    just_thick = describe_acquisition(_volume(THICK_SLICE_MM + 0.25, soft))
    assert len(_caveat(just_thick.caveats, f"{THICK_SLICE_MM + 0.25:g} mm slices")) == 1
    unknown = describe_acquisition(_volume(None, soft))
    assert len(_caveat(unknown.caveats, "slice thickness not recorded")) == 1


def test_sharp_kernel_caveat_only_for_a_sharp_kernel() -> None:
    sharp = describe_acquisition(_volume(1.0, AcquisitionHeader("SIEMENS", "B70f", None)))
    assert sharp.sharp_kernel is True and sharp.kernel == "B70f" and sharp.manufacturer == "SIEMENS"
    assert len(_caveat(sharp.caveats, "sharp reconstruction kernel B70f")) == 1
    soft = describe_acquisition(_volume(1.0, AcquisitionHeader("SIEMENS", "B30f", None)))
    assert soft.sharp_kernel is False and not _caveat(soft.caveats, "kernel")
    unclassified = describe_acquisition(_volume(1.0, AcquisitionHeader("Philips", "C", None)))
    assert unclassified.sharp_kernel is None
    assert len(_caveat(unclassified.caveats, "not known")) == 1


@pytest.mark.parametrize(
    ("agent", "contrast"), [("OMNIPAQUE 350", True), ("IV", True), (None, False), ("NONE", False), ("none ", False)]
)
def test_contrast_from_the_agent(agent: str | None, contrast: bool) -> None:
    acquisition = describe_acquisition(_volume(1.0, AcquisitionHeader("SIEMENS", "B30f", agent)))
    assert acquisition.contrast is contrast and acquisition.contrast_agent == agent
    if contrast:
        assert len(_caveat(acquisition.caveats, f"contrast medium ({agent})")) == 1
    else:
        assert len(_caveat(acquisition.caveats, "no contrast agent recorded")) == 1


def test_no_header() -> None:
    """A phantom in memory: kernel and contrast unknown, and said to be."""
    acquisition = describe_acquisition(_volume(1.0, None))
    assert acquisition.kernel is None and acquisition.sharp_kernel is None and acquisition.contrast is None
    assert len(_caveat(acquisition.caveats, "not read from DICOM")) == 1
    assert not _caveat(acquisition.caveats, "contrast medium (")
    row = acquisition.as_dict()
    assert row["kernel"] is None and row["contrast"] is None and row["caveats"] == list(acquisition.caveats)


#: Real series: (folder, manufacturer, kernel, sharp, slice thickness); the headers as dcmdump shows them.
REAL = (
    ("lung-dx-a0002-thorax-8mm-b40f", "SIEMENS", "B40f", False, 8.0),
    ("lung-dx-a0001-chest-5mm-s2", "Philips", "L", True, 5.0),
    ("lung-dx-a0001-chest-5mm-s3", "Philips", "B", False, 5.0),
)


@pytest.mark.parametrize(("folder", "manufacturer", "kernel", "sharp", "thickness"), REAL, ids=[r[0] for r in REAL])
def test_header_of_real_series(
    real_series: Callable[[str], list[Path]],
    folder: str,
    manufacturer: str,
    kernel: str,
    sharp: bool,
    thickness: float,
) -> None:
    volume = load_series(real_series(folder))
    assert volume.header is not None
    acquisition = describe_acquisition(volume)
    assert acquisition.manufacturer == manufacturer and acquisition.kernel == kernel
    assert acquisition.sharp_kernel is sharp
    assert acquisition.slice_thickness_mm == thickness
    assert len(_caveat(acquisition.caveats, f"{thickness:g} mm slices")) == 1
    assert bool(_caveat(acquisition.caveats, "sharp reconstruction kernel")) is sharp
