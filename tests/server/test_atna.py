"""DICOM audit messages (IHE ATNA) over RFC 5424 syslog: UDP and TCP, content of the message."""

from __future__ import annotations

import socket
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from dicom_node.scp import AssociationInfo
from server.atna import SyslogSender
from server.audit import AuditTrail
from server.core.config import Settings
from server.routing.intake import SeriesIntake

ASSOC = AssociationInfo(id="a", calling_aet="CT01", called_aet="LUNGCDS", peer_host="10.1.2.3", peer_port=4000)


def _xml(message: bytes) -> ET.Element:
    header, _, body = message.partition(b"\xef\xbb\xbf")
    assert header.startswith(b"<85>1 ") and b" lungcds - DICOM+RFC3881 - " in header
    return ET.fromstring(body.decode("utf-8"))


def test_association_events_reach_a_udp_repository(engine: Engine, settings: Settings) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as repository:
        repository.bind(("127.0.0.1", 0))
        repository.settimeout(10)
        sender = SyslogSender(f"udp://127.0.0.1:{repository.getsockname()[1]}")
        intake = SeriesIntake(engine, settings, lambda j, r: None, AuditTrail(engine, sender, "LUNGCDS"))
        intake.association_ended(ASSOC, frozenset({"1.2.3.4"}), released=True)
        intake.association_rejected(ASSOC, "calling AE title not recognised")
        transferred, rejected = _xml(repository.recv(65536)), _xml(repository.recv(65536))
        sender.close()

    event = transferred.find("EventIdentification")
    assert event is not None and event.get("EventActionCode") == "C" and event.get("EventOutcomeIndicator") == "0"
    assert event.find("EventID").get("csd-code") == "110104"  # type: ignore[union-attr]
    participants = transferred.findall("ActiveParticipant")
    assert [(p.get("UserID"), p.get("UserIsRequestor")) for p in participants] == [
        ("CT01", "true"),
        ("LUNGCDS", "false"),
    ]
    assert participants[0].get("NetworkAccessPointID") == "10.1.2.3:4000"
    series = transferred.find("ParticipantObjectIdentification")
    assert series is not None and series.get("ParticipantObjectID") == "1.2.3.4"
    assert rejected.find("EventIdentification/EventID").get("csd-code") == "110114"  # type: ignore[union-attr]
    assert rejected.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]


def test_api_events_reach_a_tcp_repository_with_octet_counting(engine: Engine) -> None:
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        connection, _ = server.accept()
        with connection:
            data = b""
            while len(received) < 2:
                chunk = connection.recv(65536)
                if not chunk:
                    break
                data += chunk
                while b" " in data:
                    length, _, rest = data.partition(b" ")
                    if len(rest) < int(length):
                        break
                    received.append(rest[: int(length)])
                    data = rest[int(length) :]

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    sender = SyslogSender(f"tcp://127.0.0.1:{server.getsockname()[1]}")
    trail = AuditTrail(engine, sender, "LUNGCDS")
    trail.record(channel="api", actor="apikey:7", action="GET /api/v1/series", outcome="200", source="10.0.0.9")
    trail.record(channel="api", actor="oidc:x", action="PUT /api/v1/rules", outcome="403", source="10.0.0.9")
    thread.join(10)
    sender.close()
    server.close()
    query, change = (_xml(m) for m in received)
    assert query.find("EventIdentification/EventID").get("originalText") == "Query"  # type: ignore[union-attr]
    assert change.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]
    assert change.find("ActiveParticipant").get("UserID") == "oidc:x"  # type: ignore[union-attr]


def test_an_absent_repository_does_not_block_or_lose_the_database_trail(engine: Engine, tmp_path: Path) -> None:
    from sqlmodel import Session, select

    from server.db_models import AuditEvent

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    sender = SyslogSender(f"tcp://127.0.0.1:{port}")
    AuditTrail(engine, sender).record(channel="api", actor="anonymous", action="GET /api/v1/series", outcome="401")
    sender.close()
    with Session(engine) as session:
        assert session.exec(select(AuditEvent.outcome)).all() == ["401"]


@pytest.mark.parametrize("url", ["http://x:1", "udp://nohostport", "tls://h:6514"])
def test_bad_repository_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        SyslogSender(url)
