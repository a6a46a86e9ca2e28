"""Time from the last slice received to our SR in a real PACS, against the PACS' own ingest.

For each repeat, a fresh Orthanc and a fresh ``lungcds serve`` (embedded mode, thickness rule
relaxed to 5 mm, Orthanc as destination) are started on loopback. Then, in the same run:

1. peer: DCMTK ``storescu`` sends the 64-slice chest CT straight to Orthanc (its ingest time);
2. ours: ``storescu`` sends the same series to lungcds; the clock starts when ``storescu``
   returns (last slice acknowledged) and stops when Orthanc finds an SR in the study (Orthanc is
   polled every 0.05 s; lungcds is not asked until the SR is there), so it covers completion,
   queueing, loading, lung mask, measurements, SR/SEG/PDF building and C-STORE to Orthanc.

It prints one JSON line per repeat, a summary with medians and the ratio of our latency to the
peer's ingest time of the same series, and a table of where the time went, from the job's
timeline (``GET /jobs/{id}/timeline``): waiting for the series to be complete, waiting in the
queue, each pipeline stage (as the worker recorded it) and the delivery to Orthanc.

Usage::

    .venv/bin/python benchmarks/end_to_end_latency.py [--repeats 3] [--series DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.peers import SHARED_DATA, start_lungcds, start_orthanc, storescu  # noqa: E402

DEFAULT_SERIES = SHARED_DATA / "ct" / "lung-dx-a0001-chest-5mm-s2"


def _wait_for_sr_in_orthanc(orthanc, study_uid: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Poll Orthanc, not lungcds: a client asking lungcds ten times a second competes with its analysis."""
    deadline = time.monotonic() + timeout
    while not orthanc.find_instances(StudyInstanceUID=study_uid, Modality="SR"):
        if time.monotonic() > deadline:
            raise TimeoutError("no SR reached Orthanc")
        time.sleep(0.05)


def _at(entry: dict[str, Any]) -> datetime:
    at = datetime.fromisoformat(entry["at"])
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def phases(timeline: list[dict[str, Any]], last_slice: datetime, sr_in_orthanc: datetime) -> dict[str, float]:
    """Seconds per phase, in order: completion wait, queue wait, each stage, delivery (wall clock, UTC)."""
    first: dict[str, datetime] = {}
    for entry in timeline:
        first.setdefault(entry["kind"], _at(entry))
    result = {
        "series_completion": (first["series_complete"] - last_slice).total_seconds(),
        "queue_wait": (first["started"] - first["queued"]).total_seconds(),
    }
    for entry in timeline:
        if entry["kind"] == "stage":
            result[f"stage:{entry['name']}"] = round(float(entry["seconds"]), 3)
    last_stage_end = max(
        (_at(e) + timedelta(seconds=float(e["seconds"])) for e in timeline if e["kind"] == "stage"),
        default=first["started"],
    )
    result["bookkeeping"] = (first["finished"] - last_stage_end).total_seconds()
    result["delivery_to_orthanc"] = (sr_in_orthanc - first["finished"]).total_seconds()
    return {k: round(v, 3) for k, v in result.items()}


def one_run(series_dir: Path, workdir: Path) -> dict[str, Any]:
    """Measure one repeat with fresh peers under ``workdir``."""
    import pydicom

    files = sorted(p for p in series_dir.iterdir() if p.is_file())
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    series_uid, study_uid = str(header.SeriesInstanceUID), str(header.StudyInstanceUID)
    orthanc = start_orthanc(workdir / "orthanc")
    server = start_lungcds(
        workdir / "lungcds",
        extra_env={
            "LUNGCDS_MAX_SLICE_THICKNESS_MM": "5",
            "LUNGCDS_DESTINATIONS": orthanc.destination,
            "LUNGCDS_LOG_LEVEL": "WARNING",
            "LUNGCDS_WARM_UP": "true",  # as deployed: the worker warms up before its first job
        },
    )
    try:
        t0 = time.monotonic()
        peer = storescu(orthanc.dicom_port, files, called=orthanc.aet)
        orthanc_ingest = time.monotonic() - t0
        assert peer.returncode == 0, peer.stderr

        t0 = time.monotonic()
        ours = storescu(server.dicom_port, files)
        last_slice = time.monotonic()
        assert ours.returncode == 0, ours.stderr
        send_to_us = last_slice - t0

        last_slice_wall = datetime.now(UTC)
        _wait_for_sr_in_orthanc(orthanc, study_uid, timeout=900)
        latency = time.monotonic() - last_slice
        sr_in_orthanc_wall = datetime.now(UTC)
        series = server.series(series_uid) or {}
        if series.get("state") in {"failed", "rejected"}:
            raise RuntimeError(f"series ended {series['state']}: {series.get('reasons')}")
        job = series["job"]
        with server.api as client:
            timeline = client.get(f"/jobs/{job['id']}/timeline").json()
        return {
            "slices": len(files),
            "orthanc_ingest_s": round(orthanc_ingest, 3),
            "send_to_lungcds_s": round(send_to_us, 3),
            "last_slice_to_sr_in_orthanc_s": round(latency, 3),
            "ratio_latency_to_orthanc_ingest": round(latency / orthanc_ingest, 2),
            **{f"job_{k}": round(v, 3) for k, v in job["timings"].items()},
            "phases_s": phases(timeline, last_slice_wall, sr_in_orthanc_wall),
        }
    finally:
        server.stop()
        orthanc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    args = parser.parse_args()
    if not args.series.is_dir():
        print(f"series folder {args.series} not found", file=sys.stderr)
        return 2
    runs: list[dict[str, Any]] = []
    for index in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="lungcds-bench-") as tmp:
            run = one_run(args.series, Path(tmp))
        runs.append(run)
        print(json.dumps({"repeat": index + 1, **run}), flush=True)
    summary = {
        key: statistics.median(r[key] for r in runs)
        for key in ("orthanc_ingest_s", "send_to_lungcds_s", "last_slice_to_sr_in_orthanc_s")
    }
    summary["ratio_latency_to_orthanc_ingest"] = round(
        summary["last_slice_to_sr_in_orthanc_s"] / summary["orthanc_ingest_s"], 2
    )
    print(json.dumps({"median_of": len(runs), **summary}))
    names = list(runs[0]["phases_s"])
    print(f"{'phase (median of ' + str(len(runs)) + ')':<34} {'s':>7}")
    for name in names:
        print(f"{name:<34} {statistics.median(r['phases_s'].get(name, 0.0) for r in runs):>7.3f}")
    print(f"{'last slice -> SR in Orthanc':<34} {summary['last_slice_to_sr_in_orthanc_s']:>7.3f}")
    print(f"{'peer: Orthanc ingest of the series':<34} {summary['orthanc_ingest_s']:>7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
