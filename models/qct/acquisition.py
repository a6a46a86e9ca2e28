"""What the reconstruction and contrast of a series do to its densitometry, said next to the numbers.

Every density number (LAA-950, Perc15, the bands, the zone score, the mass) depends on how the
scan was made, often more than on a real change:

- slice thickness: thick slices average small low-attenuation areas with the tissue around them
  and smooth the noise, so LAA-950 is lower and Perc15 higher than on thin slices (Gierada et al.,
  "Effects of CT section thickness and reconstruction kernel on emphysema quantification", Acad
  Radiol 2010;17:146-156); above :data:`THICK_SLICE_MM` this is said in words;
- reconstruction kernel: a sharp kernel raises the noise, and with it LAA-950 (Gallardo-Estrella
  et al., Eur Radiol 2016;26:478-486: on the same COPDGene scans the emphysema score differed by
  7.7 +/- 2.7 and 7.2 +/- 3.8 percentage points between the two kernels of two scanners);
- contrast medium raises the density of blood, so the lungs look denser and heavier.

Whether a kernel is sharp is decided by :func:`classify_kernel`, a heuristic from the vendors'
naming conventions (not a standard, and not exhaustive): a kernel it does not know is left
unclassified (``None``), never guessed.

- Siemens (``B40f``, ``I70f``, ``Br38f``, ``Bl57``, ``Hr64``): letters, then two digits that are
  the vendor's sharpness scale (higher is sharper); 50 and above counts as sharp here.
- Philips (``A``, ``B``, ``C``, ``D``, ``E``, ``L``, ``YA``-``YF``): ``A`` and ``B`` soft; ``D``,
  ``E``, ``L`` (lung) and the ``Y`` family sharp; ``C`` unclassified.
- Canon/Toshiba (``FC13``, ``FC52``): ``FC01``-``FC19`` (body) soft, ``FC50`` and above (lung,
  bone) sharp; others unclassified.
- Any vendor, by words in the name: ``LUNG``, ``BONE``, ``EDGE``, ``SHARP`` sharp (GE's LUNG,
  BONE, BONEPLUS, EDGE); ``SOFT``, ``SMOOTH``, ``STANDARD``, ``STND`` soft (GE's SOFT, STANDARD).

Contrast: the header records a contrast agent in Contrast/Bolus Agent (0018,0010) (an Enhanced CT
in the Contrast/Bolus Agent Sequence (0018,0012)); its Contrast/Bolus module is required only
when contrast was used (PS3.3 C.7.6.4), so an absent or empty agent reads as "none recorded",
which cannot tell a non-contrast scan from a site that does not fill it in.
"""

from __future__ import annotations

import re

from models.findings import Acquisition, Volume

__all__ = ["THICK_SLICE_MM", "classify_kernel", "describe_acquisition"]

#: Slices thicker than this (mm) get the thick-slice caveat: emphysema thresholds are usually applied
#: to thin (about 1 mm) slices; a heuristic boundary, not a published one.
THICK_SLICE_MM = 1.5
#: Siemens: letters and two digits of sharpness, optionally a suffix letter (``B40f``, ``Br38f``, ``Bl57``).
_SIEMENS = re.compile(r"^[A-Z][a-z]?(\d{2})[a-z]?$")
#: Siemens sharpness from which a kernel counts as sharp here.
_SIEMENS_SHARP_FROM = 50
_PHILIPS_SOFT = frozenset({"A", "B"})
_PHILIPS_SHARP = frozenset({"D", "E", "L", "YA", "YB", "YC", "YD", "YE", "YF"})
_CANON = re.compile(r"^FC(\d{2})$")
_SHARP_WORDS = ("LUNG", "BONE", "EDGE", "SHARP")
_SOFT_WORDS = ("SOFT", "SMOOTH", "STANDARD", "STND")
#: Values of Contrast/Bolus Agent that record that no agent was given.
_NO_AGENT = frozenset({"NONE", "NO", "N/A", "NA", "NO CONTRAST", "0"})


