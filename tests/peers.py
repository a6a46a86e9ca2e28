"""Real peers for tests: Orthanc as PACS, DCMTK as modality, our own server as a process.

Every peer listens on loopback on a free port and is stopped at the end of its fixture.
DCMTK tools and Orthanc get ``TCP_NODELAY=1`` (without it each file costs ~43 ms).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

__all__ = [
    "ORTHANC_DICOMWEB_PLUGIN",
    "SHARED_DATA",
    "LungcdsProcess",
    "OrthancPeer",
    "dciodvfy_errors",
    "copy_series",
    "free_port",
    "scratch_rabbitmq",
    "start_lungcds",
    "start_orthanc",
    "storescu",
    "wait_for",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
#: The machine's PostgreSQL (trust authentication); tests create and drop their own databases on it.
PG_ADMIN_URL = os.environ.get("LUNGCDS_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def reachable(host: str, port: int) -> bool:
    """True when something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def scratch_postgres(prefix: str = "lungcds_test") -> Iterator[str]:
    """The URL of a new, empty database on the machine's PostgreSQL, dropped afterwards.

    Skips the calling test when no PostgreSQL listens on 127.0.0.1:5432 (a user's fresh machine).
    """
    if not reachable("127.0.0.1", 5432):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def scratch_rabbitmq() -> Iterator[str]:
    """The AMQP URL of a new, empty virtual host on the machine's RabbitMQ, deleted afterwards.

    Skips the calling test when no RabbitMQ listens on 127.0.0.1:5672 or ``rabbitmqctl`` is missing.
    """
    ctl = shutil.which("rabbitmqctl")
    if not reachable("127.0.0.1", 5672) or ctl is None:
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (or no rabbitmqctl to make a scratch virtual host)")
    vhost = f"lungcds_test_{uuid.uuid4().hex[:10]}"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run(
            [ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], check=False, capture_output=True, timeout=60)


def free_port() -> int:
    """A port that was free a moment ago on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class OrthancPeer:
    """A running Orthanc on loopback, with its REST client."""

    process: subprocess.Popen[bytes]
    aet: str
    dicom_port: int
    http: httpx.Client
    log: Path
    workdir: Path
    http_port: int

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def lookup(self, uid: str) -> list[dict[str, Any]]:
        """Orthanc resources whose DICOM UID is ``uid``."""
        result: list[dict[str, Any]] = self.http.post("/tools/lookup", content=uid).json()
        return result

    def find_instances(self, **query: str) -> list[str]:
        """Orthanc IDs of the stored instances whose DICOM attributes match ``query`` (``/tools/find``)."""
        found: list[str] = self.http.post("/tools/find", json={"Level": "Instance", "Query": query}).json()
        return found

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.http.get(f"/instances/{orthanc_id}/file").content

    def instance_preview(self, orthanc_id: str) -> httpx.Response:
        """Orthanc's rendering of an image instance (PNG), as its web viewer shows it."""
        return self.http.get(f"/instances/{orthanc_id}/preview")

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        tags: dict[str, Any] = self.http.get(f"/instances/{orthanc_id}/simplified-tags").json()
        return tags

    def add_modality(self, name: str, aet: str, port: int) -> None:
        """Tell Orthanc where an AE listens (needed for C-MOVE to it)."""
        self.http.put(f"/modalities/{name}", json={"AET": aet, "Host": "127.0.0.1", "Port": port}).raise_for_status()

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


#: Debian's DICOMweb plugin of Orthanc (package orthanc-dicomweb).
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def start_orthanc(
    workdir: Path,
    aet: str = "ORTHANC",
    ports: tuple[int, int] | None = None,
    *,
    extra_config: dict[str, Any] | None = None,
    auth: tuple[str, str] | None = None,
) -> OrthancPeer:
    """Start Orthanc with its own storage under ``workdir``; loopback only, no auth.

    ``ports`` (DICOM, HTTP) restarts a stopped peer where it was, with the storage it had.
    ``extra_config`` is merged into its configuration (e.g. ``Plugins`` and ``DicomWeb``); with
    ``auth`` (user, password) its REST client authenticates, for a configuration that requires it.
    """
    binary = shutil.which("Orthanc")
    if binary is None:
        raise FileNotFoundError("Orthanc is not installed (apt install orthanc)")
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = ports or (free_port(), free_port())
    config = {
        "Name": "lungcds-test-pacs",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "index"),
        "DicomAet": aet,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "Plugins": [],
        "HttpServerEnabled": True,
        "StableAge": 2,
        **(extra_config or {}),
    }
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = workdir / "orthanc.log"
    with log.open("wb") as fh:
        process = subprocess.Popen([binary, str(config_path)], stdout=fh, stderr=subprocess.STDOUT, env=DCMTK_ENV)
    http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30, auth=auth)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            return http.get("/system").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, 60, 0.2, "Orthanc to start")
    return OrthancPeer(
        process=process, aet=aet, dicom_port=dicom_port, http=http, log=log, workdir=workdir, http_port=http_port
    )


