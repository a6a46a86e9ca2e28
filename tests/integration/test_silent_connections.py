"""Connections that never become associations cannot keep the modalities out (issue 14, section 5).

A real Storage SCP on an ephemeral loopback port with a small association limit, raw TCP sockets
that send nothing or half an A-ASSOCIATE-RQ (PS3.8 9.3.2), and real DCMTK ``echoscu`` and
``storescu`` from an allowed calling AE title. The silent sockets take no association slot, are
closed by the SCP after the association request timeout, and the limit still rejects the next
*established* association with A-ASSOCIATE-RJ rejected-transient, local-limit-exceeded (PS3.8 9.3.4).
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.scp import StorageSCP
from dicom_node.spool import Spool
from tests.dicom_node.helpers import (
    ECHOSCU,
    SCP_AET,
    RecordingSink,
    dcmtk_env,
    make_ct,
    require,
    run_storescu,
)

pytestmark = pytest.mark.integration

MODALITY = "CT01"
LIMIT = 4
REQUEST_TIMEOUT = 5.0
#: Slack for the SCP's check (every half second) and a loaded machine.
CLOSE_SLACK = 3.0


@dataclass
class Running:
    scp: StorageSCP
    sink: RecordingSink
    port: int
    rejections: list[str] = field(default_factory=list)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    sink = RecordingSink()
    rejections: list[str] = []
    scp = StorageSCP(
        SCP_AET,
        Spool(tmp_path / "spool", min_free_bytes=0),
        sink,
        allowed_calling_aets=[MODALITY],
        maximum_associations=LIMIT,
        association_request_timeout=REQUEST_TIMEOUT,
        on_rejected=lambda info, reason: rejections.append(reason),
    )
    port = scp.start("127.0.0.1", 0)
    try:
        yield Running(scp, sink, port, rejections)
    finally:
        scp.stop()


def connect_from(source: str, port: int) -> socket.socket:
    """A TCP connection to the SCP from a given loopback address (all of 127.0.0.0/8 is local on Linux)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((source, 0))
    except OSError as exc:
        sock.close()
        pytest.skip(f"cannot bind loopback address {source}: {exc}")
    sock.connect(("127.0.0.1", port))
    return sock


def half_an_associate_rq() -> bytes:
    """The first 74 bytes of an A-ASSOCIATE-RQ whose header announces 200 (PS3.8 9.3.2)."""
    return struct.pack(
        ">BBLHH16s16s32s", 0x01, 0, 200, 0x0001, 0, SCP_AET.encode().ljust(16), b"CT01".ljust(16), bytes(32)
    )


def is_open(sock: socket.socket) -> bool:
    """True while the SCP has not closed the connection (nothing to read, no end of stream)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def closed_at(sock: socket.socket, deadline: float) -> float | None:
    """When the SCP closed the connection, or ``None`` if it was still open at ``deadline``."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic()


def echoscu(port: int, aet: str = MODALITY) -> subprocess.CompletedProcess[str]:
    require(ECHOSCU)
    return subprocess.run(
        [str(ECHOSCU), "-aet", aet, "-aec", SCP_AET, "127.0.0.1", str(port)],
        env=dcmtk_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def associate(port: int) -> Association:
    ae = AE(ae_title=MODALITY)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification, ExplicitVRLittleEndian)
    return ae.associate("127.0.0.1", port, ae_title=SCP_AET)


def test_silent_and_half_sent_connections_do_not_keep_a_modality_out(running: Running, tmp_path: Path) -> None:
    opened = time.monotonic()
    # Ten times the association limit, from addresses of their own (none is closed for crowding) ...
    silent = [connect_from(f"127.0.0.{2 + k}", running.port) for k in range(10 * LIMIT)]
    # ... and from the modality's own address, some sending half an A-ASSOCIATE-RQ.
    local = [connect_from("127.0.0.1", running.port) for _ in range(6)]
    for sock in local[:3]:
        sock.sendall(half_an_associate_rq())
    path = tmp_path / "ct.dcm"
    make_ct().save_as(path, enforce_file_format=True)

    echo = echoscu(running.port)
    store = run_storescu(running.port, [path], aet=MODALITY)

    assert echo.returncode == 0, echo.stderr
    assert store.returncode == 0, store.stderr
    assert len(running.sink.stored) == 1
    assert time.monotonic() - opened < REQUEST_TIMEOUT, "too slow to tell: the silent sockets may be closed already"
    assert all(is_open(sock) for sock in silent + local), "the silent sockets were open all along"

    deadline = opened + REQUEST_TIMEOUT + CLOSE_SLACK
    closed = [closed_at(sock, deadline) for sock in silent + local]
    assert None not in closed, f"{closed.count(None)} silent sockets still open after {REQUEST_TIMEOUT + CLOSE_SLACK} s"
    assert min(t for t in closed if t is not None) - opened >= REQUEST_TIMEOUT - 0.5
    for sock in silent + local:
        sock.close()
    running.sink.wait_for_ended(2)
    assert [info.calling_aet for info, _, _ in running.sink.ended] == [MODALITY, MODALITY]
    assert running.rejections == []


