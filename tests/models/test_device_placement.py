"""The learned models run on the configured device, and their inputs are copied there, checked without a GPU.

A model built on the meta device has parameters without data, and a meta tensor fed to it gives
meta outputs, so any input a member forgot to copy (still on the CPU) shows up as a CPU tensor at a
network's door.  A forward pre-hook on every network checks each tensor it receives; a forward
hook replaces the network's meta output with zeros on the CPU, so that the member reads a number
off it and goes on to its next network: every network of every member is reached.

The CUDA branch of :func:`models.device.to_device` (pinned memory, asynchronous copy) and the
autocast decision of :func:`models.device.inference_context` are checked with spies in place of
the CUDA calls.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from models.corads.ensemble import CoradsEnsemble
from models.corads.preprocessing import PreprocessingConfig
from models.device import folded_for_inference, inference_context, memory_format_for, place_network, to_device
from models.i3dr import I3dr
from models.i3dr.model import BackboneSpec
from models.i3dr.preprocessing import I3drPreprocessingConfig
from models.registry import STOIC_MEMBERS
from models.runtime import ModelProvider
from models.stoic import catalog
from models.stoic.flyingbird import FlyingBirdResNet
from models.stoic.member import MemberInputs, MemberOutput
from models.stoic.mobilenet import MobileNetV3Large
from models.weights import WeightStore
from models.zoo import InceptionV1, ResNet
from tests.models.stoic.synthetic import synthetic_case
from tests.models.stoic_volumes.conftest import SMALL_UAUX2_NETWORKS
from tests.small_models import SMALL_DENSENET, SMALL_STOIC_MEMBERS

META = torch.device("meta")
CUDA = torch.device("cuda")  # a descriptor only: nothing here touches a GPU

#: Every member at a size that runs in well under a second (tests/small_models.py, plus the two
#: members the default ensemble does not use, as their own tests shrink them).
SMALL: dict[str, dict[str, Any]] = {
    **SMALL_STOIC_MEMBERS,
    "stoic_uaux2": {
        "spacing_mm": (8.0, 8.0, 8.0),
        "severity_shape": (16, 16, 16),
        "covid_shape": (16, 16, 16),
        **SMALL_UAUX2_NETWORKS,
        "bag": 1,
    },
    "stoic_etro": {"depths": (1, 1, 1, 1), "dims": (8, 8, 8, 8), "convnext_input": (32, 32, 32)},
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here runs with one intra-op thread (``one_thread`` of ``tests/models/conftest.py``)."""


@pytest.fixture(scope="module")
def inputs() -> MemberInputs:
    """A synthetic severe COVID-19 case with lungs, lesions, age and sex: every member runs all its networks."""
    volume, right, left, lesions = synthetic_case(np.random.default_rng(3), covid=1, severe=1)
    return MemberInputs(volume, left | right, left, right, lesions, age_years=58.0, sex="M")


def test_small_members_cover_the_registry() -> None:
    assert set(SMALL) == set(STOIC_MEMBERS)


def networks_of(member: object) -> list[nn.Module]:
    """The networks a member holds, wherever it keeps them (a dict of lists, a list, attributes)."""

    def walk(value: object) -> Iterator[nn.Module]:
        if isinstance(value, nn.Module):
            yield value
        elif isinstance(value, Mapping):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                yield from walk(item)

    return list(walk(list(vars(member).values())))


def assert_all_on(module: nn.Module, device: torch.device) -> None:
    """Every parameter and buffer of ``module`` is on ``device``."""
    elsewhere = {
        name: tensor.device
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]
        if tensor.device != device
    }
    assert not elsewhere, f"{len(elsewhere)} tensors not on {device}, e.g. {dict(list(elsewhere.items())[:3])}"