@dataclass
class LungcdsProcess:
    """A ``lungcds serve`` (or worker) subprocess and what it told us about itself."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    env: dict[str, str]
    log: Path
    dicom_port: int = 0
    api_port: int = 0
    api_key: str = ""
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    https: bool = False
    ca_file: Path | None = None

    @property
    def api(self) -> httpx.Client:
        scheme = "https" if self.https else "http"
        return httpx.Client(
            base_url=f"{scheme}://127.0.0.1:{self.api_port}/api/v1",
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
            verify=ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True,
        )

    def series(self, uid: str) -> dict[str, Any] | None:
        try:
            with self.api as client:
                response = client.get(f"/series/{uid}")
        except httpx.TransportError as exc:
            # A dropped connection is a server that died or stopped: say which, with its log.
            state = "running" if self.process.poll() is None else f"exited {self.process.returncode}"
            raise AssertionError(f"GET /series/{uid}: {exc!r}; lungcds serve is {state}\n{self.log_tail()}") from exc
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def delivered(self, uid: str) -> dict[str, Any] | None:
        """The series once it is analysed and every report is sent; None before.

        A series that ended failed, rejected or ignored fails the calling test, with the server's log.
        """
        series = self.series(uid)
        if series is None:
            return None
        if series["state"] in {"failed", "rejected", "ignored"}:
            raise AssertionError(f"series {uid} ended {series['state']}: {series['reasons']}\n{self.log_tail()}")
        deliveries = (series.get("job") or {}).get("deliveries") or []
        done = series["state"] == "done" and deliveries and all(d["state"] == "sent" for d in deliveries)
        return series if done else None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        for proc in [self.process, *self.others]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [self.process, *self.others]:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def lungcds_command(*args: str) -> list[str]:
    """The ``lungcds`` CLI of this interpreter."""
    return [sys.executable, "-m", "server.cli", *args]


def start_lungcds(
    data_dir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    worker: bool = True,
    https: bool = False,
    ca_file: Path | None = None,
) -> LungcdsProcess:
    """Start ``lungcds serve`` on free loopback ports; wait until it listens; make a viewer key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNGCDS_")}
    env.update(
        {
            "LUNGCDS_DATA_DIR": str(data_dir),
            "LUNGCDS_BIND_HOST": "127.0.0.1",
            "LUNGCDS_DICOM_PORT": "0",
            "LUNGCDS_API_PORT": "0",
            "LUNGCDS_SERIES_IDLE_SECONDS": "10",
            "LUNGCDS_LOG_LEVEL": "INFO",
            "LUNGCDS_WORKER_CONCURRENCY": "2",
            # The tests start many short-lived servers; the warm-up has its own tests (tests/server/test_warmup.py).
            "LUNGCDS_WARM_UP": "false",
        }
    )
    env.update(extra_env or {})
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}-serve.log"
    args = ["serve"] if worker else ["serve", "--no-worker"]
    with log.open("wb") as fh:
        process = subprocess.Popen(
            lungcds_command(*args), env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT
        )
    server = LungcdsProcess(process=process, data_dir=data_dir, env=env, log=log, https=https, ca_file=ca_file)
    runtime = data_dir / "serve.json"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"lungcds serve exited {process.returncode}:\n{server.log_tail()}")
        return runtime.is_file()

    wait_for(ready, 120, 0.2, "lungcds serve to listen")
    info = json.loads(runtime.read_text())
    server.dicom_port, server.api_port = int(info["dicom_port"]), int(info["api_port"])
    created = subprocess.run(
        lungcds_command("apikey", "create", "--role", "admin"),
        env=env,
        capture_output=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    server.api_key = created.stdout.decode().strip().splitlines()[-1]
    return server


def start_worker(server: LungcdsProcess, queues: str = "gpu,cpu") -> subprocess.Popen[bytes]:
    """Start a separate ``lungcds worker`` process with the server's environment, its own node name and log."""
    number = len(server.others) + 1
    log = server.data_dir.parent / f"{server.data_dir.name}-worker{number}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            lungcds_command("worker", f"--queues={queues}", "--concurrency=1", f"--hostname=worker{number}@%h"),
            env=server.env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
        )
    server.others.append(proc)
    return proc


def storescu(
    port: int, files: list[Path], *, called: str = "LUNGCDS", calling: str = "CTSCANNER", extra: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Send ``files`` with DCMTK's storescu (the real one, not pynetdicom's script)."""
    cmd = ["/usr/bin/storescu", "-aec", called, "-aet", calling, *extra, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, check=False, env=DCMTK_ENV, capture_output=True, text=True, timeout=300)


def copy_series(files: list[Path], folder: Path, tag: str) -> list[Path]:
    """Write ``files`` (one series) to ``folder`` with new Study, Series and SOP Instance UIDs.

    The UIDs and the Accession Number derive from ``tag``, so each copy is a different series
    to the server with the same pixels and geometry, and the same ``tag`` gives the same UIDs.
    """
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    study, series = (generate_uid(entropy_srcs=[f"{tag}-{kind}"]) for kind in ("study", "series"))
    written = []
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[f"{tag}-{index}"])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber = tag[-16:]
        target = folder / path.name
        ds.save_as(target)
        written.append(target)
    return written


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of ``dciodvfy`` output that report an error (warnings are not errors)."""
    completed = subprocess.run(["dciodvfy", str(path)], check=False, capture_output=True, text=True, timeout=120)
    output = completed.stdout + completed.stderr
    return [line for line in output.splitlines() if line.startswith("Error")]
