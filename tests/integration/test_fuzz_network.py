"""Fuzzing over the network and through folder import (issue 9), against a running ``lungcds serve``.

Malformed instances from :mod:`tests.fuzz_dicom` are sent as they are (pynetdicom sends the file's
bytes after its meta information unchanged) to one server process. For each, the C-STORE answer
must come, and must be the verdict that the same validation gives locally (with the same memory
of what was stored before, :class:`LocalModel`): Success for what a spool accepts, otherwise the
same failure status with the reason as Error Comment. Garbage on the
TCP port must not take the server down. Afterwards the server still analyses a real series, rejects
an inconsistent one with its reasons, and the audit trail holds every refusal with its reason.
"""

from __future__ import annotations

import random
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from dicom_node.header import InstanceHeader
from dicom_node.scp import error_comment
from dicom_node.spool import Spool, elsewhere
from dicom_node.validation import InvalidInstance, parse_instance
from tests.fuzz_dicom import Malformed, encode, malformed_instances, slice_of_series
from tests.peers import LungcdsProcess, copy_series, lungcds_command, start_lungcds, storescu, wait_for

# pydicom warns about every malformed value it reads; here that is the point.
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::UserWarning")]

SUCCESS = 0x0000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LungcdsProcess]:
    process = start_lungcds(
        tmp_path_factory.mktemp("fuzz") / "lungcds",
        extra_env={"LUNGCDS_MAX_SLICE_THICKNESS_MM": "5", "LUNGCDS_SERIES_IDLE_SECONDS": "5"},
    )
    yield process
    process.stop()


class LocalModel:
    """The server's acceptance rules replayed in this process, with the same memory of what it stored.

    The fuzzer mutates one valid slice, so many examples share its SOP Instance UID; the server
    keeps the first and refuses later ones whose content differs, or that claim the UID in another
    series (issue 14). A spool kept for the whole module, with an admission check that finds the UID
    in another series folder, gives the verdict the server must give.
    """

    def __init__(self, root: Path) -> None:
        self.spool = Spool(root, min_free_bytes=0, admit=self._admit)

    def _admit(self, header: InstanceHeader) -> None:
        for path in self.spool.root.glob(f"*/*/{header.sop_instance_uid}.dcm"):
            refusal = elsewhere(parse_instance(path)[1], header)
            if refusal is not None:
                raise refusal

    def verdict(self, data: bytes) -> tuple[int, str]:
        """(status, Error Comment) for ``data``, storing it as the server does when it is accepted."""
        try:
            self.spool.store(data)
        except InvalidInstance as exc:
            return exc.status, error_comment(exc.reason)
        return SUCCESS, ""


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> LocalModel:
    return LocalModel(tmp_path_factory.mktemp("local-spool"))


def _send_raw(port: int, data: bytes) -> Any:
    """C-STORE the bytes of one Part 10 file as they are; ``None`` when the sender cannot even send it."""
    with tempfile.NamedTemporaryFile(suffix=".dcm") as handle:
        handle.write(data)
        handle.flush()
        ae = AE(ae_title="FUZZER")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", port, ae_title="LUNGCDS")
        assert assoc.is_established, "the server stopped accepting associations"
        try:
            return assoc.send_c_store(handle.name)
        except (ValueError, AttributeError):  # our file meta itself is unsendable: not the server's concern
            return None
        finally:
            if assoc.is_established:
                assoc.release()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(instance=malformed_instances())
