"""The DICOM SCU: Verification and Storage towards PACS destinations.

:func:`echo` runs C-ECHO (PS3.7 9.1.5, PS3.4 Annex A). :func:`send_files` and
:func:`send_datasets` run C-STORE (PS3.7 9.1.1, PS3.4 Annex B) over one
association whose presentation contexts (PS3.8 7.1.1.13, at most 128 per
association) are the (SOP Class, Transfer Syntax) pairs of the objects, each
sent as it is where the peer accepts its pair.

An object in a compressed (encapsulated) transfer syntax that pydicom can
decode -- the JPEG 2000 Lossless SEGs of :mod:`reports.seg` -- also gets a
presentation context of its SOP class in Explicit VR Little Endian, proposed
separately (offering one abstract syntax in several contexts is valid, PS3.5
10.2), so that a peer which does not accept the compressed syntax still gets
the object: decoded, with the same SOP Instance UID (a transfer syntax only
encodes the data set, PS3.5 10; only lossy compression calls for a new
instance, PS3.3 C.7.6.1.1.5).  A destination whose viewers cannot decode the
compressed syntax although its archive stores it (OHIF's SEG loader and JPEG
2000) is sent with ``uncompressed=True``: only the Explicit VR Little Endian
context is proposed for such objects.  Per-object outcomes are returned, with the
transfer syntax each object went in; an association that cannot be made or
breaks raises :class:`AssociationFailed`.
"""

from __future__ import annotations

import copy
import logging
import ssl
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.utils import decompress, pack_bits
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.statuses import NOT_SENT, SUCCESS, is_success_or_warning, status_name
from dicom_node.validation import guess_transfer_syntax

__all__ = [
    "MAX_PRESENTATION_CONTEXTS",
    "AssociationFailed",
    "ContextsRefused",
    "Destination",
    "SendResult",
    "association_problem",
    "decoded_dataset",
    "echo",
    "is_decodable",
    "parse_destination",
    "request_association",
    "requestor_ae",
    "send_datasets",
    "send_files",
]

logger = logging.getLogger(__name__)

MAX_PRESENTATION_CONTEXTS: int = 128
"""Presentation contexts one association can propose (context IDs 1 to 255, odd; PS3.8 9.3.2.2)."""

_AE_TITLE_MAX = 16


@dataclass(frozen=True)
class Destination:
    """A remote DICOM application entity (PS3.8 7.1.1.4 and 7.1.1.6).

    Attributes
    ----------
    ae_title : str
        Its AE title: 1 to 16 characters of the default repertoire, no
        backslash, not only spaces (PS3.5 6.2, AE VR).
    host : str
        Host name or IP address.
    port : int
        TCP port, 1 to 65535.
    tls : ssl.SSLContext or None
        When set, associations run over TLS with this client context
        (PS3.15 B.1); see :mod:`dicom_node.tls`.
    """

    ae_title: str
    host: str
    port: int
    tls: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        problem = _ae_title_problem(self.ae_title)
        if problem:
            raise ValueError(f"invalid AE title {self.ae_title!r}: {problem}")
        if not self.host:
            raise ValueError("destination host is empty")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"destination port {self.port} is outside 1..65535")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.ae_title}@{host}:{self.port}"


def _ae_title_problem(title: str) -> str | None:
    """Say why a text is not a valid AE title (PS3.5 6.2), or return ``None``."""
    if not title.strip():
        return "empty"
    if len(title) > _AE_TITLE_MAX:
        return f"longer than {_AE_TITLE_MAX} characters"
    if any(not (" " <= ch <= "~") or ch == "\\" for ch in title):
        return "only printable ASCII without backslash is allowed"
    return None


