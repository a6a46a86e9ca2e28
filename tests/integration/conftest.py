"""Integration fixtures: real Orthanc, real DCMTK, our server as a process."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers import SHARED_DATA, OrthancPeer, start_orthanc

pytestmark = pytest.mark.integration


def _require(binary: str) -> None:
    if shutil.which(binary) is None and not Path(binary).exists():
        pytest.skip(f"{binary} is not installed (.ci/run installs dcmtk, orthanc, dicom3tools)")


@pytest.fixture
def ct_dir() -> Path:
    """The shared real CT folder; skips with a reason when it is absent."""
    folder = SHARED_DATA / "ct"
    if not folder.is_dir():
        pytest.skip(f"real CT data not found at {folder}")
    return folder


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancPeer]:
    _require("Orthanc")
    _require("/usr/bin/storescu")
    peer = start_orthanc(tmp_path / "orthanc")
    yield peer
    peer.stop()