def classify_kernel(kernel: str | None, manufacturer: str | None = None) -> tuple[bool | None, str]:
    """Whether a reconstruction kernel is sharp, by the vendors' naming conventions (a heuristic).

    Parameters
    ----------
    kernel : str or None
        Convolution Kernel (0018,1210); with several values (``Br38f\\3``), the first is the kernel.
    manufacturer : str or None
        Manufacturer (0008,0070), which tells single-letter Philips kernels from others.

    Returns
    -------
    (bool or None, str)
        True sharp, False soft, None unknown or unclassified; and the rule that decided, in words.
    """
    if kernel is None or not kernel.strip():
        return None, "no reconstruction kernel in the header"
    name = kernel.split("\\")[0].strip()
    upper = name.upper()
    vendor = (manufacturer or "").upper()
    siemens = _SIEMENS.match(name)
    if siemens is not None:
        sharpness = int(siemens.group(1))
        sharp = sharpness >= _SIEMENS_SHARP_FROM
        relation = ">=" if sharp else "<"
        return sharp, f"Siemens-style kernel {name}: sharpness {sharpness} {relation} {_SIEMENS_SHARP_FROM}"
    if "PHILIPS" in vendor and upper in _PHILIPS_SOFT | _PHILIPS_SHARP:
        sharp = upper in _PHILIPS_SHARP
        return sharp, f"Philips kernel {upper}: {'sharp (D, E, L, Y family)' if sharp else 'soft (A, B)'}"
    canon = _CANON.match(upper)
    if canon is not None:
        number = int(canon.group(1))
        if number >= 50:
            return True, f"Canon/Toshiba kernel {upper}: FC50 and above (lung, bone) sharp"
        if number < 20:
            return False, f"Canon/Toshiba kernel {upper}: FC01-FC19 (body) soft"
    for words, sharp in ((_SHARP_WORDS, True), (_SOFT_WORDS, False)):
        word = next((w for w in words if w in upper), None)
        if word is not None:
            return sharp, f"kernel name {name} contains {word}: {'sharp' if sharp else 'soft'}"
    return None, f"kernel {name} is not classified by the heuristic"


def _contrast(agent: str | None) -> bool:
    return agent is not None and agent.strip().upper() not in _NO_AGENT


def describe_acquisition(volume: Volume) -> Acquisition:
    """Slice thickness, voxel size, kernel (sharp or not) and contrast of a series, with the caveats in words.

    Parameters
    ----------
    volume : Volume
        The CT, with its DICOM ``header`` when it was read from DICOM.

    Returns
    -------
    Acquisition
        The facts and, in ``caveats``, what about them biases the densitometry (module docstring).
    """
    geometry = volume.geometry
    header = volume.header
    kernel = header.convolution_kernel if header is not None else None
    manufacturer = header.manufacturer if header is not None else None
    sharp, rule = classify_kernel(kernel, manufacturer)
    caveats: list[str] = []
    thickness = volume.slice_thickness_mm
    if thickness is None:
        caveats.append("slice thickness not recorded: the partial-volume bias of the densitometry cannot be judged")
    elif thickness > THICK_SLICE_MM:
        caveats.append(
            f"{thickness:g} mm slices (thicker than {THICK_SLICE_MM:g} mm): partial volume averages small "
            "low-attenuation areas with the tissue around them and smooths noise, so LAA-950 is lower and Perc15 "
            "higher than on thin slices, and the density bands blur at every boundary (Gierada et al., Acad Radiol "
            "2010;17:146-156)"
        )
    if header is None:
        caveats.append("not read from DICOM: reconstruction kernel and contrast unknown")
    elif sharp is True:
        caveats.append(
            f"sharp reconstruction kernel {kernel}: its noise raises LAA-950 and lowers Perc15 (about 7 percentage "
            "points of LAA-950 between two kernels of the same scans; Gallardo-Estrella et al., Eur Radiol "
            "2016;26:478-486)"
        )
    elif sharp is None:
        caveats.append(f"{rule}: whether the kernel biases LAA-950 and Perc15 is not known")
    contrast: bool | None = None
    agent = header.contrast_agent if header is not None else None
    if header is not None:
        contrast = _contrast(agent)
        if contrast:
            caveats.append(
                f"contrast medium ({agent}): it raises the density of blood, so the lungs are denser and heavier, "
                "the well-aerated share lower and the zone scores higher than without contrast"
            )
        else:
            caveats.append(
                "no contrast agent recorded (Contrast/Bolus Agent absent, empty or 'none'); a contrast injection "
                "the header does not record would raise every density"
            )
    sz, sy, sx = geometry.spacing
    return Acquisition(
        slice_thickness_mm=thickness,
        slice_spacing_mm=float(sz),
        pixel_spacing_mm=(float(sy), float(sx)),
        voxel_volume_ml=geometry.voxel_volume_ml,
        manufacturer=manufacturer,
        kernel=kernel,
        sharp_kernel=sharp,
        kernel_rule=rule,
        contrast=contrast,
        contrast_agent=agent,
        caveats=tuple(caveats),
    )
