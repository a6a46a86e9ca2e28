"""uaux2's Keras HDF5 models: written here in Keras' own layout (names and shapes from the committed
lists, distinct random values), imported, and found transposed in the right place of our networks.

The test's name translation (:func:`our_key`) is written independently of the module's layer
table, from the naming rules of classification_models_3D and MONAI, so that a wrong entry in
either shows up as a value in the wrong place.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from models.published.format import PublishedFormatError
from models.published.uaux2 import (
    BAG_FOLDER,
    COVID_FILE,
    FORMAT,
    checkpoint_paths,
    convert_keras_state,
    densenet_layers,
    read_keras_weights,
)
from models.stoic.uaux2 import StoicUaux2, Uaux2Config

FORMATS = Path(__file__).parent / "formats"
DENSENET = json.loads((FORMATS / "uaux2_densenet121_metadata.json").read_text())
RESNET = json.loads((FORMATS / "uaux2_resnet34.json").read_text())
_VARIABLE = {
    "kernel": "weight",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
    "bias": "bias",
}
_DENSE_LAYER = re.compile(r"^conv(\d)_block(\d+)_(0_bn|1_conv|1_bn|2_conv)$")
_DENSE_PART = {"0_bn": "norm1", "1_conv": "conv1", "1_bn": "norm2", "2_conv": "conv2"}
_RES_LAYER = re.compile(r"^stage(\d)_unit(\d+)_(bn1|conv1|bn2|conv2|sc)$")
_RES_FIRST_BLOCK = [0, *accumulate(Uaux2Config().resnet_layers)]


def split_path(path: str) -> tuple[str, str]:
    """``"<layer>/<layer>/<variable>:0"`` (Keras' dataset path) -> ``(layer, "<layer>/<variable>:0")``."""
    scoped, variable = path.rsplit("/", 1)
    half = len(scoped) // 2
    layer = scoped[:half]
    assert scoped == f"{layer}/{layer}", path
    return layer, f"{layer}/{variable}"


def our_key(path: str, layout: dict[str, list[int]]) -> str:
    """Where a Keras weight of ``layout`` (:data:`DENSENET` or :data:`RESNET`) belongs in our networks."""
    layer, weight = split_path(path)
    variable = _VARIABLE[weight.rsplit("/", 1)[1].removesuffix(":0")]
    if layer == "bn_data":
        return f"bn_data.{'shift' if variable == 'bias' else variable}"
    fixed = {
        "conv1/conv": "features.conv0",
        "conv1/bn": "features.norm0",
        "bn": "features.norm5",
        "preds": "out",
        "conv0": "conv0",
        "bn0": "bn0",
        "bn1": "bn1",
    }
    if layer in fixed:
        return f"{fixed[layer]}.{variable}"
    if layer.startswith("dense"):
        head = {"dense": "image_fc", "dense_1": "fc1", "dense_2": "fc2"} if layout is DENSENET else {"dense": "fc"}
        return f"{head[layer]}.{variable}"
    if match := _DENSE_LAYER.match(layer):
        block, unit, part = int(match.group(1)) - 1, int(match.group(2)), _DENSE_PART[match.group(3)]
        return f"features.denseblock{block}.denselayer{unit}.layers.{part}.{variable}"
    if match := re.match(r"^pool(\d)_(bn|conv)$", layer):
        part = "norm" if match.group(2) == "bn" else "conv"
        return f"features.transition{int(match.group(1)) - 1}.{part}.{variable}"
    match = _RES_LAYER.match(layer)
    assert match is not None, layer
    index = _RES_FIRST_BLOCK[int(match.group(1)) - 1] + int(match.group(2)) - 1
    part = "shortcut" if match.group(3) == "sc" else match.group(3)
    return f"blocks.{index}.{part}.{variable}"


def ours_from_keras(value: np.ndarray) -> np.ndarray:
    """Keras' array in PyTorch's layout: conv ``(kd, kh, kw, in, out)`` -> ``(out, in, kd, kh, kw)``."""
    if value.ndim == 5:
        return np.transpose(value, (4, 3, 0, 1, 2))
    return value.T if value.ndim == 2 else value


def write_keras_file(
    path: Path,
    layout: dict[str, list[int]],
    seed: int,
    *,
    full_model: bool = True,
    rename: dict[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """A Keras HDF5 file (``model.save`` layout, or ``save_weights`` with ``full_model=False``) with
    distinct random values; weightless layers are listed as Keras lists them.  Returns the values
    by their path in ``layout``."""
    rng = np.random.default_rng(seed)
    rename = rename or {}
    values = {key: rng.random(shape, dtype=np.float32) - 0.5 for key, shape in layout.items()}
    layers: dict[str, list[str]] = {"input_1": [], "conv1/relu": []}
    for key in layout:
        layer, weight = split_path(key)
        layers.setdefault(rename.get(layer, layer), []).append(weight.replace(layer, rename.get(layer, layer), 1))
    with h5py.File(path, "w") as handle:
        root = handle.create_group("model_weights") if full_model else handle
        if full_model:
            handle.attrs["model_config"] = b"{}"
            handle.create_group("optimizer_weights")
        root.attrs["layer_names"] = np.array([name.encode() for name in layers], dtype="S")
        for key, value in values.items():
            layer, weight = split_path(key)
            root.require_group(rename.get(layer, layer)).create_dataset(
                weight.replace(layer, rename.get(layer, layer), 1), data=value
            )
        for layer, weights in layers.items():
            root.require_group(layer).attrs["weight_names"] = np.array([w.encode() for w in weights], dtype="S")
    return values


def assert_placed(values: dict[str, np.ndarray], layout: dict[str, list[int]], state: dict[str, torch.Tensor]) -> None:
    """Every Keras value is, transposed, at its place; every tensor of ours but the PyTorch-only
    ``num_batches_tracked`` came from the file."""
    for key, value in values.items():
        assert np.array_equal(state[our_key(key, layout)].numpy(), ours_from_keras(value)), key
    assert {our_key(k, layout) for k in values} == {k for k in state if not k.endswith("num_batches_tracked")}


def test_lists_have_the_authors_counts() -> None:
    """612 DenseNet-121 weights with the metadata head and 180 ResNet-34 weights, as our modules hold."""
    assert len(DENSENET) == 612 and DENSENET["dense_1/dense_1/kernel:0"] == [515, 512]
    assert len(RESNET) == 180 and RESNET["bn_data/bn_data/beta:0"] == [3] and "bn_data/bn_data/gamma:0" not in RESNET


def test_epsilons_are_the_authors() -> None:
    """BatchNorm epsilon 1.001e-5 (DenseNet) and 2e-5 (ResNet), as classification_models_3D, not Keras' 1e-3."""
    config = Uaux2Config()
    densenet, resnet = StoicUaux2.build_network(config, "severe"), StoicUaux2.build_network(config, "covid")
    assert {m.eps for m in densenet.modules() if isinstance(m, torch.nn.BatchNorm3d)} == {1.001e-5}
    assert {m.eps for m in resnet.modules() if isinstance(m, torch.nn.BatchNorm3d)} == {2e-5}


@pytest.mark.parametrize("full_model", [True, False])
def test_densenet_weights_land_transposed(tmp_path: Path, full_model: bool) -> None:
    """Both Keras layouts: each kernel transposed into our DenseNet, BN statistics by name."""
    file = tmp_path / "severity.hdf5"
    values = write_keras_file(file, DENSENET, seed=1, full_model=full_model)
    network = StoicUaux2.build_network(Uaux2Config(), "severe")
    state = convert_keras_state(read_keras_weights(file), densenet_layers(Uaux2Config()), network, str(file))
    assert_placed(values, DENSENET, state)


def test_unnamed_dense_layers_taken_in_counter_order(tmp_path: Path) -> None:
    """A model whose unnamed Dense layers are dense_3/_4/_5 maps them as dense/dense_1/dense_2."""
    file = tmp_path / "severity.hdf5"
    rename = {"dense": "dense_3", "dense_1": "dense_4", "dense_2": "dense_5"}
    values = write_keras_file(file, DENSENET, seed=2, rename=rename)
    network = StoicUaux2.build_network(Uaux2Config(), "severe")
    state = convert_keras_state(read_keras_weights(file), densenet_layers(Uaux2Config()), network, str(file))
    assert_placed(values, DENSENET, state)


def test_missing_or_misshapen_weight_is_named(tmp_path: Path) -> None:
    """A file without one weight, or with another shape, is refused naming it."""
    layout = {k: v for k, v in DENSENET.items() if k != "pool3_conv/pool3_conv/kernel:0"}
    layout["preds/preds/kernel:0"] = [256, 3]
    file = tmp_path / "severity.hdf5"
    write_keras_file(file, layout, seed=3)
    network = StoicUaux2.build_network(Uaux2Config(), "severe")
    with pytest.raises(PublishedFormatError, match=r"pool3_conv/kernel.*preds/kernel has shape \[256, 3\]"):
        convert_keras_state(read_keras_weights(file), densenet_layers(Uaux2Config()), network, str(file))


def test_not_keras_is_refused(tmp_path: Path) -> None:
    """An HDF5 file without Keras weights, and a file that is not HDF5, are refused."""
    empty, text = tmp_path / "empty.hdf5", tmp_path / "text.hdf5"
    h5py.File(empty, "w").close()
    text.write_text("not hdf5")
    for file in (empty, text):
        with pytest.raises(PublishedFormatError):
            read_keras_weights(file)


def test_bag_files_in_split_order(tmp_path: Path) -> None:
    """The COVID-19 model first, then the finished splits by number; an unfinished split is left out,
    as the authors' glob left it out."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / COVID_FILE).touch()
    bag = tmp_path / "artifact" / BAG_FOLDER
    bag.mkdir(parents=True)
    for name in ("split10.model.best.val_loss", "split2.model.best.val_loss", "split3.model.best.unfinished.val_loss"):
        (bag / f"3D.DenseNet121.metadata.{name}.hdf5").touch()
    (tmp_path / "empty").mkdir()
    assert FORMAT.detect(tmp_path) and not FORMAT.detect(tmp_path / "empty")
    assert [p.name for p in checkpoint_paths(tmp_path)] == [
        COVID_FILE,
        "3D.DenseNet121.metadata.split2.model.best.val_loss.hdf5",
        "3D.DenseNet121.metadata.split10.model.best.val_loss.hdf5",
    ]


def test_install_layout_converts_to_the_member(tmp_path: Path) -> None:
    """The inference image's layout (models/ and artifact/) becomes the member: the ResNet-34 and a
    bag of one DenseNet, every tensor in place, the bag size in the config, the record in the card."""
    (tmp_path / "models").mkdir()
    bag = tmp_path / "artifact" / BAG_FOLDER
    bag.mkdir(parents=True)
    covid = write_keras_file(tmp_path / "models" / COVID_FILE, RESNET, seed=10)
    severe = write_keras_file(bag / "3D.DenseNet121.metadata.split0.model.best.val_loss.hdf5", DENSENET, seed=20)
    out = FORMAT.convert(tmp_path, tmp_path / "member.safetensors", {"format": FORMAT.name})
    member = StoicUaux2.from_safetensors(out)
    assert member.config.bag == 1 and member.card["imported_from"] == {"format": FORMAT.name}
    assert_placed(covid, RESNET, member.networks["covid"][0].state_dict())
    assert_placed(severe, DENSENET, member.networks["severe"][0].state_dict())


def test_incomplete_layout_is_refused(tmp_path: Path) -> None:
    """A bag without the COVID-19 model is detected as uaux2's but refused, naming what is absent."""
    (tmp_path / BAG_FOLDER).mkdir()
    assert FORMAT.detect(tmp_path)
    with pytest.raises(PublishedFormatError, match=COVID_FILE):
        checkpoint_paths(tmp_path)
