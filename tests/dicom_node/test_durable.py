"""Durability of a received instance: the shared directory fsync (group commit), and Success only after it."""

from __future__ import annotations

import copy
import errno
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, build_context

from dicom_node import spool as spool_module
from dicom_node._durable import DirectorySync
from dicom_node.scp import StorageSCP, _SharedContexts
from dicom_node.spool import OutOfResources, Spool
from dicom_node.statuses import OUT_OF_RESOURCES, SUCCESS
from tests.dicom_node.helpers import SCP_AET, RecordingSink, make_ct

WAIT_S = 10.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a condition another thread makes true (a bound against hangs, not a timing check)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def waiting_writers(sync: DirectorySync, directory: Path) -> int:
    """How many writers wait for an fsync of ``directory``."""
    state = sync._directories.get(directory)
    return sum(state.waiting.values()) if state is not None else 0


class GatedFsync:
    """A directory fsync that records its calls; the first one blocks until released, chosen ones fail."""

    def __init__(self, fail_calls: frozenset[int] = frozenset()) -> None:
        self.calls: list[str] = []
        self.fail_calls = fail_calls
        self.first_entered = threading.Event()
        self.release_first = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, directory: Path) -> None:
        with self._lock:
            self.calls.append(f"start {len(self.calls) // 2 + 1}")
            number = len(self.calls) // 2 + 1
        if number == 1:
            self.first_entered.set()
            assert self.release_first.wait(WAIT_S)
        with self._lock:
            self.calls.append(f"end {number}")
        if number in self.fail_calls:
            raise OSError(errno.EIO, "Input/output error")


def test_writers_arriving_during_an_fsync_share_the_next_one(tmp_path: Path) -> None:
    fsync = GatedFsync()
    sync = DirectorySync(fsync)
    returned: dict[str, list[str]] = {}

    def writer(name: str) -> None:
        sync.sync(tmp_path)
        returned[name] = list(fsync.calls)

    first = threading.Thread(target=writer, args=("first",))
    first.start()
    assert fsync.first_entered.wait(WAIT_S)
    later = [threading.Thread(target=writer, args=(name,)) for name in ("second", "third")]
    for thread in later:
        thread.start()
    wait_until(lambda: waiting_writers(sync, tmp_path) == 3, "the two later writers to wait")

    # The running fsync started before their renames: neither may return on it.
    assert set(returned) == set()
    fsync.release_first.set()
    for thread in [first, *later]:
        thread.join(WAIT_S)

    assert fsync.calls == ["start 1", "end 1", "start 2", "end 2"]
    assert returned["first"][-1] == "end 1"
    assert returned["second"][-1] == "end 2"
    assert returned["third"][-1] == "end 2"
    assert sync._directories == {}


def test_a_failed_fsync_reaches_every_writer_it_was_to_cover(tmp_path: Path) -> None:
    fsync = GatedFsync(fail_calls=frozenset({2}))
    sync = DirectorySync(fsync)
    outcomes: dict[str, str] = {}

    def writer(name: str) -> None:
        try:
            sync.sync(tmp_path)
            outcomes[name] = "ok"
        except OSError as exc:
            outcomes[name] = errno.errorcode[exc.errno or 0]

    first = threading.Thread(target=writer, args=("first",))
    first.start()
    assert fsync.first_entered.wait(WAIT_S)
    later = [threading.Thread(target=writer, args=(name,)) for name in ("second", "third")]
    for thread in later:
        thread.start()
    wait_until(lambda: waiting_writers(sync, tmp_path) == 3, "the two later writers to wait")
    fsync.release_first.set()
    for thread in [first, *later]:
        thread.join(WAIT_S)

    assert outcomes == {"first": "ok", "second": "EIO", "third": "EIO"}
    # The next writer is not told about an earlier failure: it gets an fsync of its own.
    sync.sync(tmp_path)


def test_a_failed_directory_fsync_refuses_the_instance_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(directory: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spool_module, "_DIRECTORY_SYNC", DirectorySync(failing))
    spool = Spool(tmp_path / "spool")

    with pytest.raises(OutOfResources) as caught:
        spool.store(part10(make_ct(size=64)))

    assert caught.value.status == OUT_OF_RESOURCES
    assert "EIO" in caught.value.reason
    assert [p for p in (tmp_path / "spool").rglob("*") if p.is_file()] == []


def part10(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def send_one(port: int, ds: Dataset, result: dict[str, int]) -> None:
    """Send one C-STORE and record its status."""
    ae = AE(ae_title="TESTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = WAIT_S
    assoc = ae.associate(
        "127.0.0.1", port, contexts=[build_context(CTImageStorage, ExplicitVRLittleEndian)], ae_title=SCP_AET
    )
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    result["status"] = int(status.Status)
    assoc.release()


def test_success_is_sent_only_after_the_directory_fsync_that_covers_the_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = GatedFsync()
    monkeypatch.setattr(spool_module, "_DIRECTORY_SYNC", DirectorySync(fsync))
    sink = RecordingSink()
    ds = make_ct(size=64)
    # The series directory exists already, so the only directory fsync is the one after the rename.
    spool = Spool(tmp_path / "spool")
    spool.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, "x").parent.mkdir(parents=True)
    result: dict[str, int] = {}
    with StorageSCP(SCP_AET, spool, sink) as scp:
        port = scp.start("127.0.0.1", 0)
        sender = threading.Thread(target=send_one, args=(port, ds, result))
        sender.start()
        assert fsync.first_entered.wait(WAIT_S)

        # The file is renamed into place, its directory fsync has not returned: no answer yet.
        assert "status" not in result
        assert sink.stored == []
        fsync.release_first.set()
        sender.join(WAIT_S)

    assert result["status"] == SUCCESS
    assert fsync.calls == ["start 1", "end 1"]
    assert spool.path_for(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID).is_file()


def test_a_failed_directory_fsync_is_answered_out_of_resources_with_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(directory: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(spool_module, "_DIRECTORY_SYNC", DirectorySync(failing))
    sink = RecordingSink()
    spool = Spool(tmp_path / "spool")
    result: dict[str, int] = {}
    with StorageSCP(SCP_AET, spool, sink) as scp:
        send_one(scp.start("127.0.0.1", 0), make_ct(size=64), result)

    assert result["status"] == OUT_OF_RESOURCES
    assert sink.stored == []
    assert [p for p in spool.root.rglob("*") if p.is_file()] == []


def test_associations_share_the_contexts_instead_of_copying_them() -> None:
    contexts = _SharedContexts([build_context(CTImageStorage, ExplicitVRLittleEndian)])
    copied = copy.deepcopy(contexts)
    assert copied == list(contexts)
    assert copied is not contexts
    assert copied[0] is contexts[0]
