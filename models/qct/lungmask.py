"""Classical, weight-free segmentation of the left and right lungs on CT.

No trained network is involved: the lungs are the large air-filled spaces inside the body, once
the air outside the patient, the trachea and main bronchi, and gas below the diaphragm are taken
away.  Steps 1 to 11 work on a coarse working copy of the scan (block averages of about 2 mm),
so that a 600-slice thin-section scan costs little more than a 64-slice thick one; steps 12 and
13 re-test, on the scan's own grid, only the few voxels where a lesion meets the pleura:

1. body: the largest connected region of tissue above -500 HU after a small opening (which
   detaches the table and blankets), with holes filled slice by slice;
2. air inside the body below -400 HU (halfway between aerated lung, about -850 HU, and soft
   tissue, so that partial-volume voxels are split evenly);
3. airways: from a small, near-midline air region in the top slices (the trachea), region
   growing below a threshold set just above the trachea's own lumen HU (soft kernels and some
   scanners read tracheal air at -950 HU, not -1000 HU); if the grown tree is too large it has
   leaked into lung, and the threshold is lowered (explosion control) until it is not; the tree
   and its rim are cut out;
4. gas: in-plane islands that are mostly pure gas (stomach, bowel) are removed, so that gas
   touching a lung base in the next thick slice cannot join it;
5. lung components: the largest non-gas components, and further ones that are large or reach
   above the middle of the lungs (gas below the diaphragm does neither);
6. left/right: a component that straddles the midline (lungs touching at the anterior or
   posterior junction) is eroded in-plane until it falls apart into a left and a right core;
   the cores are grown back level by level, so the cut falls in the middle of the junction;
7. boundary: a closing with a 10 mm ball and 3-D hole filling bring vessels and fissures inside;
8. enclosure: dense regions that the lung surrounds but for a neck to the pleura narrower than
   themselves (a lesion against the mediastinum, the diaphragm, the apex or the costal pleura)
   are given back (see :func:`_fill_enclosed`);
9. ribs: dense pathology against the costal pleura that the enclosure did not take
   (consolidation, atelectasis, a mass with a wide contact) is given back, slice by slice, using
   the ribs as the reference for where the pleura is (see :func:`_fill_against_ribs`); if it
   gave anything back, the enclosure is tried again, since a neck the ribs plugged can close off
   a region;
10. lesion rim: the outer working voxel of a dense lesion against the costal pleura, which holds
    lesion and wall together and reads as wall, is given back inside the rib cage's inner hull
    (see :func:`_restore_lesion_rim`; the hull takes the farthest wall of each 3-degree bin and
    its neighbours, since in a dented bin ribs of the neighbouring slices pose as the wall, see
    :func:`_outer_wall`);
11. apex: above the slices the rib step measures, a dense lesion is grown in-plane into the
    dense voxels inside the convex outline of its slice's lung section, where the aerated lung
    of that slice wraps it (see :func:`_restore_apical_lesion`).  The airway lumen stays out;
12. lesion rim on the scan's grid: after the masks are brought back to the scan's grid, a voxel
    of soft-tissue density (not bone) next to the kept part of a lesion, in a working voxel next
    to the lesion and inside the rib cage's inner hull, is given back, one voxel deep (see
    :func:`_native_lesion_rim`);
13. apex on the scan's grid: in the apical slices of step 11, a dense region that the slice's
    aerated lung (with its partial-volume rim, which the working grid loses) wraps in-plane on
    every side is given back, and a lesion of the slice below is continued into the slice above
    within its footprint, inside that slice's convex outline and away from bone (see
    :func:`_native_apex`).

The enclosure comes before the ribs because the rib step fills only the angular bins of a dent
(seen from the lung's centre): on a lesion that the lung wraps around in other slices it fills a
wedge through the lesion and leaves slivers on either side, each too thin for any ball of the
enclosure step, which then no longer sees the lesion it would have taken whole.  In the other
order a 36 mm ball against the lateral wall of the sharp-kernel 5 mm series kept 49 %, a 60 mm
ball in the paravertebral gutter 30-49 % and a 60 mm ball against heart and hilum 87 %; in this
order 99.9-100 % (see :func:`_fill_pleural_lesions`).

Why the ribs: aerated lung lies against the inner surface of the ribs all around the costal side,
a few millimetres of intercostal muscle and pleura away, so wherever the aerated lung falls short
of that distance something dense lies between it and the pleura, and the rib cage says how far
out the lung goes (the rib cage as the reference for the lung border in diseased lungs follows
Prasad et al., Acad Radiol 2008, "Automatic segmentation of lung parenchyma in the presence of
diseases based on curvature of ribs").  The lung contour of each slice is taken after a 3 mm
in-plane opening, so that the thin rim of aerated lung that wraps a lesion where it touches the
pleura does not hide the dent.  An earlier step closed such dents along the straight chord
across them, which kept only about two thirds of a subpleural consolidation; a per-slice convex
hull has the same chord problem, and a closing large enough to bridge a consolidation also
bridges the heart and the diaphragm domes.

Why enclosure: the ribs say nothing against the mediastinum, the diaphragm or the apex, where
the lung borders soft tissue of the same density as the lesion.  What does tell a lesion from
the heart or the liver there is its shape: aerated lung wraps it on all sides but the small
patch where it touches the pleura.  This is the rolling-ball principle used to keep
juxtapleural nodules (Armato and Sensakovic, Acad Radiol 2004, "Automated lung segmentation for
thoracic CT: impact on computer-aided diagnosis"; reviewed with its alternatives by Pu et al.,
Comput Med Imaging Graph 2008, "Adaptive border marching"): a ball rolled along the lung contour
bridges indentations whose mouth is narrower than itself.  Here it is done in 3-D at
ball radii of 8, 12, 16 and 22 mm, and keeping only what the bridged lung then encloses, never
the bridges themselves (which along the rest of the pleura would take in costophrenic angles,
the cardiophrenic fat and the hilum).  A region cut off at a neck is kept only if aerated lung
lies just beyond it in at least 70 % of all directions, which a piece of mediastinum or hilum
cut off by a large ball does not.

Why a convex outline at the apex: above the slices that the rib step measures, the lung's
sections are small convex caps of the dome and the nearest bone (clavicle, first rib) is at no
steady distance; a lesion there is wrapped by the aerated lung of its top slices on most sides,
while the soft tissue over the dome lies outside each section's convex outline.  The outline is
only a bound for growing a lesion already in the mask, never filled itself, so the concave
medial side of the apex is not taken in on an unpainted scan (0 mL on all three series).

Why the scan's own grid for steps 12 and 13: the outer millimetre of a lesion against the
pleura, and the top slice of a lesion at the apex, are smaller than a 2 mm working voxel, which
holds them together with chest wall or aerated lung and reads as either; no working-grid rule
tells them apart (growing the working-grid rim by a second voxel kept the 10 mm lateral ball
but took in intercostal wall, 10.8-11.1 % of the volume of 10 mm posterior and lateral balls).
On the scan's grid, a quarter to a ninth of a working voxel in-plane on the shared series, the
lesion's own voxels read as lesion, so only those next to what the working grid kept are
re-tested: a coarse-to-fine refinement whose criteria are this module's (the same density
split as steps 2 and 10, the rib cage's inner hull of step 9, and, at the apex, step 8's
enclosure in one slice), not taken from a publication.  One voxel of rim is enough (two took in
up to 9.5 % of a 10 mm posterior ball in wall).  At the apex a lesion is continued upwards only
from the lesion voxels of the slice below and only by growing from its own voxels of the slice
above, so the footprint of a large lesion does not take the roof of the dome above its top.

Sides are labelled in patient space (DICOM LPS, patient left = +x), found from the geometry's
direction cosines, so prone and feet-first scans are labelled correctly.  The masks are brought
back to the original grid by linear interpolation of the coarse masks, before steps 12 and 13.

Measured on the shared real series (two 5 mm series of one patient, an 8 mm thorax;
``tests/models/qct/test_lesion_retention.py`` paints 40 HU balls inscribed in the lung, touching
the lateral, posterior, diaphragmatic, mediastinal and apical pleura): every ball of every
diameter keeps 90 % or more at every place that holds it: 60 mm balls 99.8-100 % and 36 mm balls
94.7-100 % (without the enclosure, the rib step alone gives back 9-22 % of those against the
diaphragm, the mediastinum and the apex); 20 mm balls 92.5-99.8 % (at the apex 98.5-98.9 % on
the 5 mm series, 89.1-91.5 % before step 11, and 92.5 % on the 8 mm series, 85.5 % before
step 13); 10 mm balls 93.2-100 % (laterally 93.2-97.4 %, on the soft-kernel 5 mm series 87.6 %
before step 12; at the apex 97.2-97.7 %, 27.6-80.6 % before step 13).  Chest wall or
mediastinum wrongly taken in with a ball is at most 0.62 mL (0.6 % of a 60 mm ball at the
mediastinal border; 0.45 mL before step 12, whose one voxel of rim also lines the costal contact
of large balls), 0.53 mL (2.2 %) next to a 36 mm ball at the apex; the largest share is 6.1 %,
0.03 mL next to a 10 mm posterior ball (2.7 % before step 12).  On the unpainted series the
enclosure and rib steps add 51 and 73 mL (working grid; the patient's mass against the back of
the left upper lobe on the two 5 mm series) and 28 mL (the 8 mm patient's right lower-lobe
tumour), the lesion rim 5.3, 6.0 and 1.1 mL (4.5, 5.1 and 1.1 mL with the wall of each bin
alone), step 12 another 2.3, 3.2 and 0.3 mL (one voxel round those masses where they touch the
costal pleura), the apex steps 11 and 13 nothing.  A free dependent effusion (a posterior
crescent over the lower 60 % of the lungs, 10 HU) is left 93 % outside (7.1-7.4 % inside): it is
not enclosed by lung.  segment_lungs takes about 2.1 s on the 64-slice 5 mm series (the apex
step and the widened hull add 0.04-0.13 s; 1.8 s with the rib step before the enclosure, no
second enclosure pass and no lesion rim) and 0.5 s on the 30-slice 8 mm series (see
benchmarks/lung_mask.py); steps 12 and 13 add 3-7 % of CPU time (best of five: 2.26 to 2.33 s,
2.37 to 2.53 s and 0.55 to 0.57 s).

Known limits (measured share of the ball kept, lowest over the three series):

* the lesion's edge is re-tested on the scan's grid only against the costal pleura (inside the
  rib cage's inner hull) and only one voxel deep: a 10 mm lateral ball keeps 93.2 % on the
  soft-kernel 5 mm series (its outer millimetre against the wall is still lost in places); at
  the mediastinal border nothing is re-tested and 10 mm balls keep 93.2-93.3 % on the 5 mm
  series;
* at the apex a lesion is found on the scan's grid only where the slice's aerated lung wraps it
  in-plane or where it continues a lesion of the slice below; the top slice of a ball on 8 mm
  slices is a cap whose voxels are partly aerated lung, and a 20 mm ball there keeps 92.5 %, a
  36 mm ball 94.7 %; a lesion whose top slice is neither wrapped nor above a lesion the mask
  kept is not found;
* a pleural effusion, or one bounded on both sides by aerated lung that reaches the ribs, is as
  dense as consolidation and is taken in like it where the rib step or the enclosure step
  applies; nothing here reads density to tell fluid from consolidation;
* pathology that fills a whole lung region (no aerated lung around it) stays outside.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from models.findings import Volume

__all__ = ["LungMaskParameters", "LungSegmentation", "segment_lungs"]

logger = logging.getLogger(__name__)

#: 4-connectivity within a slice and none across slices, as a 3x3x3 structure for scipy.ndimage.
_IN_PLANE_CROSS = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)
#: Trachea candidates tried (best first, top slices first) before concluding there is none.
_MAX_TRACHEA_CANDIDATES = 6


@dataclass(frozen=True)
class LungMaskParameters:
    """Tunable constants of the classical lung mask, with the reason for each default.

    Attributes
    ----------
    working_spacing_mm : float
        Target voxel size of the coarse working copy; 2 mm keeps a lung's boundary error below
        about 1 mm after interpolation while making a thin-section scan small.
    body_threshold_hu : float
        Tissue is above this: below fat (-100 HU), so fat is body, but above lung, foam pads
        and blankets.
    body_opening_mm : float
        Radius of the in-plane opening that detaches thin table shells from the body.
    air_threshold_hu : float
        Aerated lung is below this; about halfway between lung (-850) and soft tissue (+40).
    airway_threshold_hu : float
        Trachea candidates are air below this, and airway growing never starts above it: well
        below aerated lung (about -850 HU), well above air (-1000 HU) as any scanner reads it.
    airway_lumen_margin_hu : float
        Growing starts this far above the median HU of the trachea candidate's cross-section.
    airway_min_threshold_hu : float
        Lowest threshold tried before giving up on a clean airway tree.
    airway_threshold_step_hu : float
        How much the threshold is lowered after each leak.
    max_airway_ml : float
        A grown airway tree larger than this has leaked into lung or emphysema (trachea and
        main bronchi are about 40 mL in adults).
    min_trachea_extent_mm : float
        A trachea candidate must be a tube at least this long.
    airway_margin_mm : float
        The airway is dilated by this much before it is cut from the air mask, to remove its
        partial-volume rim, which would otherwise connect both lungs through the mediastinum.
    gas_median_hu : float
        A region whose median is below this is nearly pure gas (bowel, stomach), not lung,
        whose parenchyma averages about -850 HU even in emphysema.
    min_lung_ml : float
        The largest lung component must be at least this large to call it lung at all.
    min_component_fraction : float
        Further components smaller than this fraction of the largest are discarded.
    max_split_erosion_mm : float
        How far touching lungs are eroded in search of a left and a right core.
    closing_radius_mm : float
        Radius of the closing ball; fills vessels, fissures and small notches without spanning
        the heart or the diaphragm domes (whose curvature radii are several centimetres).
    bone_threshold_hu : float
        Ribs are above this after a 3x3 in-plane mean: above soft tissue, liver and most
        contrast-enhanced blood, below cortical bone.
    rib_slab_mm : float
        Bone within this distance along the slice normal counts as the wall of a slice: ribs
        run obliquely, so a single slice shows them only here and there.
    max_rib_gap_deg : float
        Angular gaps in the bone (and in the lung contour) up to this wide are interpolated.
    pleural_min_known_deg : float
        The usual lung-to-rib gap is only estimated from at least this much costal contour.
    pleural_gap_percentile : float
        Percentile of the lung-to-rib gaps of a slice taken as the usual gap (a low one, so that
        dents covering up to three quarters of the costal contour do not raise it).
    pleural_min_depth_mm : float
        Dents shallower than this (beyond the usual gap, and below the chord across the lung
        contour at the dent's rims) are jitter of the coarse grid, not pathology.
    pleural_min_section : float
        Slices where a lung's cross-section is smaller than this share of its largest one (the
        apex, the tips of the bases) are left alone: there the nearest bone is the clavicle, the
        scapula or the first rib, at no steady distance from the pleura.
    pleural_max_depth_mm : float
        Bone farther than this beyond the aerated lung is not searched for: deeper dents are
        not filled.
    medial_exclusion_deg : float
        Bins less than this from the direction of the midline, and on its anterior side
        everything up to ``anterior_exclusion_deg`` past straight ahead, are never filled: there
        the lung borders the heart, the hilum, the great vessels and the costal cartilages
        (retrosternal fat), not ribs.
    anterior_exclusion_deg : float
        See ``medial_exclusion_deg``.
    pleural_sliver_mm : float
        The lung contour of the rib step is taken after an in-plane opening of this radius: the
        thin slivers of aerated lung that wrap a lesion where it touches the pleura would
        otherwise reach the ribs and hide the dent.
    lesion_core_hu : float
        A working voxel above this is at least about three quarters soft tissue (aerated lung
        about -850 HU, soft tissue about +40 HU); the lesion-rim step
        (:func:`_restore_lesion_rim`) grows only from, and only into, such voxels.
    apex_min_lesion_mm : float
        An in-plane region that the aerated lung of an apical slice wraps is given back only if,
        with the dense voxels of the section it touches, it survives an in-plane opening of this
        radius (about 4 mm across): a lesion, not a noise speck in the lung's partial-volume rim.
    apex_bone_margin_mm : float
        At the apex a lesion is not continued upwards within this distance of bone (first rib,
        clavicle): the pleura lies a few millimetres inside the bone.
    enclosure_radii_mm : tuple of float
        Ball radii of the enclosure step (:func:`_fill_enclosed`): a lesion is found at a radius
        between the half-width of its neck to the pleura and its own radius, so several are
        tried; 22 mm still finds a 60 mm ball, 8 mm a 20 mm one.
    min_enclosure : float
        Share of directions in which lung must surround a region cut off at a neck for it to be
        given to the lung.
    """

    working_spacing_mm: float = 2.0
    body_threshold_hu: float = -500.0
    body_opening_mm: float = 3.0
    air_threshold_hu: float = -400.0
    airway_threshold_hu: float = -900.0
    airway_lumen_margin_hu: float = 50.0
    airway_min_threshold_hu: float = -995.0
    airway_threshold_step_hu: float = 15.0
    max_airway_ml: float = 250.0
    min_trachea_extent_mm: float = 20.0
    airway_margin_mm: float = 3.0
    gas_median_hu: float = -975.0
    min_lung_ml: float = 50.0
    min_component_fraction: float = 0.02
    max_split_erosion_mm: float = 24.0
    closing_radius_mm: float = 10.0
    bone_threshold_hu: float = 200.0
    rib_slab_mm: float = 15.0
    max_rib_gap_deg: float = 15.0
    pleural_min_known_deg: float = 60.0
    pleural_gap_percentile: float = 25.0
    pleural_min_depth_mm: float = 4.0
    pleural_min_section: float = 0.2
    pleural_max_depth_mm: float = 60.0
    medial_exclusion_deg: float = 35.0
    anterior_exclusion_deg: float = 40.0
    pleural_sliver_mm: float = 3.0
    lesion_core_hu: float = -200.0
    apex_min_lesion_mm: float = 2.0
    apex_bone_margin_mm: float = 3.0
    enclosure_radii_mm: tuple[float, ...] = (8.0, 12.0, 16.0, 22.0)
    min_enclosure: float = 0.7


@dataclass(frozen=True)
class LungSegmentation:
    """Boolean left and right lung masks on the CT's own ``[z, y, x]`` grid.

    ``warnings`` says in words what could not be done cleanly (no trachea found, lungs not
    separable, no lung at all), for the report to print.
    """

    left: np.ndarray
    right: np.ndarray
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Frame:
    """How the coarse working array relates to the original one.

    ``factors`` are the block sizes along the original ``[z, y, x]`` axes.  The canonical
    orientation has axis 0 running head to feet, axis 1 front to back and axis 2 patient right to
    left; canonical axis ``i`` is original axis ``order[i]``, reversed when ``flips[i]``.
    """

    factors: tuple[int, int, int]
    order: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    spacing: tuple[float, float, float]

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """Reorient an array of the coarse grid to the canonical orientation."""
        out: np.ndarray = np.transpose(array, self.order)
        return np.flip(out, tuple(i for i, f in enumerate(self.flips) if f))

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Undo :meth:`to_canonical`."""
        out = np.flip(array, tuple(i for i, f in enumerate(self.flips) if f))
        return np.ascontiguousarray(np.transpose(out, np.argsort(self.order)))


