"""The DICOM Storage SCP: Verification and Storage Service Class provider.

A :class:`StorageSCP` accepts associations (PS3.8 Section 7.1), answers
C-ECHO (PS3.7 9.1.5, Verification Service Class PS3.4 Annex A) and C-STORE
(PS3.7 9.1.1, Storage Service Class PS3.4 Annex B) for every storage SOP
class pynetdicom knows, in all common transfer syntaxes (PS3.5 Section 10 and
Annex A). Each received instance goes the one path every received instance takes,
:func:`~dicom_node.reception.receive_instance` (the server's STOW-RS route uses
it too): spooled durably by a :class:`~dicom_node.spool.Spool`, then handed to an
injected :class:`InstanceSink`; Success is sent only after both returned, so an
acknowledged instance is on disk and indexed. Every failure becomes a C-STORE
status of PS3.4 Annex B.2.3 with an Error Comment (0000,0902) (PS3.7 C.4.2):

* :class:`~dicom_node.validation.InvalidInstance`: its own status
  (``0xC000`` or ``0xA900``) and reason;
* :class:`~dicom_node.spool.OutOfResources`: ``0xA700``;
* an exception from the sink (e.g. the database is down): ``0xA700``; the file
  stays in the spool and a re-send (a duplicate) calls the sink again;
* any other error while spooling (a bug): ``0x0110`` *Processing failure*
  (PS3.7 C.4.2), logged with its traceback.

Every refusal is also reported to the sink (``instance_refused``), so that the
reason is on record where operators look, not only in the sender's log.

With a :class:`~dicom_node.commitment_scp.StorageCommitment`, it also accepts the Storage
Commitment Push Model (PS3.4 Annex J) as SCP: an N-ACTION request is checked and recorded durably
in the handler and answered at once; its result (N-EVENT-REPORT) is sent from a worker thread.
Without one, that presentation context is rejected (abstract syntax not supported, PS3.8 9.3.3.2).

The SCP does no slow work in its handlers: the peer waits for the response
until the handler returns (PS3.7 9.3.1.2).

Connections are admitted in two stages, so that sockets which never become
associations cannot keep a modality out:

* until its A-ASSOCIATE-RQ has arrived (PS3.8 9.3.2), a connection is
  *pending*: it must deliver the request, after the TLS handshake if any,
  within ``association_request_timeout`` seconds (the ARTIM timer of PS3.8
  9.1.5), else it is closed; a peer address holds at most
  ``maximum_pending_per_peer`` pending connections, and the oldest is closed
  when another arrives. The TLS handshake runs on the connection's own
  thread, never on the thread that accepts connections;
* from its A-ASSOCIATE-RQ on, an association from an allowed calling AE title
  takes one of ``maximum_associations`` slots until it ends; when all are
  taken it is rejected with A-ASSOCIATE-RJ rejected-transient, service
  provider (presentation), local-limit-exceeded (PS3.8 9.3.4). Pending
  connections take no slot.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self, cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE, N_ACTION
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from dicom_node.commitment import COMMITMENT_TRANSFER_SYNTAXES, STORAGE_COMMITMENT_PUSH_MODEL, RequestRefused
from dicom_node.commitment_scp import StorageCommitment
from dicom_node.reception import receive_instance
from dicom_node.spool import Spool, StoredInstance
from dicom_node.statuses import SUCCESS

__all__ = [
    "DEFAULT_ASSOCIATION_REQUEST_TIMEOUT",
    "DEFAULT_MAXIMUM_PENDING_PER_PEER",
    "STORAGE_TRANSFER_SYNTAXES",
    "VERIFICATION_TRANSFER_SYNTAXES",
    "AssociationInfo",
    "InstanceSink",
    "StorageSCP",
    "error_comment",
]

logger = logging.getLogger(__name__)

VERIFICATION_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
)
"""Transfer syntaxes accepted for the Verification SOP Class (PS3.4 A.4)."""

STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLSLossless,
    JPEG2000Lossless,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEGLosslessSV1,
    JPEGLossless,
    RLELossless,
    JPEGLSNearLossless,
    JPEG2000,
    HTJ2K,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
)
"""Transfer syntaxes accepted for every storage SOP class (PS3.5 Section 10, Annex A).

