"""hal9000's published ImageNet checkpoints become the initial backbones of its networks.

``formats/hal9000_mobnet_v3_large_imgnet.json`` and ``formats/hal9000_resnet18_imgnet.json`` are
the ``state_dict`` of ``torchvision.models.mobilenet_v3_large()`` and ``resnet18()`` (torchvision
0.28, whose names are those of the 0.11 the authors' training image had), the networks HAL
``trainers/example_model.py: create_model`` loads the two files into strictly.  The files are
plain state dicts, written here at full size (17 M numbers).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from models.published.format import PublishedFormatError, file_record
from models.published.hal9000 import FORMAT, KINDS, checkpoint_paths, expected_state, read_initialisation
from models.published.importer import import_record
from models.stoic.hal9000 import HalConfig, NetworkKind, build_network
from tests.models.published.layouts import authors_names, distinct_state

AUTHORS: dict[NetworkKind, dict[str, list[int]]] = {
    "mobilenet_v3_large": authors_names("hal9000_mobnet_v3_large_imgnet"),
    "resnet18": authors_names("hal9000_resnet18_imgnet"),
}
HEADS = {"mobilenet_v3_large": ("classifier.0.", "classifier.3."), "resnet18": ("fc.",)}
FILES: dict[NetworkKind, str] = {"mobilenet_v3_large": "mobnet_v3_large_imgnet.pth", "resnet18": "resnet18_imgnet.pth"}


def _write(folder: Path, names: dict[NetworkKind, str] = FILES) -> dict[NetworkKind, dict[str, Tensor]]:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for seed, kind in enumerate(KINDS):
        written[kind] = distinct_state(AUTHORS[kind], seed=seed)
        torch.save(written[kind], folder / names[kind])
    return written


def _convert(root: Path, out: Path) -> Path:
    files = tuple(file_record(f, root, FORMAT) for f in FORMAT.sources(root))
    return FORMAT.convert(root, out, import_record(FORMAT, root, files))


@pytest.mark.parametrize("kind", KINDS)
def test_our_builders_have_exactly_torchvisions_names_and_shapes(kind: NetworkKind) -> None:
    assert expected_state(kind) == AUTHORS[kind]  # order included


def test_every_backbone_tensor_arrives_in_place_and_the_heads_are_dropped(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    written = _write(root / "training" / "image_classification_pytorch" / "checkpoints")
    assert FORMAT.detect(root) and not FORMAT.installable
    initial = read_initialisation(_convert(root, tmp_path / "init.safetensors"))
    for kind in KINDS:
        network = build_network(kind, HalConfig())
        network.net.load_state_dict(initial[kind], strict=True)
        loaded = network.net.state_dict()
        for key, value in written[kind].items():
            if key.startswith(HEADS[kind]):
                assert key not in loaded, key
            else:
                assert torch.equal(loaded[key], value), (kind, key)
        assert set(loaded) == {k for k in written[kind] if not k.startswith(HEADS[kind])}


def test_torchvisions_file_names_are_accepted(tmp_path: Path) -> None:
    names: dict[NetworkKind, str] = {
        "mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
        "resnet18": "resnet18-f37072fd.pth",
    }
    _write(tmp_path, names)
    assert [p.name for p in checkpoint_paths(tmp_path)] == [names[k] for k in KINDS]


def test_a_checkpoint_of_another_network_is_refused(tmp_path: Path) -> None:
    _write(tmp_path)
    swapped = distinct_state(AUTHORS["resnet18"], seed=5)
    torch.save(swapped, tmp_path / FILES["mobilenet_v3_large"])
    with pytest.raises(PublishedFormatError, match="mobnet_v3_large_imgnet.pth: 312 missing"):
        _convert(tmp_path, tmp_path / "init.safetensors")


def test_one_file_alone_is_not_the_layout(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / FILES["resnet18"]).unlink()
    assert not FORMAT.detect(tmp_path)
    with pytest.raises(PublishedFormatError, match="resnet18_imgnet.pth or resnet18-f37072fd.pth"):
        checkpoint_paths(tmp_path)