def parse_destination(text: str) -> Destination:
    """Parse ``AET@host:port`` (IPv6 hosts in brackets: ``AET@[::1]:104``).

    Parameters
    ----------
    text : str
        The destination, as in the ``LUNGCDS_DESTINATIONS`` setting.

    Returns
    -------
    Destination
        The parsed destination.

    Raises
    ------
    ValueError
        Naming what is wrong: no ``@``, no ``:port``, a port that is not a
        number in 1..65535, an empty host or an invalid AE title.
    """
    stripped = text.strip()
    ae_title, at, address = stripped.rpartition("@")
    if not at:
        raise ValueError(f"destination {text!r} is not of the form AET@host:port (no '@')")
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"destination {text!r}: an IPv6 host must be written [address]:port")
        port_text = rest[1:]
    else:
        host, colon, port_text = address.rpartition(":")
        if not colon:
            raise ValueError(f"destination {text!r} is not of the form AET@host:port (no ':port')")
        if ":" in host:
            raise ValueError(f"destination {text!r}: an IPv6 host must be written [address]:port")
    if not host:
        raise ValueError(f"destination {text!r} has an empty host")
    if not port_text.isdigit():
        raise ValueError(f"destination {text!r}: port {port_text!r} is not a number")
    return Destination(ae_title=ae_title, host=host, port=int(port_text))


@dataclass(frozen=True)
class SendResult:
    """Outcome of sending one object.

    Attributes
    ----------
    path : pathlib.Path or None
        The file, for :func:`send_files`; ``None`` for :func:`send_datasets`.
    sop_instance_uid : str or None
        The object's SOP Instance UID, when known.
    status : int
        The C-STORE response Status (PS3.4 Annex B.2.3), or
        :data:`~dicom_node.statuses.NOT_SENT` (-1) when the object got no
        response (unreadable, no accepted presentation context, association
        broken).
    ok : bool
        ``True`` for Success and for the warnings of PS3.4 Annex B.2.3 (the
        peer stored the object).
    error : str
        Empty when Success; otherwise what went wrong, with the peer's Error
        Comment (0000,0902) when it sent one.
    transfer_syntax_uid : str or None
        The transfer syntax the object was sent in: its own, or Explicit VR
        Little Endian when the peer took only that; ``None`` when not sent.
    """

    path: Path | None
    sop_instance_uid: str | None
    status: int
    ok: bool
    error: str
    transfer_syntax_uid: str | None = None


