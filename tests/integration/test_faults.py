"""Faults that must lose nothing (issue 9, "Fault tolerance"): the PACS away for a while, an
association aborted mid-series, a full disk, a sender pausing mid-series (issue 14), a crash in
native code that must leave where every thread was.

The worker-killed-mid-analysis case runs on PostgreSQL and Redis in ``test_distributed.py``.
"""

from __future__ import annotations

import shutil
import signal
import time
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
        assert sorted(d["kind"] for d in deliveries) == ["kos", "pdf", "sc", "seg", "sr"]
        for delivery in deliveries:
            instances = [r for r in pacs.lookup(delivery["sop_instance_uid"]) if r["Type"] == "Instance"]
            assert len(instances) == 1, "stored once, not doubled by the retries"
        assert int(pacs.http.get("/statistics").json()["CountInstances"]) == 5, "sr, seg, pdf, sc, kos"
    finally:
        server.stop()
        if pacs is not None:
            pacs.stop()


def test_an_aborted_association_keeps_its_part_and_the_series_completes_with_the_rest(
    ct_dir: Path, tmp_path: Path
) -> None:
    server = start_lungcds(tmp_path / "lungcds", extra_env={"LUNGCDS_MAX_SLICE_THICKNESS_MM": "5"})
    try:
        files = sorted(p for p in (ct_dir / "lung-dx-a0001-chest-5mm-s2").iterdir() if p.is_file())
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        first, rest = files[::2], files[1::2]  # every other slice: the first part is not a complete series
        assert storescu(server.dicom_port, first, extra=("--abort",)).returncode == 0
        kept = wait_for(lambda: (s := server.series(uid)) and s["instance_count"] == len(first) and s, 60, 0.5, "kept")
        assert kept["state"] in ("receiving", "finalizing"), "an aborted half is not analysed as if it were whole"
        assert storescu(server.dicom_port, rest).returncode == 0

        def done() -> dict[str, Any] | None:
            series = server.series(uid)
            return series if series and series["state"] == "done" else None

        series = wait_for(done, 600, 1.0, "the whole series analysed")
        assert series["instance_count"] == len(files) == 64
        assert series["job"]["attempts"] == 1
    finally:
        server.stop()


def test_a_full_disk_refuses_with_out_of_resources_and_recovers(tmp_path: Path) -> None:
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from dicom_node.scp import StorageSCP
    from dicom_node.spool import Spool
    from tests.dicom_node.helpers import RecordingSink, make_ct

    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    reserve = shutil.disk_usage(spool_dir).free - 64 * 2**20  # 64 MiB above the reserve now
    ballast = tmp_path / "ballast.bin"
    ae = AE(ae_title="CTSCANNER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)

    def store(port: int) -> int:
        assoc = ae.associate("127.0.0.1", port, ae_title="LUNGCDS")
        assert assoc.is_established
        status = int(assoc.send_c_store(make_ct()).Status)
        assoc.release()
        return status

    with StorageSCP("LUNGCDS", Spool(spool_dir, min_free_bytes=reserve), RecordingSink()) as scp:
        port = scp.start("127.0.0.1", 0)
        with ballast.open("wb") as fh:  # the disk fills up: free space drops below the reserve
            for _ in range(128):
                fh.write(b"\0" * 2**20)
            fh.flush()
        assert store(port) == 0xA700, "out of resources while the disk is full"
        ballast.unlink()  # space returns
        assert store(port) == 0x0000
    assert len([p for p in spool_dir.rglob("*.dcm")]) == 1


def test_a_sender_pausing_longer_than_the_idle_time_keeps_its_series_open(ct_dir: Path, tmp_path: Path) -> None:
    """Issue 14, item 7: the idle timer never closes a series while the association sending it is open."""
    from pydicom.uid import ImplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    server = start_lungcds(
        tmp_path / "lungcds",
        extra_env={"LUNGCDS_MAX_SLICE_THICKNESS_MM": "5", "LUNGCDS_SERIES_IDLE_SECONDS": "2"},
    )
    try:
        files = sorted(p for p in (ct_dir / "lung-dx-a0001-chest-5mm-s2").iterdir() if p.is_file())
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        ae = AE(ae_title="CTSCANNER")
        ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="LUNGCDS")
        assert assoc.is_established
        try:
            for path in files[:32]:
                assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0
            time.sleep(6)  # three idle times: a reconstruction pause on the scanner
            paused = server.series(uid)
            assert paused is not None and paused["state"] == "receiving", paused
            for path in files[32:]:
                assert int(assoc.send_c_store(pydicom.dcmread(path)).Status) == 0
        finally:
            assoc.release()

        def done() -> dict[str, Any] | None:
            series = server.series(uid)
            return (
                series if series and series["state"] not in ("receiving", "finalizing", "queued", "analysing") else None
            )

        series = wait_for(done, 600, 1.0, "the whole series analysed")
        assert series["state"] == "done", series
        assert (series["instance_count"], series["reopen_count"], series["job"]["attempts"]) == (64, 0, 1)
        assert series["completion_trigger"] == "association released"
    finally:
        server.stop()


def test_a_native_crash_leaves_every_threads_python_stack_in_the_log(tmp_path: Path) -> None:
    """A segmentation fault of ``serve`` (here the signal itself) prints each thread's stack to its log."""
    server = start_lungcds(tmp_path / "lungcds")
    try:
        # Once the embedded worker is up, the main thread waits in its loop; while Celery starts, its
        # stack can be deeper than the 100 frames faulthandler prints per thread, runtime.py cut off.
        wait_for(lambda: "ready." in server.log.read_text(errors="replace"), 60, 0.2, "the embedded worker ready")
        server.process.send_signal(signal.SIGSEGV)
        server.process.wait(timeout=30)
        log = server.log.read_text(errors="replace")
        assert server.process.returncode == -signal.SIGSEGV
        crash = log[log.index("Fatal Python error: Segmentation fault") :]
        assert "server/runtime.py" in crash, crash  # the main thread, running the embedded worker
        assert "site-packages/uvicorn/" in crash, crash  # and the REST API's thread: every thread is shown
    finally:
        server.stop()
