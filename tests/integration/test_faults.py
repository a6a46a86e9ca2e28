"""Faults that must lose nothing: the PACS away for a while (issue 9, "Fault tolerance").

The worker-killed-mid-analysis case runs on PostgreSQL and Redis in ``test_distributed.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.peers import OrthancPeer, start_lungcds, start_orthanc, storescu, wait_for

pytestmark = pytest.mark.integration


def test_reports_wait_for_the_pacs_and_arrive_once(ct_dir: Path, tmp_path: Path) -> None:
    if shutil.which("Orthanc") is None:
        pytest.skip("Orthanc is not installed")
    first = start_orthanc(tmp_path / "orthanc")
    destination, ports = first.destination, (first.dicom_port, first.http_port)
    first.stop()  # the PACS goes down before our reports are ready
    server = start_lungcds(
        tmp_path / "lungcds",
        extra_env={
            "LUNGCDS_MAX_SLICE_THICKNESS_MM": "5",
            "LUNGCDS_DESTINATIONS": destination,
            "LUNGCDS_DELIVERY_MAX_BACKOFF_SECONDS": "4",
        },
    )
    pacs: OrthancPeer | None = None
    try:
        files = sorted(p for p in (ct_dir / "lung-dx-a0001-chest-5mm-s2").iterdir() if p.is_file())
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        assert storescu(server.dicom_port, files).returncode == 0

        def failing() -> list[dict[str, Any]] | None:
            series = server.series(uid)
            deliveries = ((series or {}).get("job") or {}).get("deliveries") or []
            tried = deliveries and all(d["state"] == "pending" and d["attempts"] >= 2 for d in deliveries)
            return deliveries if tried else None

        waiting = wait_for(failing, 600, 1.0, "deliveries failing while the PACS is down")
        assert all(d["last_error"] for d in waiting), "each failed attempt says why"

        pacs = start_orthanc(first.workdir, ports=ports)  # back, where it was

        def sent() -> list[dict[str, Any]] | None:
            deliveries = (server.series(uid) or {}).get("job", {}).get("deliveries") or []
            return deliveries if deliveries and all(d["state"] == "sent" for d in deliveries) else None

        deliveries = wait_for(sent, 300, 1.0, "delivery after the PACS returned")
        assert sorted(d["kind"] for d in deliveries) == ["pdf", "seg", "sr"]
        for delivery in deliveries:
            instances = [r for r in pacs.lookup(delivery["sop_instance_uid"]) if r["Type"] == "Instance"]
            assert len(instances) == 1, "stored once, not doubled by the retries"
        assert int(pacs.http.get("/statistics").json()["CountInstances"]) == 3
    finally:
        server.stop()
        if pacs is not None:
            pacs.stop()
