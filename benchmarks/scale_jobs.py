"""Jobs per hour of the distributed mode with 1 and 2 separate worker processes (issue 9).

What: the throughput of analysis workers on a backlog, deployed as a hospital runs the
distributed mode on one host: a scratch database on the machine's PostgreSQL, the machine's
Redis (a private database number, emptied first) as broker, ``lungcds serve --no-worker`` (SCP,
API, routing loop) and W separate ``lungcds worker --concurrency=1`` processes.  For each W (a
fresh server, database and data folder each time):

1. ``storescu`` sends K copies of the real 64-slice chest CT, each with its own Study, Series and
   SOP Instance UIDs (thickness rule relaxed to 5 mm), while no worker runs;
2. once REST shows all K series and jobs ``queued``, the W workers start: that instant is t0, so
   the worker start-up (imports, connections) is counted, as it is when a hospital adds a worker;
3. the clock stops at the last job's ``finished_at``; jobs/hour = K / (t_end - t0) × 3600.
   Also printed: the start-up (t0 to the first job's ``started_at``) and the rate once the workers
   run ("busy": K over first start to last finish), since a short backlog pays the start-up in full.

No model weights are installed, so each job is the weight-free pipeline: load, lung mask,
measurements, SR/SEG/PDF written to the results folder.  No destination is configured: the server
then creates no delivery, and a job is finished when its analysis is (no PACS, no Orthanc).

Peer: perfect scaling on this machine, ideal ratio = min(W, CPU cores), against the measured ratio
of W workers' rate to one worker's rate in the same run.  Each worker process sets its own
intra-op threads (torch, SimpleITK) to ``LUNGCDS_TORCH_THREADS``, or when that is 0 to the cores
divided by its own concurrency, so two processes on two cores each take both cores; the threads
each worker logged, ``os.cpu_count()`` and ``OMP_NUM_THREADS`` are printed.  The machine may be
shared: the 1-minute load average at the start and end of each measurement is printed with it.

Per job the JSON holds the REST record's timings (load, analyse, reports, total), its queue,
start and finish times and attempts, and the per-stage seconds of its timeline events (read in
one query from the database's ``job_event`` table).

Usage::

    .venv/bin/python benchmarks/scale_jobs.py [--jobs 8] [--workers 1,2] [--torch-threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sqlalchemy  # noqa: E402

from tests.peers import (  # noqa: E402
    SHARED_DATA,
    LungcdsProcess,
    copy_series,
    reachable,
    scratch_postgres,
    start_lungcds,
    start_worker,
    storescu,
    wait_for,
)

DEFAULT_SERIES = SHARED_DATA / "ct" / "lung-dx-a0001-chest-5mm-s2"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
#: A Redis database number no test uses (they use 7, 13 and 15).
DEFAULT_REDIS_DB = 11
THREADS_EVENT = "intra-op threads per worker process"
FINISHED = {"done", "failed", "cancelled"}
#: The largest page of GET /jobs, so one call sees every job of the backlog.
MAX_JOBS = 500


@dataclass
class Copy:
    """One copy of the series: its Series Instance UID and files."""

    series_uid: str
    files: list[Path]


@dataclass
class Measurement:
    """What one W measurement saw."""

    workers: int
    jobs: list[dict[str, Any]]
    seconds: float
    load_start: float
    load_end: float
    threads_logged: list[int] = field(default_factory=list)
    event_counts: dict[str, int] = field(default_factory=dict)

    @property
    def jobs_per_hour(self) -> float:
        return len(self.jobs) / self.seconds * 3600

    @property
    def mean_job_s(self) -> float:
        """Mean start-to-finish seconds of one job (grows when jobs share the cores)."""
        return float(sum(j["started_to_finished_s"] for j in self.jobs)) / len(self.jobs)

    @property
    def first_start_s(self) -> float:
        """t0 to the first job's start: the workers' start-up."""
        return float(min(j["t0_to_started_s"] for j in self.jobs))

    @property
    def busy_jobs_per_hour(self) -> float:
        """The rate once the workers run: jobs over first job start to last job finish."""
        return len(self.jobs) / (self.seconds - self.first_start_s) * 3600


def make_copies(series_dir: Path, folder: Path, count: int) -> list[Copy]:
    """``count`` copies of the series with distinct UIDs (the same copies serve every W)."""
    import pydicom

    files = sorted(p for p in series_dir.iterdir() if p.is_file())
    copies = []
    for index in range(count):
        written = copy_series(files, folder / f"copy{index:03d}", tag=f"scale-jobs-{index}")
        uid = str(pydicom.dcmread(written[0], stop_before_pixels=True).SeriesInstanceUID)
        copies.append(Copy(series_uid=uid, files=written))
    return copies


def empty_redis_db(db: int) -> str:
    """The URL of Redis database ``db``, emptied so that no message of an earlier run is left."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def _timestamp(value: str) -> datetime:
    """A REST timestamp as an aware datetime (the database stores UTC)."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _all_queued(server: LungcdsProcess, copies: list[Copy]) -> bool:
    """True once every series and its job are queued; a series in any end state stops the run."""
    for copy in copies:
        series = server.series(copy.series_uid)
        if series is None:
            return False
        if series["state"] in {"rejected", "ignored", "failed", "not_analysable"}:
            raise RuntimeError(f"series {copy.series_uid} is {series['state']}: {series['reasons']}")
        if series["state"] != "queued" or (series.get("job") or {}).get("state") != "queued":
            return False
    return True


def _jobs_finished(server: LungcdsProcess, count: int) -> bool:
    """True once ``count`` jobs are in an end state (one listing call, so polling costs little CPU)."""
    with server.api as client:
        response = client.get("/jobs", params={"limit": MAX_JOBS})
    response.raise_for_status()
    items = response.json()["items"]
    return len(items) == count and all(job["state"] in FINISHED for job in items)


def threads_logged(folder: Path) -> list[int]:
    """The intra-op threads each worker process logged when it set them (JSON log lines)."""
    found = []
    for log in sorted(folder.glob("*-worker*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if THREADS_EVENT in line and line.startswith("{"):
                found.append(int(json.loads(line)["threads"]))
    return found


def job_record(server: LungcdsProcess, copy: Copy, t0: datetime) -> dict[str, Any]:
    """The REST record of one finished job, reduced to times, timings and attempts."""
    series = server.series(copy.series_uid) or {}
    job = series.get("job") or {}
    if job.get("state") != "done":
        raise RuntimeError(f"job of {copy.series_uid} ended {job.get('state')}: {job.get('error')}")
    started, finished = _timestamp(job["started_at"]), _timestamp(job["finished_at"])
    return {
        "job_id": job["id"],
        "series_state": series["state"],
        "attempts": job["attempts"],
        "t0_to_started_s": round((started - t0).total_seconds(), 3),
        "t0_to_finished_s": round((finished - t0).total_seconds(), 3),
        "started_to_finished_s": round((finished - started).total_seconds(), 3),
        "timings": {key: round(value, 3) for key, value in job["timings"].items()},
    }


def job_events(database_url: str) -> tuple[dict[int, dict[str, float]], dict[str, int]]:
    """Per job, seconds of each named stage; and how many events of each kind (e.g. ``resent``).

    Read from the database because the REST timeline leaves the stage names out.
    """
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            stages = conn.execute(
                sqlalchemy.text("SELECT job_id, name, seconds FROM job_event WHERE kind = 'stage' ORDER BY id")
            ).all()
            kinds = conn.execute(sqlalchemy.text("SELECT kind, count(*) FROM job_event GROUP BY kind")).all()
    finally:
        engine.dispose()
    per_job: dict[int, dict[str, float]] = {}
    for job_id, name, seconds in stages:
        per_job.setdefault(int(job_id), {})[str(name)] = round(float(seconds), 3)
    return per_job, {str(kind): int(count) for kind, count in kinds}


def measure(workers: int, copies: list[Copy], workdir: Path, redis_db: int, env: dict[str, str]) -> Measurement:
    """Send the backlog, then time ``workers`` worker processes draining it, on a fresh deployment."""
    with scratch_postgres(prefix="lungcds_bench") as database_url:
        server = start_lungcds(
            workdir / "lungcds",
            worker=False,
            extra_env={
                "LUNGCDS_DATABASE_URL": database_url,
                "LUNGCDS_BROKER_URL": empty_redis_db(redis_db),
                "LUNGCDS_MAX_SLICE_THICKNESS_MM": "5",
                **env,
            },
        )
        try:
            for copy in copies:
                sent = storescu(server.dicom_port, copy.files)
                if sent.returncode != 0:
                    raise RuntimeError(f"storescu failed: {sent.stderr[-2000:]}")
            wait_for(lambda: _all_queued(server, copies), 300, 1.0, f"{len(copies)} jobs queued")
            load_start = os.getloadavg()[0]
            t0 = datetime.now(UTC)
            for _ in range(workers):
                start_worker(server)
            wait_for(lambda: _jobs_finished(server, len(copies)), 3600 * len(copies), 2.0, "every job finished")
            load_end = os.getloadavg()[0]
            jobs = [job_record(server, copy, t0) for copy in copies]
            stages, kinds = job_events(database_url)
            for job in jobs:
                job["stages_s"] = stages.get(job["job_id"], {})
            return Measurement(
                workers=workers,
                jobs=jobs,
                seconds=max(j["t0_to_finished_s"] for j in jobs),
                load_start=load_start,
                load_end=load_end,
                threads_logged=threads_logged(workdir),
                event_counts=kinds,
            )
        finally:
            server.stop()


def summary_rows(runs: list[Measurement], cores: int) -> list[dict[str, Any]]:
    """One row per W with the ratio to the one-worker rate (None when W = 1 was not measured)."""
    one = next((r for r in runs if r.workers == 1), None)
    return [
        {
            "workers": run.workers,
            "jobs": len(run.jobs),
            "seconds": round(run.seconds, 1),
            "jobs_per_hour": round(run.jobs_per_hour, 1),
            "mean_job_s": round(run.mean_job_s, 1),
            "startup_s": round(run.first_start_s, 1),
            "ratio_vs_1": round(run.jobs_per_hour / one.jobs_per_hour, 2) if one else None,
            "busy_jobs_per_hour": round(run.busy_jobs_per_hour, 1),
            "busy_ratio_vs_1": round(run.busy_jobs_per_hour / one.busy_jobs_per_hour, 2) if one else None,
            "ideal_ratio": min(run.workers, cores),
            "load1_start": round(run.load_start, 2),
            "load1_end": round(run.load_end, 2),
            "threads_per_worker": run.threads_logged,
        }
        for run in runs
    ]


#: Table columns: heading, key in a summary row, width, format ("" for text).
COLUMNS: tuple[tuple[str, str, int, str], ...] = (
    ("workers", "workers", 7, "d"),
    ("jobs", "jobs", 4, "d"),
    ("seconds", "seconds", 8, ".1f"),
    ("jobs/h", "jobs_per_hour", 7, ".1f"),
    ("mean s/job", "mean_job_s", 10, ".1f"),
    ("ratio", "ratio_vs_1", 5, ".2f"),
    ("ideal", "ideal_ratio", 5, "d"),
    ("startup s", "startup_s", 9, ".1f"),
    ("busy jobs/h", "busy_jobs_per_hour", 11, ".1f"),
    ("busy ratio", "busy_ratio_vs_1", 10, ".2f"),
    ("load1 start→end", "load", 15, ""),
    ("threads", "threads", 7, ""),
)


def print_table(rows: list[dict[str, Any]]) -> None:
    """The summary as an aligned plain-text table (``-`` where a ratio has no one-worker run)."""
    print(" ".join(f"{heading:>{width}}" for heading, _, width, _ in COLUMNS))
    for row in rows:
        shown = {
            **row,
            "load": f"{row['load1_start']:.2f}→{row['load1_end']:.2f}",
            "threads": ",".join(map(str, row["threads_per_worker"])) or "?",
        }
        cells = ("-" if shown[key] is None else format(shown[key], fmt) for _, key, _, fmt in COLUMNS)
        print(" ".join(f"{cell:>{width}}" for cell, (_, _, width, _) in zip(cells, COLUMNS, strict=True)))


def _job_count(text: str) -> int:
    """K, within one page of the job listing that the finish poll reads."""
    count = int(text)
    if not 1 <= count <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_JOBS}")
    return count


def _worker_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("a comma list of worker counts >= 1, e.g. 1,2")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=_job_count, default=8, help="series copies in the backlog (K, 1-500)")
    parser.add_argument("--workers", type=_worker_counts, default=[1, 2], help="comma list of W, e.g. 1,2")
    parser.add_argument("--series", type=Path, default=DEFAULT_SERIES)
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="LUNGCDS_TORCH_THREADS of each worker (default: not set)"
    )
    parser.add_argument("--redis-db", type=int, default=DEFAULT_REDIS_DB, help="Redis database number (emptied)")
    args = parser.parse_args()
    if not args.series.is_dir():
        print(f"series folder {args.series} not found", file=sys.stderr)
        return 2
    for name, port in (("PostgreSQL", 5432), ("Redis", REDIS_PORT)):
        if not reachable("127.0.0.1", port):
            print(f"no {name} on 127.0.0.1:{port}", file=sys.stderr)
            return 2
    env = {"LUNGCDS_LOG_LEVEL": "INFO"}
    if args.torch_threads is not None:
        env["LUNGCDS_TORCH_THREADS"] = str(args.torch_threads)
    cores = os.cpu_count() or 1
    started = time.monotonic()
    runs = []
    with tempfile.TemporaryDirectory(prefix="lungcds-scale-") as tmp:
        copies = make_copies(args.series, Path(tmp) / "copies", args.jobs)
        for workers in args.workers:
            run = measure(workers, copies, Path(tmp) / f"w{workers}", args.redis_db, env)
            runs.append(run)
            print(f"# {workers} worker(s): {run.seconds:.1f} s for {len(run.jobs)} jobs", file=sys.stderr, flush=True)
    rows = summary_rows(runs, cores)
    print(
        f"cpu_count={cores} LUNGCDS_TORCH_THREADS={env.get('LUNGCDS_TORCH_THREADS', 'unset (0: cores // 1)')} "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print_table(rows)
    print(
        json.dumps(
            {
                "cpu_count": cores,
                "torch_threads_setting": args.torch_threads,
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "wall_s": round(time.monotonic() - started, 1),
                "summary": rows,
                "runs": [{"workers": run.workers, "event_counts": run.event_counts, "jobs": run.jobs} for run in runs],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