def test_a_burst_of_connections_from_one_address_is_served_whole(running: Running) -> None:
    """A PACS opening many associations at once from one address loses none of them to the pending bound."""
    with ThreadPoolExecutor(3 * running.scp.maximum_pending_per_peer) as pool:
        results = list(pool.map(lambda _: echoscu(running.port), range(3 * running.scp.maximum_pending_per_peer)))
    aborted = [r.stderr for r in results if "aborted" in r.stderr.lower() or "never connected" in r.stderr]
    assert aborted == [], "a connection of the burst was closed before it could ask"
    assert [r.returncode for r in results].count(0) >= LIMIT, "the established ones are served; the rest are rejected"


def test_a_crowd_of_silent_connections_from_the_modality_address_is_thinned_out(running: Running) -> None:
    crowd = [connect_from("127.0.0.1", running.port) for _ in range(30)]
    time.sleep(1.5)  # silent for longer than any sender takes to send its A-ASSOCIATE-RQ

    echo = echoscu(running.port)

    assert echo.returncode == 0, echo.stderr
    time.sleep(0.5)
    still_open = [sock for sock in crowd if is_open(sock)]
    assert len(still_open) <= running.scp.maximum_pending_per_peer
    for sock in crowd:
        sock.close()


def test_the_limit_counts_established_associations_only_and_rejects_the_next(running: Running) -> None:
    silent = [connect_from(f"127.0.0.{2 + k}", running.port) for k in range(5 * LIMIT)]
    established = [associate(running.port) for _ in range(LIMIT)]
    try:
        assert all(assoc.is_established for assoc in established), "silent sockets took association slots"

        over = associate(running.port)
        assert over.is_rejected
        primitive = over.acceptor.primitive
        assert primitive is not None
        # A-ASSOCIATE-RJ: rejected-transient, service provider (presentation), local-limit-exceeded.
        assert (primitive.result, primitive.result_source, primitive.diagnostic) == (0x02, 0x03, 0x02)
        assert echoscu(running.port).returncode != 0
        deadline = time.monotonic() + 5
        while len(running.rejections) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(running.rejections) == 2
        assert all("Local limit exceeded" in reason and f"all {LIMIT}" in reason for reason in running.rejections)

        established.pop().release()
        replacement = associate(running.port)
        assert replacement.is_established, "a released association gives its slot back"
        established.append(replacement)
    finally:
        for assoc in established:
            if assoc.is_established:
                assoc.release()
        for sock in silent:
            sock.close()
    running.sink.wait_for_ended(LIMIT + 1)


def test_lungcds_serve_with_its_default_limits_lets_the_modality_in_past_forty_silent_connections(
    tmp_path: Path,
) -> None:
    """The same attack on a real ``lungcds serve`` with default settings (32 associations, 5 s request
    timeout, 8 pending per address) and only the modality on the allow-list."""
    from tests.peers import start_lungcds

    server = start_lungcds(tmp_path / "lungcds", worker=False, extra_env={"LUNGCDS_ALLOWED_CALLING_AETS": MODALITY})
    silent: list[socket.socket] = []
    try:
        opened = time.monotonic()
        silent = [connect_from(f"127.0.0.{2 + k}", server.dicom_port) for k in range(40)]
        silent += [connect_from("127.0.0.1", server.dicom_port) for _ in range(6)]
        path = tmp_path / "ct.dcm"
        make_ct().save_as(path, enforce_file_format=True)
        echo = echoscu(server.dicom_port)
        store = run_storescu(server.dicom_port, [path], aet=MODALITY)
        assert echo.returncode == 0, echo.stderr
        assert store.returncode == 0, store.stderr
        assert time.monotonic() - opened < 5.0, "too slow to tell: the default timeout may have closed them"
        stranger = echoscu(server.dicom_port, aet="INTRUDER")
        assert stranger.returncode != 0, "the allow-list still holds"
    finally:
        for sock in silent:
            sock.close()
        server.stop()
