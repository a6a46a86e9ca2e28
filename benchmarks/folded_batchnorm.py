"""CPU forward time of each network of the pipeline with its BatchNorms folded into the convolutions before them.

Issue 19, part 1, the BatchNorm-folding lever (adopted for hal9000, Flying Bird and I3Dr through
``models.device.folded_for_inference``; see benchmarks/README.md).  This script folds by adjacency,
to measure every network alike; the pipeline folds only declared pairs.
In eval mode ``bn(conv(x))`` equals one convolution with per-channel scaled weights and a bias
(torch's ``fuse_conv_bn_eval``), which saves one pass over the activations per pair.  For each
network named on the command line (default: all of ``benchmarks/channels_last.py``'s, at the same
inputs), in the layout the pipeline gives it (channels last through ``models.device.place_network``;
the lobe and lesion U-Nets in the default layout), the script

1. gives every BatchNorm random running statistics and affine parameters (generated weights have
   mean 0 and variance 1, which would make a wrong fold look right);
2. folds a copy: every BatchNorm registered right after a convolution in the same parent module
   (``nn.Sequential`` steps, and blocks whose forward is ``bn(conv(x))``); the largest output
   difference printed at the end is what shows the pairs were real;
3. times ``--repeats`` passes of each, interleaved after a warm-up (the peer is the unfolded
   network, in the same run), and prints both medians, their ratio and the output difference.

Run with the project's interpreter on an otherwise idle machine::

    .venv/bin/python benchmarks/folded_batchnorm.py [corads i3dr ...] [--repeats 3]
"""

from __future__ import annotations

import copy
import itertools
import os
import statistics

import torch
from channels_last import (
    CASES,
    _laid_out,
    interleaved_passes,
    network_arguments,
    parse_network_arguments,
    pipeline_layout,
)
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _batchnorms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def randomise_statistics(network: nn.Module) -> None:
    """Running statistics and affine parameters away from the identity, so a wrong fold shows."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for norm in _batchnorms(network):
            for tensor, low, high in (
                (norm.running_mean, -0.2, 0.2),
                (norm.running_var, 0.5, 1.5),
                (norm.weight, 0.8, 1.2),
                (norm.bias, -0.1, 0.1),
            ):
                if tensor is not None:
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)


def folded(network: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``network`` with every BatchNorm registered right after a convolution folded into it; how many."""
    copied = copy.deepcopy(network)
    count = 0
    for module in list(copied.modules()):
        for (conv_name, conv), (norm_name, norm) in itertools.pairwise(list(module.named_children())):
            if isinstance(conv, nn.modules.conv._ConvNd) and isinstance(norm, nn.modules.batchnorm._BatchNorm):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
                count += 1
    return copied, count


def measure(name: str, repeats: int) -> None:
    """Time one network unfolded and folded, interleaved, and print the comparison."""
    make_network, make_inputs = CASES[name]
    torch.manual_seed(0)
    network = make_network().eval()
    randomise_statistics(network)
    layout = pipeline_layout(name, network)
    network = network.to(memory_format=layout)  # type: ignore[call-overload]
    fused, count = folded(network)
    fused = fused.to(memory_format=layout)  # type: ignore[call-overload]
    total = len(_batchnorms(network))
    print(f"{name}: {count} of {total} BatchNorms folded; load {os.getloadavg()[0]:.1f}")
    if count == 0:
        return
    inputs = _laid_out(make_inputs(), layout)
    times, outputs = interleaved_passes({"unfolded": (network, inputs), "folded": (fused, inputs)}, repeats)
    for key, label in (("unfolded", "unfolded"), ("folded", "folded  ")):
        passes = ", ".join(f"{t:.2f}" for t in times[key])
        print(f"  {label}: {passes} s; median {statistics.median(times[key]):.2f} s")
    difference = float((outputs["unfolded"].float() - outputs["folded"].float()).abs().max())
    scale = float(outputs["unfolded"].float().abs().max())
    print(
        f"  ratio unfolded / folded {statistics.median(times['unfolded']) / statistics.median(times['folded']):.2f} "
        f"(medians); largest output difference {difference:.1e} (largest output {scale:.2g}); "
        f"load {os.getloadavg()[0]:.1f}"
    )


def main() -> None:
    """Measure and print."""
    args = parse_network_arguments(network_arguments(__doc__.splitlines()[0]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} timed passes per variant")
    for name in args.networks or CASES:
        measure(name, args.repeats)


if __name__ == "__main__":
    main()
