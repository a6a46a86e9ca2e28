"""Admission of API requests: body limits, and the caller checked before a byte of the body is read.

Issue 14 section 3: anonymous 200 MB bodies sent to ``PUT /rules`` took the API from 0.7 to
2 GB and stalled the liveness probe, and a malformed anonymous body got 422 instead of 401.
The first tests drive the app in process; the others send real bodies to a real uvicorn server
in a subprocess and watch its memory, its answers and its liveness probe.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from server.api.main import create_app
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from tests.peers import free_port, wait_for

CHANGES = [
    ("PUT", "/api/v1/rules"),
    ("PATCH", "/api/v1/rules"),
    ("PUT", "/api/v1/destinations"),
    ("POST", "/api/v1/destinations"),
    ("POST", "/api/v1/series/1.2.3/reevaluate"),
    ("PUT", "/api/v1/models/corads/weights"),
    ("POST", "/api/v1/retrieve"),
    ("POST", "/api/v1/jobs/1/resend"),
    ("POST", "/api/v1/jobs/1/requeue"),
]
BODIES = [b"{not json", b'{"modalities": ["CT\\n[oops"]}', b"[" * 50_000, b"\xff\xfe\x00garbage"]
MIB = 2**20


@pytest.fixture
def app_and_key(settings: Settings, engine: Engine) -> tuple[TestClient, str]:
    with session_scope(engine) as session:
        key = create_api_key(session, "admin").secret
    return TestClient(create_app(settings, engine)), key


@pytest.mark.parametrize(("method", "path"), CHANGES)
@pytest.mark.parametrize("body", BODIES)
def test_anonymous_and_bad_callers_get_401_whatever_the_body(
    app_and_key: tuple[TestClient, str], method: str, path: str, body: bytes
) -> None:
    client, _ = app_and_key
    for headers in ({}, {"Authorization": "Bearer lcds_not_a_key"}, {"X-API-Key": "nonsense"}):
        response = client.request(method, path, content=body, headers={**headers, "Content-Type": "application/json"})
        assert response.status_code == 401, (method, path, headers, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["connection"] == "close", "the rest of the body is not read"


def test_keys_in_the_url_are_not_credentials(app_and_key: tuple[TestClient, str]) -> None:
    client, key = app_and_key
    for name in ("api_key", "token", "access_token", "key"):
        assert client.get("/api/v1/series", params={name: key}).status_code == 401
        assert client.put("/api/v1/rules", params={name: key}, json={"min_slices": 3}).status_code == 401


def test_bodies_over_the_limit_get_413_declared_or_streamed(settings: Settings, engine: Engine) -> None:
    settings.max_request_body_kb = 1
    with session_scope(engine) as session:
        key = create_api_key(session, "admin").secret
    client = TestClient(create_app(settings, engine))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = b'{"modalities": ["CT"], "excluded_image_type": ["' + b"X" * 2048 + b'"]}'
    declared = client.put("/api/v1/rules", content=body, headers=headers)
    assert declared.status_code == 413 and declared.headers["content-type"].startswith("application/problem+json")
    assert "LUNGCDS_MAX_REQUEST_BODY_KB" in declared.json()["detail"]
    streamed = client.put("/api/v1/rules", content=iter([body[:1000], body[1000:]]), headers=headers)
    assert streamed.status_code == 413 and streamed.headers["connection"] == "close"
    typed = client.post("/api/v1/retrieve", content=iter([body[:1000], body[1000:]]), headers=headers)
    assert typed.status_code == 413, "a body FastAPI reads itself is limited the same way"
    assert client.patch("/api/v1/rules", json={"min_slices": 3}, headers=headers).status_code == 200


def test_admin_bodies_must_be_json_objects(app_and_key: tuple[TestClient, str]) -> None:
    client, key = app_and_key
    auth = {"Authorization": f"Bearer {key}"}
    for body, status in ((b"{not json", 422), (b"[1, 2]", 422), (b"[" * 50_000, 422), (b"\xff", 422)):
        response = client.put("/api/v1/rules", content=body, headers={**auth, "Content-Type": "application/json"})
        assert response.status_code == status, body[:10]
    assert client.put("/api/v1/rules", content=b"{}", headers={**auth, "Content-Type": "text/plain"}).status_code == 415


# --- a real server --------------------------------------------------------------------------

_SERVER = """
import sys
import uvicorn
from server.api.main import create_app
from server.core.config import Settings
from server.core.db import make_engine, session_scope, upgrade
from server.core.security import create_api_key

