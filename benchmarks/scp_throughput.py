"""Receive throughput of our Storage SCP versus DCMTK storescp, on loopback.

DCMTK ``storescu`` (with ``TCP_NODELAY=1``) sends the 64-slice chest CT of the
shared test data to

1. ``dicom_node.StorageSCP``: validation, header summary, durable write
   (fdatasync of the file, fsync of its directory entry) and a sink call per
   instance, answered Success only after both;
2. DCMTK ``storescp`` writing to a folder (no fsync);
3. for reference, a bare pynetdicom SCP whose C-STORE handler only takes the
   encoded data set: the floor set by pynetdicom itself.

Each run uses a fresh, empty output folder; the receivers take turns, one
send each per round. The script prints the median and
best wall time of ``storescu`` (association, 64 C-STOREs, release) for each
receiver, the throughput, and the ratio of our SCP to storescp.

Usage::

    .venv/bin/python benchmarks/scp_throughput.py [--repeats 5] [--series DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.events import Event

from dicom_node import AssociationInfo, Spool, StorageSCP, StoredInstance
from dicom_node.scp import STORAGE_TRANSFER_SYNTAXES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SERIES = ROOT.parent / "shared" / "data" / "ct" / "lung-dx-a0001-chest-5mm-s2"
STORESCU = Path("/usr/bin/storescu")
STORESCP = Path("/usr/bin/storescp")
ENV = {**os.environ, "TCP_NODELAY": "1"}


class CountingSink:
    """A sink that only counts, so the measurement is the SCP's own work."""

    def __init__(self) -> None:
        self.instances = 0

    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo) -> None:
        self.instances += 1

    def instance_refused(
        self,
        sop_instance_uid: str,
        status: int,
        reason: str,
        assoc: AssociationInfo,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        return None

    def association_ended(self, assoc: AssociationInfo, series_uids: frozenset[str], released: bool) -> None:
        return None


def free_port() -> int:
    """A loopback port that was free a moment ago (storescp cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int) -> None:
    """Wait until a receiver listens on ``port``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


def send(port: int, files: list[Path]) -> float:
    """Run storescu once; return its wall time in seconds."""
    start = time.perf_counter()
    result = subprocess.run(
        [str(STORESCU), "-aec", "BENCH", "127.0.0.1", str(port), *map(str, files)],
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr.strip()}")
    return elapsed


@contextmanager
def our_scp(out: Path) -> Iterator[int]:
    """Our StorageSCP spooling to ``out``."""
    scp = StorageSCP("BENCH", Spool(out), CountingSink())
    try:
        yield scp.start("127.0.0.1", 0)
    finally:
        scp.stop()


@contextmanager
def dcmtk_scp(out: Path) -> Iterator[int]:
    """DCMTK storescp writing to ``out``."""
    port = free_port()
    process = subprocess.Popen(
        [str(STORESCP), "-aet", "BENCH", "-od", str(out), str(port)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def bare_pynetdicom(out: Path) -> Iterator[int]:
    """A pynetdicom SCP that keeps nothing: the floor of any pynetdicom-based receiver."""

    def handle(event: Event) -> int:
        event.encoded_dataset(include_meta=True)
        return 0x0000

    ae = AE("BENCH")
    ae.maximum_pdu_size = 0
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), list(STORAGE_TRANSFER_SYNTAXES))
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
    try:
        yield int(server.server_address[1]) if server is not None else 0
    finally:
        ae.shutdown()


Receiver = Callable[[Path], AbstractContextManager[int]]


def measure(receivers: Mapping[str, Receiver], files: list[Path], repeats: int) -> dict[str, list[float]]:
    """Time ``repeats`` sends of ``files`` into fresh instances of each receiver.

    The receivers take turns (one send each per round), so that a change in the
    machine's load during the run weighs on all of them alike.
    """
    times: dict[str, list[float]] = {name: [] for name in receivers}
    for _ in range(repeats):
        for name, receiver in receivers.items():
            with tempfile.TemporaryDirectory() as folder, receiver(Path(folder)) as port:
                times[name].append(send(port, files))
    return times


def main() -> int:
    """Measure and print; exit status 2 when DCMTK or the shared data is missing."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    args = parser.parse_args()
    for tool in (STORESCU, STORESCP):
        if not tool.exists():
            print(f"DCMTK tool {tool} is missing", file=sys.stderr)
            return 2
    if not args.series.is_dir():
        print(f"series folder {args.series} not found (shared test data absent?)", file=sys.stderr)
        return 2
    files = sorted(p for p in args.series.iterdir() if p.is_file())
    megabytes = sum(p.stat().st_size for p in files) / 1e6

    results = measure(
        {
            "dicom_node.StorageSCP": our_scp,
            "DCMTK storescp": dcmtk_scp,
            "bare pynetdicom (no-op handler)": bare_pynetdicom,
        },
        files,
        args.repeats,
    )

    print(f"{len(files)} files, {megabytes:.1f} MB, storescu over loopback, {args.repeats} runs each")
    for name, times in results.items():
        median = statistics.median(times)
        print(
            f"  {name:34s} median {median:6.3f} s ({megabytes / median:6.1f} MB/s), "
            f"best {min(times):6.3f} s ({megabytes / min(times):6.1f} MB/s)"
        )
    ours = statistics.median(results["dicom_node.StorageSCP"])
    dcmtk = statistics.median(results["DCMTK storescp"])
    bare = statistics.median(results["bare pynetdicom (no-op handler)"])
    print(
        f"  ratio of medians, dicom_node / storescp: {ours / dcmtk:.2f}x the time "
        f"({dcmtk / ours:.0%} of its throughput)"
    )
    print(f"  ratio of medians, bare pynetdicom / storescp: {bare / dcmtk:.2f}x the time (the library's floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
