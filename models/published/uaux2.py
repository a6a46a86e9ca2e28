"""uaux2's Keras models (AUCMEDI 0.4.0 on classification_models_3D), read from HDF5 without TensorFlow.

What the authors' inference loads (UX ``inference/process.py``, ``algorithm/aucmedi/inference.py``,
``algorithm/aucmedi/interface.py``): ``setup_aucmedi`` gives each path to AUCMEDI's
``Neural_Network.load``, i.e. ``tf.keras.models.load_model`` of a full-model HDF5 file:

* ``PATH_MODEL_AUCMEDI_MC = /opt/algorithm/models/model.aucmedi.mc.hdf5``: the 3-class COVID-19
  model, AUCMEDI's ``3D.ResNet34`` (classification_models_3D ``resnet34`` without top, then
  ``avg_pool``, an unnamed ``Dense(512)``, dropout and ``Dense(3, name="preds")``; trained by UX
  ``algorithm/aucmedi/training.py``);
* ``PATH_MODEL_AUCMEDI = /opt/algorithm/artifact/models.metadata.severity.densenet``, every
  ``*best.val_loss.hdf5`` in it: the severity bag, one file per 95/5 split that the final-phase
  training container finished (UX ``training/train.py``, ``do_learning_process``, which names them
  ``3D.DenseNet121.metadata.split{i}.model.best.val_loss.hdf5``; a split still training is
  ``...best.unfinished.val_loss.hdf5``, which the glob leaves out); each is UX
  ``omtrta/densenet.py`` ``Architecture_DenseNet121``: classification_models_3D ``densenet121``
  without top, ``avg_pool``, unnamed ``Dense(512)``, the metadata concatenated, unnamed
  ``Dense(512)`` and ``Dense(256)``, ``Dense(2, name="preds")``.

Neither is in the repository (:data:`MISSING`), so this format records no published hash; a site
that has the files (from the authors) installs them with this module.

Keras' HDF5 layout (``save_weights_to_hdf5_group``): the weights live under ``model_weights`` in a
full-model file (``ModelCheckpoint`` and ``model.save``, as the authors wrote them) or at the root
of a ``save_weights`` file; that group's attribute ``layer_names`` lists the layers, each layer's
group has ``weight_names`` (``"<layer>/<variable>:0"``) and one dataset per name, so a kernel of
layer ``conv1/conv`` is ``model_weights/conv1/conv/conv1/conv/kernel:0``.  The file is opened
read-only with ``h5py``; its ``model_config`` (JSON) and optimizer state are not read.

Layer names: read from classification_models_3D's ``densenet.py`` and ``resnet.py`` (the Keras
``applications`` names made 3D: ``conv1/conv``, ``conv2_block1_0_bn``, ``pool2_conv``, ``bn``;
``bn_data``, ``conv0``, ``stage1_unit1_bn1``, ``stage1_unit1_sc``...), the heads from UX
``omtrta/densenet.py`` and AUCMEDI 0.4's ``architectures/volume/resnet34.py``; TensorFlow is not
installed here, so no model was instantiated: the committed name lists
(``tests/models/published/formats/uaux2_*.json``) were written from that source by hand.  The
residual uncertainty is the unnamed head layers: Keras names them ``dense``, ``dense_1``,
``dense_2`` from a per-process counter, and each training run built its model in a fresh process,
but a file whose counter started higher (``dense_3``...) is read too: the unnamed dense layers
are taken in their counter's order (:func:`renumber_unnamed_dense`).

Conversion: Conv3D kernels ``(kd, kh, kw, in, out)`` become ``(out, in, kd, kh, kw)`` (both
frameworks correlate, and Keras' channels-last ``(z, y, x)`` axes are our ``[z, y, x]``); Dense
kernels ``(in, out)`` become ``(out, in)``; BatchNormalization ``gamma``, ``beta``,
``moving_mean``, ``moving_variance`` become ``weight``, ``bias``, ``running_mean``,
``running_var`` (``bn_data`` has no ``gamma``: ``scale=False``; its ``beta`` is
``bn_data.shift``).  Our modules use the authors' epsilons: 1.001e-5 in the DenseNet
(classification_models_3D ``densenet.py``) and 2e-5 in the ResNet (``resnet.py``,
``get_bn_params``), not Keras' default 1e-3.  ``num_batches_tracked`` (PyTorch only) stays 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.published.format import PublishedFormat, PublishedFormatError, Repository, match_state
from models.stoic.uaux2 import StoicUaux2, Uaux2Config

__all__ = [
    "BAG_FOLDER",
    "COVID_FILE",
    "FORMAT",
    "MISSING",
    "checkpoint_paths",
    "convert_keras_state",
    "densenet_layers",
    "expected_keras_state",
    "read_keras_weights",
    "renumber_unnamed_dense",
    "resnet_layers",
]

REPOSITORY = Repository(
    name="DIAGNijmegen/stoic2021-finalphase-submission-uaux2",
    url="https://github.com/DIAGNijmegen/stoic2021-finalphase-submission-uaux2",
    licence="GPL-3.0",
    commit="9df4271112dc2493c43156613014c0e77e33ae96",
)
#: The severity bag's folder (UX ``process.py`` ``PATH_MODEL_AUCMEDI``) and its files' pattern.
BAG_FOLDER = "models.metadata.severity.densenet"
_BAG_GLOB = "*best.val_loss.hdf5"
#: The COVID-19 model (UX ``process.py`` ``PATH_MODEL_AUCMEDI_MC``).
COVID_FILE = "model.aucmedi.mc.hdf5"
MISSING = (
    "every trained model: the repository (commit 9df4271) holds no .hdf5 file. The severity bag "
    "(artifact/models.metadata.severity.densenet/*best.val_loss.hdf5, as many 95/5 splits as the final-phase "
    "training finished) was never committed (inference/artifact holds only a Readme), and the COVID-19 model "
    "model.aucmedi.mc.hdf5 was downloaded from the University of Augsburg's media store when the inference image "
    "was built (inference/Dockerfile), so no published hash exists for either; the repository's only Git LFS file "
    "is an I3D Kinetics initialisation (algorithm/i3d/model_rgb.pth) that the submission does not use. The ILR "
    "U-Net (model.miscnn.hdf5) and lung U-Net are replaced in this pipeline by its own masks."
)

#: Our parameter or buffer name for each Keras variable, per kind of layer.
_VARIABLES: dict[str, dict[str, str]] = {
    "conv": {"kernel": "weight"},
    "bn": {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"},
    "bn_shift": {"beta": "shift", "moving_mean": "running_mean", "moving_variance": "running_var"},
    "dense": {"kernel": "weight", "bias": "bias"},
}
_UNNAMED_DENSE = re.compile(r"^dense(?:_(\d+))?$")
_SPLIT = re.compile(r"\.split(\d+)\.")


def densenet_layers(config: Uaux2Config) -> dict[str, tuple[str, str]]:
    """Keras layer -> (our module, kind) for a severity model, in the authors' construction order
    (classification_models_3D ``DenseNet``, ``dense_block``, ``conv_block``, ``transition_block``;
    UX ``omtrta/densenet.py`` head)."""
    layers = {"conv1/conv": ("features.conv0", "conv"), "conv1/bn": ("features.norm0", "bn")}
    last = len(config.block_config) - 1
    for b, count in enumerate(config.block_config):
        for j in range(1, count + 1):
            ours, keras = f"features.denseblock{b + 1}.denselayer{j}.layers", f"conv{b + 2}_block{j}"
            layers[f"{keras}_0_bn"] = (f"{ours}.norm1", "bn")
            layers[f"{keras}_1_conv"] = (f"{ours}.conv1", "conv")
            layers[f"{keras}_1_bn"] = (f"{ours}.norm2", "bn")
            layers[f"{keras}_2_conv"] = (f"{ours}.conv2", "conv")
        if b < last:
            layers[f"pool{b + 2}_bn"] = (f"features.transition{b + 1}.norm", "bn")
            layers[f"pool{b + 2}_conv"] = (f"features.transition{b + 1}.conv", "conv")
    layers["bn"] = ("features.norm5", "bn")
    layers.update(
        {
            "dense": ("image_fc", "dense"),
            "dense_1": ("fc1", "dense"),
            "dense_2": ("fc2", "dense"),
            "preds": ("out", "dense"),
        }
    )
    return layers


def resnet_layers(config: Uaux2Config) -> dict[str, tuple[str, str]]:
    """Keras layer -> (our module, kind) for the COVID-19 model (classification_models_3D
    ``ResNet``, ``residual_conv_block``, ``handle_block_names``; AUCMEDI ``3D.ResNet34`` head)."""
    layers = {"bn_data": ("bn_data", "bn_shift"), "conv0": ("conv0", "conv"), "bn0": ("bn0", "bn")}
    index = 0
    for stage, count in enumerate(config.resnet_layers):
        for unit in range(count):
            keras = f"stage{stage + 1}_unit{unit + 1}_"
            layers[f"{keras}bn1"] = (f"blocks.{index}.bn1", "bn")
            if unit == 0:  # cut="post": the first unit of every stage projects its shortcut
                layers[f"{keras}sc"] = (f"blocks.{index}.shortcut", "conv")
            layers[f"{keras}conv1"] = (f"blocks.{index}.conv1", "conv")
            layers[f"{keras}bn2"] = (f"blocks.{index}.bn2", "bn")
            layers[f"{keras}conv2"] = (f"blocks.{index}.conv2", "conv")
            index += 1
    layers.update({"bn1": ("bn1", "bn"), "dense": ("fc", "dense"), "preds": ("out", "dense")})
    return layers


def _to_keras_shape(shape: list[int]) -> list[int]:
    """Our shape as Keras stores it: conv ``(out, in, kd, kh, kw)`` -> ``(kd, kh, kw, in, out)``,
    dense ``(out, in)`` -> ``(in, out)``, vectors unchanged."""
    if len(shape) == 5:
        return [*shape[2:], shape[1], shape[0]]
    return shape[::-1]


def _from_keras(value: Tensor) -> Tensor:
    """A Keras array in our layout (the inverse of :func:`_to_keras_shape`), contiguous."""
    if value.ndim == 5:
        return value.permute(4, 3, 0, 1, 2).contiguous()
    if value.ndim == 2:
        return value.t().contiguous()
    return value


def _mapping(layers: Mapping[str, tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """``("<layer>/<variable>", "<our key>")`` for every weight, in layer order."""
    for layer, (module, kind) in layers.items():
        for variable, ours in _VARIABLES[kind].items():
            yield f"{layer}/{variable}", f"{module}.{ours}"


def expected_keras_state(layers: Mapping[str, tuple[str, str]], network: nn.Module) -> dict[str, list[int]]:
    """``"<layer>/<variable>"`` -> the shape Keras stores, from ``network``'s own shapes.

    Raises
    ------
    KeyError
        If the layer table names a tensor ``network`` does not have (a programming error).
    """
    state = network.state_dict()
    return {keras: _to_keras_shape(list(state[ours].shape)) for keras, ours in _mapping(layers)}


def _attribute_list(group: Any, name: str) -> list[str]:
    """A Keras string-list attribute, also when Keras split it (``name0``, ``name1``... past 64 KiB)."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
    return [item.decode("utf8") if isinstance(item, bytes) else str(item) for chunk in chunks for item in chunk]