settings = Settings(data_dir=sys.argv[1])
upgrade(settings.database_url)
engine = make_engine(settings.database_url)
with session_scope(engine) as session:
    print(create_api_key(session, "admin").secret, flush=True)
uvicorn.run(create_app(settings, engine), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


class Server(NamedTuple):
    pid: int
    port: int
    key: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("LUNGCDS_")}
    data_dir = tmp_path_factory.mktemp("api-server")
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(data_dir), str(port)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        text=True,
    )
    try:
        assert process.stdout is not None
        key = process.stdout.readline().strip()
        wait_for(lambda: _status(port, "GET", "/api/v1/health/live") == 200, timeout=60, what="the API")
        yield Server(process.pid, port, key)
    finally:
        process.terminate()
        process.wait(30)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _status(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> int | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{head}\r\n".encode())
            return int(sock.recv(4096).split(b" ", 2)[1])
    except OSError:
        return None


class Sent(NamedTuple):
    status: int
    body_bytes_sent: int
    seconds: float


def _upload(port: int, method: str, path: str, size: int, headers: dict[str, str], chunked: bool) -> Sent:
    """Send a ``size``-byte body in 1 MiB pieces, stopping as soon as the server answers."""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    piece = b"x" * MIB
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{framing}\r\n{head}\r\n".encode())
        try:
            while sent < size and not select.select([sock], [], [], 0)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            if chunked and sent >= size:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed the connection after answering: the answer is waiting
        answer = sock.recv(4096)
    return Sent(int(answer.split(b" ", 2)[1]), sent, time.monotonic() - started)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path"), [("PUT", "/api/v1/rules"), ("PUT", "/api/v1/destinations"), CHANGES[2]], ids=lambda x: x
)
def test_a_200_mb_anonymous_body_is_refused_without_being_read(
    server: Server, method: str, path: str, chunked: bool
) -> None:
    before = _rss_mib(server.pid)
    sent = _upload(server.port, method, path, 200 * MIB, {"Content-Type": "application/json"}, chunked)
    assert sent.status in (401, 413)
    assert sent.body_bytes_sent < 32 * MIB, "the client saw the answer long before it had sent the body"
    assert _rss_mib(server.pid) - before < 16, "nothing of the body was kept"


def test_liveness_answers_while_bodies_stream_in(server: Server) -> None:
    """Three anonymous 200 MB bodies (the attack) and two real 64 MB weights uploads at once."""
    before = _rss_mib(server.pid)
    results: list[Sent] = []
    payload_sha = hashlib.sha256(b"x" * 64 * MIB).hexdigest()
    admin = {"Authorization": f"Bearer {server.key}", "X-Content-SHA256": payload_sha}
    uploads: list[tuple[str, dict[str, str], int]] = [("/api/v1/rules", {}, 200 * MIB)] * 3 + [
        (f"/api/v1/models/{name}/weights", admin, 64 * MIB) for name in ("corads", "lobes")
    ]
    threads = [
        threading.Thread(target=lambda a=args: results.append(_upload(server.port, "PUT", a[0], a[2], a[1], True)))
        for args in uploads
    ]
    for thread in threads:
        thread.start()
    latencies: list[float] = []
    peak = before
    while any(t.is_alive() for t in threads):
        started = time.monotonic()
        assert _status(server.port, "GET", "/api/v1/health/live") == 200
        latencies.append(time.monotonic() - started)
        peak = max(peak, _rss_mib(server.pid))
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert sorted(r.status for r in results) == [200, 200, 401, 401, 401]
    assert [r.body_bytes_sent for r in results if r.status == 200] == [64 * MIB] * 2
    assert latencies and max(latencies) < 1.0, f"liveness took up to {max(latencies):.2f} s"
    assert peak - before < 64, f"the server grew by {peak - before:.0f} MiB while 128 MiB streamed through it"