@dataclass(frozen=True)
class _Component:
    """Statistics of one connected air component in the canonical coarse grid.

    ``top`` is its most cranial slice and ``middle`` the slice of its centre of mass (canonical
    axis 0 runs head to feet); ``gas_fraction`` is its share of voxels below ``gas_median_hu``
    (above one half means its median is gas).
    """

    label: int
    volume_ml: float
    gas_fraction: float
    top: int
    middle: float
    box: tuple[slice, slice, slice]


def _frame_for(volume: Volume, params: LungMaskParameters) -> _Frame:
    """Block factors and the axis permutation that makes the working grid canonical.

    The permutation is the one whose array axes are best aligned with the patient's
    head-feet, front-back and right-left axes; an oblique acquisition gets the nearest one.
    """
    spacing = volume.geometry.spacing
    fz, fy, fx = (max(1, round(params.working_spacing_mm / s)) for s in spacing)
    direction = np.asarray(volume.geometry.direction, dtype=float)
    array_axis_vectors = (direction[:, 2], direction[:, 1], direction[:, 0])
    patient_axis_of_canonical = (2, 1, 0)

    def alignment(i: int, order: tuple[int, ...]) -> float:
        return float(array_axis_vectors[order[i]][patient_axis_of_canonical[i]])

    best = max(itertools.permutations(range(3)), key=lambda order: sum(abs(alignment(i, order)) for i in range(3)))
    wanted_sign = (-1.0, 1.0, 1.0)
    flips = [bool(np.sign(alignment(i, best)) != wanted_sign[i]) for i in range(3)]
    coarse_spacing = (spacing[0] * fz, spacing[1] * fy, spacing[2] * fx)
    return _Frame(
        factors=(fz, fy, fx),
        order=(best[0], best[1], best[2]),
        flips=(flips[0], flips[1], flips[2]),
        spacing=(coarse_spacing[best[0]], coarse_spacing[best[1]], coarse_spacing[best[2]]),
    )