def read_keras_weights(path: Path) -> dict[str, Tensor]:
    """Every weight of a Keras HDF5 file as ``"<layer>/<variable>"`` -> float32 tensor.

    ``<variable>`` is the last part of the stored weight name without ``:0`` (``kernel``,
    ``gamma``...), so the scope Keras put before it does not matter.

    Raises
    ------
    PublishedFormatError
        If h5py is missing, the file is not HDF5, or it holds no Keras ``layer_names``.
    """
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise PublishedFormatError("reading Keras .hdf5 files needs the h5py package (pip install h5py)") from exc
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise PublishedFormatError(f"{path} is not an HDF5 file ({exc})") from exc
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        layer_names = _attribute_list(root, "layer_names")
        if not layer_names:
            raise PublishedFormatError(f"{path} is HDF5 but holds no Keras weights (no layer_names attribute)")
        weights: dict[str, Tensor] = {}
        for layer in layer_names:
            group = root[layer]
            for weight_name in _attribute_list(group, "weight_names"):
                variable = weight_name.rsplit("/", 1)[-1].split(":", 1)[0]
                array = np.asarray(group[weight_name], dtype=np.float32)
                weights[f"{layer}/{variable}"] = torch.from_numpy(array)
    return weights


def renumber_unnamed_dense(weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``weights`` with the unnamed Dense layers renamed ``dense``, ``dense_1``... in their Keras
    counter's order (a model built after others in one process starts at ``dense_3``...)."""
    layers = {key.rsplit("/", 1)[0] for key in weights}
    unnamed = sorted(
        (int(match.group(1) or 0), layer) for layer in layers if (match := _UNNAMED_DENSE.match(layer)) is not None
    )
    renamed = {layer: "dense" if i == 0 else f"dense_{i}" for i, (_, layer) in enumerate(unnamed)}
    out = {}
    for key, value in weights.items():
        layer, variable = key.rsplit("/", 1)
        out[f"{renamed.get(layer, layer)}/{variable}"] = value
    return out


def convert_keras_state(
    weights: Mapping[str, Tensor], layers: Mapping[str, tuple[str, str]], network: nn.Module, what: str
) -> dict[str, Tensor]:
    """``network``'s full state dict from a Keras file's weights (every one checked and transposed;
    ``num_batches_tracked``, which Keras does not have, 0).  ``network`` may be on the meta device:
    only its names and shapes are used.

    Raises
    ------
    PublishedFormatError
        Naming every missing, unexpected or misshapen Keras weight.
    """
    found = match_state(expected_keras_state(layers, network), renumber_unnamed_dense(weights), what)
    state = {key: torch.zeros((), dtype=torch.long) for key in network.state_dict() if key.endswith("_tracked")}
    for keras, ours in _mapping(layers):
        state[ours] = _from_keras(found[keras])
    return state


def _candidates(path: Path) -> tuple[Path, ...]:
    """Folders that may hold the files: the given one, the inference image's ``/opt/algorithm``
    layout (``models/``, ``artifact/``) and the repository's ``inference/``."""
    return (path, path / "models", path / "artifact", path / "inference" / "artifact", path / "inference" / "models")


def _covid_file(path: Path) -> Path | None:
    return next((c / COVID_FILE for c in _candidates(path) if (c / COVID_FILE).is_file()), None)


def _bag_folder(path: Path) -> Path | None:
    return next((c / BAG_FOLDER for c in _candidates(path) if (c / BAG_FOLDER).is_dir()), None)


def _split_index(file: Path) -> tuple[int, str]:
    match = _SPLIT.search(file.name)
    return (int(match.group(1)) if match else -1, file.name)


def checkpoint_paths(path: Path) -> list[Path]:
    """The COVID-19 model, then the bag's files in split order.

    Raises
    ------
    PublishedFormatError
        If the COVID-19 model, the bag folder or any file in it is missing.
    """
    if path.is_file():
        raise PublishedFormatError(f"{path}: give the folder holding {COVID_FILE} and {BAG_FOLDER}/ (uaux2's layout)")
    covid, bag = _covid_file(path), _bag_folder(path)
    if covid is None or bag is None:
        absent = [name for name, found in ((COVID_FILE, covid), (f"{BAG_FOLDER}/", bag)) if found is None]
        raise PublishedFormatError(f"uaux2's models are incomplete under {path}: no {' and no '.join(absent)}")
    members = sorted(bag.glob(_BAG_GLOB), key=_split_index)
    if not members:
        raise PublishedFormatError(f"{bag} holds no {_BAG_GLOB} file (uaux2's severity bag)")
    return [covid, *members]


def _detect(path: Path) -> bool:
    return path.is_dir() and (_covid_file(path) is not None or _bag_folder(path) is not None)


def _convert(path: Path, out: Path, imported: Mapping[str, Any]) -> Path:
    """Read every Keras file into our networks (strict names and shapes) and write the member file."""
    covid, *bag = checkpoint_paths(path)
    config = replace(Uaux2Config(), bag=len(bag))
    networks: dict[str, list[nn.Module]] = {"severe": [], "covid": []}
    for group, files, layers in (("covid", [covid], resnet_layers(config)), ("severe", bag, densenet_layers(config))):
        for file in files:
            # Built on the meta device and given the file's tensors: no initialisation to overwrite.
            with torch.device("meta"):
                network = StoicUaux2.build_network(config, group)
            state = convert_keras_state(read_keras_weights(file), layers, network, str(file))
            network.load_state_dict(state, strict=True, assign=True)
            networks[group].append(network)
    member = StoicUaux2.trained(
        config,
        networks,
        weights=f"uaux2's Keras models (STOIC2021 final phase): the COVID-19 ResNet-34 and a bag of {len(bag)} "
        "severity DenseNet-121, imported from HDF5",
        imported_from=dict(imported),
    )
    return member.save(out)


FORMAT = PublishedFormat(
    name="uaux2-keras",
    model=StoicUaux2.NAME,
    title="uaux2's Keras HDF5 models: model.aucmedi.mc.hdf5 and models.metadata.severity.densenet/*best.val_loss.hdf5",
    repository=REPOSITORY,
    published=(),
    gives="the complete uaux2 member (P(COVID-19) from the 3-class ResNet-34, P(severe) as the bag mean), "
    "from files obtained from the authors",
    missing=MISSING,
    detect=_detect,
    sources=checkpoint_paths,
    convert=_convert,
    notes=(
        "the bag holds as many severity models as files found (the authors trained as many splits as fitted in "
        "the final phase's time); the member's config records the count",
        "Keras HDF5 is read with h5py, read-only; the file's model_config and optimizer state are ignored",
    ),
)