class AssociationFailed(Exception):
    """The association was rejected, aborted, or the peer was unreachable (PS3.8 7.1 to 7.4).

    Parameters
    ----------
    reason : str
        What happened, e.g. the A-ASSOCIATE-RJ result, source and reason.
    results : Sequence of SendResult, optional
        Outcomes of the objects handled before the association broke.

    Attributes
    ----------
    reason : str
        As given.
    results : list of SendResult
        As given.
    """

    def __init__(self, reason: str, results: Sequence[SendResult] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.results = list(results)


class ContextsRefused(AssociationFailed):
    """The peer refused every presentation context we proposed (PS3.8 9.3.3.2, result 1-4).

    The peer will not take these SOP classes in these transfer syntaxes at all (e.g. a PACS
    that does not store Segmentations), so trying again later changes nothing.

    Attributes
    ----------
    sop_classes : list of str
        The refused abstract syntaxes.
    """

    def __init__(self, reason: str, sop_classes: Sequence[str]) -> None:
        super().__init__(reason)
        self.sop_classes = list(sop_classes)


@dataclass
class _Outgoing:
    """One object to send: where it comes from and its presentation context."""

    path: Path | None
    dataset: Dataset | None
    sop_class_uid: str | None
    sop_instance_uid: str | None
    transfer_syntax_uid: str | None
    error: str = ""


def requestor_ae(calling_aet: str, timeout: float) -> AE:
    """Build a requestor AE with all timeouts set to ``timeout`` seconds (every association we open starts here)."""
    problem = _ae_title_problem(calling_aet)
    if problem:
        raise ValueError(f"invalid calling AE title {calling_aet!r}: {problem}")
    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = timeout
    return ae


def request_association(
    ae: AE,
    dest: Destination,
    contexts: list[PresentationContext] | None = None,
    ext_neg: Sequence[SCP_SCU_RoleSelectionNegotiation] = (),
) -> tuple[Association, bool]:
    """Request an association; return it and whether the TCP connection was made at all.

    ``ext_neg`` carries SCP/SCU Role Selection items (PS3.7 D.3.3.4), for the services
    where we, the requestor, act as SCP (the Storage Commitment report, PS3.4 J.3.3.1).
    """
    connected = threading.Event()
    assoc = ae.associate(
        dest.host,
        dest.port,
        contexts=contexts,
        ae_title=dest.ae_title,
        max_pdu=0,
        ext_neg=[*ext_neg],
        evt_handlers=[(evt.EVT_CONN_OPEN, lambda _event: connected.set())],
        tls_args=(dest.tls, dest.host) if dest.tls is not None else None,
    )
    return assoc, connected.is_set()


def association_problem(assoc: Association, connected: bool, dest: Destination) -> str:
    """Describe why an association was not established (PS3.8 7.1.1.7 to 7.1.1.9 for rejections)."""
    if not connected:
        return f"could not connect to {dest} (unreachable, refused or timed out)"
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        if primitive is not None:
            return (
                f"association rejected by {dest}: {primitive.result_str}, "
                f"source {primitive.source_str}, reason {primitive.reason_str}"
            )
        return f"association rejected by {dest}"
    if assoc.is_aborted:
        return f"association aborted by {dest} during negotiation"
    return f"no association with {dest}: no answer to the association request"


def echo(dest: Destination, calling_aet: str, timeout: float = 10.0) -> bool:
    """Verify a destination with C-ECHO (PS3.4 Annex A, PS3.7 9.1.5).

    Parameters
    ----------
    dest : Destination
        The peer.
    calling_aet : str
        Our AE title.
    timeout : float, optional
        Seconds for connection, association and response. Default 10.

    Returns
    -------
    bool
        ``True`` when the association was accepted and the C-ECHO status was
        Success; ``False`` otherwise (the reason is logged).
    """
    ae = requestor_ae(calling_aet, timeout)
    ae.add_requested_context(Verification)
    assoc, connected = request_association(ae, dest)
    if not assoc.is_established:
        logger.warning("C-ECHO to %s failed: %s", dest, association_problem(assoc, connected, dest))
        return False
    try:
        response = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    status = int(response.Status) if "Status" in response else None
    if status != SUCCESS:
        logger.warning("C-ECHO to %s answered %s", dest, status_name(status) if status is not None else "nothing")
        return False
    return True


def _describe_file(path: Path) -> _Outgoing:
    """Read a file's SOP Class/Instance UIDs and transfer syntax without reading its pixel data."""
    try:
        meta = read_file_meta_info(path)
    except Exception:  # noqa: BLE001 - no or broken file meta: fall back to the data set
        meta = FileMetaDataset()
    sop_class = meta.get("MediaStorageSOPClassUID")
    sop_instance = meta.get("MediaStorageSOPInstanceUID")
    syntax = meta.get("TransferSyntaxUID")
    try:
        ds = dcmread(path, stop_before_pixels=True, force=True)
        sop_class = ds.get("SOPClassUID") or sop_class
        sop_instance = ds.get("SOPInstanceUID") or sop_instance
        syntax = syntax or guess_transfer_syntax(ds)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on unreadable files
        return _Outgoing(path, None, None, None, None, error=f"cannot read {path}: {exc}")
    return _Outgoing(
        path,
        None,
        str(sop_class) if sop_class else None,
        str(sop_instance) if sop_instance else None,
        str(syntax) if syntax else None,
    )


def _describe_dataset(ds: Dataset) -> _Outgoing:
    """Prepare an in-memory data set; one without a transfer syntax is sent as explicit VR LE."""
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    outgoing = ds
    if syntax is None:
        outgoing = copy.copy(ds)
        new_meta = FileMetaDataset(meta) if meta is not None else FileMetaDataset()
        new_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        outgoing.file_meta = new_meta
        syntax = ExplicitVRLittleEndian
    sop_class = ds.get("SOPClassUID")
    sop_instance = ds.get("SOPInstanceUID")
    return _Outgoing(
        None,
        outgoing,
        str(sop_class) if sop_class else None,
        str(sop_instance) if sop_instance else None,
        str(syntax),
    )


def is_decodable(syntax: str) -> bool:
    """Whether ``syntax`` compresses the pixel data and pydicom has a working decoder for it here."""
    uid = UID(syntax)
    if not uid.is_encapsulated:
        return False
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:
        return False


def _contexts_for(items: Sequence[_Outgoing], uncompressed: bool) -> list[PresentationContext]:
    """One presentation context per distinct (SOP Class, Transfer Syntax) pair, in first-seen order,
    then one in Explicit VR Little Endian for each SOP class of a decodable compressed object.

    With ``uncompressed``, a decodable compressed object is proposed in Explicit VR Little Endian
    only: the destination gets it decoded even though it might accept the compressed syntax.
    """
    pairs: dict[tuple[str, str], None] = {}
    sendable = [item for item in items if not item.error and item.sop_class_uid and item.transfer_syntax_uid]
    for item in sendable:
        if not (uncompressed and is_decodable(str(item.transfer_syntax_uid))):
            pairs.setdefault((str(item.sop_class_uid), str(item.transfer_syntax_uid)), None)
    for item in sendable:
        if is_decodable(str(item.transfer_syntax_uid)):
            pairs.setdefault((str(item.sop_class_uid), ExplicitVRLittleEndian), None)
    if len(pairs) > MAX_PRESENTATION_CONTEXTS:
        raise ValueError(
            f"{len(pairs)} distinct SOP class/transfer syntax pairs need more than the "
            f"{MAX_PRESENTATION_CONTEXTS} presentation contexts of one association; send in batches"
        )
    return [build_context(UID(sop_class), UID(syntax)) for sop_class, syntax in pairs]


def _result_from_response(item: _Outgoing, response: Dataset, syntax: str) -> SendResult:
    """Turn a C-STORE response to the item sent in ``syntax`` into a :class:`SendResult`."""
    status = int(response.Status)
    comment = str(response.get("ErrorComment", "") or "")
    ok = is_success_or_warning(status)
    error = "" if status == SUCCESS else status_name(status) + (f": {comment}" if comment else "")
    return SendResult(item.path, item.sop_instance_uid, status, ok, error, syntax)


def _syntax_for(assoc: Association, item: _Outgoing, uncompressed: bool) -> str | None:
    """The transfer syntax to send the item in: its own if the peer accepted it (and it is not to go
    ``uncompressed``), else Explicit VR Little Endian if the peer accepted that and the item can be
    decoded; None when neither."""
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    own = str(item.transfer_syntax_uid)
    decodable = is_decodable(own)
    if (item.sop_class_uid, own) in accepted and not (uncompressed and decodable):
        return own
    if decodable and (item.sop_class_uid, ExplicitVRLittleEndian) in accepted:
        return ExplicitVRLittleEndian
    return None


def _decoded(item: _Outgoing) -> Dataset:
    """The item's object decoded (:func:`decoded_dataset`)."""
    return decoded_dataset(dcmread(Path(str(item.path))) if item.dataset is None else copy.deepcopy(item.dataset))


def decoded_dataset(ds: Dataset) -> Dataset:
    """``ds`` with its pixel data decoded, in Explicit VR Little Endian (PS3.5 A.2), changed in place.

    The SOP Instance UID stays (see the module docstring), unlike in pydicom's default.  pydicom
    decodes Bits Allocated 1 to one byte per pixel; such pixel data is packed back to eight
    pixels a byte (PS3.5 8.1.1), as the BINARY segmentations need.  The STOW-RS sender of the
    server decodes with it too, for destinations that take compressed objects only decoded.
    """
    pixels = int(ds.get("NumberOfFrames") or 1) * int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel)
    decompress(ds, as_rgb=False, generate_instance_uid=False)
    if int(ds.BitsAllocated) == 1:
        ds.PixelData = pack_bits(np.frombuffer(ds.PixelData, dtype=np.uint8, count=pixels))
    return ds


