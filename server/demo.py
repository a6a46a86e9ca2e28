"""``lungcds demo``: the whole DICOM path on one machine, with nothing to configure.

It starts a demo PACS (a storage SCP of our own ``dicom_node``), starts ``lungcds serve`` in the
embedded mode on free loopback ports with that PACS as destination, sends a real chest CT from
``../shared/data/ct`` (or, when absent, a synthetic chest phantom) with our C-STORE client,
follows the series over the REST API with a progress bar, and prints where the SR and PDF went.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pydicom
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dicom_node.scp import AssociationInfo, StorageSCP
from dicom_node.scu import Destination, send_files
from dicom_node.spool import Spool, StoredInstance
from server.core.db import make_engine, session_scope
from server.core.security import create_api_key
from server.runtime import RUNTIME_FILE

__all__ = ["find_sample_series", "run_demo"]

SAMPLE_SERIES = "lung-dx-a0001-chest-5mm-s2"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_FINAL_STATES = {"done", "failed", "rejected", "ignored"}


class _DemoPacs:
    """Collects what our server sends back (stands in for the hospital PACS)."""

    def __init__(self) -> None:
        self.received: list[StoredInstance] = []

    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo) -> None:
        self.received.append(stored)

    def instance_refused(
        self,
        sop_instance_uid: str,
        status: int,
        reason: str,
        assoc: AssociationInfo,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Nothing to add: the demo reports what it receives; our SCU logs the refusal."""

    def association_ended(self, assoc: AssociationInfo, series_uids: frozenset[str], released: bool) -> None:
        """Nothing to do: the demo PACS only keeps files."""


def find_sample_series() -> Path | None:
    """The shared real chest CT, looked up beside the project and beside the working folder."""
    for base in (_PROJECT_ROOT.parent, Path.cwd().parent, Path.cwd()):
        candidate = base / "shared" / "data" / "ct" / SAMPLE_SERIES
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate
    return None


def _phantom_series(folder: Path) -> list[Path]:
    from models.phantom import chest_phantom, write_ct_series

    phantom = chest_phantom(shape_zyx=(120, 256, 256), spacing_zyx=(2.5, 1.4, 1.4))
    return write_ct_series(
        phantom,
        phantom.geometry,
        folder,
        patient_id="LUNGCDS-PHANTOM",
        patient_name="Phantom^Chest",
        patient_age="050Y",
        patient_sex="O",
        slice_thickness=2.5,
    )


def _wait_for_runtime_file(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} during start-up")
        if path.is_file():
            info: dict[str, object] = json.loads(path.read_text())
            return info
        time.sleep(0.2)
    raise TimeoutError(f"the server did not start within {timeout:.0f} s")


