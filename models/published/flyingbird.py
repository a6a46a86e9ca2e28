"""Flying Bird's published folds: ``weight_{covid,severe}/split{0..4}/{covid,severe}_best.pkl``.

The team's final-phase repository keeps ten PyTorch checkpoints in Git LFS (33 253 321 bytes
each) under ``inference/classification``; their inference code reads each one with
``torch.load(f)['state_dict']`` and loads it strictly into ``resnet(in_channels=1,
out_channels=2, layers=[2, 2, 2, 2])`` (FB ``interface_severe.py`` and ``interface_covid.py``,
``_load_model``).  :class:`models.stoic.flyingbird.FlyingBirdResNet` keeps the authors' module
names, so the mapping is the identity; a ``module.`` prefix (what ``nn.DataParallel`` adds, and
what the authors' own training code strips from a pretrained file) is removed if present.

Given path: the ``classification`` folder, the ``inference`` folder above it or the repository
root; all ten files must be there (a member with some folds missing would not be the authors'
model).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from models.published.format import (
    PublishedFile,
    PublishedFormat,
    PublishedFormatError,
    Repository,
    match_state,
    read_torch_checkpoint,
    strip_prefix,
)
from models.stoic.flyingbird import TASKS, FlyingBirdConfig, FlyingBirdResNet, StoicFlyingBird

__all__ = ["FORMAT", "checkpoint_paths", "expected_state"]

REPOSITORY = Repository(
    name="DIAGNijmegen/stoic2021-finalphase-submission-flyingbird",
    url="https://github.com/DIAGNijmegen/stoic2021-finalphase-submission-flyingbird",
    licence="MIT",
    commit="51fdb0f93e424846b2f9bf9aed6d200f896dffe8",
)
#: SHA-256 of each fold file (the repository's Git LFS pointers at :data:`REPOSITORY`'s commit).
_HASHES = {
    ("covid", 0): "c4f0021ef8951a954c5a690956e6132ff1b7cd991a8920a95f7676362188d42d",
    ("covid", 1): "63f97b3662422c76cf635593d1932f460d1209a39059f4a5d52e3ac03aebd467",
    ("covid", 2): "d4f90a21b9e38c1f529cbdb3e998a05d1c9c453f166f4d32f2e66d063f787174",
    ("covid", 3): "7e5de0baaeb8c3bf271cddbc54256c4531936232acb09d507c1412d56a33cd02",
    ("covid", 4): "3489d387b0682a8991432a263999f567f49e4aa38c860c11f362aeffea235b59",
    ("severe", 0): "0992cc6d76ba19ca7736887dda469b7d2abd625a5a0c79d15521ac9de4a58d0f",
    ("severe", 1): "7b861a92f8659216c5ec699018748a7df722b23663ab51de95a013b44e998530",
    ("severe", 2): "c0e088f232de61ae1cc246327630f16bb453763531751ebe7a61c0cfb9a448a8",
    ("severe", 3): "896e000254578a0f8a15402ce0a98af89ddc7c28505adb8213d9004631b60edc",
    ("severe", 4): "575a1d17d7665b545f977a42080379ce6dd67381d135b91671083544968fcd5d",
}
_FILE_SIZE = 33_253_321
_FOLDS = 5


def _relative(task: str, split: int) -> str:
    return f"weight_{task}/split{split}/{task}_best.pkl"


def _root(path: Path) -> Path | None:
    """The folder holding ``weight_covid`` and ``weight_severe``, looked for at and below ``path``."""
    for candidate in (path, path / "classification", path / "inference" / "classification"):
        if (candidate / "weight_covid").is_dir() or (candidate / "weight_severe").is_dir():
            return candidate
    return None


def checkpoint_paths(path: Path) -> list[Path]:
    """The ten fold files, COVID-19 folds first.

    Raises
    ------
    PublishedFormatError
        If the folder or any of the ten files is missing.
    """
    root = _root(path)
    if root is None:
        raise PublishedFormatError(f"{path} holds no weight_covid or weight_severe folder (Flying Bird's layout)")
    files = [root / _relative(task, split) for task in TASKS for split in range(_FOLDS)]
    missing = [str(f.relative_to(root)) for f in files if not f.is_file()]
    if missing:
        raise PublishedFormatError(f"Flying Bird's folds are incomplete under {root}: missing {', '.join(missing)}")
    return files


def expected_state(config: FlyingBirdConfig | None = None) -> dict[str, list[int]]:
    """Name and shape of every tensor of one fold network (built on the meta device: no memory)."""
    config = config or FlyingBirdConfig()
    with torch.device("meta"):
        network = FlyingBirdResNet(1, 2, config.widths, config.layers)
    return {key: list(value.shape) for key, value in network.state_dict().items()}


def _detect(path: Path) -> bool:
    return _root(path) is not None


def _convert(path: Path, out: Path, imported: Mapping[str, Any]) -> Path:
    """Load every fold strictly into our network and write the member file."""
    config = FlyingBirdConfig()
    expected = expected_state(config)
    networks: dict[str, list[torch.nn.Module]] = {task: [] for task in TASKS}
    for file in checkpoint_paths(path):
        task = file.parent.parent.name.removeprefix("weight_")
        checkpoint = read_torch_checkpoint(file)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise PublishedFormatError(f"{file} is not a Flying Bird checkpoint: no 'state_dict' entry")
        state = match_state(expected, strip_prefix(checkpoint["state_dict"], "module."), str(file))
        network = FlyingBirdResNet(1, 2, config.widths, config.layers)
        network.load_state_dict(state, strict=True)
        networks[task].append(network)
    member = StoicFlyingBird.trained(
        config,
        networks,
        weights="Flying Bird's published final-phase folds (STOIC2021), imported unchanged",
        imported_from=dict(imported),
    )
    return member.save(out)


FORMAT = PublishedFormat(
    name="flyingbird-folds",
    model=StoicFlyingBird.NAME,
    title="Flying Bird's ten final-phase folds (five COVID-19, five severity), PyTorch state dicts",
    repository=REPOSITORY,
    published=tuple(
        PublishedFile(REPOSITORY, f"inference/classification/{_relative(task, split)}", sha256, _FILE_SIZE)
        for (task, split), sha256 in _HASHES.items()
    ),
    gives="the complete Flying Bird member: P(COVID-19) and P(severe) as its authors computed them",
    missing="",
    detect=_detect,
    sources=checkpoint_paths,
    convert=_convert,
)
