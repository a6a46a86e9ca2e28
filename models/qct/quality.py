"""A plausibility gate for a lung mask, before any model that depends on it runs.

A lung mask can fail without an error: a series that is not a chest CT (no lungs), a scan that
stops above the lung bases, a segmentation that took the air outside the patient.  Models run on
such a mask would give numbers that look like results.  :func:`assess_lung_mask` checks what can
be checked without a reference, and says in plain words what is wrong:

- the total lung volume is outside 1-10 L (adult lungs at CT hold about 2.5-8 L; far outside
  that range the mask is not two lungs, or the scan is not an adult chest);
- a lung is missing, or holds less than 15 % of the total (after a pneumonectomy or a collapsed
  lung the models of the seeds are outside what they were trained on; more often the mask is
  wrong);
- the lungs are cut at an end of the field of view: an end image (first or last slice, or the
  first or last column or row) holds more than 20 % of the largest lung cross-section parallel
  to it.  A slice that grazes the apex or the costophrenic recesses holds a few per cent of it;
  for a lung that widens from its apex like a paraboloid, 20 % means that the scan starts about
  a fifth of the way down to the widest part, and that roughly 1-2 % of the lung volume lies
  beyond it, a share that grows with the square of the cut depth;
- more than 1 % of the mask lies outside the patient's body (air around the patient or in the
  table taken as lung);
- the lung labelled left is not on the patient's left of the one labelled right.

When any of these holds, ``plausible`` is False and downstream models do not run.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from models.findings import Geometry, QualityAssessment, Volume

__all__ = [
    "MAX_OUTSIDE_BODY_FRACTION",
    "MAX_END_SECTION_FRACTION",
    "MIN_LUNG_SHARE",
    "PLAUSIBLE_VOLUME_L",
    "assess_lung_mask",
]

logger = logging.getLogger(__name__)

#: Plausible total lung volume on CT, litres.
PLAUSIBLE_VOLUME_L: tuple[float, float] = (1.0, 10.0)
#: Smallest share of the total lung volume that each lung must hold.
MIN_LUNG_SHARE = 0.15
#: Largest share of the widest lung cross-section allowed on an end image of the field of view.
MAX_END_SECTION_FRACTION = 0.20
#: Largest share of the lung mask allowed outside the body.
MAX_OUTSIDE_BODY_FRACTION = 0.01
#: Tissue (body) is above this; air, lung and foam pads are below.
_BODY_THRESHOLD_HU = -500.0
#: Grid step (mm) of the coarse body mask: the check is a percentage, not a boundary.
_BODY_STEP_MM = 3.0
#: Where an end of each patient axis lies, by (patient axis, sign): LPS, +x left, +y back, +z head.
_ENDS = {
    (0, 1): "patient's left side",
    (0, -1): "patient's right side",
    (1, 1): "back",
    (1, -1): "front",
    (2, 1): "top (head end)",
    (2, -1): "bottom (feet end)",
}


def _patient_axes(geometry: Geometry) -> list[tuple[int, int]]:
    """For array axes 0, 1, 2: the patient axis each runs along most closely, and its sign."""
    direction = np.asarray(geometry.direction, dtype=float)
    axes = []
    for array_axis in range(3):
        vector = direction[:, 2 - array_axis]
        patient_axis = int(np.argmax(np.abs(vector)))
        axes.append((patient_axis, 1 if vector[patient_axis] > 0 else -1))
    return axes


def _cut_at_edges(lungs: np.ndarray, geometry: Geometry) -> list[str]:
    """Reasons for every end of the field of view where the lungs are cut off."""
    reasons = []
    for array_axis, (patient_axis, sign) in enumerate(_patient_axes(geometry)):
        sections = lungs.sum(axis=tuple(a for a in range(3) if a != array_axis), dtype=np.int64)
        widest = int(sections.max())
        for index, towards in ((0, -sign), (-1, sign)):
            share = sections[index] / widest
            if share > MAX_END_SECTION_FRACTION:
                reasons.append(
                    f"the lungs are cut at the {_ENDS[(patient_axis, towards)]} of the field of view: the lung mask "
                    f"on that edge covers {100.0 * share:.0f} % of their largest cross-section parallel to it "
                    f"(more than {100.0 * MAX_END_SECTION_FRACTION:.0f} % means part of the lungs is not in the scan)"
                )
    return reasons


def _outside_body_share(hu: np.ndarray, lungs: np.ndarray, geometry: Geometry) -> float:
    """Share of the lung mask outside the body, on a grid of about ``_BODY_STEP_MM``.

    The body is the largest connected region above ``_BODY_THRESHOLD_HU`` with its holes (the
    lungs among them) filled slice by slice.
    """
    steps = tuple(max(1, round(_BODY_STEP_MM / s)) for s in geometry.spacing)
    grid = tuple(slice(None, None, step) for step in steps)
    lungs_coarse = lungs[grid]
    if not lungs_coarse.any():
        return 0.0
    labels, count = ndimage.label(hu[grid] > _BODY_THRESHOLD_HU)
    if count == 0:
        return 1.0
    body = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return float(np.count_nonzero(lungs_coarse & ~body)) / float(np.count_nonzero(lungs_coarse))


def _centre_x_mm(mask: np.ndarray, geometry: Geometry) -> float:
    """Patient-space x (LPS: + is the patient's left) of a mask's centre of mass."""
    centre = np.argwhere(mask).mean(axis=0)
    return geometry.index_to_patient((float(centre[0]), float(centre[1]), float(centre[2])))[0]


def assess_lung_mask(volume: Volume, left: np.ndarray, right: np.ndarray) -> QualityAssessment:
    """Whether a left and right lung mask are plausible enough to run models on, and why not.

    Parameters
    ----------
    volume : Volume
        The CT the masks belong to.
    left, right : numpy.ndarray
        Boolean ``[z, y, x]`` masks of the patient's left and right lung on ``volume``'s grid.

    Returns
    -------
    QualityAssessment
        ``plausible`` is True when no check failed; ``reasons`` says in words what failed (see
        the module docstring for the checks and their thresholds).

    Raises
    ------
    ValueError
        If a mask is not boolean or not on the volume's grid (a programming error, not a
        property of the scan).
    """
    for name, mask in (("left", left), ("right", right)):
        if mask.shape != volume.hu.shape:
            raise ValueError(f"{name} lung mask has shape {mask.shape}, the volume {volume.hu.shape}")
        if mask.dtype != np.bool_:
            raise ValueError(f"{name} lung mask must be boolean, got {mask.dtype}")
    geometry = volume.geometry
    litres = {
        side: int(np.count_nonzero(mask)) * geometry.voxel_volume_ml / 1000.0
        for side, mask in (("left", left), ("right", right))
    }
    total = litres["left"] + litres["right"]
    if total == 0.0:
        return QualityAssessment(plausible=False, reasons=("the lung mask is empty: no lung was found in this series",))
    reasons = []
    low, high = PLAUSIBLE_VOLUME_L
    if not low <= total <= high:
        reasons.append(f"lung volume {total:.1f} L is outside the plausible {low:g}-{high:g} L")
    for side, share in ((side, litres[side] / total) for side in ("left", "right")):
        if share == 0.0:
            reasons.append(f"the {side} lung is missing from the mask")
        elif share < MIN_LUNG_SHARE:
            reasons.append(
                f"the {side} lung is {litres[side]:.2f} L, {100.0 * share:.0f} % of the total lung volume "
                f"(at least {100.0 * MIN_LUNG_SHARE:.0f} % expected)"
            )
    if litres["left"] > 0.0 and litres["right"] > 0.0 and _centre_x_mm(left, geometry) <= _centre_x_mm(right, geometry):
        reasons.append("the lung labelled left is not on the patient's left of the lung labelled right")
    lungs = left | right
    reasons.extend(_cut_at_edges(lungs, geometry))
    outside = _outside_body_share(volume.hu, lungs, geometry)
    if outside > MAX_OUTSIDE_BODY_FRACTION:
        reasons.append(
            f"{100.0 * outside:.0f} % of the lung mask (about {1000.0 * outside * total:.0f} mL) lies outside "
            "the patient's body"
        )
    if reasons:
        logger.info("lung mask implausible: %s", "; ".join(reasons))
    return QualityAssessment(plausible=not reasons, reasons=tuple(reasons))
