"""simon.j's published artifacts import as they are, every tensor and array in its place.

``formats/simonj_vitl_16_ct.json`` is the ``state_dict`` of iBOT's ``vit_large()`` and
``formats/simonj_vitl_16_pt22k.json`` that of ``vit_large(masked_im_modeling=True)`` (iBOT's
ImageNet-22k ViT-L backbone is its student, which has ``masked_embed``), both dumped from SJ
``inference/algorithm/vit.py``; ``formats/simonj_balaitous_public.json`` lists the entries of the
published ``training/artifact/balaitous_public.npz`` in its order (read with
``allow_pickle=False``).  The CT file is written as a plain state dict and the ImageNet-22k one
under ``'state_dict'``, as SJ ``load_ibot_model`` reads them.

Two full ViT-L/16 checkpoints are 2.4 GB of random numbers, too slow to write in a test.  Our ViT
takes its width as a parameter and the import takes the ViT options, so the layouts are built
with the authors' exact names and depth (24 blocks, 16 heads, patch 16, 197 tokens) at width 32:
every 1024 of a shape becomes 32 (3072 and 4096 scale with it, the severity coefficients stay
width + 2).  :func:`test_the_authors_names_are_exactly_ours_at_full_size` checks the full-size
names and shapes against our network separately.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from models.published.format import PublishedFormatError, file_record
from models.published.importer import import_record
from models.published.simonj import (
    FORMAT,
    PUBLIC_NPZ,
    TRAINED_NPZ,
    authors_vit_state,
    convert_artifacts,
    expected_regressions,
)
from models.stoic.simonj import LUNG_DEPTH, SimonjMember
from models.stoic.vit import VIT_L16
from tests.models.published.layouts import authors_names, distinct_state

CT = authors_names("simonj_vitl_16_ct")
I22K = authors_names("simonj_vitl_16_pt22k")
NPZ = authors_names("simonj_balaitous_public")
WIDTH = 32
_SCALE = {1024: WIDTH, 3 * 1024: 3 * WIDTH, 4 * 1024: 4 * WIDTH, 1026: WIDTH + 2}
SMALL = {"patch_size": 16, "embed_dim": WIDTH, "num_heads": 16, "mlp_ratio": 4.0}


def _narrow(names: dict[str, list[int]]) -> dict[str, list[int]]:
    return {key: [_SCALE.get(n, n) for n in shape] for key, shape in names.items()}


def _regressions(seed: int) -> dict[str, Any]:
    """Distinct random regressions in the published npz's order; the blends sum to 1 as train.py writes them."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, Any] = {key: rng.normal(size=shape) for key, shape in _narrow(NPZ).items()}
    for output in ("covid", "severe"):
        arrays[f"alpha_full_{output}"] = np.float64(rng.choice(np.linspace(0, 1, 21)))
        arrays[f"alpha_lung_{output}"] = 1 - arrays[f"alpha_full_{output}"]
    return arrays


def _write_artifacts(
    folder: Path, *, ct_extra: dict[str, Tensor] | None = None, npz: str = PUBLIC_NPZ
) -> dict[str, Any]:
    """SJ's ``artifact`` folder at width 32; returns what was written."""
    folder.mkdir(parents=True)
    ct = distinct_state(_narrow(CT), seed=1)
    i22k = distinct_state(_narrow(I22K), seed=2)
    torch.save({**ct, **(ct_extra or {})}, folder / "vitl_16_ct.pth")
    torch.save({"state_dict": i22k}, folder / "vitl_16_pt22k.pth")
    arrays = _regressions(seed=3)
    np.savez(folder / npz, **arrays)
    return {"ct": ct, "i22k": i22k, "npz": arrays}


def _import(root: Path, out: Path) -> SimonjMember:
    files = tuple(file_record(f, root, FORMAT) for f in FORMAT.sources(root))
    convert_artifacts(root, out, import_record(FORMAT, root, files), vit_options=SMALL)
    return SimonjMember.from_safetensors(out)


def test_the_authors_names_are_exactly_ours_at_full_size() -> None:
    assert authors_vit_state() == CT  # names, shapes and order of iBOT's vit_large()
    assert authors_vit_state() == {k: v for k, v in I22K.items() if k != "masked_embed"}
    assert I22K["masked_embed"] == [1, VIT_L16["embed_dim"]]
    assert expected_regressions() == NPZ  # as a mapping: the published order differs from train.py's
    assert _narrow(CT) == authors_vit_state(SMALL)  # the narrow layout is the same network


