"""The whole model pipeline on the CPU, every learned model on generated weights, against the physical limit.

Issue 19, part 1: the default configuration (lung mask, lobe and lesion networks, severity,
the ten-member CO-RADS ensemble, the STOIC2021 top-3 ensemble, I3Dr, measurements and
densitometry) on the shared 64-slice chest CT, with ``demo_weights`` (generated weights: the
arithmetic of the published networks, not their numbers).  Per stage of
:func:`models.pipeline.analyse` it prints

* wall and CPU seconds, peak resident memory and the networks' forward seconds
  (:class:`server.services.stage_clock.StageClock`, the clock the worker uses for result.json);
* the floating-point operations the stage executed, counted while it runs by torch's
  ``FlopCounterMode`` (2 × multiply-accumulates of every convolution and matrix product,
  the convention of ``lungcds models summary``), its achieved GFLOP/s, and the time the same
  operations would take at this machine's matmul peak (``model_efficiency.matmul_peak``:
  float32 2048² matrix products, best of 20, measured before and after the pipeline in the
  same run, the better of the two taken); the ratio wall / that time is how far the stage is
  from the physical limit.

The whole pipeline's wall time, peak memory and ratio to the limit follow, beside the targets of
the issue (6 min, 4 GB, 2x).  Counting FLOPs passes every torch operation through a Python
dispatch mode; ``--no-flops`` runs without it, to see what the counting costs.  The process is
set up as a worker's is (``server.cli.allocator``: transparent huge pages for torch's allocations,
set ``THP_MEM_ALLOC_ENABLE=0`` to compare; glibc's mapping threshold fixed from the first model load,
``models.memory``, which ``MALLOC_MMAP_THRESHOLD_`` in the environment replaces) and models are freed
after their stage as on a CPU worker
(``--keep-models`` keeps them, as on a GPU).

Run with the project's interpreter on an otherwise idle machine, e.g.::

    .venv/bin/python benchmarks/full_pipeline.py --threads 2
"""

from __future__ import annotations

# As in a worker: the command line's package sets torch's allocator options before torch is imported.
import server.cli  # noqa: F401

# isort: split

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pydicom
import torch
from model_efficiency import matmul_peak
from torch.utils.flop_counter import FlopCounterMode

from models.pipeline import analyse
from models.runtime import ModelProvider
from models.volume import load_series, patient_context
from server.cli.allocator import describe_allocators
from server.services.stage_clock import Stage, StageClock

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERIES = ROOT.parent / "shared" / "data" / "ct" / "lung-dx-a0001-chest-5mm-s2"
#: The issue's targets: wall seconds, peak resident MB, wall / time at the matmul peak.
TARGET_SECONDS, TARGET_RSS_MB, TARGET_RATIO = 360.0, 4096.0, 2.0


class _FlopMarks:
    """FLOPs executed per stage: the counter's running total read at every stage change."""

    def __init__(self, counter: FlopCounterMode | None) -> None:
        self._counter = counter
        self._stage: str | None = None
        self._at = 0
        self.per_stage: dict[str, int] = defaultdict(int)

    def enter(self, stage: str) -> None:
        total = self._counter.get_total_flops() if self._counter is not None else 0
        if self._stage is not None:
            self.per_stage[self._stage] += total - self._at
        self._stage, self._at = stage, total


def run(
    series: Path, count_flops: bool, keep_models: bool
) -> tuple[list[Stage], dict[str, int], float, dict[str, Any]]:
    """Analyse ``series`` once; its stages, FLOPs per stage, wall seconds and a summary of the findings."""
    files = sorted(p for p in series.iterdir() if p.is_file())
    volume = load_series(files)
    context = patient_context(pydicom.dcmread(files[0], stop_before_pixels=True))
    clock = StageClock()
    counter = FlopCounterMode(display=False) if count_flops else None
    marks = _FlopMarks(counter)

    def progress(stage: str, _fraction: float) -> None:
        marks.enter(stage)
        clock.enter(stage)

    provider = ModelProvider(None, demo_weights=True, keep_loaded=keep_models)
    start = time.perf_counter()
    if counter is not None:
        with counter:
            findings = analyse(volume, context, provider=provider, progress=progress)
    else:
        findings = analyse(volume, context, provider=provider, progress=progress)
    wall = time.perf_counter() - start
    marks.enter("done")
    stages = clock.close()
    summary = {name: run.status for name, run in findings.models.items()}
    return stages, dict(marks.per_stage), wall, summary


def main() -> int:
    """Measure and print; exit status 2 when the shared series is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-flops", action="store_true", help="do not count FLOPs (no dispatch mode)")
    parser.add_argument("--keep-models", action="store_true", help="keep every model loaded (as on a GPU worker)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if not args.series.is_dir():
        print(f"series folder {args.series} not found (shared test data absent?)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    peak_before = matmul_peak(args.threads)
    stages, flops, wall, statuses = run(args.series, not args.no_flops, args.keep_models)
    peak = max(peak_before, matmul_peak(args.threads))

    print(
        f"{args.series.name}, {args.threads} threads, matmul peak {peak:.1f} GFLOP/s (before {peak_before:.1f}), "
        f"{describe_allocators()}, models "
        f"{'kept' if args.keep_models else 'freed after their stage'}"
    )
    print(
        f"{'stage':26s} {'wall s':>8s} {'cpu s':>8s} {'fwd s':>7s} {'peak MB':>8s} {'GFLOP':>9s} {'GFLOP/s':>8s}"
        f" {'@peak s':>8s} {'ratio':>6s}"
    )
    rows = []
    for stage in stages:
        gflop = flops.get(stage.name, 0) / 1e9
        at_peak = gflop / peak
        peak_mb = None if stage.peak_rss_bytes is None else stage.peak_rss_bytes / 2**20
        row = {
            **stage.as_dict(),
            "gflop": round(gflop, 1),
            "gflops_per_s": round(gflop / stage.seconds, 1) if stage.seconds else None,
            "seconds_at_peak": round(at_peak, 2),
            "ratio_to_peak": round(stage.seconds / at_peak, 2) if at_peak else None,
        }
        rows.append(row)
        print(
            f"{stage.name[:26]:26s} {stage.seconds:8.2f} {stage.cpu_seconds:8.2f} {stage.forward_seconds:7.2f} "
            f"{peak_mb if peak_mb is not None else float('nan'):8.0f} {gflop:9.1f} "
            f"{(gflop / stage.seconds if stage.seconds else 0):8.1f} {at_peak:8.2f} "
            f"{(stage.seconds / at_peak if at_peak else float('nan')):6.2f}"
        )
    total_gflop = sum(flops.values()) / 1e9
    at_peak = total_gflop / peak
    rss = max((s.peak_rss_bytes or 0) for s in stages) / 2**20
    print(
        f"pipeline: {wall:.1f} s wall (target <= {TARGET_SECONDS:.0f}), peak RSS {rss:.0f} MB (target <= "
        f"{TARGET_RSS_MB:.0f}), {total_gflop:.0f} GFLOP = {at_peak:.1f} s at the matmul peak, ratio "
        f"{(wall / at_peak if at_peak else float('nan')):.2f}x (target <= {TARGET_RATIO:.0f}x)"
    )
    print("models:", ", ".join(f"{name} {status}" for name, status in statuses.items()))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"wall_s": wall, "peak_rss_mb": rss, "gflop": total_gflop, "matmul_peak_gflops": peak, "stages": rows},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
