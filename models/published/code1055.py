"""Code 1055's submission checkpoint: ``{"models": [one state dict per fold], "config", "data_transforms"}``.

What the authors' code writes and reads (C1055 ``training/algorithm/training.py``,
``Trainer.save_checkpoint``; ``inference/algorithm/submission.py``, ``StoicAlgorithm.__init__``):

* after every epoch the trainer aggregates, over all runs in its log folder, each fold's best
  epoch (by ``auc_sev2_ema``) and writes ``/output/{run prefix}-{ISO time}.pt`` with
  ``torch.save({"config": config.to_dict(), "data_transforms": val_dataset.tfm_config(),
  "models": [ckp["model_ema"] for each fold]})``: the **EMA** copies (decay 0.995), one per fold
  folder ``cv0``... in the order the folders were found (the submission averages them, so the
  order does not matter); the training container runs two such trainings (``train2gpu.bash``:
  ``forwards`` and ``backwards``), each aggregating both;
* the submission takes ``/opt/algorithm/artifact/*.pt`` sorted by the part of the name after the
  first ``-`` (the time), newest first, loads the first that loads, and for each entry of
  ``checkpoint["models"]`` calls ``get_model(config).load_state_dict(entry)``: strict, into
  ``ConvNeXt3dSTOIC``, whose only submodule is ``main_model`` (a ``ConvNeXt3d``).  So every key
  starts ``main_model.``; there is no ``module.`` (no DataParallel in their training) and no
  ``_orig_mod.`` (torch 1.11, no ``torch.compile``).  ``config`` and ``data_transforms`` are read
  only for the loss's output rule and the preprocessing, which :mod:`models.stoic.code1055`
  implements.

:class:`models.stoic.convnext3d.ConvNeXt3d` keeps the authors' module names, so the mapping is
``main_model.`` removed; the committed list (``tests/models/published/formats/
code1055_convnext_tiny.json``) was dumped from the authors' ``ConvNeXt3dSTOIC`` as the submission
builds it (Tiny, one input channel, 187 tensors, 31 916 450 values), run in a scratch folder with
the unused imports ``timm``, ``einops`` and ``opt_einsum`` stubbed (none of them makes parameters).

The repository publishes no trained checkpoint (:data:`MISSING`).  The checkpoint the code writes
also pickles the training configuration (a ``datetime``, paths) and the transform description,
which ``torch.load(weights_only=True)`` refuses and this pipeline never unpickles: such a file is
refused with :data:`RESAVE_HINT`, the two lines that keep only the state dicts.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.published.format import (
    PublishedFormat,
    PublishedFormatError,
    Repository,
    match_state,
    read_torch_checkpoint,
    strip_prefix,
)
from models.stoic.code1055 import Code1055Config, StoicCode1055

__all__ = ["FORMAT", "MISSING", "RESAVE_HINT", "checkpoint_path", "expected_state"]

REPOSITORY = Repository(
    name="DIAGNijmegen/stoic2021-finalphase-submission-code1055",
    url="https://github.com/DIAGNijmegen/stoic2021-finalphase-submission-code1055",
    licence="GPL-3.0",
    commit="a4f098ab1c8ce77aa03da5753f241cd19df48513",
)
#: What every key of a fold's state dict starts with (``ConvNeXt3dSTOIC.main_model``).
PREFIX = "main_model."
#: The first key of every fold's state dict, searched for by detection.
_FIRST_KEY = b"main_model.downsample_layers.0.0.weight"
MISSING = (
    "the trained folds: the repository (commit a4f098a) holds no checkpoint (inference/artifact has only a Readme; "
    "the rest is code, notebooks and split CSVs). Its only weights, training/pretrained_weights/wa{a..h}, are the "
    "eight chunks of the TCIA/MosMed multitask-pretrained initialisation (pretrained_model_TciaMosmed.pth, "
    "training/Dockerfile), not a model."
)
RESAVE_HINT = (
    "Code 1055's training writes its configuration (a datetime, paths) and transform description into the same "
    "pickle as the weights, which a weights-only load refuses and this pipeline never unpickles. On a machine "
    "where you trust the file, keep only the state dicts and install the new file:\n"
    '    ckpt = torch.load("forwards-<time>.pt", map_location="cpu", weights_only=False)\n'
    '    torch.save({"models": ckpt["models"]}, "code1055-models.pt")'
)


def expected_state(config: Code1055Config | None = None) -> dict[str, list[int]]:
    """Name and shape of every tensor of one fold as the authors' state dict holds it (``main_model.``...;
    built on the meta device: no memory)."""
    with torch.device("meta"):
        network = StoicCode1055.build_network(config or Code1055Config(), "fold")
    return {f"{PREFIX}{key}": list(value.shape) for key, value in network.state_dict().items()}


def _time_key(file: Path) -> str:
    """The submission's sort key: the file name after its first ``-`` (``forwards-2022-04-...``)."""
    return "-".join(file.stem.split("-")[1:])


