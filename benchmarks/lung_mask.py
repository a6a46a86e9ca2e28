"""Time of the classical lung mask on each shared real chest series, against two floors.

For each series of ``../shared/data/ct`` whose name starts with ``lung-`` (load time excluded):

1. ``models.qct.lungmask.segment_lungs``;
2. a plain threshold-and-components baseline on the full grid (tissue above -500 HU, air below
   -400 HU inside the body's slice-by-slice filled outline, the two largest 3-D components): what
   the simplest mask that ignores airways, gas and dense pathology costs;
3. the physical floor: one pass over the HU array (a float64 sum), what any method must at
   least spend reading the scan;
4. optionally (``--reference FILE``) another version of ``lungmask.py``, for example the one
   before a change: ``git show HEAD:models/qct/lungmask.py > /tmp/lungmask_before.py``.

Median and best of ``--repeats`` runs, and the ratios of segment_lungs to each, are printed;
nothing is asserted.

Usage::

    .venv/bin/python benchmarks/lung_mask.py [--repeats 5] [--reference /tmp/lungmask_before.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.findings import Volume  # noqa: E402
from models.qct.lungmask import segment_lungs  # noqa: E402
from models.volume import load_series  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "ct"


def threshold_baseline(volume: Volume) -> np.ndarray:
    """Air inside the body, two largest components: the cheapest mask that is still a lung mask."""
    hu = volume.hu
    body = np.zeros(hu.shape, dtype=bool)
    for k in range(hu.shape[0]):
        body[k] = ndimage.binary_fill_holes(hu[k] > -500.0)
    labels, count = ndimage.label(body & (hu < -400.0))
    if count == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = np.argsort(sizes)[-2:]
    mask: np.ndarray = np.isin(labels, keep[sizes[keep] > 0])
    return mask


def read_floor(volume: Volume) -> float:
    """One pass over the array."""
    return float(volume.hu.sum(dtype=np.float64))


def load_reference(path: Path) -> ModuleType:
    """Import another lungmask.py under its own name."""
    spec = importlib.util.spec_from_file_location("lungmask_reference", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timed(function: Callable[[Volume], object], volume: Volume, repeats: int) -> tuple[float, float]:
    """Median and best wall time of ``repeats`` calls (one untimed warm-up call first)."""
    function(volume)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(volume)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference", type=Path, help="another lungmask.py to time as well")
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"shared data absent: {DATA}")
    reference = load_reference(args.reference) if args.reference else None
    for folder in sorted(p for p in DATA.iterdir() if p.name.startswith("lung-")):
        volume = load_series(sorted(p for p in folder.iterdir() if p.is_file()))
        lungs = segment_lungs(volume)
        litres = (lungs.left.sum() + lungs.right.sum()) * volume.geometry.voxel_volume_ml / 1000.0
        print(f"{folder.name}: {volume.hu.shape} at {volume.geometry.spacing} mm, lungs {litres:.2f} L")
        ours = timed(segment_lungs, volume, args.repeats)
        rows = [("segment_lungs", ours)]
        if reference is not None:
            rows.append(("reference segment_lungs", timed(reference.segment_lungs, volume, args.repeats)))
        rows.append(("threshold + components", timed(threshold_baseline, volume, args.repeats)))
        rows.append(("read the array once", timed(read_floor, volume, args.repeats)))
        for name, (median, best) in rows:
            ratio = "" if name == "segment_lungs" else f"   segment_lungs / this = {ours[0] / median:.2f}"
            print(f"  {name:26s} median {median:7.3f} s  best {best:7.3f} s{ratio}")


if __name__ == "__main__":
    main()