def run_demo(*, data_dir: Path | None, timeout: float, keep_running: bool, console: Console) -> int:
    """Run the demo end to end; the exit code (0 when the reports reached the demo PACS)."""
    root = data_dir or Path(tempfile.mkdtemp(prefix="lungcds-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    sample = find_sample_series()
    if sample is not None:
        files = sorted(p for p in sample.iterdir() if p.is_file())
        console.print(f"Sample: real chest CT {sample} ({len(files)} files)")
    else:
        files = _phantom_series(root / "phantom")
        console.print(f"Sample: ../shared/data is absent, so a synthetic chest phantom ({len(files)} slices)")
    thickness = float(pydicom.dcmread(files[0], stop_before_pixels=True).get("SliceThickness", 0) or 0)
    limit = max(3.0, thickness)
    if limit > 3.0:
        console.print(
            f"The sample has {thickness:g} mm slices; the default rule accepts at most 3 mm, so this demo "
            f"sets LUNGCDS_MAX_SLICE_THICKNESS_MM={limit:g}."
        )

    pacs_sink = _DemoPacs()
    pacs = StorageSCP("DEMOPACS", Spool(root / "demo-pacs", min_free_bytes=0), pacs_sink)
    pacs_port = pacs.start("127.0.0.1", 0)
    server_dir = root / "server"
    env = {
        **os.environ,
        "LUNGCDS_DATA_DIR": str(server_dir),
        "LUNGCDS_BIND_HOST": "127.0.0.1",
        "LUNGCDS_DICOM_PORT": "0",
        "LUNGCDS_API_PORT": "0",
        "LUNGCDS_DESTINATIONS": f"DEMOPACS@127.0.0.1:{pacs_port}",
        "LUNGCDS_MAX_SLICE_THICKNESS_MM": str(limit),
        "LUNGCDS_SERIES_IDLE_SECONDS": "10",
        "LUNGCDS_LOG_LEVEL": "WARNING",
    }
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            code = _drive(console, proc, server_dir, files, pacs_sink, root, timeout, log_path)
            if code == 0 and not keep_running:
                console.print("The demo server stops now; `lungcds demo --keep-running` keeps it up for the REST API.")
            if code == 0 and keep_running:
                console.print("The server keeps running for the REST API; press Ctrl-C to stop it.")
                with contextlib.suppress(KeyboardInterrupt):
                    proc.wait()
            return code
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            pacs.stop()


def _drive(
    console: Console,
    proc: subprocess.Popen[bytes],
    server_dir: Path,
    files: list[Path],
    pacs_sink: _DemoPacs,
    root: Path,
    timeout: float,
    log_path: Path,
) -> int:
    info = _wait_for_runtime_file(server_dir / RUNTIME_FILE, proc, timeout=120)
    dicom_port, api_port = int(str(info["dicom_port"])), int(str(info["api_port"]))
    api = f"http://127.0.0.1:{api_port}/api/v1"
    console.print(f"Server: AE LUNGCDS on 127.0.0.1:{dicom_port}, REST {api} (log: {log_path})")
    with session_scope(make_engine(f"sqlite:///{server_dir / 'lungcds.db'}")) as session:
        key = create_api_key(session, "viewer", label="demo").secret

    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    start = time.monotonic()
    results = send_files(Destination("LUNGCDS", "127.0.0.1", dicom_port), files, calling_aet="DEMOSCU")
    refused = [r for r in results if not r.ok]
    console.print(f"Sent {len(results) - len(refused)} of {len(files)} instances in {time.monotonic() - start:.1f} s")
    if refused:
        console.print(f"[red]{len(refused)} instances refused: {refused[0].error}[/]")
        return 1

    headers = {"Authorization": f"Bearer {key}"}
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    state, body = "receiving", {}
    with httpx.Client(base_url=api, headers=headers, timeout=10) as client, Progress(*columns, console=console) as bar:
        task = bar.add_task("series receiving", total=4)
        order = ["receiving", "queued", "analysing", "done"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = client.get(f"/series/{series_uid}")
            if response.status_code == 200:
                body = response.json()
                state = body["state"]
                bar.update(
                    task, description=f"series {state}", completed=order.index(state) + 1 if state in order else 4
                )
                deliveries = (body.get("job") or {}).get("deliveries", [])
                if state in _FINAL_STATES and (
                    state != "done" or (deliveries and all(d["state"] == "sent" for d in deliveries))
                ):
                    break
            time.sleep(1.0)
    elapsed = time.monotonic() - start
    if state != "done":
        console.print(f"[red]series ended in state {state!r}: {body.get('reasons') or body.get('job', {})}[/]")
        return 1
    result_dir = server_dir / "results" / series_uid
    console.print(f"[green]Analysed and delivered in {elapsed:.1f} s[/] (from the first slice sent)")
    _print_measurements(console, json.loads((result_dir / "result.json").read_text(encoding="utf-8")))
    console.print(f"Results on the server: {result_dir}")
    for stored in pacs_sink.received:
        console.print(
            f"  demo PACS received {_KIND_NAMES.get(stored.header.sop_class_uid or '', 'object')}: {stored.path}"
        )
    console.print(f"REST: curl -H 'Authorization: Bearer {key}' {api}/series/{series_uid}/result")
    console.print(f"Everything of this demo is under {root}")
    return 0


_KIND_NAMES = {
    "1.2.840.10008.5.1.4.1.1.88.34": "SR (Comprehensive 3D SR, TID 1500)",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG (lung masks)",
    "1.2.840.10008.5.1.4.1.1.104.1": "encapsulated PDF report",
}


def _print_measurements(console: Console, result: dict[str, Any]) -> None:
    table = Table("region", "volume mL", "functional mL", "% < -950 HU", "15th perc. HU", "mean HU")
    for region, m in result.get("measurements", {}).items():
        cells = [m.get(k) for k in ("volume_ml", "fpv_ml", "laa950_pct", "perc15_hu", "mean_hu")]
        table.add_row(region, *("-" if v is None else f"{v:.1f}" for v in cells))
    console.print(table)
    for name, run in result.get("models", {}).items():
        if run["status"] != "ran":
            console.print(f"  {name}: {run['status']} ({run['reason']})")
