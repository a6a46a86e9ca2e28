"""CPU forward time of each convolutional network of the pipeline in the default layout and in channels last.

For each network named on the command line (default: all), the same weights and input run in the
default (contiguous) memory format and in the channels-last format ``models.device.memory_format_for``
gives it (NDHWC for 3-D convolutions, NHWC for 2-D ones), after one warm-up pass each, alternating
so that changes in machine load hit both alike.  Inputs are laid out as the model code lays them
out (a 5-D input of a 3-D network in channels-last 3D; hal9000's slice stacks as they come, the
network's weights deciding).  Printed per network: every pass, the median and fastest per format,
their ratio, the largest output difference (the two must compute the same function to float
rounding) and the load average (the machine may be shared).  The peer is the other layout, in the
same run.  The pipeline uses channels last for every network that the model code places with
``models.device.place_network`` (CO-RADS, the STOIC2021 members, I3Dr); the lobe and lesion U-Nets
keep the default.

Networks, each at the input its model runs on: ``corads`` (one of CO-RADS's ten 3D DenseNet-201s,
3 x 128 x 240 x 240, T§3.4), ``flyingbird`` (one of Flying Bird's ResNets, 1 x 256^3, 40 passes per
series), ``code1055`` (one Code 1055 ConvNeXt, 1 x 224^3, 5 passes), ``i3dr`` (the I3Dr backbone,
3 x 240^3, 6 passes), ``hal9000_mobilenet`` and ``hal9000_resnet`` (one of hal9000's networks on a
stack of 32 slices of 3 x 256 x 256, 9 views each), ``simonj_vit`` (one ViT-L/16 on 8 slices of
3 x 224 x 224), ``lobes`` (the lobe U-Net on one 128^3 patch), ``lesions`` (the lesion nnU-Net on one
patch).

Run with the project's interpreter::

    .venv/bin/python benchmarks/channels_last.py [corads flyingbird ...] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.device import memory_format_for  # noqa: E402
from models.i3dr.model import build_model_b  # noqa: E402
from models.segmentation import build_lesion_network, build_lobe_network  # noqa: E402
from models.segmentation.nnunet import CORADS_NNUNET_PATCH  # noqa: E402
from models.stoic.code1055 import Code1055Config, StoicCode1055  # noqa: E402
from models.stoic.flyingbird import FlyingBirdConfig, StoicFlyingBird  # noqa: E402
from models.stoic.hal9000 import HalConfig  # noqa: E402
from models.stoic.hal9000 import build_network as build_hal_network  # noqa: E402
from models.stoic.vit import VisionTransformer  # noqa: E402
from models.zoo import build  # noqa: E402

Case = tuple[Callable[[], nn.Module], Callable[[], tuple[Tensor, ...]]]

CASES: dict[str, Case] = {
    "corads": (lambda: build("densenet201_3d", num_outputs=1), lambda: (torch.rand(1, 3, 128, 240, 240),)),
    "flyingbird": (
        lambda: StoicFlyingBird.build_network(FlyingBirdConfig(), "covid"),
        lambda: (torch.rand(1, 1, 256, 256, 256), torch.full((1, 1), 0.5)),
    ),
    "code1055": (
        lambda: StoicCode1055.build_network(Code1055Config(), "fold"),
        lambda: (torch.rand(1, 1, 224, 224, 224),),
    ),
    "i3dr": (lambda: build_model_b().backbone, lambda: (torch.rand(1, 3, 240, 240, 240),)),
    "hal9000_mobilenet": (
        lambda: build_hal_network("mobilenet_v3_large", HalConfig()),
        lambda: (torch.rand(1, 32, 3, 256, 256),),
    ),
    "hal9000_resnet": (lambda: build_hal_network("resnet18", HalConfig()), lambda: (torch.rand(1, 32, 3, 256, 256),)),
    "simonj_vit": (VisionTransformer, lambda: (torch.rand(8, 3, 224, 224),)),
    "lobes": (build_lobe_network, lambda: (torch.rand(1, 1, 128, 128, 128),)),
    "lesions": (lambda: build_lesion_network("nnunet"), lambda: (torch.rand(1, 1, *CORADS_NNUNET_PATCH),)),
}


#: Networks the pipeline runs in the default layout (they are not placed through place_network).
DEFAULT_LAYOUT = frozenset({"lobes", "lesions"})


def pipeline_layout(name: str, network: nn.Module) -> torch.memory_format:
    """The memory layout the pipeline runs network ``name`` in."""
    return torch.contiguous_format if name in DEFAULT_LAYOUT else memory_format_for(network)


def first_output(output: Tensor | tuple[Tensor, ...]) -> Tensor:
    """A network's output, or the first of its outputs."""
    return output if isinstance(output, Tensor) else output[0]


