"""CPU forward time of each network of the pipeline in eager mode and compiled by ``torch.compile``.

Issue 19, part 1, the ``torch.compile`` lever (measured, not adopted: see benchmarks/README.md).
For each network named on the command line (default: all of ``benchmarks/channels_last.py``'s, at
the same inputs), in the memory layout the pipeline gives it (channels last through
``models.device.place_network``; the lobe and lesion U-Nets in the default layout), the script

1. times ``--repeats`` eager passes after a warm-up (the peer, in the same run);
2. compiles its forward pass (``torch.compile``, static shapes) and times the first call (tracing
   and compiling, or loading from the cache), then ``--repeats`` compiled passes;
3. builds a second network of the same class with other weights, compiles it and times its first
   call: the cost a model loaded again (or CO-RADS's next member) pays;
4. prints the ratio eager / compiled (medians) and the largest output difference.

Inductor caches compiled code on disk: ``--cache DIR`` (default: a new temporary folder, i.e. a
cold cache); run twice with the same folder to see the warm cost.  Every network compiles in this
process one after the other, so a later one may find torch's own kernels already built.

Run with the project's interpreter on an otherwise idle machine::

    .venv/bin/python benchmarks/compiled_networks.py [lobes corads ...] [--repeats 3] [--cache DIR]
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import torch
from channels_last import (
    CASES,
    _laid_out,
    _one_pass,
    first_output,
    network_arguments,
    parse_network_arguments,
    pipeline_layout,
)
from torch import nn


def _placed(name: str, seed: int) -> tuple[nn.Module, torch.memory_format]:
    """A new network ``name`` with weights from ``seed``, in the pipeline's layout."""
    make_network, _ = CASES[name]
    torch.manual_seed(seed)
    network = make_network().eval()
    layout = pipeline_layout(name, network)
    return network.to(memory_format=layout), layout  # type: ignore[call-overload]


def compiled(network: nn.Module) -> nn.Module:
    """``network`` with its forward pass compiled (its class, weights and state dict unchanged)."""
    network.forward = torch.compile(network.forward, dynamic=False)  # type: ignore[method-assign]
    return network


def measure(name: str, repeats: int) -> None:
    """Time one network eager and compiled and print the comparison."""
    network, layout = _placed(name, 0)
    inputs = _laid_out(CASES[name][1](), layout)
    print(f"{name}: input {' + '.join('x'.join(map(str, x.shape)) for x in inputs)}; load {os.getloadavg()[0]:.1f}")
    _one_pass(network, inputs)
    eager = []
    for _ in range(repeats):
        seconds, reference = _one_pass(network, inputs)
        eager.append(seconds)
    first, _ = _one_pass(compiled(network), inputs)
    steady = []
    for _ in range(repeats):
        seconds, output = _one_pass(network, inputs)
        steady.append(seconds)
    other, _ = _placed(name, 1)
    other_first, _ = _one_pass(compiled(other), inputs)
    difference = float((first_output(reference).float() - first_output(output).float()).abs().max())
    scale = float(first_output(reference).float().abs().max())
    print(f"  eager:    {', '.join(f'{t:.2f}' for t in eager)} s; median {statistics.median(eager):.2f} s")
    print(f"  compiled: {', '.join(f'{t:.2f}' for t in steady)} s; median {statistics.median(steady):.2f} s")
    print(
        f"  first compiled call {first:.1f} s (compile: {first - statistics.median(steady):.1f} s more), "
        f"same class with other weights {other_first:.1f} s"
    )
    print(
        f"  ratio eager / compiled {statistics.median(eager) / statistics.median(steady):.2f} (medians); largest "
        f"output difference {difference:.1e} (largest output {scale:.2g}); load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    """Measure and print."""
    parser = network_arguments(__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="Inductor's cache folder (default: a new, empty one)")
    args = parse_network_arguments(parser)
    with tempfile.TemporaryDirectory(prefix="lungcds-compile-cache-") as folder:
        cache = args.cache or Path(folder)
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)  # read by Inductor at its first compile
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cache {cache}, {args.repeats} passes")
        for name in args.networks or CASES:
            measure(name, args.repeats)


if __name__ == "__main__":
    main()