def _block_mean(hu: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Average ``factors``-sized blocks, slab by slab, so no full-size temporary is made.

    Averaging (rather than picking every n-th voxel) keeps the partial-volume fraction, which
    is what makes a -400 HU threshold split boundary voxels evenly on the coarse grid.
    """
    fz, fy, fx = factors
    nz, ny, nx = hu.shape
    cy, cx = -(-ny // fy), -(-nx // fx)
    out = np.empty((-(-nz // fz), cy, cx), dtype=np.float32)
    for k in range(out.shape[0]):
        slab = hu[k * fz : (k + 1) * fz].mean(axis=0, dtype=np.float32)
        if (cy * fy, cx * fx) != slab.shape:
            slab = np.pad(slab, ((0, cy * fy - ny), (0, cx * fx - nx)), mode="edge")
        out[k] = slab.reshape(cy, fy, cx, fx).mean(axis=(1, 3))
    return out


def _ball(radius_mm: float, spacing: tuple[float, ...]) -> np.ndarray:
    """A boolean ellipsoidal structuring element of ``radius_mm`` on an anisotropic grid."""
    half = [max(0, math.floor(radius_mm / s)) for s in spacing]
    squared = np.zeros([2 * h + 1 for h in half])
    for axis, (h, s) in enumerate(zip(half, spacing, strict=True)):
        offsets = (np.arange(-h, h + 1) * s / radius_mm) ** 2
        squared += offsets.reshape([-1 if a == axis else 1 for a in range(len(half))])
    return squared <= 1.0


def _dilate(mask: np.ndarray, spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Dilation by a ball of ``radius_mm``, via a distance map on the mask's bounding box only."""
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    box = tuple(
        slice(max(0, int(p[0]) - m), int(p[-1]) + 1 + m)
        for p, m in zip(
            (np.nonzero(mask.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)),
            (math.ceil(radius_mm / s) + 1 for s in spacing),
            strict=True,
        )
    )
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) <= radius_mm
    return out


def _fill_holes(mask: np.ndarray, structure: np.ndarray, faces: tuple[int, ...]) -> np.ndarray:
    """Fill background regions that do not reach the array faces on ``faces`` axes.

    Labelling the background once is linear in the number of voxels, unlike iterative
    propagation; with an in-plane structure and ``faces=(1, 2)`` it fills slice by slice.
    """
    labels, count = ndimage.label(~mask, structure=structure)
    if count == 0:
        return mask.copy()
    keep = np.ones(count + 1, dtype=bool)
    keep[0] = False
    for axis in faces:
        for index in (0, -1):
            keep[np.take(labels, index, axis=axis)] = False
    filled: np.ndarray = mask | keep[labels]
    return filled


def _body_mask(coarse: np.ndarray, spacing: tuple[float, float, float], params: LungMaskParameters) -> np.ndarray:
    """The patient's body with everything it encloses (lungs included), slice by slice."""
    tissue = coarse > params.body_threshold_hu
    disk = _ball(params.body_opening_mm, (1e9, spacing[1], spacing[2]))
    opened = ndimage.binary_opening(tissue, structure=disk)
    labels, count = ndimage.label(opened)
    if count == 0:
        return np.zeros_like(tissue)
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    body = tissue & ndimage.binary_dilation(labels == largest, structure=disk)
    return _fill_holes(body, _IN_PLANE_CROSS, faces=(1, 2))


def _trachea_candidates(
    low_air: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]
) -> Iterator[tuple[int, int, int]]:
    """Seeds of small, near-midline air regions in the top slices, best first per slice.

    The trachea is 1.5-2.5 cm wide in adults: its cross-section is accepted between 0.5 and
    8 cm^2, within 2 cm (or a tenth of the body width) of the body's midline.
    """
    pixel_mm2 = spacing[1] * spacing[2]
    body_slices = np.nonzero(body.any(axis=(1, 2)))[0]
    if body_slices.size == 0:
        return
    first = int(body_slices[0])
    last = first + max(1, int(0.4 * (int(body_slices[-1]) - first + 1)))
    for k in range(first, last):
        labels, count = ndimage.label(low_air[k])
        if count == 0:
            continue
        columns = np.nonzero(body[k])[1]
        midline, width_mm = columns.mean(), (columns.max() - columns.min() + 1) * spacing[2]
        areas = np.bincount(labels.ravel())[1:] * pixel_mm2
        centres = ndimage.center_of_mass(low_air[k], labels, range(1, count + 1))
        options = [
            (area, index + 1)
            for index, (area, centre) in enumerate(zip(areas, centres, strict=True))
            if 50.0 <= area <= 800.0 and abs(centre[1] - midline) * spacing[2] <= max(20.0, 0.1 * width_mm)
        ]
        for _, label in sorted(options, reverse=True):
            rows, cols = np.nonzero(labels == label)
            middle = int(np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2))
            yield k, int(rows[middle]), int(cols[middle])


def _grow(candidate: np.ndarray, seed: tuple[int, int, int]) -> np.ndarray:
    """The 6-connected component of ``candidate`` that contains ``seed`` (empty if none does)."""
    if not candidate[seed]:
        return np.zeros_like(candidate)
    labels, _ = ndimage.label(candidate)
    component: np.ndarray = labels == labels[seed]
    return component


def _trachea_above_leak(tree: np.ndarray, seed_slice: int) -> np.ndarray:
    """Keep the leaked tree only above the first slice whose area jumps (where it met lung)."""
    areas = tree.sum(axis=(1, 2))
    reference = float(np.median(areas[seed_slice : seed_slice + 3]))
    stop = tree.shape[0]
    for k in range(seed_slice, tree.shape[0]):
        if areas[k] > 3.0 * reference:
            stop = k
            break
    kept = np.zeros_like(tree)
    kept[seed_slice:stop] = tree[seed_slice:stop]
    return kept


def _lumen_hu(coarse: np.ndarray, air: np.ndarray, seed: tuple[int, int, int]) -> float:
    """Median HU of the in-plane air region around ``seed``: how air reads in this scan's trachea.

    Soft kernels, beam hardening and calibration make the lumen of some scanners read -950 HU or
    more rather than -1000 HU, so the growing threshold is set from the trachea itself.
    """
    labels, _ = ndimage.label(air[seed[0]])
    return float(np.median(coarse[seed[0]][labels == labels[seed[1:]]]))


