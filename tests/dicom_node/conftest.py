"""Fixtures for the DICOM node tests: our SCP and DCMTK storescp on ephemeral loopback ports."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_node.scp import StorageSCP
from dicom_node.spool import Spool
from tests.dicom_node.helpers import (
    SCP_AET,
    STORESCP,
    RecordingSink,
    RunningSCP,
    dcmtk_env,
    free_port,
    require,
    wait_for_port,
)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def running_scp(tmp_path: Path, sink: RecordingSink) -> Iterator[RunningSCP]:
    """Our Storage SCP on 127.0.0.1 and an ephemeral port, spooling to tmp."""
    spool = Spool(tmp_path / "spool")
    scp = StorageSCP(SCP_AET, spool, sink)
    port = scp.start("127.0.0.1", 0)
    try:
        yield RunningSCP(scp, spool, sink, port)
    finally:
        scp.stop()


@pytest.fixture
def dcmtk_storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp on an ephemeral port, writing into a tmp folder; yields (port, folder)."""
    require(STORESCP)
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [str(STORESCP), "-aet", "STORESCP", "-od", str(out), str(port)],
        env=dcmtk_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port, out
    finally:
        process.terminate()
        process.wait(timeout=10)
