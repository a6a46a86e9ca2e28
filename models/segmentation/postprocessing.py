"""Anatomical clean-up of label maps: one connected piece per lobe, lobes tiling their lung.

A lobe is one connected region, so a detached fragment labelled as a lobe is an error; removing
it would leave a hole in the lung, so its voxels go to the nearest lobe that is kept (of the
same lung: the caller passes one side at a time).  Thus the lobes of a lung partition it
exactly, which keeps per-lobe volumes adding up to the lung volume in the report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["largest_component", "tile_region"]

#: 26-connectivity: with thick slices, diagonal neighbours across slices belong together.
_FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean 3-D mask (empty stays empty)."""
    labels, count = ndimage.label(mask, structure=_FULL_CONNECTIVITY)
    if count <= 1:
        return np.asarray(mask, dtype=bool).copy()
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    out: np.ndarray = labels == int(np.argmax(sizes))
    return out


def tile_region(labels: np.ndarray, region: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Keep each label's largest component inside ``region`` and give every other region voxel
    the label of the nearest kept voxel.

    Parameters
    ----------
    labels : numpy.ndarray
        Integer label map (0 = unassigned) on the grid of ``region``.
    region : numpy.ndarray
        Boolean region the labels must tile (one lung).
    spacing : sequence of float
        Voxel spacing per axis in mm, so that "nearest" is measured in millimetres.

    Returns
    -------
    numpy.ndarray
        Label map of the same dtype: inside ``region`` every voxel carries a kept label (when
        any label is present there), outside it 0.
    """
    if labels.shape != region.shape:
        raise ValueError(f"labels {labels.shape} and region {region.shape} differ in shape")
    out = np.zeros_like(labels)
    if not region.any():
        return out
    box = ndimage.find_objects(region.astype(np.int8))[0]
    sub_region = region[box]
    sub_labels = np.where(sub_region, labels[box], 0)
    kept = np.zeros_like(sub_labels)
    for value in np.unique(sub_labels):
        if value == 0:
            continue
        kept[largest_component(sub_labels == value)] = value
    if not kept.any():
        return out
    missing = sub_region & (kept == 0)
    if missing.any():
        nearest = ndimage.distance_transform_edt(
            kept == 0, sampling=tuple(float(s) for s in spacing), return_distances=False, return_indices=True
        )
        kept[missing] = kept[tuple(index[missing] for index in nearest)]
    out[box] = np.where(sub_region, kept, 0)
    return out
