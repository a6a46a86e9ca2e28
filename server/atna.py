"""DICOM audit messages (PS3.15 Annex A.5, IHE ATNA) sent as RFC 5424 syslog to an audit repository.

Each audit event of :mod:`server.audit` is also rendered as a DICOM ``AuditMessage`` and sent to
the configured repository: ``udp://host:514`` (RFC 5426), ``tcp://host:601`` (RFC 6587
octet-counting framing) or ``tls://host:6514`` (RFC 5425, verified with the DICOM TLS CA
bundle).  Sending happens on a background thread with a bounded queue, so a slow or absent
repository never delays a DICOM association or an API request; what cannot be sent is logged
(the database audit trail keeps every event regardless).
"""

from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

__all__ = ["AtnaEvent", "SyslogSender", "audit_message", "syslog_frame"]

logger = logging.getLogger(__name__)

#: PS3.16 CID 400-series codes (DCM) used for our events.
EVENT_IDS = {
    "instances_transferred": ("110104", "DICOM Instances Transferred"),
    "user_authentication": ("110114", "User Authentication"),
    "query": ("110112", "Query"),
    "application_activity": ("110100", "Application Activity"),
}
_SOURCE_ROLE = ("110153", "Source Role ID")
_DESTINATION_ROLE = ("110152", "Destination Role ID")
#: RFC 5424: facility 10 (security/authorization), severity 5 (notice).
_PRI = 10 * 8 + 5


@dataclass(frozen=True)
class AtnaEvent:
    """What an audit message says: the event, who did it from where, to what, and the outcome."""

    event: str
    action: str
    outcome: int
    requestor: str
    requestor_address: str | None
    receiver: str
    series: tuple[str, ...] = ()


def _code(parent: ET.Element, tag: str, code: tuple[str, str]) -> None:
    ET.SubElement(parent, tag, {"csd-code": code[0], "codeSystemName": "DCM", "originalText": code[1]})


def audit_message(event: AtnaEvent, source_id: str, at: datetime | None = None) -> str:
    """The ``AuditMessage`` XML of PS3.15 A.5.1 for one event."""
    when = (at or datetime.now(UTC)).isoformat(timespec="milliseconds")
    root = ET.Element("AuditMessage")
    identification = ET.SubElement(
        root,
        "EventIdentification",
        {"EventActionCode": event.action, "EventDateTime": when, "EventOutcomeIndicator": str(event.outcome)},
    )
    _code(identification, "EventID", EVENT_IDS[event.event])
    requestor = ET.SubElement(root, "ActiveParticipant", {"UserID": event.requestor, "UserIsRequestor": "true"})
    if event.requestor_address:
        requestor.set("NetworkAccessPointID", event.requestor_address)
        requestor.set("NetworkAccessPointTypeCode", "2")
    _code(requestor, "RoleIDCode", _SOURCE_ROLE)
    receiver = ET.SubElement(root, "ActiveParticipant", {"UserID": event.receiver, "UserIsRequestor": "false"})
    _code(receiver, "RoleIDCode", _DESTINATION_ROLE)
    ET.SubElement(root, "AuditSourceIdentification", {"AuditSourceID": source_id})
    for uid in event.series:
        participant = ET.SubElement(
            root,
            "ParticipantObjectIdentification",
            {"ParticipantObjectID": uid, "ParticipantObjectTypeCode": "2", "ParticipantObjectTypeCodeRole": "3"},
        )
        _code(participant, "ParticipantObjectIDTypeCode", ("112002", "Series Instance UID"))
    return ET.tostring(root, encoding="unicode")


def syslog_frame(xml: str, hostname: str, at: datetime | None = None) -> bytes:
    """An RFC 5424 syslog message (APP-NAME lungcds, MSGID ``DICOM+RFC3881``) carrying ``xml``."""
    when = (at or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    header = f"<{_PRI}>1 {when} {hostname} lungcds - DICOM+RFC3881 - "
    return header.encode("ascii", "replace") + b"\xef\xbb\xbf" + xml.encode("utf-8")


class SyslogSender:
    """Sends syslog messages to one audit repository from a background thread.

    Parameters
    ----------
    url : str
        ``udp://host:port``, ``tcp://host:port`` or ``tls://host:port``.
    tls_context : ssl.SSLContext, optional
        Client context for ``tls://`` (verifying the repository).
    capacity : int
        Messages waiting at most; beyond it new ones are dropped with a log line.
    """

    def __init__(self, url: str, *, tls_context: ssl.SSLContext | None = None, capacity: int = 10_000) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tcp", "tls") or not parts.hostname or not parts.port:
            raise ValueError(f"audit repository must be udp://, tcp:// or tls://host:port, not {url!r}")
        if parts.scheme == "tls" and tls_context is None:
            raise ValueError("a tls:// audit repository needs a TLS context (dicom_tls_ca)")
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, parts.port
        self._tls = tls_context
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=capacity)
        self._stream: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="atna-syslog", daemon=True)
        self._thread.start()

    def send(self, message: bytes) -> None:
        """Queue one message (never blocks)."""
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            logger.error("audit repository queue full; an ATNA message was dropped")

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to ``timeout``), then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                self._deliver(message)
            except OSError as exc:
                logger.warning("ATNA message not delivered to %s:%s: %s", self.host, self.port, exc)
                self._drop_stream()
        self._drop_stream()

    def _deliver(self, message: bytes) -> None:
        if self.scheme == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(message, (self.host, self.port))
            return
        if self._stream is None:
            raw = socket.create_connection((self.host, self.port), timeout=10)
            self._stream = self._tls.wrap_socket(raw, server_hostname=self.host) if self._tls else raw
        self._stream.sendall(f"{len(message)} ".encode("ascii") + message)

    def _drop_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            finally:
                self._stream = None