def test_each_malformed_instance_gets_the_same_verdict_over_the_network(
    server: LungcdsProcess, local: LocalModel, instance: Malformed, monkeypatch_module: pytest.MonkeyPatch
) -> None:
    response = _send_raw(server.dicom_port, instance.data)
    assume(response is not None)
    assert "Status" in response, f"{instance.label}: no C-STORE response (server hung or dropped the association)"
    status, comment = local.verdict(instance.data)
    event(f"answered 0x{status:04X}")
    assert response.Status == status, (instance.label, hex(response.Status), comment)
    if status != SUCCESS:
        assert str(response.get("ErrorComment", "")) == comment, instance.label
    assert server.process.poll() is None, server.log_tail()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    """Send files as their bytes, not decoded and re-encoded by pydicom (module-wide)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    yield patch
    patch.undo()


def _garbage_on_the_port(port: int) -> None:
    """Things that are not DICOM associations: random bytes, a cut A-ASSOCIATE-RQ, a 4 GB PDU header."""
    rng = random.Random(9)
    associate_rq_start = struct.pack(">BBIH", 0x01, 0x00, 0x00000044, 0x0001) + b"\x00\x00" + b"LUNGCDS".ljust(16)
    payloads = [
        bytes(rng.getrandbits(8) for _ in range(512)),
        associate_rq_start,
        struct.pack(">BBI", 0x04, 0x00, 0xFFFFFFFF) + b"\x00" * 16,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for payload in payloads:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(10)
            try:
                while conn.recv(4096):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass


def _audited_refusals(server: LungcdsProcess) -> list[dict[str, Any]]:
    with server.api as client:
        response = client.get("/audit", params={"outcome": "refused", "limit": 500})
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_after_the_fuzzing_the_server_still_serves_and_every_refusal_is_on_record(
    server: LungcdsProcess, ct_dir: Path, tmp_path: Path, monkeypatch_module: pytest.MonkeyPatch
) -> None:
    _garbage_on_the_port(server.dicom_port)
    assert server.process.poll() is None, server.log_tail()

    whole = slice_of_series(generate_uid(), generate_uid(), 0, [])
    sop_uid = str(whole.SOPInstanceUID)
    response = _send_raw(server.dicom_port, encode(whole)[:-100])
    assert response.Status == 0xC000
    refusals = wait_for(
        lambda: [r for r in _audited_refusals(server) if r["detail"].get("sop_instance_uid") == sop_uid] or None,
        30,
        0.5,
        "the refusal in the audit trail",
    )
    assert refusals[0]["detail"]["status"] == "0xC000"
    assert "truncated" in refusals[0]["detail"]["reason"], refusals[0]

    # An inconsistent series (one slice of another matrix, one of another frame of reference) is rejected
    # with both reasons when it is finalised; each of its instances was valid on its own.
    study, series_uid = generate_uid(), generate_uid()
    folder = tmp_path / "inconsistent"
    folder.mkdir()
    edits = ["one slice with another matrix", "two frames of reference"]
    files = []
    for k in range(6):
        path = folder / f"{k}.dcm"
        path.write_bytes(encode(slice_of_series(series_uid, study, k, edits)))
        files.append(path)
    assert storescu(server.dicom_port, files).returncode == 0
    rejected = wait_for(lambda: _state(server, series_uid, "rejected"), 120, 1.0, "the inconsistent series rejected")
    reasons = " | ".join(rejected["reasons"])
    assert "different matrix sizes" in reasons and "frames of reference" in reasons, reasons

    # A real series sent after all that is analysed as usual.
    real = copy_series(sorted(p for p in (ct_dir / "lung-dx-a0001-chest-5mm-s2").iterdir()), tmp_path / "real", "FUZZ")
    assert storescu(server.dicom_port, real).returncode == 0
    real_uid = str(pydicom.dcmread(real[0], stop_before_pixels=True).SeriesInstanceUID)
    done = wait_for(lambda: _state(server, real_uid, "done"), 600, 2.0, "the real series analysed")
    assert done["instance_count"] == len(real) and done["job"]["attempts"] == 1


def test_a_folder_import_refuses_each_malformed_file_by_name_and_imports_the_rest(
    server: LungcdsProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    study, series_uid = generate_uid(), generate_uid()
    for k in range(4):
        (folder / f"good{k}.dcm").write_bytes(encode(slice_of_series(series_uid, study, k, [])))
    whole = encode(slice_of_series(generate_uid(), study, 0, []))
    bad = {
        "cut.dcm": whole[: len(whole) // 2],
        "empty.dcm": b"",
        "text.dcm": b"this is not DICOM at all",
        "zeros.dcm": bytes(4096),
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    result = subprocess.run(
        lungcds_command("import", str(folder)), check=False, env=server.env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for name in bad:
        assert f"refused {name}:" in output, output
    assert "imported 4 instances in 1 series; refused 4" in output
    audited = {r["detail"]["file"] for r in _audited_refusals(server) if r["action"] == "import"}
    assert set(bad) <= audited
    assert server.series(series_uid) is not None


def _state(server: LungcdsProcess, uid: str, wanted: str) -> dict[str, Any] | None:
    series = server.series(uid) or {}
    if series.get("state") in {"failed"} and wanted != "failed":
        raise AssertionError(f"series {uid} failed: {series}")
    return series if series.get("state") == wanted else None