The order is the acceptor's preference when a requestor offers several in one
presentation context (PS3.8 9.3.2.2): uncompressed first, then lossless
compression, then lossy compression, so that a converting sender is never
invited to compress diagnostic images lossily.
"""

_ERROR_COMMENT_LENGTH = 64
_CUT_MARK = "..."
_STOP_WAIT_SECONDS = 10.0

DEFAULT_ASSOCIATION_REQUEST_TIMEOUT: float = 5.0
"""Seconds a new connection has to deliver its A-ASSOCIATE-RQ (PS3.8 9.1.5, ARTIM)."""

DEFAULT_MAXIMUM_PENDING_PER_PEER: int = 8
"""Connections one peer address may hold before sending their A-ASSOCIATE-RQ."""

_EVICTION_GRACE_S = 1.0
"""Seconds a pending connection is left alone before it may be closed for crowding its address:
a real sender sends its A-ASSOCIATE-RQ milliseconds after connecting, also in a burst of many."""

_LISTEN_BACKLOG = 128
"""Connections the kernel completes while the accept loop is busy (``listen()`` backlog)."""

_MINIMUM_WAIT = 0.001
"""Seconds: a socket timeout of 0 would make it non-blocking, so an expired deadline waits this long."""

_CLOSED_BY_PEER = "closed by the peer before sending anything"
"""Why a pending connection ended when the peer only connected (a port check); logged at debug level."""

_PYNETDICOM_ASSOCIATION_LIMIT = 2**31 - 1
"""pynetdicom's own limit, which counts every connection (even one that never sent a
request) against ``AE.maximum_associations``: generous, since the SCP counts associations itself."""

_REJECTED_TRANSIENT = 0x02
"""A-ASSOCIATE-RJ Result: rejected-transient (PS3.8 9.3.4, Table 9-21)."""

_SOURCE_SERVICE_PROVIDER_PRESENTATION = 0x03
"""A-ASSOCIATE-RJ Source: DICOM UL service-provider, presentation related function (PS3.8 9.3.4)."""

_LOCAL_LIMIT_EXCEEDED = 0x02
"""A-ASSOCIATE-RJ Reason/Diag. for that source: local-limit-exceeded (PS3.8 9.3.4)."""


@dataclass(frozen=True)
class AssociationInfo:
    """Who is on the other end of an association (PS3.8 7.1.1).

    Attributes
    ----------
    id : str
        A random identifier of this association, unique per SCP run.
    calling_aet : str
        Calling AE Title of the A-ASSOCIATE-RQ (the peer).
    called_aet : str
        Called AE Title of the A-ASSOCIATE-RQ (the title the peer asked for).
    peer_host : str
        The peer's IP address.
    peer_port : int
        The peer's TCP port.
    """

    id: str
    calling_aet: str
    called_aet: str
    peer_host: str
    peer_port: int


class InstanceSink(Protocol):
    """What the SCP tells its owner (for example, the server's indexer).

    Both methods run on pynetdicom's association threads and must return
    quickly; raising from :meth:`instance_stored` makes the SCP answer
    ``0xA700`` (PS3.4 Annex B.2.3).
    """

    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo) -> None:
        """Record one instance that is durably in the spool (also called for duplicates)."""

    def instance_refused(
        self,
        sop_instance_uid: str,
        status: int,
        reason: str,
        assoc: AssociationInfo,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Record one instance answered with a failure status, and why (a sender's operators ask for this).

        ``detail`` is what the refusal carries for an audit trail beyond its reason (e.g. the
        patient identities of two instances that claim one SOP Instance UID); it is never logged.
        """

    def association_ended(self, assoc: AssociationInfo, series_uids: frozenset[str], released: bool) -> None:
        """Report the end of an association, once, with the Series Instance UIDs stored in it.

        ``released`` is ``True`` after an orderly A-RELEASE (PS3.8 7.2) and
        ``False`` after an A-ABORT, A-P-ABORT or a dropped connection
        (PS3.8 7.3, 7.4).
        """


@dataclass
class _AssociationState:
    """Book-keeping for one accepted association."""

    info: AssociationInfo
    series_uids: set[str] = field(default_factory=set)


def error_comment(reason: str) -> str:
    """Fit a refusal reason into an Error Comment (0000,0902).

    Parameters
    ----------
    reason : str
        The full reason.

    Returns
    -------
    str
        At most 64 characters of the default character repertoire without
        backslash, as the LO value representation requires (PS3.5 6.2,
        PS3.7 C.4.2). A longer reason is cut after its last whole word that
        fits, and the cut is marked with ``...``: reasons start with the
        attribute and what is wrong with it (see
        :mod:`dicom_node.validation`), so that is what the sender's operator
        reads; the values and references after it stay in the audit trail.
    """
    text = "".join(ch if (" " <= ch <= "~" and ch != "\\") else "?" for ch in reason)
    if len(text) <= _ERROR_COMMENT_LENGTH:
        return text
    head = text[: _ERROR_COMMENT_LENGTH - len(_CUT_MARK) + 1]
    cut = head.rfind(" ")
    kept = head[:cut] if cut > 0 else head[:-1]
    return kept.rstrip(" ;:,.(") + _CUT_MARK


def _failure(status: int, reason: str) -> Dataset:
    """Build the status data set of a failed C-STORE or N-ACTION: Status and Error Comment (PS3.7 C.4.2)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = error_comment(reason)
    return response


def _parse_allow_list(entries: Sequence[str]) -> tuple[tuple[str, ...], dict[str, set[str]]]:
    """Split ``AET`` / ``AET@host`` entries into the titles and, per pinned title, its host addresses."""
    titles: list[str] = []
    pins: dict[str, set[str]] = {}
    for entry in entries:
        title, _, host = entry.partition("@")
        title = title.strip()
        if title not in titles:
            titles.append(title)
        if host.strip():
            try:
                addresses = {str(info[4][0]) for info in socket.getaddrinfo(host.strip(), None)}
            except OSError as exc:
                raise ValueError(f"allowed calling AE {entry!r}: cannot resolve {host!r}: {exc}") from exc
            pins.setdefault(title, set()).update(addresses)
    return tuple(titles), pins


@dataclass(frozen=True)
class _PendingConnection:
    """A connection that has not yet delivered its A-ASSOCIATE-RQ."""

    host: str
    port: int
    opened: float


def _shut(sock: socket.socket) -> None:
    """Shut a connection down in both directions, waking any thread that reads from it.

    The socket is not closed here: the thread that serves it closes it, as a
    closed descriptor could be reused under its feet. The plain socket call is
    used for TLS sockets too, so that their TLS state stays for that thread.
    """
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


class _SharedContexts(list[PresentationContext]):
    """The acceptor's supported presentation contexts, shared by every association.

    pynetdicom (checked with 3.0.4) deep-copies the server's contexts for each new
    association (``RequestHandler._create_association``), re-validating each of the
    ~170 x 16 UIDs: 30 to 70 ms per association on a 2-core machine, paid before
    the first C-STORE. Negotiation (:func:`pynetdicom.presentation.negotiate_as_acceptor`,
    PS3.8 9.3.2.2) only reads them and the SCP never changes them once started, so
    a deep copy of this list is a new list of the same context objects.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> list[PresentationContext]:
        return list(self)


class _AssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server, guarding connections until their A-ASSOCIATE-RQ.

    pynetdicom wraps each accepted socket in TLS and completes the handshake
    on the thread that accepts connections, so a peer that connects and stays
    silent stops every other peer from connecting; it starts two polling
    threads (association and DUL) for every connection, and counts connections
    that have not sent an A-ASSOCIATE-RQ (PS3.8 9.3.2) against its association
    limit. This server accepts without handshaking and keeps every connection
    *pending* until the SCP reports its A-ASSOCIATE-RQ
    (:meth:`association_requested`). The connection's own thread completes the
    TLS handshake and then waits, without polling, for the peer's first bytes;
    only then does pynetdicom take the connection over. A pending connection
    is shut down once it is ``request_timeout`` seconds old (a peer that sends
    part of a request is checked between accepts, every half second) or when
    it is the oldest of more than ``maximum_pending_per_peer`` from its
    address and has been silent for a second (so that a burst of connections
    from one sender keeps all of them).

    Parameters
    ----------
    ae, address, ae_title, contexts, ssl_context, evt_handlers
        As for :class:`pynetdicom.transport.AssociationServer`.
    request_timeout : float
        Seconds from accept to the A-ASSOCIATE-RQ (PS3.8 9.1.5).
    maximum_pending_per_peer : int
        Pending connections per peer address.
    socket_timeout : float or None
        Timeout of each read and write on an accepted socket, so that a peer
        that stops in the middle of a PDU cannot hold a thread for ever.
    """

    request_queue_size = _LISTEN_BACKLOG

    def __init__(
        self,
        ae: AE,
        address: tuple[str, int],
        ae_title: str,
        contexts: list[PresentationContext],
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[EventHandlerType] | None = None,
        *,
        request_timeout: float,
        maximum_pending_per_peer: int,
        socket_timeout: float | None,
    ) -> None:
        self.request_timeout = request_timeout
        self.maximum_pending_per_peer = maximum_pending_per_peer
        self.socket_timeout = socket_timeout
        self._pending: dict[socket.socket, _PendingConnection] = {}
        self._pending_lock = threading.Lock()
        super().__init__(ae, address, ae_title, _SharedContexts(contexts), ssl_context, evt_handlers=evt_handlers)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection; a TLS socket is wrapped without its handshake (PS3.15 B.1)."""
        listener = cast(socket.socket, self.socket)
        client, address = listener.accept()
        client.settimeout(self.socket_timeout)
        if self.ssl_context is not None:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: tuple[str, int] | str
    ) -> None:
        """Register a new connection as pending, closing its peer's oldest beyond the bound, and serve it."""
        sock = cast(socket.socket, request)
        host, port = cast(tuple[str, int], client_address)[:2]
        now = time.monotonic()
        with self._pending_lock:
            self._forget_closed()
            same_peer = sorted(
                ((pending.opened, other) for other, pending in self._pending.items() if pending.host == host),
                key=lambda entry: entry[0],
            )
            excess = len(same_peer) - self.maximum_pending_per_peer + 1
            # Only connections silent for longer than a sender ever takes to send its request: a PACS
            # that opens many associations at once from one address must not lose the first of them.
            silent = [other for opened, other in same_peer if now - opened >= _EVICTION_GRACE_S]
            evicted = silent[: max(0, excess)]
            dropped = [(other, self._pending.pop(other)) for other in evicted]
            self._pending[sock] = _PendingConnection(str(host), int(port), now)
        for other, pending in dropped:
            logger.warning(
                "closed a connection from %s:%d: the oldest of %d from that address without an A-ASSOCIATE-RQ",
                pending.host,
                pending.port,
                self.maximum_pending_per_peer,
            )
            _shut(other)
        super().process_request(request, client_address)

    def process_request_thread(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: tuple[str, int] | str
    ) -> None:
        """On the connection's own thread: wait for the peer's first bytes, then let pynetdicom serve it."""
        sock = cast(socket.socket, request)
        with self._pending_lock:
            pending = self._pending.get(sock)
        problem = None if pending is None else self._await_request(sock, pending)
        with self._pending_lock:
            if problem is not None:
                pending = self._pending.pop(sock, None)
            elif sock not in self._pending:
                pending = None
        if pending is not None and problem is None:
            super().process_request_thread(request, client_address)
            return
        if pending is not None:
            log = logger.debug if problem == _CLOSED_BY_PEER else logger.warning
            log("closed a connection from %s:%d: %s", pending.host, pending.port, problem)
        self.shutdown_request(request)

    def _await_request(self, sock: socket.socket, pending: _PendingConnection) -> str | None:
        """Block until the peer has sent something (after the TLS handshake); ``None`` then, else why not.

        The wait is a blocking peek with a timeout, so a silent peer costs one
        sleeping thread. Shutting the socket down (:func:`_shut`) ends it.
        """
        deadline = pending.opened + self.request_timeout
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(max(deadline - time.monotonic(), _MINIMUM_WAIT))
                sock.do_handshake()
                if sock.pending():
                    return None
            sock.settimeout(max(deadline - time.monotonic(), _MINIMUM_WAIT))
            if not socket.socket.recv(sock, 1, socket.MSG_PEEK):
                return _CLOSED_BY_PEER
            sock.settimeout(self.socket_timeout)
        except TimeoutError:
            return f"no A-ASSOCIATE-RQ within {self.request_timeout:.1f} s"
        except (ssl.SSLEOFError, ConnectionError):
            return _CLOSED_BY_PEER
        except (OSError, ValueError) as exc:
            return f"{'TLS handshake failed' if isinstance(sock, ssl.SSLSocket) else 'connection failed'}: {exc}"
        return None

    def service_actions(self) -> None:
        """Between accepts: shut down pending connections older than the request timeout."""
        super().service_actions()
        deadline = time.monotonic() - self.request_timeout
        with self._pending_lock:
            self._forget_closed()
            overdue = [(sock, pending) for sock, pending in self._pending.items() if pending.opened <= deadline]
            for sock, _ in overdue:
                del self._pending[sock]
        for sock, pending in overdue:
            logger.warning(
                "closed a connection from %s:%d: no A-ASSOCIATE-RQ within %.1f s",
                pending.host,
                pending.port,
                self.request_timeout,
            )
            _shut(sock)

    def association_requested(self, sock: socket.socket) -> None:
        """A connection delivered its A-ASSOCIATE-RQ: it is no longer pending."""
        with self._pending_lock:
            self._pending.pop(sock, None)

    def close_pending(self) -> None:
        """Shut down every pending connection (when stopping)."""
        with self._pending_lock:
            pending, self._pending = list(self._pending), {}
        for sock in pending:
            _shut(sock)

    def _forget_closed(self) -> None:
        """Drop the entries of connections already closed (call with the lock held)."""
        for sock in [sock for sock in self._pending if sock.fileno() < 0]:
            del self._pending[sock]


