"""CPU forward time of each Table 3.3 architecture at the paper's input, against this machine's matmul peak.

For each architecture named on the command line (default: all 14 of thesis Table 3.3 at
3×128×240×240, T§3.3.2), a fresh Python process builds the network with random weights, runs one
untimed warm-up pass and ``--repeats`` timed passes under ``torch.inference_mode`` (batch 1), and
reports the best time, the achieved rate ``FLOPs / time`` (FLOPs under the table's convention:
2 × multiply-accumulates, :func:`models.zoo.count_flops`) and the process's peak resident memory.
The peer in the same run is the machine itself: a float32 matrix multiply (2048², best of 20),
whose rate is the practical peak of this CPU for dense arithmetic; the efficiency column is
achieved / peak.  Convolutions in 3D with small channel counts are memory-bound, so ratios well
under 1 are expected; the point is to see which networks waste the machine.

Run with the project's interpreter, e.g.::

    .venv/bin/python benchmarks/model_efficiency.py densenet121_3d resnet18_3d --threads 2 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import torch

from models.zoo import TABLE_3_3_INPUT_SHAPE, build, count_flops, names


def matmul_peak(threads: int, size: int = 2048, repeats: int = 20) -> float:
    """Best float32 GFLOP/s of a square matrix multiply on ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(name: str, threads: int, repeats: int) -> dict[str, Any]:
    """One architecture in this process: best forward time, GFLOP/s, peak memory."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    network = build(name).eval()
    shape = tuple(TABLE_3_3_INPUT_SHAPE)
    flops = count_flops(network, shape)
    x = torch.randn(1, *shape)
    with torch.inference_mode():
        network(x)  # warm-up: allocator and kernel selection
        best = min(_timed(lambda: network(x)) for _ in range(repeats))
    return {
        "name": name,
        "input_shape": list(shape),
        "flops": flops,
        "seconds": round(best, 3),
        "gflops_per_s": round(flops / best / 1e9, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architectures", nargs="*", help=f"default: all of {', '.join(names())}")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: measure one architecture
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.threads, args.repeats)))
        return
    peak = matmul_peak(args.threads)
    print(json.dumps({"matmul_peak_gflops_per_s": round(peak, 2), "threads": args.threads}))
    rows = []
    for name in args.architectures or names():
        child = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
        ]
        out = subprocess.run(child, capture_output=True, text=True, check=True, env=os.environ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        row["efficiency"] = round(row["gflops_per_s"] / peak, 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{'architecture':<22}{'GFLOPs':>9}{'s':>9}{'GFLOP/s':>10}{'of peak':>9}{'peak MB':>9}")
    for row in rows:
        print(
            f"{row['name']:<22}{row['flops'] / 1e9:>9.1f}{row['seconds']:>9.2f}{row['gflops_per_s']:>10.1f}"
            f"{row['efficiency']:>9.1%}{row['peak_rss_mb']:>9.0f}"
        )
    print(f"matmul peak {peak:.1f} GFLOP/s on {args.threads} thread(s)")


if __name__ == "__main__":
    main()