def _source(item: _Outgoing, syntax: str) -> Dataset | Path:
    """What to hand to C-STORE: the item as it is in its own syntax, else decoded."""
    if syntax != item.transfer_syntax_uid:
        logger.info("%s goes decoded: the peer does not accept %s", item.sop_instance_uid, item.transfer_syntax_uid)
        return _decoded(item)
    return item.dataset if item.dataset is not None else Path(str(item.path))


def _send(
    dest: Destination, items: Sequence[_Outgoing], calling_aet: str, timeout: float, uncompressed: bool
) -> list[SendResult]:
    """Send prepared objects over one association; the shared part of the public senders."""
    contexts = _contexts_for(items, uncompressed)
    results: list[SendResult] = []
    if not contexts:
        return [_not_sent(item, item.error or "no SOP Class UID or transfer syntax") for item in items]
    ae = requestor_ae(calling_aet, timeout)
    assoc, connected = request_association(ae, dest, contexts)
    if not assoc.is_established:
        refused = sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts})
        if assoc.is_aborted and refused and not assoc.accepted_contexts:
            raise ContextsRefused(
                f"{dest} refused every proposed presentation context (SOP classes {', '.join(refused)})", refused
            )
        raise AssociationFailed(association_problem(assoc, connected, dest))
    try:
        for item in items:
            if item.error or not item.sop_class_uid or not item.transfer_syntax_uid:
                results.append(_not_sent(item, item.error or "no SOP Class UID or transfer syntax"))
                continue
            syntax = _syntax_for(assoc, item, uncompressed)
            if syntax is None:
                results.append(
                    _not_sent(
                        item,
                        f"{dest} accepted no presentation context for SOP class {item.sop_class_uid} "
                        f"in transfer syntax {item.transfer_syntax_uid}",
                    )
                )
                continue
            try:
                source = _source(item, syntax)
            except Exception as exc:  # noqa: BLE001 - pydicom's decoders raise many types on bad pixel data
                results.append(_not_sent(item, f"not sent: {dest} takes it only decoded, and decoding failed: {exc}"))
                continue
            try:
                response = assoc.send_c_store(source)
            except (ValueError, AttributeError, OSError, TypeError) as exc:
                results.append(_not_sent(item, f"not sent: {exc}"))
                continue
            except RuntimeError as exc:
                raise AssociationFailed(f"association with {dest} ended: {exc}", results) from exc
            if "Status" not in response:
                results.append(_not_sent(item, "no C-STORE response: association aborted or timed out"))
                raise AssociationFailed(f"association with {dest} aborted or timed out", results)
            result = _result_from_response(item, response, syntax)
            if not result.ok:
                logger.warning("C-STORE of %s to %s: %s", item.sop_instance_uid, dest, result.error)
            results.append(result)
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def _not_sent(item: _Outgoing, error: str) -> SendResult:
    """A result for an object that got no C-STORE response."""
    return SendResult(item.path, item.sop_instance_uid, NOT_SENT, False, error)