class StorageSCP:
    """A Storage and Verification SCP that spools instances and notifies a sink.

    Parameters
    ----------
    ae_title : str
        Our AE title (PS3.5 AE VR: up to 16 characters).
    spool : Spool
        Where instances are written.
    sink : InstanceSink
        Told about each stored instance and each ended association.
    allowed_calling_aets : Sequence of str, optional
        When not empty, associations from other Calling AE Titles are rejected
        with A-ASSOCIATE-RJ, rejected-permanent, service-user, "calling-AE-title
        not recognized" (PS3.8 9.3.4).  An entry ``AET@host`` also pins that
        title to one host (name or address): the same title from elsewhere is
        aborted as soon as it is accepted, before any data set is handled, and
        reported to ``on_rejected`` (AE titles are not authentication).
    maximum_pdu_size : int, optional
        Maximum PDU length we receive (PS3.8 D.1); 0 means unlimited.
    maximum_associations : int, optional
        Simultaneous associations accepted; further requests are rejected
        (transient, local limit exceeded, PS3.8 9.3.4). Only associations
        whose A-ASSOCIATE-RQ arrived from an allowed calling AE title count,
        until they end. Default 10.
    network_timeout : float or None, optional
        Seconds without traffic before an association is aborted, and the
        timeout of each read and write on its socket. Default 60.
    association_request_timeout : float, optional
        Seconds a new connection has to deliver its A-ASSOCIATE-RQ, TLS
        handshake included, before it is closed (the ARTIM timer, PS3.8
        9.1.5; also how long the SCP waits for the peer to close the
        connection after an A-ASSOCIATE-RJ or A-RELEASE-RP). Default 5.
    maximum_pending_per_peer : int, optional
        Connections from one address that have not yet delivered their
        A-ASSOCIATE-RQ; when another one arrives, the oldest is closed.
        Default 8.
    ssl_context : ssl.SSLContext, optional
        Serve associations over TLS with this server context (PS3.15 B.1);
        see :mod:`dicom_node.tls`.
    on_rejected : callable, optional
        Called with the requestor and the reason in words for every association we reject
        (unknown calling AE title, too many associations), e.g. for an audit trail.
    storage_commitment : StorageCommitment, optional
        When given, the Storage Commitment Push Model is accepted and its N-ACTION handled
        (PS3.4 Annex J); started and stopped with the SCP. When not, its context is rejected.
    """

    def __init__(
        self,
        ae_title: str,
        spool: Spool,
        sink: InstanceSink,
        allowed_calling_aets: Sequence[str] = (),
        maximum_pdu_size: int = 0,
        *,
        maximum_associations: int = 10,
        network_timeout: float | None = 60.0,
        on_rejected: Callable[[AssociationInfo, str], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        association_request_timeout: float = DEFAULT_ASSOCIATION_REQUEST_TIMEOUT,
        maximum_pending_per_peer: int = DEFAULT_MAXIMUM_PENDING_PER_PEER,
        storage_commitment: StorageCommitment | None = None,
    ) -> None:
        if maximum_pdu_size < 0:
            raise ValueError(f"maximum_pdu_size must be >= 0, got {maximum_pdu_size}")
        if maximum_associations < 1:
            raise ValueError(f"maximum_associations must be >= 1, got {maximum_associations}")
        if not association_request_timeout > 0:
            raise ValueError(f"association_request_timeout must be > 0, got {association_request_timeout}")
        if maximum_pending_per_peer < 1:
            raise ValueError(f"maximum_pending_per_peer must be >= 1, got {maximum_pending_per_peer}")
        self.ae_title = ae_title
        self.spool = spool
        self.sink = sink
        self.allowed_calling_aets = tuple(allowed_calling_aets)
        self._titles, self._pins = _parse_allow_list(self.allowed_calling_aets)
        self.maximum_pdu_size = maximum_pdu_size
        self.maximum_associations = maximum_associations
        self.network_timeout = network_timeout
        self.on_rejected = on_rejected
        self.ssl_context = ssl_context
        self.association_request_timeout = association_request_timeout
        self.maximum_pending_per_peer = maximum_pending_per_peer
        self.storage_commitment = storage_commitment
        self._ae: AE | None = None
        self._server: _AssociationServer | None = None
        self._states: dict[Association, _AssociationState] = {}
        self._slots: set[Association] = set()
        self._watchers: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def port(self) -> int | None:
        """The bound TCP port while running, else ``None``."""
        if self._server is None:
            return None
        return int(self._server.server_address[1])

    def start(self, host: str = "0.0.0.0", port: int = 104) -> int:
        """Start listening in background threads.

        Parameters
        ----------
        host : str, optional
            Address to bind (default: all IPv4 interfaces).
        port : int, optional
            TCP port; 0 picks a free ephemeral port.

        Returns
        -------
        int
            The bound port.

        Raises
        ------
        RuntimeError
            If the SCP is already running.
        OSError
            If the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the Storage SCP is already running")
        ae = AE(ae_title=self.ae_title)
        ae.maximum_pdu_size = self.maximum_pdu_size
        ae.maximum_associations = _PYNETDICOM_ASSOCIATION_LIMIT
        ae.acse_timeout = self.association_request_timeout
        ae.network_timeout = self.network_timeout
        ae.require_calling_aet = list(self._titles)
        ae.add_supported_context(Verification, list(VERIFICATION_TRANSFER_SYNTAXES))
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(cast(str, context.abstract_syntax), list(STORAGE_TRANSFER_SYNTAXES))
        handlers: list[EventHandlerType] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_connection_closed),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        if self.storage_commitment is not None:
            ae.add_supported_context(STORAGE_COMMITMENT_PUSH_MODEL, list(COMMITMENT_TRANSFER_SYNTAXES))
            handlers.append((evt.EVT_N_ACTION, self.handle_action))
            self.storage_commitment.start()
        server = cast(
            _AssociationServer,
            ae.make_server(
                (host, port),
                ssl_context=self.ssl_context,
                evt_handlers=handlers,
                server_class=_AssociationServer,
                request_timeout=self.association_request_timeout,
                maximum_pending_per_peer=self.maximum_pending_per_peer,
                socket_timeout=self.network_timeout,
            ),
        )
        listener = threading.Thread(
            target=make_target(server.serve_forever), name=f"AcceptorServer@{self.ae_title}", daemon=True
        )
        listener.start()
        # As AE.start_server does, so that AE.shutdown() stops this server too.
        ae._servers.append(server)
        self._ae = ae
        self._server = server
        bound = int(server.server_address[1])
        logger.info(
            "Storage SCP %s listening on %s:%d (%d storage SOP classes, %d transfer syntaxes)",
            self.ae_title,
            host,
            bound,
            len(AllStoragePresentationContexts),
            len(STORAGE_TRANSFER_SYNTAXES),
        )
        return bound

    def stop(self) -> None:
        """Abort open associations and stop listening.

        Returns once every association has been reported to the sink (open
        ones as not released), or after 10 s if a sink call hangs.
        """
        ae, server, self._ae, self._server = self._ae, self._server, None, None
        if ae is None:
            return
        if server is not None:
            server.close_pending()
        ae.shutdown()
        if self.storage_commitment is not None:
            self.storage_commitment.stop()
        with self._lock:
            watchers, self._watchers = self._watchers, []
        deadline = time.monotonic() + _STOP_WAIT_SECONDS
        for watcher in watchers:
            watcher.join(max(0.0, deadline - time.monotonic()))
        logger.info("Storage SCP %s stopped", self.ae_title)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def series_in_open_associations(self) -> frozenset[str]:
        """The series being received now.

        Returns
        -------
        frozenset of str
            Every Series Instance UID (0020,000E) with an instance stored by an
            association that has not ended yet (PS3.8 7.2 to 7.4): one whose
            end has not been reported to ``sink.association_ended``. A series
            whose sender keeps its association open is not complete, however
            long it pauses between instances. Thread-safe.
        """
        with self._lock:
            return frozenset(uid for state in self._states.values() for uid in state.series_uids)

    def handle_store(self, event: Event) -> int | Dataset:
        """Handle one C-STORE request (``evt.EVT_C_STORE``) through :func:`~dicom_node.reception.receive_instance`.

        Parameters
        ----------
        event : pynetdicom.events.Event
            The C-STORE event; its data set is spooled as received, without
            decoding (``event.encoded_dataset(include_meta=True)``).

        Returns
        -------
        int or pydicom.dataset.Dataset
            ``0x0000`` after the spool and the sink both returned; otherwise a
            status data set with Status and Error Comment (PS3.4 Annex B.2.3,
            PS3.7 C.4.2): ``0xC000``/``0xA900`` for invalid instances,
            ``0xA700`` when the spool or the sink fails, ``0x0110`` for
            unexpected errors.
        """
        state = self._state_for(event.assoc)
        request = cast(C_STORE, event.request)
        receipt = receive_instance(
            self.spool,
            self.sink,
            state.info,
            lambda: event.encoded_dataset(include_meta=True),
            str(request.AffectedSOPInstanceUID or ""),
        )
        if receipt.stored is None:
            return _failure(receipt.status, receipt.reason)
        with self._lock:
            state.series_uids.add(str(receipt.stored.header.series_instance_uid))
        return SUCCESS

    def handle_action(self, event: Event) -> tuple[int | Dataset, Dataset | None]:
        """Handle one N-ACTION of the Storage Commitment Push Model (``evt.EVT_N_ACTION``, PS3.4 J.3.2).

        Parameters
        ----------
        event : pynetdicom.events.Event
            The N-ACTION event.

        Returns
        -------
        tuple
            ``0x0000`` and no Action Reply once the request is recorded durably (its result
            follows as an N-EVENT-REPORT); otherwise a status data set with Status and Error
            Comment (PS3.7 10.1.4.1.10, C.4): ``0x0123``, ``0x0112``, ``0x0120``, ``0x0115`` for
            malformed requests, ``0x0110`` when it could not be recorded.
        """
        commitment = self.storage_commitment
        if commitment is None:  # pynetdicom only calls it on a context that was accepted
            raise RuntimeError("Storage Commitment is not enabled")
        state = self._state_for(event.assoc)
        request = cast(N_ACTION, event.request)
        try:
            commitment.request(
                event.assoc,
                state.info,
                event.action_type,
                str(request.RequestedSOPInstanceUID or ""),
                lambda: event.action_information,
            )
        except RequestRefused as exc:
            return _failure(exc.status, exc.reason), None
        return SUCCESS, None

    def _state_for(self, assoc: Association) -> _AssociationState:
        """Return the book-keeping of an association, creating it on first sight."""
        with self._lock:
            state = self._states.get(assoc)
            if state is None:
                state = _AssociationState(self._describe(assoc))
                self._states[assoc] = state
            return state

    @staticmethod
    def _describe(assoc: Association) -> AssociationInfo:
        """Collect AE titles and address of the requestor (PS3.8 7.1.1.3 to 7.1.1.6)."""
        primitive = assoc.requestor.primitive
        called = str(primitive.called_ae_title) if primitive is not None else ""
        calling = str(primitive.calling_ae_title) if primitive is not None else str(assoc.requestor.ae_title)
        return AssociationInfo(
            id=uuid.uuid4().hex,
            calling_aet=calling.strip(),
            called_aet=called.strip(),
            peer_host=str(assoc.requestor.address),
            peer_port=int(assoc.requestor.port or 0),
        )

    def _on_requested(self, event: Event) -> None:
        """Take an association slot when an A-ASSOCIATE-RQ arrives (``evt.EVT_REQUESTED``, PS3.8 9.3.2).

        The connection stops being pending. A calling AE title outside the
        allow-list takes no slot (pynetdicom rejects it next). When every slot
        is taken, the request is rejected here with A-ASSOCIATE-RJ
        rejected-transient, service provider (presentation related),
        local-limit-exceeded (PS3.8 9.3.4), and the connection closed once the
        rejection is sent.
        """
        assoc = event.assoc
        transport = assoc.dul.socket
        server = self._server
        if server is not None and transport is not None and transport.socket is not None:
            server.association_requested(transport.socket)
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip() if primitive is not None else ""
        if self._titles and calling not in self._titles:
            return
        with self._lock:
            self._slots = {other for other in self._slots if other.is_alive()}
            full = len(self._slots) >= self.maximum_associations
            if not full:
                self._slots.add(assoc)
        if not full:
            return
        assoc.acse.send_reject(_REJECTED_TRANSIENT, _SOURCE_SERVICE_PROVIDER_PRESENTATION, _LOCAL_LIMIT_EXCEEDED)
        self._report_rejection(assoc, f"all {self.maximum_associations} associations are in use")
        assoc.kill()

    def _release_slot(self, assoc: Association) -> None:
        """Give back the slot of an association that ended (or never took one)."""
        with self._lock:
            self._slots.discard(assoc)

    def _on_accepted(self, event: Event) -> None:
        """Start book-keeping when an association is accepted (``evt.EVT_ACCEPTED``).

        A calling AE title pinned to other hosts is aborted here, on the association's own
        thread, before it can send any request.
        """
        state = self._state_for(event.assoc)
        pinned = self._pins.get(state.info.calling_aet)
        if pinned is not None and state.info.peer_host not in pinned:
            reason = f"calling AE title {state.info.calling_aet} is not allowed from {state.info.peer_host}"
            logger.warning("association aborted: %s", reason)
            with self._lock:
                self._states.pop(event.assoc, None)
            event.assoc.abort()
            if self.on_rejected is not None:
                try:
                    self.on_rejected(state.info, reason)
                except Exception:
                    logger.exception("on_rejected failed for the association from %s", state.info.calling_aet)
            return
        logger.info(
            "association %s accepted from %s at %s:%d",
            state.info.id,
            state.info.calling_aet,
            state.info.peer_host,
            state.info.peer_port,
        )

    def _on_rejected(self, event: Event) -> None:
        """Report an association pynetdicom rejected (``evt.EVT_REJECTED``, PS3.8 7.1.1.9)."""
        with self._lock:
            self._states.pop(event.assoc, None)
            self._slots.discard(event.assoc)
        self._report_rejection(event.assoc)

    def _report_rejection(self, assoc: Association, why: str = "") -> None:
        """Log and report an A-ASSOCIATE-RJ that was sent, in the words of its result, source and reason."""
        info = self._describe(assoc)
        primitive = assoc.acceptor.primitive
        reason = (
            f"{primitive.result_str}, source {primitive.source_str}, reason {primitive.reason_str}"
            if primitive is not None
            else "rejected"
        )
        if why:
            reason = f"{reason}: {why}"
        logger.warning("association from %s at %s rejected: %s", info.calling_aet, info.peer_host, reason)
        if self.on_rejected is not None:
            try:
                self.on_rejected(info, reason)
            except Exception:
                logger.exception("on_rejected failed for the association from %s", info.calling_aet)

    def _on_released(self, event: Event) -> None:
        """Free the slot and report an orderly A-RELEASE (``evt.EVT_RELEASED``)."""
        self._release_slot(event.assoc)
        self._end_when_finished(event.assoc, released=True)

    def _on_aborted(self, event: Event) -> None:
        """Free the slot and report an A-ABORT or A-P-ABORT (``evt.EVT_ABORTED``)."""
        self._release_slot(event.assoc)
        self._end_when_finished(event.assoc, released=False)

    def _on_connection_closed(self, event: Event) -> None:
        """Free the slot and report a connection that closed without release (``evt.EVT_CONN_CLOSE``)."""
        self._release_slot(event.assoc)
        self._end_when_finished(event.assoc, released=False)

    def _end_when_finished(self, assoc: Association, released: bool) -> None:
        """Report the end of an association once its thread has run its last handler.

        pynetdicom fires ``evt.EVT_RELEASED`` and (usually) ``evt.EVT_ABORTED``
        on the association's own thread as its last act; those end it at once.
        ``evt.EVT_CONN_CLOSE`` comes from the DUL thread (PS3.8 Section 9.2
        state machine) and ``evt.EVT_ABORTED`` from the caller of a local
        abort, possibly while a C-STORE handler still runs, or just before
        ``evt.EVT_RELEASED``. Those wait in a helper thread for the
        association thread to finish, so the report comes after every
        ``instance_stored`` of the association and says ``released=True``
        whenever the release completed.
        """
        if threading.current_thread() is assoc or not assoc.is_alive():
            self._end(assoc, released=released or assoc.is_released)
            return

        def wait_then_end() -> None:
            assoc.join()
            self._end(assoc, released=released or assoc.is_released)

        watcher = threading.Thread(target=wait_then_end, name=f"end-of-{assoc.name}", daemon=True)
        with self._lock:
            self._watchers = [w for w in self._watchers if w.is_alive()]
            self._watchers.append(watcher)
        watcher.start()

    def _end(self, assoc: Association, released: bool) -> None:
        """Call ``sink.association_ended`` exactly once per accepted association."""
        with self._lock:
            state = self._states.pop(assoc, None)
            if state is None:
                return
            series = frozenset(state.series_uids)
        logger.info(
            "association %s from %s %s, %d series",
            state.info.id,
            state.info.calling_aet,
            "released" if released else "aborted or dropped",
            len(series),
        )
        try:
            self.sink.association_ended(state.info, series, released)
        except Exception:
            logger.exception("sink failed to handle the end of association %s", state.info.id)