def watch(networks: list[nn.Module], *, stand_in: bool) -> list[int]:
    """Check that every tensor a network receives is on the meta device; count calls per network.

    With ``stand_in``, a network's output, checked to be on the meta device (it ran there), is
    replaced by zeros on the CPU, so that the caller can read numbers off it and reach its next network.
    """
    calls = [0] * len(networks)

    def check(index: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        devices = [value.device for value in (*args, *kwargs.values()) if isinstance(value, Tensor)]
        assert devices and set(devices) == {META}, f"{type(module).__name__} got inputs on {devices}"
        calls[index] += 1

    def readable(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        assert output.device == META, f"{type(module).__name__} ran on {output.device}"
        return torch.zeros(output.shape, dtype=output.dtype)

    for index, network in enumerate(networks):
        network.register_forward_pre_hook(functools.partial(check, index), with_kwargs=True)
        if stand_in:
            network.register_forward_hook(readable)
    return calls


@pytest.mark.parametrize("name", sorted(SMALL))
def test_member_keeps_its_networks_and_copies_every_input_to_its_device(name: str, inputs: MemberInputs) -> None:
    member = catalog.demo_member(name, 0, device=META, **SMALL[name])
    networks = networks_of(member)
    assert networks
    for network in networks:
        assert_all_on(network, META)
    calls = watch(networks, stand_in=True)
    output = member.predict(inputs)
    assert isinstance(output, MemberOutput)
    unreached = [type(network).__name__ for network, count in zip(networks, calls, strict=True) if not count]
    assert not unreached, f"networks never called: {unreached}"


def test_corads_copies_its_input_to_its_device() -> None:
    ensemble = CoradsEnsemble.demo(
        0,
        members=2,
        architecture_overrides=SMALL_DENSENET,
        preprocessing=PreprocessingConfig(spacing_mm=4.0, crop_size=(32, 32), slices=16),
        device=META,
    )
    for network in ensemble.members:
        assert_all_on(network, META)
    calls = watch(ensemble.members, stand_in=True)
    probabilities = ensemble.member_probabilities(torch.zeros(1, *ensemble.preprocessing.input_shape))
    assert calls == [1, 1] and probabilities.device.type == "cpu"


def test_i3dr_copies_its_blocks_to_its_device() -> None:
    size = (16, 16, 16)
    i3dr = I3dr.demo(
        0,
        BackboneSpec("small_3d", {"widths": (4, 8)}),
        preprocessing=I3drPreprocessingConfig(spacing_mm=8.0, size=size),
        device=META,
    )
    assert_all_on(i3dr.a, META)
    assert_all_on(i3dr.b, META)
    calls = watch([i3dr.a.backbone], stand_in=False)
    with pytest.raises((RuntimeError, NotImplementedError), match="meta tensor"):
        i3dr.predict_inputs(torch.zeros(1, *size), torch.zeros(5, 1, *size))
    assert calls == [1]


def test_to_device_on_the_cpu_is_a_plain_to_without_pinning(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pinning(self: Tensor) -> Tensor:
        raise AssertionError("pin_memory called off CUDA")

    monkeypatch.setattr(Tensor, "pin_memory", no_pinning)
    tensor = torch.arange(6.0).reshape(2, 3)
    assert to_device(tensor, torch.device("cpu")) is tensor  # the same numbers: no copy at all
    moved = to_device(tensor, META)
    assert moved.device == META and moved.shape == tensor.shape and moved.dtype == tensor.dtype


class _Spy:
    """Stands in for ``Tensor.pin_memory`` and ``Tensor.to``: records the calls, returns the tensor."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for method in ("pin_memory", "to"):
            monkeypatch.setattr(Tensor, method, self._recorder(method))

    def _recorder(self, method: str) -> Any:
        def record(tensor: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            self.calls.append((method, args, kwargs))
            return tensor

        return record


def test_to_device_on_cuda_pins_the_host_tensor_and_copies_without_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    host = torch.zeros(3)
    spy = _Spy()
    spy.install(monkeypatch)
    to_device(host, CUDA)
    assert spy.calls == [("pin_memory", (), {}), ("to", (CUDA,), {"non_blocking": True})]


def test_to_device_pins_host_tensors_only(monkeypatch: pytest.MonkeyPatch) -> None:
    not_on_host = torch.empty(3, device=META)  # stands for a tensor already on a GPU
    spy = _Spy()
    spy.install(monkeypatch)
    to_device(not_on_host, CUDA)
    assert spy.calls == [("to", (CUDA,), {})]


@pytest.mark.parametrize(
    ("device", "bf16", "autocast"),
    [("cuda", True, True), ("cuda", False, False), ("cpu", True, False), ("meta", True, False)],
)
def test_inference_context_autocasts_to_bf16_on_cuda_only_when_asked(
    device: str, bf16: bool, autocast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, torch.dtype, bool]] = []

    def spy(device_type: str, *, dtype: torch.dtype, enabled: bool) -> contextlib.AbstractContextManager[None]:
        seen.append((device_type, dtype, enabled))
        return contextlib.nullcontext()

    monkeypatch.setattr(torch, "autocast", spy)
    with inference_context(torch.device(device), bf16=bf16):
        assert torch.is_inference_mode_enabled()
    assert seen == [("cuda", torch.bfloat16, autocast)]


def _on_meta(name: str, model: Any) -> None:
    networks = networks_of(model)
    assert networks, f"{name} has no networks"
    for network in networks:
        assert_all_on(network, META)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_provider_builds_stoic_members_on_its_device(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed weights (``load_member``) and generated ones (``demo_member``) both land on the
    provider's device; the demo path is shrunk by wrapping the catalog's own function."""
    store = WeightStore(tmp_path / "weights")
    store.install(catalog.demo_member(name, 1, **SMALL[name]).save(tmp_path / f"{name}.safetensors"), name)
    installed = ModelProvider(store, device="meta").load(name)
    assert installed is not None and installed.provenance == "installed_unvalidated"
    _on_meta(name, installed.model)

    asked: list[object] = []

    def small_demo(member: str, seed: int, *, device: torch.device | str | None = None) -> Any:
        asked.append(device)
        return catalog.demo_member(member, seed, device=device, **SMALL[member])

    monkeypatch.setattr("models.runtime.demo_member", small_demo)
    generated = ModelProvider(None, demo_weights=True, device="meta").load(name)
    assert generated is not None and generated.provenance == "generated_weights"
    assert asked == ["meta"]
    _on_meta(name, generated.model)


def _convolutions(network: nn.Module, kind: type[nn.Module]) -> list[Tensor]:
    return [m.weight for m in network.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_members_hold_their_convolutions_channels_last(name: str) -> None:
    """Every convolution of a member is channels last (3-D: NDHWC, 2-D: NHWC), laid out so, not merely compatible."""
    member = catalog.demo_member(name, 0, **SMALL[name])
    for network in networks_of(member):
        three_d, two_d = _convolutions(network, nn.Conv3d), _convolutions(network, nn.Conv2d)
        assert three_d or two_d, f"{type(network).__name__} has no convolution"
        layout, weights = (torch.channels_last_3d, three_d) if three_d else (torch.channels_last, two_d)
        assert memory_format_for(network) == layout
        assert all(w.is_contiguous(memory_format=layout) for w in weights)
        assert not all(w.is_contiguous() for w in weights if w.shape[1] > 1 and w[0, 0].numel() > 1)


def test_channels_last_gives_the_default_layouts_numbers_within_float_rounding() -> None:
    """The same weights in either layout give the same outputs to float32 rounding (members' fixed-value tests hold)."""
    member = catalog.demo_member("stoic_flyingbird", 0, **SMALL["stoic_flyingbird"])
    placed = networks_of(member)[0]
    default = copy.deepcopy(placed).to(memory_format=torch.contiguous_format)
    assert _convolutions(default, nn.Conv3d)[1].is_contiguous()
    image = torch.randn(1, 1, *SMALL["stoic_flyingbird"]["shape"], generator=torch.Generator().manual_seed(0))
    age = torch.tensor([[0.5]])
    with torch.inference_mode():
        torch.testing.assert_close(placed(image, age), default(image, age), rtol=1e-5, atol=1e-6)


def test_place_network_moves_and_lays_out_once() -> None:
    conv3d = nn.Sequential(nn.Conv3d(2, 4, 3), nn.ReLU(), nn.Conv3d(4, 4, 1))
    conv2d = nn.Sequential(nn.Conv2d(2, 4, 3))
    dense = nn.Sequential(nn.Linear(4, 2))
    assert memory_format_for(conv3d) == torch.channels_last_3d
    assert memory_format_for(conv2d) == torch.channels_last
    assert memory_format_for(dense) == torch.contiguous_format
    placed = place_network(conv3d, META)
    assert placed is conv3d and all(p.device == META for p in placed.parameters())
    weight = place_network(conv2d, torch.device("cpu"))[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def _randomised(network: nn.Module) -> nn.Module:
    """``network`` in eval mode with BatchNorm statistics and affine parameters far from the identity.

    Generated weights have mean 0, variance 1, scale 1 and shift 0, under which folding a
    BatchNorm into the wrong convolution would hardly change the output.
    """
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                for tensor, low, high in (
                    (module.running_mean, -0.5, 0.5),
                    (module.running_var, 0.3, 2.0),
                    (module.weight, 0.5, 1.5),
                    (module.bias, -0.3, 0.3),
                ):
                    assert tensor is not None
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return network.eval()


def _batchnorms(network: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())


FOLDABLE: dict[str, tuple[Any, tuple[tuple[int, ...], ...], int]] = {
    # name: (network builder, input shapes (the image first), BatchNorms the fold leaves)
    "2-D ResNet (hal9000)": (
        lambda: ResNet(2, 3, 2, block="basic", layers=(1, 1, 1, 1), widths=(8, 8, 16, 16)),
        ((2, 3, 64, 64),),
        0,
    ),
    "3-D bottleneck ResNet": (
        lambda: ResNet(3, 1, 2, block="bottleneck", layers=(1, 1, 1, 1), widths=(4, 4, 8, 8)),
        ((1, 1, 16, 32, 32),),
        0,
    ),
    "MobileNetV3 (hal9000)": (lambda: MobileNetV3Large(3, 2, width_mult=0.25), ((2, 3, 64, 64),), 0),
    "Flying Bird ResNet": (
        lambda: FlyingBirdResNet(1, 2, widths=(4, 4, 8, 8), layers=(1, 1, 1, 1)),
        ((1, 1, 32, 32, 32), (1, 1)),  # the image and the age
        0,
    ),
    "I3D (I3Dr, baseline)": (lambda: InceptionV1(3, 3, 2), ((1, 3, 16, 64, 64),), 0),
}


@pytest.mark.parametrize("name", list(FOLDABLE))
def test_a_folded_copy_computes_the_same_and_leaves_the_placed_network_as_loaded(name: str) -> None:
    make, shapes, left = FOLDABLE[name]
    torch.manual_seed(0)
    network = place_network(_randomised(make()), torch.device("cpu"))
    state = {key: value.clone() for key, value in network.state_dict().items()}
    image, *side = (torch.rand(shape) for shape in shapes)
    x = (image.contiguous(memory_format=memory_format_for(network)), *side)
    folded = folded_for_inference(network)
    with torch.inference_mode():
        expected, got = network(*x), folded(*x)
    expected, got = (v if isinstance(v, Tensor) else v[0] for v in (expected, got))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert _batchnorms(folded) == left < _batchnorms(network)
    assert state.keys() == network.state_dict().keys()
    unchanged = all(torch.equal(state[key], value) for key, value in network.state_dict().items())
    assert unchanged, "the placed network stays as loaded (weights are saved and compared from it)"
    for module in folded.modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d) and module.weight.dim() == 5:
            assert module.weight.is_contiguous(memory_format=torch.channels_last_3d), "its layout is kept"


def test_a_bn_not_after_a_convolution_is_not_folded_and_a_network_without_one_is_returned_as_it_is() -> None:
    pre_activation = nn.Sequential(nn.BatchNorm3d(2), nn.ReLU(), nn.Conv3d(2, 2, 3)).eval()
    assert folded_for_inference(pre_activation) is pre_activation
    untracked = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2, track_running_stats=False)).eval()
    assert folded_for_inference(untracked) is untracked, "batch statistics at inference time cannot be folded"
    with pytest.raises(ValueError, match="eval mode"):
        folded_for_inference(nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2)))