def _trace_airway(
    coarse: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float], params: LungMaskParameters
) -> tuple[np.ndarray | None, list[str]]:
    """Trachea and bronchi by explosion-controlled region growing from a trachea seed.

    Candidates are air regions below ``airway_threshold_hu``; growing starts at the candidate's
    own lumen HU plus ``airway_lumen_margin_hu`` (never above ``airway_threshold_hu``), and the
    threshold is lowered while the tree is too large to be airways alone.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    air = body & (coarse < params.airway_threshold_hu)
    tried = 0
    for seed in _trachea_candidates(air, body, spacing):
        if tried >= _MAX_TRACHEA_CANDIDATES:
            break
        tried += 1
        threshold = min(params.airway_threshold_hu, _lumen_hu(coarse, air, seed) + params.airway_lumen_margin_hu)
        tree = _grow(body & (coarse < threshold), seed)
        extent_mm = np.count_nonzero(tree.any(axis=(1, 2))) * spacing[0]
        if extent_mm < min(params.min_trachea_extent_mm, 0.5 * coarse.shape[0] * spacing[0]):
            continue
        while tree.sum() * voxel_ml > params.max_airway_ml:
            threshold -= params.airway_threshold_step_hu
            lower = _grow(body & (coarse < threshold), seed)
            if threshold < params.airway_min_threshold_hu or not lower.any():
                logger.info("airway growing leaked at every threshold; keeping the trachea above the leak")
                leak = (
                    "airway tracing leaked into the lung at every threshold (emphysema?); only the "
                    "trachea above the leak was removed, main bronchi may be included in the lung mask"
                )
                return _trachea_above_leak(tree, seed[0]), [leak]
            tree = lower
        logger.debug("airway traced at %.0f HU: %.1f mL", threshold, tree.sum() * voxel_ml)
        return tree, []
    return None, ["trachea not found in the top slices; large airways may be included in the lung mask"]


def _without_gas_pockets(
    candidates: np.ndarray,
    coarse: np.ndarray,
    spacing: tuple[float, float, float],
    params: LungMaskParameters,
) -> np.ndarray:
    """Drop the gas of in-plane air regions that are mostly pure gas (stomach, bowel, airways).

    With thick slices the gastric bubble can touch the lung base in the next slice and join it
    in 3-D.  In its own slice, though, gas is an island separated from the lung by the diaphragm,
    while emphysema and bullae are connected in-plane to the surrounding parenchyma, so judging
    each in-plane region by its share of voxels below ``gas_median_hu`` finds gas without
    touching the lung.  Only the gas itself and a rim of ``airway_margin_mm`` (its partial-volume
    edge) are removed, so lung that touches the gas in-plane stays.
    """
    labels, count = ndimage.label(candidates, structure=_IN_PLANE_CROSS)
    if count == 0:
        return candidates
    flat = labels.ravel()
    gas_voxels = coarse < params.gas_median_hu
    sizes = np.bincount(flat, minlength=count + 1)
    gas = np.bincount(flat[gas_voxels.ravel()], minlength=count + 1)
    pocket = (gas >= 0.5 * sizes) & (sizes >= 100.0 / (spacing[1] * spacing[2]))
    pocket[0] = False
    if not pocket.any():
        return candidates
    in_pocket = pocket[labels]
    rim = ndimage.binary_dilation(in_pocket & gas_voxels, structure=_ball(params.airway_margin_mm, (1e9, *spacing[1:])))
    kept: np.ndarray = candidates & ~(rim & in_pocket)
    return kept


def _components(
    candidates: np.ndarray,
    coarse: np.ndarray,
    spacing: tuple[float, float, float],
    params: LungMaskParameters,
) -> tuple[np.ndarray, list[_Component]]:
    """Label air components and describe those above 1 mL, largest first.

    Counts come from ``bincount`` over the label image, which is linear in the number of
    voxels; per-label medians and centres of mass from ``scipy.ndimage`` sort or loop instead.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    labels, count = ndimage.label(candidates)
    if count == 0:
        return labels, []
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=count + 1)
    gas = np.bincount(flat[(coarse < params.gas_median_hu).ravel()], minlength=count + 1)
    slice_index = np.broadcast_to(np.arange(labels.shape[0])[:, None, None], labels.shape).ravel()
    middles = np.bincount(flat, weights=slice_index, minlength=count + 1) / np.maximum(sizes, 1)
    boxes = ndimage.find_objects(labels)
    found = [
        _Component(
            label=label,
            volume_ml=float(sizes[label] * voxel_ml),
            gas_fraction=float(gas[label] / sizes[label]),
            top=int(boxes[label - 1][0].start),
            middle=float(middles[label]),
            box=boxes[label - 1],
        )
        for label in range(1, count + 1)
        if sizes[label] * voxel_ml >= 1.0
    ]
    return labels, sorted(found, key=lambda c: c.volume_ml, reverse=True)


def _select_lungs(components: list[_Component], params: LungMaskParameters) -> list[_Component]:
    """The components that are lung: not gas, and either large or reaching above mid-lung.

    Gas below the diaphragm (stomach, colon) is nearly pure air and sits entirely below the
    middle of the lungs, so either test rejects it; lung fragments are neither.
    """
    tissue_like = [c for c in components if c.gas_fraction < 0.5]
    if not tissue_like or tissue_like[0].volume_ml < params.min_lung_ml:
        return []
    main = tissue_like[0]
    kept = [main]
    for comp in tissue_like[1:]:
        if comp.volume_ml < params.min_component_fraction * main.volume_ml:
            continue
        if comp.top <= main.middle or comp.volume_ml >= 0.2 * main.volume_ml:
            kept.append(comp)
        else:
            logger.debug("rejecting air component of %.0f mL below mid-lung", comp.volume_ml)
    return kept


def _split_touching(
    component: np.ndarray, midline: float, spacing: tuple[float, float, float], params: LungMaskParameters
) -> tuple[np.ndarray, np.ndarray] | None:
    """Split a component that holds both lungs into (left, right), or ``None`` if it will not.

    In-plane erosion cuts the thin junction first; once there is a core on each side of the
    midline (no core straddling it), the cores are grown back one erosion level at a time, each
    only into its own level, so the cut falls in the middle of the junction where it vanished.
    Whatever that leaves (thin parts that vanished early, ties) goes to the nearest side.
    """
    levels = [component]
    x_index = np.arange(component.shape[2])
    for _ in range(max(1, round(params.max_split_erosion_mm / spacing[2]))):
        eroded = ndimage.binary_erosion(levels[-1], structure=_IN_PLANE_CROSS)
        if not eroded.any():
            return None
        levels.append(eroded)
        labels, count = ndimage.label(eroded)
        if count < 2:
            continue
        sizes = np.bincount(labels.ravel())
        left_counts = np.bincount(labels.ravel(), weights=np.broadcast_to(x_index > midline, labels.shape).ravel())
        total = sizes[1:].sum()
        big = sizes >= 0.01 * total
        big[0] = False
        fraction_left = left_counts / np.maximum(sizes, 1)
        if np.any(big & (fraction_left > 0.1) & (fraction_left < 0.9)):
            continue
        left = (labels > 0) & (fraction_left[labels] >= 0.5)
        right = (labels > 0) & (fraction_left[labels] < 0.5)
        if left.sum() < 0.1 * total or right.sum() < 0.1 * total:
            continue
        for level in reversed(levels[:-1]):
            free = level & ~left & ~right
            grow_left = ndimage.binary_dilation(left, structure=_IN_PLANE_CROSS) & free
            grow_right = ndimage.binary_dilation(right, structure=_IN_PLANE_CROSS) & free
            left |= grow_left & ~grow_right
            right |= grow_right & ~grow_left
        rest = component & ~left & ~right
        if rest.any():
            nearest = ndimage.distance_transform_edt(
                ~(left | right), sampling=spacing, return_distances=False, return_indices=True
            )
            left |= rest & left[tuple(nearest)]
        return left, component & ~left
    return None


