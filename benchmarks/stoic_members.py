"""CPU inference time and peak memory of STOIC2021 members on one real chest CT.

Each member named on the command line (a module of ``models.stoic``: ``baseline``, ``code1055``,
``flyingbird``, ``uaux2``, ``deakin``, ``simonj``, ``hal9000``, ``etro``...) runs in a fresh
Python process, so that its peak resident memory (``ru_maxrss``) is its own: the process loads the
series, computes the classical lung mask, builds the member at full size with generated
demonstration weights (``demo(seed)``) and times ``predict`` on the series.  The member class is
the one in the module whose ``NAME`` equals the module's ``NAME`` and that has ``demo`` and
``predict``.  The lesion mask, which uaux2 and etro need, is a stand-in: lung voxels above
-500 HU (a density threshold, not a lesion segmentation; it only has to exist for the timing).

Printed per member: parameters of the networks the member holds, wall-clock and process CPU
seconds of each timed ``predict`` (after an untimed warm-up when ``--warmup``; on a shared machine
the CPU time of a one-thread run is the steadier figure), the resident memory before the first
prediction (series, masks and weights loaded) and the process's peak, and the load average, since
the machine may be shared.  Demonstration weights make the outputs meaningless; only time and
memory are measured.  There is no peer here: the authors' own code needs their containers and
GPUs.

Run with the project's interpreter, e.g.::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stoic_members.py baseline code1055 --threads 1
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DEFAULT_SERIES = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct" / "lung-dx-a0001-chest-5mm-s2"
#: Stand-in lesion mask: lung voxels denser than this (HU).
LESION_STAND_IN_HU = -500.0


def member_class(module_name: str) -> Any:
    """The member class of ``models.stoic.<module_name>`` (module docstring).

    Raises
    ------
    LookupError
        If the module holds no such class.
    """
    module = importlib.import_module(f"models.stoic.{module_name}")
    name = getattr(module, "NAME", None)
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and value.__module__ == module.__name__
            and getattr(value, "NAME", None) == name
            and callable(getattr(value, "demo", None))
            and callable(getattr(value, "predict", None))
        ):
            return value
    raise LookupError(f"models.stoic.{module_name} has no member class named {name!r} with demo() and predict()")


def _rss_mb() -> float:
    """Current resident set size in MB (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text(encoding="ascii").split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _parameters(member: Any) -> int | None:
    """Parameters of every torch module the member holds (``networks`` or module attributes)."""
    modules: list[torch.nn.Module] = []
    networks = getattr(member, "networks", None)
    if isinstance(networks, dict):
        modules = [m for group in networks.values() for m in group if isinstance(m, torch.nn.Module)]
    else:
        modules = [v for v in vars(member).values() if isinstance(v, torch.nn.Module)]
    if not modules:
        return None
    seen: dict[int, int] = {}
    for module in modules:
        for parameter in module.parameters():
            seen[id(parameter)] = parameter.numel()
    return sum(seen.values())


def measure(module_name: str, series: Path, threads: int, repeats: int, warmup: bool) -> dict[str, Any]:
    """Load, build and time one member in this process (the child's work)."""
    from models.qct.lungmask import segment_lungs
    from models.stoic.member import MemberInputs
    from models.volume import load_series

    torch.set_num_threads(threads)
    volume = load_series(sorted(p for p in series.iterdir() if p.is_file()))
    lungs = segment_lungs(volume)
    lung = lungs.left | lungs.right
    lesions = lung & (volume.hu > LESION_STAND_IN_HU)
    inputs = MemberInputs(volume, lung, lungs.left, lungs.right, lesions, 58.0, "M")
    start = time.perf_counter()
    member = member_class(module_name).demo(0)
    build_seconds = time.perf_counter() - start
    rss_before = _rss_mb()
    load_before = os.getloadavg()[0]
    if warmup:
        member.predict(inputs)
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        output = member.predict(inputs)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return {
        "member": member.name,
        "module": module_name,
        "threads": torch.get_num_threads(),
        "parameters": _parameters(member),
        "build_seconds": build_seconds,
        "predict_seconds": seconds,
        "predict_cpu_seconds": cpu_seconds,
        "rss_before_predict_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average": [load_before, os.getloadavg()[0]],
        "series_shape": list(volume.hu.shape),
        "p_covid": output.p_covid,
        "p_severe": output.p_severe,
    }


def _row(result: dict[str, Any]) -> str:
    params = "n/a" if result["parameters"] is None else f"{result['parameters'] / 1e6:.2f} M"
    times = ", ".join(f"{s:.1f}" for s in result["predict_seconds"])
    cpu = ", ".join(f"{s:.1f}" for s in result["predict_cpu_seconds"])
    load = " -> ".join(f"{v:.1f}" for v in result["load_average"])
    return (
        f"| {result['member']} | {params} | {result['threads']} | {times} | {cpu} | "
        f"{result['rss_before_predict_mb']:.0f} | {result['peak_rss_mb']:.0f} | {load} |"
    )


def main() -> None:
    """Run every member in its own process and print a markdown table (and JSON lines with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", help="module names under models.stoic (baseline, code1055, ...)")
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES, help="DICOM series folder")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch intra-op thread counts to run")
    parser.add_argument("--repeats", type=int, default=1, help="timed predictions per member")
    parser.add_argument("--warmup", action="store_true", help="one untimed prediction first")
    parser.add_argument("--json", type=Path, help="also append one JSON line per run to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.child, args.series, args.threads[0], args.repeats, args.warmup)
        print(json.dumps(result))
        return
    if not args.series.is_dir():
        sys.exit(f"series folder absent: {args.series}")
    print(f"series {args.series.name}; torch {torch.__version__}; numpy {np.__version__}")
    columns = ["member", "parameters", "threads", "predict s (wall)", "predict s (CPU)"]
    columns += ["RSS before predict (MB)", "peak RSS (MB)", "load average"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for threads in args.threads:
        for name in args.members:
            command = [sys.executable, __file__, name, "--child", name, "--series", str(args.series)]
            command += ["--threads", str(threads), "--repeats", str(args.repeats)]
            command += ["--warmup"] if args.warmup else []
            environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
            if done.returncode != 0:
                print(f"| {name} | failed: {done.stderr.strip().splitlines()[-1:]} |")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(_row(result), flush=True)
            if args.json is not None:
                with args.json.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