def test_a_malformed_anonymous_body_gets_401_from_the_real_server(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        body = b"{not json at all"
        sock.sendall(
            b"PUT /api/v1/rules HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 401 ")


def _send(port: int, method: str, path: str, body: bytes, headers: dict[str, str]) -> Sent:
    """Send ``body`` whole and read the whole answer (the server closes the connection)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
        answer = b""
        while chunk := sock.recv(MIB):
            answer += chunk
    return Sent(int(answer.split(b" ", 2)[1]), len(body), time.monotonic() - started)


def _largest_object(first: str, size: int = MIB - 64) -> bytes:
    """A JSON object of ``size`` bytes at most: ``first`` members, then as many ``"kN":0`` members as fit."""
    members, length = [first], len(first) + 2
    while length + len(member := f'"k{len(members)}":0') + 1 <= size:
        members.append(member)
        length += len(member) + 1
    return ("{" + ",".join(members) + "}").encode()


def _largest_array(key: str, item: bytes, size: int = MIB - 64) -> bytes:
    """``{key: [item, item, ...]}`` of ``size`` bytes at most."""
    count = (size - len(key) - 8) // (len(item) + 1)
    return b'{"%s":[%s]}' % (key.encode(), b",".join([item] * count))


#: Every route taking a JSON body, with the costliest body of the 1 MiB limit we know for it.
JSON_BODIES = [
    ("POST", "/api/v1/retrieve", _largest_object('"source":"X","study_instance_uid":"1.2"')),
    ("POST", "/api/v1/jobs/1/resend", _largest_object('"destination":"A@h:1"')),
    ("PUT", "/api/v1/destinations", _largest_array("destinations", b"{}")),
    ("PUT", "/api/v1/rules", _largest_array("modalities", b"0")),
    ("PATCH", "/api/v1/rules", _largest_array("modalities", b"0")),
    ("POST", "/api/v1/destinations", _largest_object('"address":"A@h:1"')),
    ("PUT", "/api/v1/destinations/A", _largest_object('"address":"A@h:1"')),
    ("POST", "/api/v1/series/1.2.3/reevaluate", _largest_object('"override":null')),
]


def test_liveness_answers_while_json_bodies_are_parsed(server: Server) -> None:
    """Maximum-size JSON bodies to every body-taking route at once never stall the event loop.

    The bound is measured, not fixed.  Decoding JSON (``json.loads``) is one C call that holds
    the interpreter lock, so even off the loop it can keep the loop waiting, at worst for the
    decoding of every body in flight one after the other: the sum of their decoding times,
    measured here in the test process.  Anything more means the loop waited for validation or
    error reports too: on the loop (FastAPI's own body parameters), or under the interpreter
    lock in a thread (pydantic building hundreds of thousands of errors), each of which takes
    many times a body's decoding (1 to 6 s for these bodies, against 0.02 to 0.1 s).  The
    probe's own latency when idle is added to the bound.
    """
    admin = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    bodies = [request for request in JSON_BODIES for _ in range(3)]
    decoding = 0.0
    for _, _, body in bodies:
        started = time.perf_counter()
        json.loads(body)
        decoding += time.perf_counter() - started
    idle = []
    for _ in range(20):
        started = time.monotonic()
        assert _status(server.port, "GET", "/api/v1/health/live") == 200
        idle.append(time.monotonic() - started)
    results: list[Sent] = []
    threads = [
        threading.Thread(target=lambda r=request: results.append(_send(server.port, r[0], r[1], r[2], admin)))
        for request in bodies
    ]
    for thread in threads:
        thread.start()
    latencies: list[float] = []
    while any(t.is_alive() for t in threads):
        started = time.monotonic()
        assert _status(server.port, "GET", "/api/v1/health/live") == 200
        latencies.append(time.monotonic() - started)
    for thread in threads:
        thread.join()
    bound = max(idle) + decoding
    assert max(latencies) < bound, f"liveness waited {max(latencies):.2f} s, more than {bound:.2f} s"
    assert [r.status for r in results] == [422] * len(bodies), "every body is refused, not taken"