def interleaved_passes(
    variants: dict[str, tuple[nn.Module, tuple[Tensor, ...]]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, Tensor]]:
    """Seconds of ``repeats`` passes of each variant (network, inputs), one of each per round after a warm-up.

    Alternating spreads changes in machine load over all variants alike.  Returns the seconds per
    variant and each variant's last output.
    """
    for network, inputs in variants.values():
        _one_pass(network, inputs)
    times: dict[str, list[float]] = {key: [] for key in variants}
    outputs: dict[str, Tensor] = {}
    for _ in range(repeats):
        for key, (network, inputs) in variants.items():
            seconds, output = _one_pass(network, inputs)
            times[key].append(seconds)
            outputs[key] = first_output(output)
    return times, outputs


def _laid_out(inputs: tuple[Tensor, ...], layout: torch.memory_format) -> tuple[Tensor, ...]:
    """The inputs as the model code passes them: those of the layout's rank converted, others as they are."""
    rank = 5 if layout == torch.channels_last_3d else 4
    return tuple(x.contiguous(memory_format=layout) if x.dim() == rank else x for x in inputs)


def _one_pass(model: nn.Module, inputs: tuple[Tensor, ...]) -> tuple[float, Tensor]:
    """Seconds of one inference pass, and its output."""
    start = time.perf_counter()
    with torch.inference_mode():
        out = model(*inputs)
    return time.perf_counter() - start, out


def measure(name: str, repeats: int) -> None:
    """Time one network in the default layout and in channels last, interleaved, and print the comparison."""
    make_network, make_inputs = CASES[name]
    torch.manual_seed(0)
    contiguous = make_network().eval()
    layout = memory_format_for(contiguous)
    channels_last = copy.deepcopy(contiguous).to(memory_format=layout)  # type: ignore[call-overload]
    inputs = make_inputs()
    inputs_channels_last = _laid_out(inputs, layout)
    print(f"{name}: input {' + '.join('x'.join(map(str, x.shape)) for x in inputs)}; load {os.getloadavg()[0]:.1f}")
    times, outputs = interleaved_passes(
        {"contiguous": (contiguous, inputs), "channels_last": (channels_last, inputs_channels_last)}, repeats
    )
    median = {k: statistics.median(v) for k, v in times.items()}
    fastest = {k: min(v) for k, v in times.items()}
    for key, label in (("contiguous", "default      "), ("channels_last", "channels last")):
        passes = ", ".join(f"{t:.2f}" for t in times[key])
        print(f"  {label}: {passes} s; median {median[key]:.2f} s, fastest {fastest[key]:.2f} s")
    # On a shared machine other load only adds time, so the fastest pass is the cleanest estimate.
    print(
        f"  ratio default / channels-last: {median['contiguous'] / median['channels_last']:.2f} (medians), "
        f"{fastest['contiguous'] / fastest['channels_last']:.2f} (fastest passes); largest output difference "
        f"{float((outputs['contiguous'].float() - outputs['channels_last'].float()).abs().max()):.1e}; "
        f"load {os.getloadavg()[0]:.1f}"
    )


def network_arguments(description: str) -> argparse.ArgumentParser:
    """A command line naming networks of :data:`CASES`, with ``--repeats`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("networks", nargs="*", help=f"any of {', '.join(CASES)} (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per variant (after a warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    return parser


def parse_network_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The parsed command line, unknown networks refused, torch's thread count set."""
    args = parser.parse_args()
    unknown = set(args.networks) - set(CASES)
    if unknown:
        parser.error(f"unknown networks {sorted(unknown)}; choose from {', '.join(CASES)}")
    torch.set_num_threads(args.threads)
    return args


def main() -> None:
    """Measure and print."""
    args = parse_network_arguments(network_arguments(__doc__.splitlines()[0]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} timed passes per layout")
    for name in args.networks or CASES:
        measure(name, args.repeats)


if __name__ == "__main__":
    main()
