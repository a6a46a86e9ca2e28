"""CPU forward time of one CO-RADS ensemble member, with and without channels-last 3D.

One member is the thesis' 3D DenseNet-201 with one output (T§3.3.3, Table 3.3) on the input of
T§3.4: 3 x 128 x 240 x 240.  The same weights and input run in the default (NCDHW contiguous)
memory format and in channels-last 3D (NDHWC), after one warm-up pass each, alternating so that
changes in machine load hit both alike; the script prints every pass, the median per format,
their ratio, the largest output difference (the two must compute the same function) and the
load average (the machine may be shared).  The ensemble (``models.corads.ensemble``) uses channels-last 3D on
CPU because of this measurement; a 10-member ensemble costs ten such passes per series.

Run with the project's interpreter::

    .venv/bin/python benchmarks/corads_forward.py --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import time

import torch

from models.zoo import build, count_flops

INPUT_SHAPE = (3, 128, 240, 240)


def _one_pass(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Seconds of one inference pass, and its output."""
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(x)
    return time.perf_counter() - start, out


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per memory format (after a warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    contiguous = build("densenet201_3d", num_outputs=1).eval()
    channels_last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    x = torch.rand(1, *INPUT_SHAPE)
    x_channels_last = x.contiguous(memory_format=torch.channels_last_3d)
    flops = count_flops(contiguous, INPUT_SHAPE)
    print(f"densenet201_3d, 1 output, input 1x{'x'.join(map(str, INPUT_SHAPE))}, {flops / 1e11:.2f}e11 FLOPs")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} timed passes per format")
    print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    _one_pass(contiguous, x)
    _one_pass(channels_last, x_channels_last)
    # Interleaved, so that a change in machine load affects both formats alike.
    times: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    for _ in range(args.repeats):
        seconds, out_contiguous = _one_pass(contiguous, x)
        times["contiguous"].append(seconds)
        seconds, out_channels_last = _one_pass(channels_last, x_channels_last)
        times["channels_last"].append(seconds)
    median = {name: statistics.median(values) for name, values in times.items()}
    fastest = {name: min(values) for name, values in times.items()}
    for name, label in (("contiguous", "contiguous (NCDHW)      "), ("channels_last", "channels-last 3D (NDHWC)")):
        passes = ", ".join(f"{t:.2f}" for t in times[name])
        rate = flops / fastest[name] / 1e9
        print(f"{label}: {passes} s; median {median[name]:.2f} s, fastest {fastest[name]:.2f} s ({rate:.0f} GFLOP/s)")
    # On a shared machine other load only adds time, so the fastest pass is the cleanest estimate.
    print(
        f"ratio contiguous / channels-last: {median['contiguous'] / median['channels_last']:.2f} (medians), "
        f"{fastest['contiguous'] / fastest['channels_last']:.2f} (fastest passes)"
    )
    print(f"largest output difference: {float((out_contiguous - out_channels_last).abs().max()):.2e}")
    print(f"10-member ensemble estimate: {10 * min(fastest.values()):.0f} s per series")
    print(f"load average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
