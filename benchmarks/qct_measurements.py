"""What the weight-free zone densitometry costs on the 64-slice chest CT, next to the lung mask it needs.

In one process, on one real series (default the 64-slice 5 mm chest CT, 64 x 512 x 512), it times
each step of the weight-free path: reading the series (``load_series``), the classical lung mask
(``segment_lungs``), the lung measurements (``measure_regions`` of both lungs and each lung, with
density bands and mass) and the zone densitometry (``analyse_densitometry``: six zones, core and
rind, every region measured, zone score, emphysema detail), each as the median of ``--repeats``
runs after one untimed warm-up.  The peer in the same run is the lung mask itself: densitometry
cannot run without it, so the ratio densitometry / lung mask says what the new measurements add
to it (the issue's target: well under a second, far below the mask).  As a physical reference it
also prints the volume's size in bytes and the median time of one ``np.sum`` over it (one read of
the array from memory): the densitometry cost in such reads says how far it is from the floor of
touching every voxel once.  Nothing is asserted; tests assert behaviour, this measures.

Run with the project's interpreter, e.g.::

    .venv/bin/python benchmarks/qct_measurements.py [--repeats 5] [--series DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.qct.densitometry import analyse_densitometry  # noqa: E402
from models.qct.lungmask import segment_lungs  # noqa: E402
from models.qct.measurements import measure_regions  # noqa: E402
from models.volume import load_series  # noqa: E402

DEFAULT_SERIES = ROOT.parent / "shared" / "data" / "ct" / "lung-dx-a0001-chest-5mm-s2"


def median_seconds(call: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall-clock seconds of ``repeats`` calls after one untimed warm-up, and the last result."""
    result = call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES, help="folder of one CT series")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.series.is_dir():
        sys.exit(f"series folder absent: {args.series}")
    files = sorted(p for p in args.series.iterdir() if p.is_file())

    load_s, volume = median_seconds(lambda: load_series(files), args.repeats)
    mask_s, lungs = median_seconds(lambda: segment_lungs(volume), args.repeats)
    masks = {"lungs": lungs.left | lungs.right, "lung_left": lungs.left, "lung_right": lungs.right}
    measure_s, _ = median_seconds(lambda: measure_regions(volume, masks), args.repeats)
    densitometry_s, result = median_seconds(
        lambda: analyse_densitometry(volume, lungs.left, lungs.right, "classical_lung_mask"), args.repeats
    )
    read_s, _ = median_seconds(lambda: np.sum(volume.hu), args.repeats)

    row = {
        "series": args.series.name,
        "shape_zyx": list(volume.hu.shape),
        "volume_bytes": int(volume.hu.nbytes),
        "lung_voxels": int(np.count_nonzero(masks["lungs"])),
        "repeats": args.repeats,
        "load_s": round(load_s, 4),
        "segment_lungs_s": round(mask_s, 4),
        "measure_regions_s": round(measure_s, 4),
        "analyse_densitometry_s": round(densitometry_s, 4),
        "np_sum_s": round(read_s, 5),
        "densitometry_over_lung_mask": round(densitometry_s / mask_s, 3),
        "densitometry_in_array_reads": round(densitometry_s / read_s, 1),
        "zone_score_total": result.zone_score_total,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(row))
    gbps = volume.hu.nbytes / read_s / 1e9
    print(f"\n{'step':<36}{'median s':>10}")
    for label, seconds in (
        ("load_series", load_s),
        ("segment_lungs (lung mask)", mask_s),
        ("measure_regions (3 lung regions)", measure_s),
        ("analyse_densitometry (8 regions)", densitometry_s),
        (f"np.sum over {volume.hu.nbytes / 1e6:.0f} MB (reference)", read_s),
    ):
        print(f"{label:<36}{seconds:>10.4f}")
    print(
        f"densitometry / lung mask = {densitometry_s / mask_s:.3f}; densitometry = {densitometry_s / read_s:.0f} "
        f"reads of the array at {gbps:.1f} GB/s; median of {args.repeats} after a warm-up"
    )


if __name__ == "__main__":
    main()
