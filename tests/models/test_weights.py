"""models.weights: installation round trip, hashes, manifests, refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from models.registry import UnknownModelError
from models.weights import MANIFEST_NAME, WeightsError, WeightStore, sha256_of


@pytest.fixture
def weights_file(tmp_path: Path) -> Path:
    path = tmp_path / "corads_member0.pt"
    path.write_bytes(bytes(range(256)) * 5000)  # 1.28 MB: more than one read chunk
    return path


def test_install_round_trip(weights_file: Path, tmp_path: Path) -> None:
    store = WeightStore(tmp_path / "weights")
    expected = hashlib.sha256(weights_file.read_bytes()).hexdigest()
    record = store.install(weights_file, "corads")
    assert record.sha256 == expected == sha256_of(weights_file)
    assert record.size == weights_file.stat().st_size
    assert record.source_filename == "corads_member0.pt"
    assert record.path == tmp_path / "weights" / "corads" / f"{expected}.pt"
    assert record.path.read_bytes() == weights_file.read_bytes()
    manifest = json.loads((tmp_path / "weights" / "corads" / MANIFEST_NAME).read_text())
    assert manifest["name"] == "corads" and manifest["sha256"] == expected and manifest["size"] == record.size
    assert manifest["source_filename"] == "corads_member0.pt" and manifest["installed_at"].endswith("+00:00")
    reopened = WeightStore(tmp_path / "weights")
    assert reopened.get("corads") == record
    assert reopened.installed() == {"corads": record}
    assert reopened.get("stoic") is None
    assert reopened.verify("corads")
    assert not list((tmp_path / "weights" / "corads").glob(".*"))  # no temporary files left


def test_reinstall_replaces_the_previous_file(weights_file: Path, tmp_path: Path) -> None:
    store = WeightStore(tmp_path / "weights")
    first = store.install(weights_file, "i3dr")
    newer = tmp_path / "i3dr_v2.bin"
    newer.write_bytes(b"second version")
    second = store.install(newer, "i3dr")
    assert second.sha256 != first.sha256
    assert store.get("i3dr") == second
    assert not first.path.exists()
    assert sorted(p.name for p in (tmp_path / "weights" / "i3dr").iterdir()) == sorted(
        [MANIFEST_NAME, f"{second.sha256}.bin"]
    )


def test_verify_detects_a_changed_file(weights_file: Path, tmp_path: Path) -> None:
    store = WeightStore(tmp_path / "weights")
    record = store.install(weights_file, "lesions")
    record.path.write_bytes(b"tampered")
    assert not store.verify("lesions")


def test_unknown_model_is_refused_before_anything_is_written(weights_file: Path, tmp_path: Path) -> None:
    store = WeightStore(tmp_path / "weights")
    with pytest.raises(UnknownModelError, match="unknown model 'densenet'"):
        store.install(weights_file, "densenet")
    assert not (tmp_path / "weights").exists()
    with pytest.raises(ValueError, match="registered models are"):
        store.get("densenet")


def test_weight_free_model_has_nothing_to_install(weights_file: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="weight-free"):
        WeightStore(tmp_path / "weights").install(weights_file, "lung_mask_classical")


def test_missing_and_empty_sources_are_refused(tmp_path: Path) -> None:
    store = WeightStore(tmp_path / "weights")
    with pytest.raises(WeightsError, match="does not exist"):
        store.install(tmp_path / "absent.pt", "stoic_code1055")
    empty = tmp_path / "empty.pt"
    empty.touch()
    with pytest.raises(WeightsError, match="empty"):
        store.install(empty, "stoic_code1055")
    assert store.get("stoic_code1055") is None
    assert not [p for p in (tmp_path / "weights" / "stoic_code1055").iterdir()]


def test_the_stoic_ensemble_points_to_its_members(weights_file: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="ensemble of its members.*stoic_code1055"):
        WeightStore(tmp_path / "weights").install(weights_file, "stoic")


def test_unreadable_manifest_is_ignored(weights_file: Path, tmp_path: Path) -> None:
    store = WeightStore(tmp_path / "weights")
    store.install(weights_file, "lobes")
    (tmp_path / "weights" / "lobes" / MANIFEST_NAME).write_text("{not json")
    assert store.get("lobes") is None
    assert store.installed() == {}


def test_empty_store() -> None:
    assert WeightStore(Path("/nonexistent/lungcds-weights")).installed() == {}