def send_files(
    dest: Destination, paths: Iterable[Path], calling_aet: str, timeout: float = 30.0, uncompressed: bool = False
) -> list[SendResult]:
    """Send DICOM files with C-STORE over one association (PS3.4 Annex B).

    Parameters
    ----------
    dest : Destination
        The peer.
    paths : Iterable of pathlib.Path
        Part 10 files (or bare data sets in an uncompressed transfer syntax).
    calling_aet : str
        Our AE title.
    timeout : float, optional
        Seconds for connection, association and each response. Default 30.
    uncompressed : bool, optional
        Send every decodable compressed object decoded, in Explicit VR Little
        Endian, even to a peer that accepts its compressed syntax. Default False.

    Returns
    -------
    list of SendResult
        One per path, in order.

    Raises
    ------
    AssociationFailed
        When the peer rejects or aborts the association, or cannot be reached.
        Its ``results`` hold the outcomes obtained before.
    ValueError
        When the files need more than 128 presentation contexts.
    """
    items = [_describe_file(Path(path)) for path in paths]
    if not items:
        return []
    return _send(dest, items, calling_aet, timeout, uncompressed)


def send_datasets(
    dest: Destination,
    datasets: Iterable[Dataset],
    calling_aet: str,
    timeout: float = 30.0,
    uncompressed: bool = False,
) -> list[SendResult]:
    """Send in-memory data sets with C-STORE over one association (PS3.4 Annex B).

    Parameters
    ----------
    dest : Destination
        The peer.
    datasets : Iterable of pydicom.dataset.Dataset
        The objects; each is proposed in the transfer syntax of its
        ``file_meta`` or, without one, explicit VR little endian (the data
        sets themselves are not modified).
    calling_aet : str
        Our AE title.
    timeout : float, optional
        Seconds for connection, association and each response. Default 30.
    uncompressed : bool, optional
        As for :func:`send_files`.

    Returns
    -------
    list of SendResult
        One per data set, in order (``path`` is ``None``).

    Raises
    ------
    AssociationFailed
        As for :func:`send_files`.
    ValueError
        As for :func:`send_files`.
    """
    items = [_describe_dataset(ds) for ds in datasets]
    if not items:
        return []
    return _send(dest, items, calling_aet, timeout, uncompressed)