def checkpoint_path(path: Path) -> Path:
    """The checkpoint the submission would load: ``path`` itself, or the newest ``*.pt`` of the
    folder (or of its ``artifact/`` or ``inference/artifact/``), newest by the submission's rule.

    Raises
    ------
    PublishedFormatError
        If there is no ``.pt`` file there.
    """
    if path.is_file():
        return path
    for folder in (path, path / "artifact", path / "inference" / "artifact"):
        files = sorted((f for f in folder.glob("*.pt") if f.is_file()), key=_time_key, reverse=True)
        if files:
            return files[0]
    raise PublishedFormatError(f"{path} holds no .pt checkpoint (Code 1055's artifact folder)")


def fold_states(file: Path) -> list[Mapping[str, Any]]:
    """The ``models`` list of a Code 1055 checkpoint, read without unpickling anything but tensors.

    Raises
    ------
    PublishedFormatError
        If the file holds pickled objects (with :data:`RESAVE_HINT`), has no ``models`` list of
        state dicts, or an empty one.
    """
    try:
        checkpoint = read_torch_checkpoint(file)
    except PublishedFormatError as exc:
        raise PublishedFormatError(f"{exc}\n{RESAVE_HINT}") from exc
    models = checkpoint.get("models") if isinstance(checkpoint, dict) else None
    if not isinstance(models, list) or not models or not all(isinstance(m, Mapping) for m in models):
        raise PublishedFormatError(f"{file} is not a Code 1055 checkpoint: no non-empty 'models' list of state dicts")
    return models


def _sources(path: Path) -> list[Path]:
    return [checkpoint_path(path)]


def _names_main_model(file: Path) -> bool:
    """Whether ``file`` is a PyTorch zip checkpoint whose pickle names ``main_model.`` tensors.

    Only the bytes of its ``data.pkl`` are searched (pickle stores key strings verbatim): nothing is
    unpickled and no tensor data is read, so detection stays cheap on a 640 MB file.
    """
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") or name == "data.pkl"]
        return bool(pickles) and _FIRST_KEY in archive.read(pickles[0])


def _detect(path: Path) -> bool:
    """A PyTorch checkpoint of ``main_model.`` tensors, given or where the submission looks."""
    try:
        return _names_main_model(checkpoint_path(path))
    except PublishedFormatError:
        return False


def _convert(path: Path, out: Path, imported: Mapping[str, Any]) -> Path:
    """Load every fold strictly into our ConvNeXt and write the member file."""
    file = checkpoint_path(path)
    states = fold_states(file)
    config = replace(Code1055Config(), folds=len(states))
    expected = expected_state(config)
    networks: list[nn.Module] = []
    for i, state in enumerate(states):
        found = match_state(expected, state, f"{file} fold {i}")
        # Built on the meta device and given the checkpoint's tensors: no initialisation to overwrite.
        with torch.device("meta"):
            network = StoicCode1055.build_network(config, "fold")
        tensors = {key: value.to(torch.float32).contiguous() for key, value in strip_prefix(found, PREFIX).items()}
        network.load_state_dict(tensors, strict=True, assign=True)
        networks.append(network)
    member = StoicCode1055.trained(
        config,
        {"fold": networks},
        weights=f"Code 1055's submission checkpoint (STOIC2021 final phase): {len(states)} EMA fold models, "
        "imported unchanged",
        imported_from=dict(imported),
    )
    return member.save(out)


FORMAT = PublishedFormat(
    name="code1055-checkpoint",
    model=StoicCode1055.NAME,
    title="Code 1055's submission checkpoint: {'models': [EMA state dict per fold]} of 3D ConvNeXt-Tiny",
    repository=REPOSITORY,
    published=(),
    gives="the complete Code 1055 member: P(severe) (and its untrained P(COVID-19) output) as the submission "
    "computed them, from a checkpoint obtained from the authors or retrained with their code",
    missing=MISSING,
    detect=_detect,
    sources=_sources,
    convert=_convert,
    notes=(
        "the member holds as many folds as the checkpoint's 'models' list (the submission averaged them all)",
        "a checkpoint as the authors' training writes it also pickles its config: re-save the state dicts alone "
        "(the error says how)",
    ),
)
