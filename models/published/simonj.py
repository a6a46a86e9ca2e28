"""simon.j's published artifacts: two iBOT ViT-L/16 checkpoints and the public-data regressions.

The team's final-phase repository (``training/artifact``) publishes what its inference reads:

* ``vitl_16_ct.pth`` (Git LFS, 1 213 314 869 bytes): the CT-pretrained iBOT ViT-L/16, a plain
  state dict that SJ ``vit.py: load_ibot_model('vitl_ct')`` reads with ``torch.load(f)``;
* ``vitl_16_pt22k.pth`` (Git LFS, 1 213 300 677 bytes): iBOT's ImageNet-22k ViT-L/16, a state dict
  under ``'state_dict'`` (``load_ibot_model('vitl_i22k')`` reads ``torch.load(f)['state_dict']``);
  iBOT publishes this model's *student* backbone, whose ViT has ``masked_embed``;
* ``balaitous_public.npz`` (in Git itself, 36 090 bytes): four logistic regressions and two blend
  weights under the names SJ ``transforms.py: ApplySTOICLogisticRegressions`` reads
  (``coef_{full,lung}_{covid,severe}``, ``intercept_...``, ``alpha_{full,lung}_{covid,severe}``).

``load_ibot_model`` builds iBOT's ``vit_large()`` (whose ``state_dict`` is the authors' order of
names), deletes ``norm.weight``, ``norm.bias`` and ``masked_embed`` and every block from
``n_blocks`` on (24 for the CT model, 16 for the ImageNet-22k one, SJ ``balaitous.py``), and
loads the rest strictly.  :class:`models.stoic.vit.VisionTransformer` keeps iBOT's names, so after
the same deletions the mapping is the identity.  This module is stricter than the authors'
loader in one way: each file must hold the whole ViT-L/16 (24 blocks and the final norm), which
is what both published files are; ``masked_embed`` may be present or not.

What the npz is: *not* the final-phase model's regressions.  The inference reads
``artifact/balaitous.npz``, which SJ ``training/train.py`` writes and ``training/main.py`` copies,
with the two ViT files, into the inference artifact folder when the challenge ran the training
container on its final-phase training data; that file is not in the repository.
``balaitous_public.npz`` sits in ``training/artifact``, no code at the published commit reads it,
its name says it was fit on the public STOIC2021 training data, and it lacks the ``C_*``,
``auc_*`` and ``n_*`` entries ``train.py`` writes (so it records neither C nor the case count).
The ViTs are unchanged by training (``train.py`` only extracts features), so they are the
final-phase networks.  A ``balaitous.npz`` written by ``train.py`` is accepted in its place, with
its extra entries (C is kept for the card).

The member blends ``alpha * P_full + (1 - alpha) * P_lung``; the npz stores both weights
(``alpha_full``, ``alpha_lung``), which ``train.py`` sets to ``t`` and ``1 - t``: the import checks
that they sum to 1 and keeps ``alpha_full``.

Given path: the artifact folder, the ``training`` or ``inference`` folder above it, or the
repository root.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.published.format import (
    PublishedFile,
    PublishedFormat,
    PublishedFormatError,
    Repository,
    match_state,
    read_torch_checkpoint,
)
from models.stoic.simonj import (
    FULL_DEPTH,
    LUNG_DEPTH,
    NAME,
    LogisticHead,
    SimonjHeads,
    SimonjMember,
)
from models.stoic.vit import VIT_L16, VisionTransformer

__all__ = [
    "CT_FILE",
    "FORMAT",
    "I22K_FILE",
    "PUBLIC_NPZ",
    "TRAINED_NPZ",
    "artifact_paths",
    "authors_vit_state",
    "convert_artifacts",
    "expected_regressions",
]

REPOSITORY = Repository(
    name="DIAGNijmegen/stoic2021-finalphase-submission-simonj",
    url="https://github.com/DIAGNijmegen/stoic2021-finalphase-submission-simonj",
    licence="MIT",
    commit="5b762cce76e28664bb35993b5b1fdb99c62880f6",
)
CT_FILE = "vitl_16_ct.pth"
I22K_FILE = "vitl_16_pt22k.pth"
#: The regressions the repository publishes, and the name ``train.py`` writes and the inference reads.
PUBLIC_NPZ = "balaitous_public.npz"
TRAINED_NPZ = "balaitous.npz"
_PUBLISHED = (
    PublishedFile(
        REPOSITORY,
        f"training/artifact/{CT_FILE}",
        "48e2a547944fc95847bfa2c0827d69397b3d5d2eda3807c82a617771be8fa8de",
        1_213_314_869,
    ),
    PublishedFile(
        REPOSITORY,
        f"training/artifact/{I22K_FILE}",
        "b595c5a9da38d289ca43680479011a4439172ca1d8672a8cc99f931afc6dd5f8",
        1_213_300_677,
    ),
    PublishedFile(
        REPOSITORY,
        f"training/artifact/{PUBLIC_NPZ}",
        "3adb710c85de34c6d4f173bddeb3a0d91ad0bd5382f581828721933f45b9a61f",
        36_090,
    ),
)
#: ViT-L/16 options of both checkpoints (SJ ``vit.py: vit_large``).
_VIT_OPTIONS: dict[str, int | float] = {k: VIT_L16[k] for k in ("patch_size", "embed_dim", "num_heads", "mlp_ratio")}
#: Blocks in each published checkpoint (iBOT ViT-L).
_FILE_DEPTH = int(VIT_L16["depth"])
#: Entries SJ ``load_ibot_model`` deletes before its strict load (``masked_embed`` only if present).
_FINAL_NORM = ("norm.weight", "norm.bias")
_MASKED_EMBED = "masked_embed"
_KEYS = ("full", "lung")
_OUTPUTS = ("covid", "severe")
#: Entries ``train.py`` writes that the inference does not read (accepted in a ``balaitous.npz``).
_TRAINING_ENTRY = re.compile(r"^(C_(full|lung)_(covid|severe)|auc_((full|lung)_)?(covid|severe)|n_(covid|severe))$")
#: How far ``alpha_full + alpha_lung`` may be from 1 (``train.py`` stores ``t`` and ``1 - t``).
_ALPHA_TOLERANCE = 1e-9


def _artifact_dir(path: Path) -> Path | None:
    """The folder holding the CT checkpoint, looked for at and below ``path``."""
    for candidate in (
        path,
        path / "artifact",
        path / "training" / "artifact",
        path / "inference" / "artifact",
    ):
        if (candidate / CT_FILE).is_file():
            return candidate
    return None


def _regressions_file(folder: Path) -> Path:
    """The one npz of ``folder``: the published one or one ``train.py`` wrote, never both."""
    present = [folder / name for name in (PUBLIC_NPZ, TRAINED_NPZ) if (folder / name).is_file()]
    if not present:
        raise PublishedFormatError(f"{folder} holds neither {PUBLIC_NPZ} nor {TRAINED_NPZ} (simon.j's regressions)")
    if len(present) > 1:
        raise PublishedFormatError(
            f"{folder} holds both {PUBLIC_NPZ} and {TRAINED_NPZ}: keep the regressions to import and move the other"
        )
    return present[0]


def artifact_paths(path: Path) -> list[Path]:
    """The CT checkpoint, the ImageNet-22k checkpoint and the regressions, in that order.

    Raises
    ------
    PublishedFormatError
        If a file is missing or both npz files are present.
    """
    folder = _artifact_dir(path)
    if folder is None:
        raise PublishedFormatError(f"{path} holds no {CT_FILE} (simon.j's artifact layout)")
    if not (folder / I22K_FILE).is_file():
        raise PublishedFormatError(f"{folder} lacks {I22K_FILE}, the ImageNet-22k ViT of simon.j's lung features")
    return [folder / CT_FILE, folder / I22K_FILE, _regressions_file(folder)]


def authors_vit_state(vit_options: Mapping[str, int | float] | None = None) -> dict[str, list[int]]:
    """Name and shape of every tensor of iBOT's ``vit_large()`` in its order, without ``masked_embed``.

    That is our 24-block ViT followed by the final ``norm`` (built on the meta device).
    ``vit_options`` (patch, width, heads, MLP ratio) default to ViT-L/16.
    """
    options: dict[str, Any] = dict(vit_options or _VIT_OPTIONS)
    with torch.device("meta"):
        network = VisionTransformer(depth=_FILE_DEPTH, **options)
    state = {key: list(value.shape) for key, value in network.state_dict().items()}
    state.update({key: [int(options["embed_dim"])] for key in _FINAL_NORM})
    return state


def _read_vit(file: Path, *, wrapped: bool, depth: int, vit_options: Mapping[str, int | float]) -> VisionTransformer:
    """One checkpoint as SJ ``load_ibot_model`` reads it, loaded strictly into our ``depth``-block ViT."""
    checkpoint = read_torch_checkpoint(file)
    if wrapped:
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise PublishedFormatError(f"{file} is not iBOT's backbone layout: no 'state_dict' entry")
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise PublishedFormatError(f"{file} holds a {type(checkpoint).__name__}, not a state dict")
    state = dict(checkpoint)
    masked = state.pop(_MASKED_EMBED, None)
    width = int(vit_options["embed_dim"])
    if masked is not None and (not isinstance(masked, Tensor) or list(masked.shape) != [1, width]):
        raise PublishedFormatError(f"{file}: {_MASKED_EMBED} is not a [1, {width}] tensor")
    tensors = match_state(authors_vit_state(vit_options), state, str(file))
    options: dict[str, Any] = dict(vit_options)
    with torch.device("meta"):  # no initialisation: every tensor is assigned from the file
        network = VisionTransformer(depth=depth, **options)
    kept = network.state_dict().keys()
    network.load_state_dict({key: value for key, value in tensors.items() if key in kept}, strict=True, assign=True)
    return network


def expected_regressions(embed_dim: int = int(VIT_L16["embed_dim"])) -> dict[str, list[int]]:
    """The npz entries the inference reads and their shapes (severity heads add age and sex)."""
    expected: dict[str, list[int]] = {}
    for output in _OUTPUTS:
        for key in _KEYS:
            expected[f"alpha_{key}_{output}"] = []
            expected[f"coef_{key}_{output}"] = [embed_dim + (2 if output == "severe" else 0)]
            expected[f"intercept_{key}_{output}"] = []
    return expected


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    """Every array of an npz, refusing pickled objects."""
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {name: np.asarray(archive[name]) for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise PublishedFormatError(f"{file} cannot be read as an npz of numeric arrays ({exc})") from exc


def _read_regressions(file: Path, embed_dim: int) -> SimonjHeads:
    """The four regressions and two blends, checked entry by entry.

    Raises
    ------
    PublishedFormatError
        For a missing, unexpected, misshapen or non-numeric entry, or blend weights that do not
        sum to 1 (the member weighs the lung head by ``1 - alpha``).
    """
    arrays = _read_npz(file)
    expected = expected_regressions(embed_dim)
    problems = [f"{name} missing" for name in expected if name not in arrays]
    problems += [f"{name} unexpected" for name in arrays if name not in expected and not _TRAINING_ENTRY.match(name)]
    for name, shape in expected.items():
        if name in arrays:
            array = arrays[name]
            if list(array.shape) != shape or not np.issubdtype(array.dtype, np.floating):
                problems.append(f"{name} is {array.dtype} {list(array.shape)}, expected float {shape}")
    if problems:
        raise PublishedFormatError(f"{file}: " + "; ".join(problems))
    alpha: dict[str, float] = {}
    for output in _OUTPUTS:
        full, lung = float(arrays[f"alpha_full_{output}"]), float(arrays[f"alpha_lung_{output}"])
        if abs(full + lung - 1.0) > _ALPHA_TOLERANCE:
            raise PublishedFormatError(f"{file}: alpha_full_{output} {full} + alpha_lung_{output} {lung} is not 1")
        alpha[output] = full
    heads = {
        (key, output): LogisticHead(
            arrays[f"coef_{key}_{output}"].astype(np.float64), float(arrays[f"intercept_{key}_{output}"])
        )
        for key in _KEYS
        for output in _OUTPUTS
    }
    chosen = {(k, o): float(arrays[f"C_{k}_{o}"]) for k in _KEYS for o in _OUTPUTS if f"C_{k}_{o}" in arrays}
    return SimonjHeads(heads, alpha, chosen)


def _weights_sentence(npz: Path) -> str:
    if npz.name == PUBLIC_NPZ:
        return (
            "simon.j's published ViT-L/16 feature extractors (the final-phase files) with the regressions and "
            f"blend of {PUBLIC_NPZ}, fit on the public STOIC2021 training data: not the final-phase regressions"
        )
    return (
        "simon.j's published ViT-L/16 feature extractors (the final-phase files) with the regressions and blend of "
        f"a {TRAINED_NPZ} written by SJ training/train.py (the data it was fit on is whatever that run was given)"
    )


def convert_artifacts(
    path: Path,
    out: Path,
    imported: Mapping[str, Any],
    *,
    vit_options: Mapping[str, int | float] | None = None,
) -> Path:
    """Load both ViTs and the regressions strictly into the simon.j member and write its file.

    ``vit_options`` (patch, width, heads, MLP ratio) are ViT-L/16's; tests pass a narrower width
    with the same names and depth.

    Raises
    ------
    PublishedFormatError
        For a missing file or any name, shape or value the member cannot take unchanged.
    """
    options: dict[str, Any] = dict(vit_options or _VIT_OPTIONS)
    ct_file, i22k_file, npz = artifact_paths(path)
    full = _read_vit(ct_file, wrapped=False, depth=FULL_DEPTH, vit_options=options)
    lung = _read_vit(i22k_file, wrapped=True, depth=LUNG_DEPTH, vit_options=options)
    heads = _read_regressions(npz, int(options["embed_dim"]))
    card = SimonjMember.make_card(
        full={**options, "depth": FULL_DEPTH},
        lung_depth=LUNG_DEPTH,
        demo=False,
        weights=_weights_sentence(npz),
        imported_from=dict(imported),
    )
    return SimonjMember(full, lung, heads, card).save(out)


def _convert(path: Path, out: Path, imported: Mapping[str, Any]) -> Path:
    return convert_artifacts(path, out, imported)


def _detect(path: Path) -> bool:
    return _artifact_dir(path) is not None


FORMAT = PublishedFormat(
    name="simonj-artifacts",
    model=NAME,
    title=(
        f"simon.j's artifacts: iBOT ViT-L/16 {CT_FILE} (CT) and {I22K_FILE} (ImageNet-22k) PyTorch state dicts "
        f"with the logistic regressions of {PUBLIC_NPZ}"
    ),
    repository=REPOSITORY,
    published=_PUBLISHED,
    gives=(
        "the simon.j member with its authors' two final-phase feature extractors and the regressions and blend they "
        f"published in {PUBLIC_NPZ}, which were fit on the public STOIC2021 training data"
    ),
    missing=(
        f"the final-phase regressions and blend ({TRAINED_NPZ}, written by SJ training/train.py when the challenge "
        "ran the training container, and read by the inference) were never published; retrain the heads on a "
        "site's data with the simon.j recipe, this file as its backbone"
    ),
    detect=_detect,
    sources=artifact_paths,
    convert=_convert,
    notes=(
        "the lung-masked input is computed from lungmask R231, as the authors did, when R231 is installed "
        "(unet_r231-d5d2fc3d.pth, published beside the ViTs: `lungcds models install FILE --name lungmask_r231`); "
        "from the classical lung mask otherwise, and the member's record says which",
    ),
)