def _assign_sides(
    labels: np.ndarray,
    lungs: list[_Component],
    body: np.ndarray,
    spacing: tuple[float, float, float],
    params: LungMaskParameters,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Left and right lung masks (canonical coarse grid) from the selected components."""
    top = min(c.box[0].start for c in lungs)
    bottom = max(c.box[0].stop for c in lungs)
    per_column = body[top:bottom].sum(axis=(0, 1), dtype=np.int64)
    midline = float(np.average(np.arange(per_column.size), weights=per_column))
    total = sum(c.volume_ml for c in lungs)
    left = np.zeros(labels.shape, dtype=bool)
    right = np.zeros(labels.shape, dtype=bool)
    warnings: list[str] = []
    for comp in lungs:
        box = comp.box
        mask = labels[box] == comp.label
        x_local = midline - box[2].start
        fraction_left = float(np.count_nonzero(mask[:, :, max(0, math.floor(x_local) + 1) :])) / mask.sum()
        if comp.volume_ml >= 0.3 * total and 0.15 <= fraction_left <= 0.85:
            split = _split_touching(mask, x_local, spacing, params)
            if split is not None:
                left[box] |= split[0]
                right[box] |= split[1]
                continue
            warnings.append(
                "the left and right lungs touch and could not be separated; the joined region was "
                "given to the side holding most of it"
            )
        (left if fraction_left >= 0.5 else right)[box] |= mask
    return left, right, warnings


def _close(mask: np.ndarray, spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Morphological closing with a ball of ``radius_mm`` and 3-D hole filling, via distance maps.

    Distance transforms make the cost independent of the ball size; the mask is cropped to its
    bounding box with a margin so that the dilation is not clipped by the array edge.
    """
    if not mask.any():
        return mask.copy()
    margin = [math.ceil(radius_mm / s) + 1 for s in spacing]
    present = [np.nonzero(mask.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
    lo = [int(p[0]) for p in present]
    hi = [int(p[-1]) + 1 for p in present]
    crop = mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    padded = np.pad(crop, [(m, m) for m in margin])
    dilated = ndimage.distance_transform_edt(~padded, sampling=spacing) <= radius_mm
    closed = ndimage.distance_transform_edt(dilated, sampling=spacing) > radius_mm
    closed = _fill_holes(closed | padded, ndimage.generate_binary_structure(3, 1), faces=(0, 1, 2))
    out = np.zeros_like(mask)
    region = tuple(slice(max(0, lo[i] - margin[i]), min(mask.shape[i], hi[i] + margin[i])) for i in range(3))
    inner = tuple(slice(region[i].start - (lo[i] - margin[i]), region[i].stop - (lo[i] - margin[i])) for i in range(3))
    out[region] = closed[inner]
    return out


def _rib_cage(coarse: np.ndarray, spacing: tuple[float, float, float], params: LungMaskParameters) -> np.ndarray:
    """Bone near each slice: the reference for where the costal pleura is.

    Bone is what is above ``bone_threshold_hu`` after a 3x3 in-plane mean (so that noise of a
    sharp kernel on an unaveraged grid does not make bone of soft tissue).  A single axial slice
    cuts the obliquely running ribs only here and there; taking the bone of every slice within
    ``rib_slab_mm`` closes most intercostal gaps.
    """
    bone: np.ndarray = ndimage.uniform_filter(coarse, size=(1, 3, 3)) > params.bone_threshold_hu
    reach = round(params.rib_slab_mm / spacing[0])
    if reach > 0:
        bone = ndimage.maximum_filter1d(bone, size=2 * reach + 1, axis=0)
    return bone


def _circular_runs(flags: np.ndarray) -> tuple[np.ndarray, int]:
    """Label runs of True in a circular 1-D array (a run may wrap from the end to the start)."""
    runs, count = ndimage.label(flags)
    if count > 1 and runs[0] and runs[-1]:
        runs[runs == runs[-1]] = runs[0]
    return runs, count


def _bridge_gaps(profile: np.ndarray, max_gap: int) -> np.ndarray:
    """Interpolate a circular profile across runs of at most ``max_gap`` missing (infinite) bins."""
    finite = np.isfinite(profile)
    if finite.all() or not finite.any():
        return profile
    bins = np.arange(profile.size)
    interpolated = np.interp(bins, bins[finite], profile[finite], period=profile.size)
    runs, count = _circular_runs(~finite)
    lengths = np.bincount(runs, minlength=count + 1)
    short = (lengths <= max_gap)[runs] & ~finite
    out = profile.copy()
    out[short] = interpolated[short]
    return out


def _bounded_runs(dent: np.ndarray, touching: np.ndarray, min_length: int) -> list[np.ndarray]:
    """Each run of ``dent`` of ``min_length`` bins or more with ``touching`` bins on both sides.

    A run is returned as its bin indices in circular order (it may wrap past the last bin).
    """
    runs, count = _circular_runs(dent)
    found = []
    for label in range(1, count + 1):
        members = np.nonzero(runs == label)[0]
        if members.size < min_length:
            continue
        breaks = np.nonzero(np.diff(members) > 1)[0]
        first = int(members[breaks[0] + 1]) if breaks.size else int(members[0])
        ordered = (first + np.arange(members.size)) % dent.size
        if touching[(ordered[0] - 1) % dent.size] and touching[(ordered[-1] + 1) % dent.size]:
            found.append(ordered)
    return found


def _beyond_chord(rims: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Signed distance of ``points`` beyond the chord between two ``rims`` points, away from the origin.

    All points are in-plane (x, y) offsets from the lung's centre; positive is farther out than
    the straight line joining the rims.
    """
    along = rims[1] - rims[0]
    outward = np.array([along[1], -along[0]]) / max(float(np.hypot(*along)), 1e-6)
    if outward @ rims[0] < 0:
        outward = -outward
    distance: np.ndarray = (points - rims[0]) @ outward
    return distance


def _outer_wall(wall: np.ndarray) -> np.ndarray:
    """The wall profile raised to the farthest wall of each bin and its two neighbours (3 degrees each).

    The slab bone of :func:`_rib_cage` holds ribs of the neighbouring slices, which run
    obliquely and may lie inside the lung's outline in this slice.  Where a lesion dents the
    contour, such bone is beyond the dented contour and is taken as the wall, up to 3.5 mm
    short of the bone found with the lung intact (a 10 mm lateral ball on the soft-kernel 5 mm
    series); the neighbouring bins, whose contour is less dented, still see the real wall.
    Bins without bone stay without.
    """
    finite = np.where(np.isfinite(wall), wall, -np.inf)
    widest = np.maximum(finite, np.maximum(np.roll(finite, 1), np.roll(finite, -1)))
    return np.where(np.isfinite(wall), widest, wall)


def _fill_against_ribs(
    mask: np.ndarray,
    allowed: np.ndarray,
    bone: np.ndarray,
    spacing: tuple[float, float, float],
    midline_side: float,
    params: LungMaskParameters,
) -> tuple[np.ndarray, np.ndarray]:
    """Give back to one lung the dense pathology between its aerated part and the ribs, slice by slice.

    Consolidation, atelectasis or a mass against the costal pleura is not air, so it dents the
    aerated lung from the outside, and no closing can fill the dent: the ball fits into the
    chest wall behind it.  The ribs, though, show where the pleura is.  Seen from the lung's
    centre in each slice, in 3-degree bins: the contour is the farthest lung pixel; the wall is
    the nearest bone beyond it (at most ``pleural_max_depth_mm`` farther; short gaps between
    ribs are interpolated); their difference, the gap, is a few millimetres of intercostal
    muscle and pleura wherever aerated lung reaches the pleura.  The usual gap of the slice is a
    low percentile of the gaps on the costal side; a run of bins whose gap exceeds it by
    ``pleural_min_depth_mm`` or more is a dent, and the lung is grown into it up to the wall
    minus the usual gap, which follows the curve of the chest wall.

    A dent is filled only if aerated lung reaches the usual gap on both sides of it (pathology
    inside an intact pleural surface, not the end of the lung), and if the lung contour itself is
    dented, lying ``pleural_min_depth_mm`` or more inside the chord across the dent's rims (a
    wall that is merely farther away, such as a scapula seen through an intercostal gap, leaves
    the contour smooth).  Bins facing the midline, and the anterior ones up to
    ``anterior_exclusion_deg`` past straight ahead, are never used: there the lung borders the
    heart, the hilum, the great vessels and the retrosternal fat, not ribs; nor are slices where
    the lung is small (apex, bases; ``pleural_min_section``).

    Parameters
    ----------
    mask, allowed, bone : numpy.ndarray
        The lung, where it may grow, and the slab bone of :func:`_rib_cage`, canonical coarse grid.
    spacing : tuple of float
        Voxel size of the grid (mm).
    midline_side : float
        +1 if the midline is towards +x of the lung (right lung), -1 if towards -x (left lung).
    params : LungMaskParameters
        The pleural constants.

    Returns
    -------
    tuple of numpy.ndarray
        The lung with the dents filled, and the costal inner hull of the rib cage: in each slice
        where the usual gap could be measured, the pixels of the costal bins no farther out than
        the wall (of :func:`_outer_wall`) minus the usual gap plus one working voxel (the lung's
        own partial-volume boundary voxel lies up to a voxel beyond the contour the gap was
        measured from), for :func:`_restore_lesion_rim`.
    """
    bins = 120
    centres = (np.arange(bins) + 0.5) * 2.0 * np.pi / bins - np.pi
    directions = np.column_stack([np.cos(centres), np.sin(centres)])
    medial = 0.0 if midline_side > 0 else np.pi
    towards_back = np.degrees(np.angle(np.exp(1j * (centres - medial)))) * midline_side
    costal = (towards_back > params.medial_exclusion_deg) | (towards_back < -90.0 - params.anterior_exclusion_deg)
    min_known = round(params.pleural_min_known_deg / 360.0 * bins)
    max_gap = round(params.max_rib_gap_deg / 360.0 * bins)
    depth = params.pleural_max_depth_mm
    margin = [math.ceil(depth / s) + 1 for s in spacing]
    out = mask.copy()
    hull = np.zeros_like(mask)
    sections = mask.sum(axis=(1, 2))
    solid = ndimage.binary_opening(mask, structure=_ball(params.pleural_sliver_mm, (1e9, *spacing[1:])))
    # An empty lung (one side missing) has nothing to fill; only slices with lung are visited.
    for k in np.nonzero((sections > 0) & (sections >= params.pleural_min_section * sections.max()))[0]:
        rows, cols = np.nonzero(mask[k])
        y0, y1 = max(0, rows.min() - margin[1]), min(mask.shape[1], rows.max() + margin[1] + 1)
        x0, x1 = max(0, cols.min() - margin[2]), min(mask.shape[2], cols.max() + margin[2] + 1)
        dy = (np.arange(y0, y1)[:, None] - rows.mean()) * spacing[1]
        dx = (np.arange(x0, x1)[None, :] - cols.mean()) * spacing[2]
        radius = np.hypot(dy, dx)
        which = ((np.arctan2(dy, dx) + np.pi) / (2.0 * np.pi) * bins).astype(np.intp) % bins
        lung = solid[k, y0:y1, x0:x1]
        contour = np.full(bins, -np.inf)
        np.maximum.at(contour, which[lung], radius[lung])
        contour = _bridge_gaps(np.where(contour > -np.inf, contour, np.inf), max_gap)
        beyond = radius - contour[which]
        ribs = bone[k, y0:y1, x0:x1] & (beyond > 0) & (beyond <= depth)
        wall = np.full(bins, np.inf)
        np.minimum.at(wall, which[ribs], radius[ribs])
        wall = _bridge_gaps(wall, max_gap)
        known = np.isfinite(contour) & np.isfinite(wall) & costal
        if np.count_nonzero(known) < min_known:
            continue
        gap = np.full(bins, np.nan)
        gap[known] = wall[known] - contour[known]
        usual = float(np.percentile(gap[known], params.pleural_gap_percentile))
        inner = np.where(costal & np.isfinite(wall), _outer_wall(wall) - usual + max(spacing[1:]), -np.inf)
        hull[k, y0:y1, x0:x1] |= radius <= inner[which]
        dent = known & (np.nan_to_num(gap) - usual >= params.pleural_min_depth_mm)
        fill = np.zeros(bins, dtype=bool)
        for run in _bounded_runs(dent, known & ~dent, 2):
            rims = [(run[0] - 1) % bins, (run[-1] + 1) % bins]
            lung_dent = -_beyond_chord(contour[rims, None] * directions[rims], contour[run, None] * directions[run])
            fill[run] = lung_dent.max() >= params.pleural_min_depth_mm
        if fill.any():
            reach = np.where(fill, wall - usual, 0.0)[which]
            out[k, y0:y1, x0:x1] |= (beyond > 0) & (radius <= reach) & allowed[k, y0:y1, x0:x1]
    return out, hull


def _fibonacci_sphere(count: int) -> np.ndarray:
    """``count`` unit vectors spread evenly over the sphere (a Fibonacci lattice), as ``[z, y, x]``."""
    z = 1.0 - 2.0 * (np.arange(count) + 0.5) / count
    turn = np.pi * (3.0 - np.sqrt(5.0)) * np.arange(count)
    ring = np.sqrt(1.0 - z**2)
    return np.column_stack([z, ring * np.cos(turn), ring * np.sin(turn)])


#: Directions in which :func:`_enclosure` looks for lung around a candidate region.
_RAYS = _fibonacci_sphere(96)


def _enclosure(region: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float], reach_mm: float) -> float:
    """Share of directions, seen from ``region``'s centre of mass, in which lung lies just beyond it.

    Each ray is followed until it leaves the region, then for ``reach_mm`` plus one voxel (the
    partial-volume rim of a dense region is neither region nor lung).  Counting directions rather
    than border voxels keeps the measure independent of the anisotropic grid.
    """
    centre = np.asarray(ndimage.center_of_mass(region))
    grid = np.asarray(spacing)
    step = 0.5 * float(grid.min())
    distances = np.arange(0.0, 2.0 * float(np.max(np.asarray(region.shape) * grid)), step)
    beyond = int((reach_mm + float(grid.max())) / step)
    hits = 0
    for ray in _RAYS:
        points = np.rint(centre + distances[:, None] * ray[None] / grid).astype(np.intp)
        valid = np.all((points >= 0) & (points < region.shape), axis=1)
        points = points[: len(points) if valid.all() else int(np.argmin(valid))]
        inside = region[tuple(points.T)]
        leave = len(inside) if inside.all() else int(np.argmin(inside))
        hits += bool(lung[tuple(points[leave : leave + beyond].T)].any())
    return hits / len(_RAYS)


def _fill_enclosed(
    mask: np.ndarray, allowed: np.ndarray, spacing: tuple[float, float, float], params: LungMaskParameters
) -> np.ndarray:
    """Give back to one lung the dense regions it encloses but for a narrow neck to the outside.

    A nodule, mass or consolidation against the mediastinum, the diaphragm or the apex is
    surrounded by aerated lung except where it touches the pleura, and that contact is a neck
    narrower than the lesion.  This is the rolling-ball idea (a ball that cannot pass through
    the neck bridges it; Armato and Sensakovic 2004 roll a ball along the lung contour to keep
    juxtapleural nodules), applied in 3-D at several ball radii, and
    keeping only what the bridged lung encloses, never the bridges along the rest of the pleura:

    1. holes of the lung (on the pass after the rib step, where the ribs have plugged some necks)
       are filled;
    2. for each radius, the non-lung voxels farther than it from the lung form cores; a core
       that does not reach the edge of the box is cut off from the outside by necks narrower
       than the ball; it is grown back by the radius, but only where it is nearer than any
       other core (so the growth stops in the neck rather than spilling into the wall);
    3. the grown region is kept if lung lies just beyond it in at least ``min_enclosure`` of
       all directions (a ball against a flat wall: about 0.85-0.95; a piece of hilum or
       mediastinum cut off by a large ball: about 0.3);
    4. a closing of ``closing_radius_mm`` near what was added closes the neck behind it.
    """
    radii = params.enclosure_radii_mm
    if not mask.any() or not radii:
        return mask
    margin = [math.ceil(max(radii) / s) + 2 for s in spacing]
    present = [np.nonzero(mask.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
    region = tuple(
        slice(max(0, int(p[0]) - m), min(mask.shape[i], int(p[-1]) + 1 + m))
        for i, (p, m) in enumerate(zip(present, margin, strict=True))
    )
    permitted = np.pad(allowed[region], 1)
    lung = np.pad(mask[region], 1)
    lung |= _fill_holes(lung, ndimage.generate_binary_structure(3, 1), faces=(0, 1, 2)) & permitted
    free = permitted & ~lung
    distance = ndimage.distance_transform_edt(~lung, sampling=spacing)
    added = np.zeros_like(lung)
    for radius in radii:
        labels, count = ndimage.label(distance > radius)
        if count < 2:
            continue
        outer = np.zeros(count + 1, dtype=bool)
        for axis in range(3):
            for index in (0, -1):
                outer[np.take(labels, index, axis=axis)] = True
        grow = [math.ceil(2.0 * radius / s) + 2 for s in spacing]
        for label, found in enumerate(ndimage.find_objects(labels), start=1):
            if outer[label] or found is None:
                continue
            box = tuple(
                slice(max(0, b.start - g), min(lung.shape[i], b.stop + g))
                for i, (b, g) in enumerate(zip(found, grow, strict=True))
            )
            core = labels[box] == label
            others = (labels[box] > 0) & ~core
            to_core = ndimage.distance_transform_edt(~core, sampling=spacing)
            to_others = ndimage.distance_transform_edt(~others, sampling=spacing) if others.any() else np.inf
            candidate = (to_core <= radius) & (to_core < to_others) & free[box]
            if not candidate.any():
                continue
            share = _enclosure(candidate, lung[box], spacing, params.closing_radius_mm)
            logger.debug(
                "region cut off at %.0f mm: %d voxels, lung in %.2f of directions", radius, candidate.sum(), share
            )
            if share >= params.min_enclosure:
                added[box] |= candidate
    if added.any():
        near = _dilate(added, spacing, params.closing_radius_mm)
        added |= _close(lung | added, spacing, params.closing_radius_mm) & near & permitted
    out = mask.copy()
    out[region] |= (lung | added)[1:-1, 1:-1, 1:-1]
    return out


def _restore_lesion_rim(
    mask: np.ndarray, allowed: np.ndarray, coarse: np.ndarray, params: LungMaskParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Give back the outer working voxel of a dense lesion that touches the costal pleura.

    Where a lesion touches the pleura, its outermost working voxel holds lesion and chest wall
    together and reads as wall, whatever the steps before decided about the lesion itself; for
    a 10 mm nodule that voxel is a fifth of its volume.  Dense blobs of the lung mask (working
    voxels above ``lesion_core_hu`` that survive an in-plane opening with a 3x3 cross, so at
    least three voxels, about 6 mm, across: a lesion, not the partial-volume rim of a vessel or
    of the pleura) are grown by one voxel in-plane into dense voxels outside the mask, but only
    inside ``allowed``, which the caller restricts to the costal inner hull of the rib cage from
    :func:`_fill_against_ribs`: there the aerated lung would reach, so a dense voxel there next
    to a lesion is the lesion's edge, not intercostal muscle.  Against the mediastinum, the
    diaphragm and the apex there is no such reference and nothing is grown.  Returns the mask
    with the rim and the lesion cores (for :func:`_refine_at_native`).
    """
    dense = coarse > params.lesion_core_hu
    core = ndimage.binary_opening(mask & dense, structure=_IN_PLANE_CROSS)
    if not core.any():
        return mask, core
    rim = ndimage.binary_dilation(core, structure=_IN_PLANE_CROSS) & dense & allowed & ~mask
    out: np.ndarray = mask | rim
    return out, core


def _section_outline(section: np.ndarray) -> np.ndarray:
    """The in-plane convex outline of a slice's lung section (pixel centres inside its convex hull)."""
    points = np.argwhere(section)
    out = np.zeros_like(section)
    if len(points) < 3:
        return out
    try:
        equations = ConvexHull(points).equations
    except QhullError:
        return out
    lo = points.min(axis=0)
    hi = points.max(axis=0) + 1
    grid = np.stack(np.meshgrid(np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), indexing="ij"), axis=-1)
    inside = np.all(grid @ equations[:, :2].T + equations[:, 2] <= 1e-9, axis=-1)
    out[lo[0] : hi[0], lo[1] : hi[1]] = inside
    return out


def _restore_apical_lesion(
    mask: np.ndarray, allowed: np.ndarray, coarse: np.ndarray, params: LungMaskParameters
) -> np.ndarray:
    """Give back the part of a dense lesion at the apex that lies in a top slice's convex outline.

    Above the slices the rib step measures (``pleural_min_section``) the lung's sections are
    small, convex caps of the dome, and the top slices of a lesion there hold lesion and the
    soft tissue above the apex together: the closing and the enclosure take its middle but
    leave the part of a top slice where the lesion meets the pleura.  The aerated lung of that
    slice still wraps the lesion on most sides, so the lesion lies inside the slice's convex
    outline (a bound chosen here, not taken from a publication), while the soft tissue over the
    dome lies outside it.  Dense blobs of the mask (as in
    :func:`_restore_lesion_rim`: an in-plane opening keeps only blobs about 6 mm across, and
    the dense voxels of the mask connected to them) are grown in-plane into dense voxels inside
    the outline of apical slices.  Only slices above the widest section count, so the bases,
    which the diaphragm shapes, are left alone.
    """
    sections = mask.sum(axis=(1, 2))
    if not sections.any():
        return mask
    above_widest = np.arange(sections.size) < int(np.argmax(sections))
    small = (sections > 0) & (sections < params.pleural_min_section * sections.max())
    apical = np.zeros_like(mask)
    for k in np.nonzero(above_widest & small)[0]:
        apical[k] = _section_outline(mask[k])
    dense = coarse > params.lesion_core_hu
    core = ndimage.binary_opening(mask & dense, structure=_IN_PLANE_CROSS)
    if not (core & apical).any():
        return mask
    blobs = ndimage.binary_propagation(core, mask=mask & dense)
    lesion_side = blobs | (dense & allowed & apical & ~mask)
    grown: np.ndarray = mask | ndimage.binary_propagation(blobs, structure=_IN_PLANE_CROSS, mask=lesion_side)
    return grown


def _fill_pleural_lesions(
    mask: np.ndarray,
    allowed: np.ndarray,
    bone: np.ndarray,
    coarse: np.ndarray,
    spacing: tuple[float, float, float],
    midline_side: float,
    params: LungMaskParameters,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give back to one (closed) lung the dense disease against its pleura: steps 8 to 11.

    The enclosure step comes first: the rib step fills only the angular bins of a dent, so where
    it fills part of a lesion it leaves slivers on either side of the filled wedge, each too thin
    for any ball of the enclosure step, which then no longer sees the lesion it would have taken
    whole
    (a 36 mm ball against the lateral wall of the sharp-kernel 5 mm series: 49 % kept in the
    other order, 99.9 % in this one).  The enclosure step is tried again if the rib step gave
    anything back, since a neck the ribs plugged can close off a region (the patient's own mass
    on the soft-kernel 5 mm series: 17 mL more).  The lesion rim and the apex come last: both grow
    lesions the steps before have found.  Returns the lung, the costal inner hull of the rib step
    and the lesion cores of the rim step, which steps 12 and 13 use on the scan's grid.
    """
    enclosed = _fill_enclosed(mask, allowed, spacing, params)
    ribbed, hull = _fill_against_ribs(enclosed, allowed, bone, spacing, midline_side, params)
    if np.count_nonzero(ribbed) > np.count_nonzero(enclosed):
        ribbed = _fill_enclosed(ribbed, allowed, spacing, params)
    rimmed, core = _restore_lesion_rim(ribbed, allowed & hull, coarse, params)
    return _restore_apical_lesion(rimmed, allowed, coarse, params), hull, core


def _native_box(region: np.ndarray, frame: _Frame, shape: tuple[int, ...], pad: int) -> tuple[slice, ...] | None:
    """The full-grid box (original orientation) covering ``region`` (canonical coarse) and ``pad`` blocks more."""
    original = frame.from_canonical(region)
    if not original.any():
        return None
    box = []
    for axis in range(3):
        present = np.nonzero(original.any(axis=tuple(j for j in range(3) if j != axis)))[0]
        f = frame.factors[axis]
        box.append(slice(max(0, (int(present[0]) - pad) * f), min(shape[axis], (int(present[-1]) + 1 + pad) * f)))
    return tuple(box)


def _on_native(array: np.ndarray, frame: _Frame, box: tuple[slice, ...]) -> np.ndarray:
    """A canonical coarse array on the full grid within ``box``, each voxel taking its block's value; canonical."""
    original = frame.from_canonical(array)
    index = [
        np.minimum(np.arange(b.start, b.stop) // f, original.shape[a] - 1)
        for a, (b, f) in enumerate(zip(box, frame.factors, strict=True))
    ]
    return frame.to_canonical(original[np.ix_(*index)])


def _native_lesion_rim(
    hu: np.ndarray,
    full: np.ndarray,
    other: np.ndarray,
    lesion: np.ndarray,
    near: np.ndarray,
    frame: _Frame,
    params: LungMaskParameters,
) -> None:
    """Step 12: the edge of a lesion against the costal pleura, re-tested on the full grid (in place on ``full``).

    What :func:`_restore_lesion_rim` does with 2 mm working voxels, done with the scan's own:
    a full-grid voxel of soft-tissue density (above ``lesion_core_hu``; not bone, by the 3x3
    in-plane mean of the rib step), next in-plane to a dense voxel that the mask kept in a
    working voxel of ``lesion`` (the lesion cores and the rim step 10 gave back around them), is
    given back, one voxel deep, where its working voxel is in ``near`` (next to ``lesion`` and
    inside the costal inner hull of the rib cage, where aerated lung would reach; both on the
    working grid in the original orientation).  One voxel: two took in up to 9.5 % of a 10 mm
    posterior ball's volume in intercostal wall on the soft-kernel 5 mm series.  A voxel of the
    full grid is a quarter to a ninth of a working voxel in-plane on the shared series, so the
    lesion's outer millimetre, which shares a working voxel with the wall and is read as wall
    there, is told from the wall by its own voxels.  Only the voxels of ``near`` are visited.
    """
    factors = np.asarray(frame.factors)
    shape = np.asarray(full.shape)
    block = np.stack(np.meshgrid(*(np.arange(f) for f in frame.factors), indexing="ij"), axis=-1).reshape(-1, 3)
    points = (np.argwhere(near)[:, None, :] * factors + block[None]).reshape(-1, 3)
    points = points[np.all(points < shape, axis=1)]
    if len(points) == 0:
        return
    # In-plane neighbours: along the original axes that the canonical in-plane axes come from.
    steps = [np.eye(3, dtype=np.intp)[frame.order[a]] * sign for a in (1, 2) for sign in (-1, 1)]

    def at(offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = points + offset
        valid = np.all((q >= 0) & (q < shape), axis=1)
        return np.where(valid[:, None], q, points), valid

    index = tuple(points.T)
    candidate = (hu[index] > params.lesion_core_hu) & ~full[index] & ~other[index]
    total = np.zeros(len(points), dtype=np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            offset = np.eye(3, dtype=np.intp)[frame.order[1]] * dy + np.eye(3, dtype=np.intp)[frame.order[2]] * dx
            q, _ = at(offset)
            total += hu[tuple(q.T)]
    candidate &= total / 9.0 <= params.bone_threshold_hu
    beside = np.zeros(len(points), dtype=bool)
    for offset in steps:
        q, valid = at(offset)
        qi = tuple(q.T)
        beside |= valid & full[qi] & (hu[qi] > params.lesion_core_hu) & lesion[tuple((q // factors).T)]
    chosen = points[candidate & beside]
    full[tuple(chosen.T)] = True


def _native_apex(
    hu: np.ndarray,
    full: np.ndarray,
    allowed: np.ndarray,
    core: np.ndarray,
    apical: np.ndarray,
    spacing: tuple[float, float, float],
    params: LungMaskParameters,
) -> np.ndarray:
    """Step 13: a lesion at the apex, slice by slice upwards on the full grid (canonical crops).

    In each apical slice (``apical``, per slice) the lung's own region is its section in the
    mask and the voxels below ``lesion_core_hu`` connected in-plane to it (the aerated lung's
    partial-volume rim, which the 2 mm working grid loses where the section is small).  Two
    things are given back:

    1. enclosed: dense (not bone) regions that this region wraps in-plane on every side (its
       in-plane holes: the enclosure of step 8 in one slice), where such a region together with
       the dense voxels of the section it touches is lesion-sized (survives an in-plane opening
       of radius ``apex_min_lesion_mm``), so that noise specks in the rim are not taken;
    2. continued: the lesion of the slice below (dense voxels in the mask, on a lesion core of
       the working grid, or given back in that slice by this step) continues into this slice
       within its footprint: starting from the lesion's voxels of this slice (dense voxels of
       the section within the footprint, and what step 1 gave back), it is grown in-plane into
       dense voxels within the footprint, inside the convex outline of the lung's region in
       this slice (the soft tissue over the dome lies outside it) and more than
       ``apex_bone_margin_mm`` from bone (the first rib, the clavicle); its holes are filled
       and one voxel of its partial-volume edge more tissue than air (above
       ``air_threshold_hu``, the split of step 2) is added, since the top slice of a lesion
       holds only a cap of it and its voxels are partly aerated lung.

    Growing only from the lesion's own voxels of the slice keeps the footprint of a large
    lesion from taking the roof of the dome in the slice above its top.  Returns what is added.
    """
    dense = hu > params.lesion_core_hu
    bone = ndimage.uniform_filter(hu, size=(1, 3, 3)) > params.bone_threshold_hu
    near_bone = ndimage.binary_dilation(bone, structure=_ball(params.apex_bone_margin_mm, (1e9, *spacing[1:])))
    disk = _ball(params.apex_min_lesion_mm, spacing[1:])
    added = np.zeros_like(full)
    from_below = np.zeros(hu.shape[1:], dtype=bool)
    for s in range(hu.shape[0] - 1, -1, -1):
        footprint = from_below
        if s + 1 < hu.shape[0]:
            footprint = footprint | (full[s + 1] & dense[s + 1] & core[s + 1])
        from_below = np.zeros_like(from_below)
        section = full[s]
        if not apical[s] or not section.any():
            continue
        labels, _ = ndimage.label(((hu[s] < params.lesion_core_hu) & allowed[s]) | section)
        keep = np.unique(labels[section])
        region = np.isin(labels, keep[keep > 0])
        holes = ndimage.binary_fill_holes(region) & ~region & ~bone[s] & allowed[s]
        blob = holes | (section & dense[s])
        add = holes & ndimage.binary_propagation(ndimage.binary_opening(blob, structure=disk), mask=blob)
        if footprint.any():
            bound = footprint & ~near_bone[s] & _section_outline(region) & allowed[s]
            seeds = (bound & dense[s] & section) | add
            if seeds.any():
                grown = ndimage.binary_propagation(seeds, mask=(bound & dense[s]) | seeds)
                grown = ndimage.binary_fill_holes(grown) & (bound | seeds)
                grown |= ndimage.binary_dilation(grown) & bound & (hu[s] > params.air_threshold_hu)
                add |= grown & ~section
        added[s] = add
        from_below = add & dense[s]
    return added


def _refine_at_native(
    hu: np.ndarray,
    full: np.ndarray,
    other: np.ndarray,
    lung: np.ndarray,
    allowed: np.ndarray,
    costal: np.ndarray,
    core: np.ndarray,
    frame: _Frame,
    spacing: tuple[float, float, float],
    params: LungMaskParameters,
) -> None:
    """Steps 12 and 13 on the full grid, in place on ``full`` (one lung; ``other`` is never taken).

    ``lung``, ``allowed``, ``costal`` (where it may grow within the costal inner hull of the rib
    step) and ``core`` (the lesion cores of :func:`_restore_lesion_rim`) are on the canonical
    working grid.  Only the full-grid voxels of working voxels next to a core (the rim) and a
    box around the apical slices (the apex) are visited.
    """
    if not core.any():
        return
    present = [np.nonzero(core.any(axis=tuple(j for j in range(3) if j != i)))[0] for i in range(3)]
    crop = tuple(slice(max(0, int(p[0]) - 2), int(p[-1]) + 3) for p in present)
    # The lesion as the working grid kept it: its cores and the rim step 10 gave back around them.
    lesion = np.zeros_like(lung)
    lesion[crop] = ndimage.binary_dilation(core[crop], structure=_IN_PLANE_CROSS) & lung[crop]
    near = np.zeros_like(lung)
    near[crop] = (
        ndimage.binary_dilation(lesion[crop], structure=_IN_PLANE_CROSS)
        & costal[crop]
        & ~ndimage.binary_erosion(lung[crop], structure=_IN_PLANE_CROSS)
    )
    if near.any():
        _native_lesion_rim(hu, full, other, frame.from_canonical(lesion), frame.from_canonical(near), frame, params)
    native_spacing = (spacing[frame.order[0]], spacing[frame.order[1]], spacing[frame.order[2]])
    sections = lung.sum(axis=(1, 2))
    above_widest = np.arange(sections.size) < int(np.argmax(sections))
    small = (sections > 0) & (sections < params.pleural_min_section * sections.max())
    top = np.nonzero(above_widest & small)[0]
    if top.size == 0:
        return
    apical = np.zeros_like(lung)
    apical[top] = True
    reach = apical.copy()
    reach[top + 1] = True
    box = _native_box(lung & reach, frame, full.shape, 3)
    if box is None:
        return
    other_here = frame.to_canonical(other[box])
    added = _native_apex(
        frame.to_canonical(hu[box]),
        frame.to_canonical(full[box]),
        _on_native(allowed, frame, box) & ~other_here,
        _on_native(core, frame, box),
        np.asarray(_on_native(apical, frame, box).any(axis=(1, 2))),
        native_spacing,
        params,
    )
    full[box] |= frame.from_canonical(added)


def _axis_weights(factor: int, coarse: int, keep: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation indices and weights from a block-averaged axis back to full size."""
    position = (np.arange(keep.start, keep.stop) - (factor - 1) / 2.0) / factor
    position = np.clip(position, 0.0, coarse - 1)
    lower = np.floor(position).astype(np.intp)
    upper = np.minimum(lower + 1, coarse - 1)
    return lower, upper, (position - lower).astype(np.float32)


def _upsample(
    left: np.ndarray, right: np.ndarray, factors: tuple[int, int, int], shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Bring coarse masks back to the full grid by separable linear interpolation.

    Only the bounding box of the lungs is interpolated, a few slices at a time, so that the
    full-size float temporaries of a 600-slice scan never exist.
    """
    full_left = np.zeros(shape, dtype=bool)
    full_right = np.zeros(shape, dtype=bool)
    union = left | right
    if not union.any():
        return full_left, full_right
    if factors == (1, 1, 1):
        return left.copy(), right.copy()
    keep = []
    for axis in range(3):
        present = np.nonzero(union.any(axis=tuple(j for j in range(3) if j != axis)))[0]
        start = max(0, (int(present[0]) - 1) * factors[axis])
        stop = min(shape[axis], (int(present[-1]) + 2) * factors[axis])
        keep.append(slice(start, stop))
    weights = [_axis_weights(factors[a], left.shape[a], keep[a]) for a in range(3)]
    (z0, z1, wz), (y0, y1, wy), (x0, x1, wx) = weights
    sources = (left.astype(np.float32), right.astype(np.float32))
    chunk = 16
    for start in range(0, z0.size, chunk):
        part = slice(start, start + chunk)
        probabilities = []
        for source in sources:
            a = source[z0[part]] * (1 - wz[part])[:, None, None] + source[z1[part]] * wz[part][:, None, None]
            a = a[:, y0] * (1 - wy)[None, :, None] + a[:, y1] * wy[None, :, None]
            probabilities.append(a[:, :, x0] * (1 - wx) + a[:, :, x1] * wx)
        p_left, p_right = probabilities
        target = (
            slice(keep[0].start + start, min(keep[0].stop, keep[0].start + start + chunk)),
            keep[1],
            keep[2],
        )
        full_left[target] = (p_left >= 0.5) & (p_left >= p_right)
        full_right[target] = (p_right >= 0.5) & (p_right > p_left)
    return full_left, full_right


def _empty(shape: tuple[int, ...], warnings: list[str]) -> LungSegmentation:
    """Empty masks with the reason; a missing lung is a finding, not a crash."""
    logger.warning("no lung segmented: %s", "; ".join(warnings))
    return LungSegmentation(np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool), tuple(warnings))


def segment_lungs(volume: Volume, params: LungMaskParameters | None = None) -> LungSegmentation:
    """Segment the left and right lungs of a CT volume with classical image processing.

    Parameters
    ----------
    volume : Volume
        The CT in HU; any slice thickness from about 0.5 to 8 mm, any patient position.
    params : LungMaskParameters, optional
        Tunable constants; the defaults are meant for adult chest CT.

    Returns
    -------
    LungSegmentation
        Disjoint boolean masks of the patient's left and right lung on ``volume``'s grid (the
        trachea and main bronchi excluded), and warnings in words.  When no lung is found the
        masks are empty and a warning says why.
    """
    params = params or LungMaskParameters()
    shape = volume.hu.shape
    frame = _frame_for(volume, params)
    coarse = frame.to_canonical(_block_mean(volume.hu, frame.factors))
    spacing = frame.spacing
    voxel_ml = float(np.prod(spacing)) / 1000.0
    logger.debug("working grid %s at %s mm (blocks %s)", coarse.shape, spacing, frame.factors)

    body = _body_mask(coarse, spacing, params)
    if not body.any():
        return _empty(shape, ["no body found in the image (nothing above -500 HU)"])
    warnings: list[str] = []
    air = body & (coarse < params.air_threshold_hu)
    airway, airway_warnings = _trace_airway(coarse, body, spacing, params)
    warnings.extend(airway_warnings)
    candidates = air
    if airway is not None:
        candidates = air & ~_dilate(airway, spacing, params.airway_margin_mm)

    candidates = _without_gas_pockets(candidates, coarse, spacing, params)
    labels, components = _components(candidates, coarse, spacing, params)
    lungs = _select_lungs(components, params)
    if not lungs:
        largest = f"; the largest air region is {components[0].volume_ml:.0f} mL" if components else ""
        return _empty(shape, [f"no lung found: no aerated region inside the body is lung-like{largest}"])
    left, right, side_warnings = _assign_sides(labels, lungs, body, spacing, params)
    warnings.extend(side_warnings)

    allowed = body & ~airway if airway is not None else body
    closed_left = _close(left, spacing, params.closing_radius_mm) & allowed & ~right
    bone = _rib_cage(coarse, spacing, params)
    closed_left, hull_left, core_left = _fill_pleural_lesions(
        closed_left, allowed & ~right, bone, coarse, spacing, -1.0, params
    )
    closed_right = _close(right, spacing, params.closing_radius_mm) & allowed & ~closed_left
    closed_right, hull_right, core_right = _fill_pleural_lesions(
        closed_right, allowed & ~closed_left, bone, coarse, spacing, 1.0, params
    )
    for name, mask in (("left", closed_left), ("right", closed_right)):
        if not mask.any():
            warnings.append(f"no {name} lung found")
        elif any(np.take(mask, i, axis=a).any() for a in (1, 2) for i in (0, -1)):
            warnings.append(f"the {name} lung reaches the edge of the field of view; part of it may be missing")
    logger.info(
        "lung mask: left %.0f mL, right %.0f mL (working grid)",
        closed_left.sum() * voxel_ml,
        closed_right.sum() * voxel_ml,
    )
    full_left, full_right = _upsample(
        frame.from_canonical(closed_left), frame.from_canonical(closed_right), frame.factors, shape
    )
    for lung, full, other, hull, core in (
        (closed_left, full_left, full_right, hull_left, core_left),
        (closed_right, full_right, full_left, hull_right, core_right),
    ):
        _refine_at_native(
            volume.hu, full, other, lung, allowed, allowed & hull, core, frame, volume.geometry.spacing, params
        )
    return LungSegmentation(left=full_left, right=full_right, warnings=tuple(warnings))