def test_every_tensor_and_array_arrives_in_its_place(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    written = _write_artifacts(root / "training" / "artifact")
    assert FORMAT.detect(root) and FORMAT.detect(root / "training")
    member = _import(root, tmp_path / "simonj.safetensors")
    full, lung = member.full.state_dict(), member.lung.state_dict()
    assert set(full) == set(CT) - {"norm.weight", "norm.bias"}
    for key, value in written["ct"].items():
        if key in full:
            assert torch.equal(full[key], value), key
    kept = {k for k in I22K if not k.startswith("norm.") and k != "masked_embed"}
    kept = {k for k in kept if not k.startswith("blocks.") or int(k.split(".")[1]) < LUNG_DEPTH}
    assert set(lung) == kept
    for key in kept:
        assert torch.equal(lung[key], written["i22k"][key]), key
    arrays = written["npz"]
    for (key, output), head in member.heads.heads.items():
        np.testing.assert_array_equal(head.coef, arrays[f"coef_{key}_{output}"])
        assert head.intercept == float(arrays[f"intercept_{key}_{output}"])
    assert member.heads.alpha == {o: float(arrays[f"alpha_full_{o}"]) for o in ("covid", "severe")}
    assert member.card["demo"] is False and member.card["architecture"]["embed_dim"] == WIDTH
    assert "public STOIC2021 training data" in member.card["weights"]
    origin = member.card["imported_from"]
    assert [f["path"] for f in origin["files"]] == [
        "training/artifact/vitl_16_ct.pth",
        "training/artifact/vitl_16_pt22k.pth",
        f"training/artifact/{PUBLIC_NPZ}",
    ]
    assert origin["published_bytes"] == "none"


def test_a_train_py_npz_with_its_extra_entries_is_accepted(tmp_path: Path) -> None:
    written = _write_artifacts(tmp_path / "artifact", npz=TRAINED_NPZ)
    extra: dict[str, Any] = {"C_full_covid": 0.5, "C_lung_covid": 1.0, "C_full_severe": 2.0, "C_lung_severe": 0.05}
    cv: dict[str, Any] = {"auc_covid": np.ones(32), "auc_full_covid": np.ones(32), "n_covid": 2000}
    np.savez(tmp_path / "artifact" / TRAINED_NPZ, **written["npz"], **extra, **cv)
    member = _import(tmp_path, tmp_path / "simonj.safetensors")
    assert member.heads.C[("lung", "severe")] == 0.05
    assert TRAINED_NPZ in member.card["weights"]


def test_a_ct_checkpoint_with_masked_embed_is_accepted(tmp_path: Path) -> None:
    _write_artifacts(tmp_path / "artifact", ct_extra={"masked_embed": torch.zeros(1, WIDTH)})
    _import(tmp_path / "artifact", tmp_path / "simonj.safetensors")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"head.weight": torch.zeros(2, WIDTH)}, r"vitl_16_ct.pth: 1 unexpected \(head.weight\)"),
        ({"masked_embed": torch.zeros(3)}, r"masked_embed is not a \[1, 32\] tensor"),
    ],
)
def test_foreign_entries_are_refused(tmp_path: Path, extra: dict[str, Tensor], message: str) -> None:
    _write_artifacts(tmp_path / "artifact", ct_extra=extra)
    with pytest.raises(PublishedFormatError, match=message):
        _import(tmp_path, tmp_path / "simonj.safetensors")


def test_a_missing_block_is_refused_even_beyond_the_lung_depth(tmp_path: Path) -> None:
    written = _write_artifacts(tmp_path / "artifact")
    state = {k: v for k, v in written["i22k"].items() if k != "blocks.23.mlp.fc2.bias"}
    torch.save({"state_dict": state}, tmp_path / "artifact" / "vitl_16_pt22k.pth")
    with pytest.raises(PublishedFormatError, match=r"1 missing \(blocks.23.mlp.fc2.bias\)"):
        _import(tmp_path, tmp_path / "simonj.safetensors")


def test_blends_that_do_not_sum_to_one_are_refused(tmp_path: Path) -> None:
    written = _write_artifacts(tmp_path / "artifact")
    arrays = {**written["npz"], "alpha_lung_covid": np.float64(0.9), "alpha_full_covid": np.float64(0.5)}
    np.savez(tmp_path / "artifact" / PUBLIC_NPZ, **arrays)
    with pytest.raises(PublishedFormatError, match="alpha_full_covid 0.5 \\+ alpha_lung_covid 0.9 is not 1"):
        _import(tmp_path, tmp_path / "simonj.safetensors")


def test_pickled_npz_entries_are_refused_unread(tmp_path: Path) -> None:
    written = _write_artifacts(tmp_path / "artifact")
    np.savez(tmp_path / "artifact" / PUBLIC_NPZ, **written["npz"], extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(PublishedFormatError, match="cannot be read as an npz"):
        _import(tmp_path, tmp_path / "simonj.safetensors")


def test_two_regression_files_or_none_are_refused(tmp_path: Path) -> None:
    written = _write_artifacts(tmp_path / "artifact")
    np.savez(tmp_path / "artifact" / TRAINED_NPZ, **written["npz"])
    with pytest.raises(PublishedFormatError, match="holds both"):
        FORMAT.sources(tmp_path)
    for name in (PUBLIC_NPZ, TRAINED_NPZ):
        (tmp_path / "artifact" / name).unlink()
    with pytest.raises(PublishedFormatError, match="holds neither"):
        FORMAT.sources(tmp_path)
    assert not FORMAT.detect(tmp_path / "elsewhere")
