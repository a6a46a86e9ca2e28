"""STOW-RS into lungcds (PS3.18 10.5): each instance takes the path of a C-STORE, the answer is the
Store Instances Response Module (PS3.18 Annex I).

One :class:`StowReception` per request.  The request is described as the association a C-STORE
would have come in (:class:`~dicom_node.scp.AssociationInfo`): its id is the request's audit id,
its calling AE title the sender's identity (``apikey:<id>`` or ``oidc:<subject>``, the *origin*
that return-to-sender looks up), its peer the client's address.  Each part is stored through
:func:`dicom_node.reception.receive_instance` with the spool and the intake the SCP uses, so the
same validation, durable write, identity checks (a disagreement recorded and audited, the
instance kept; a SOP Instance UID stored in another series refused ``0xC111``) and indexing apply.
Two checks belong to STOW-RS alone and come first: a part that is not ``application/dicom``, and an
instance of another study than the one the URL names (``/studies/{study}``), are refused.  Every
refusal is audited as a refused C-STORE is (channel ``dicom``, action ``stow-rs``, its status and
reason), and so is the request's end (``released`` when the body was read to its end, else
``aborted``); a request read to its end completes its series as a released association does.

Senders are allow-listed by ``LUNGCDS_DICOMWEB_ALLOWED_SENDERS`` (:func:`check_sender`), as calling
AE titles are by ``LUNGCDS_ALLOWED_CALLING_AETS``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy.engine import Engine

from dicom_node.reception import PROCESSING_FAILURE_REASON, receive_instance
from dicom_node.scp import AssociationInfo
from dicom_node.spool import Spool, StoredInstance
from dicom_node.statuses import CANNOT_UNDERSTAND, PROCESSING_FAILURE, SUCCESS
from server.audit import AuditTrail
from server.core.config import Settings
from server.routing.intake import EnqueueAnalysis, SeriesIntake
from server.services.dicomweb_multipart import DICOM_MEDIA_TYPE, Part

__all__ = [
    "MAX_WARNINGS",
    "STUDY_MISMATCH",
    "SenderRefused",
    "StoreAnswer",
    "StowReception",
    "check_sender",
    "series_in_open_requests",
    "valid_uid",
]

logger = logging.getLogger(__name__)

#: Failure Reason of an instance of another study than the request URL's: in the "cannot
#: understand" range PS3.18 I.2.2 allows implementation codes in (documented in the README).
STUDY_MISMATCH = 0xC409
#: Failure reasons told in ``Warning`` header fields; the audit trail has every one.
MAX_WARNINGS = 10
_WARNING_TEXT = 400
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


class _OpenRequests:
    """Series that STOW-RS requests of this process are still sending, counted per request.

    The idle timer never finalises them (:meth:`server.runtime.ServerRuntime`), as it never
    finalises a series of an open DICOM association: a sender that pauses between parts for
    longer than ``LUNGCDS_SERIES_IDLE_SECONDS`` must not see its series analysed half received.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, series_uid: str) -> None:
        with self._lock:
            self._counts[series_uid] += 1

    def remove(self, series_uids: Iterable[str]) -> None:
        with self._lock:
            self._counts.subtract(series_uids)
            self._counts = +self._counts  # drops the series no request sends any more

    def series(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._counts)


_OPEN_REQUESTS = _OpenRequests()


def series_in_open_requests() -> frozenset[str]:
    """Series that a STOW-RS request of this process is still sending (never finalised as idle)."""
    return _OPEN_REQUESTS.series()


def valid_uid(text: str) -> bool:
    """Whether ``text`` is a UID (PS3.5 9.1): at most 64 characters, digits in dot-separated components."""
    return len(text) <= 64 and _UID.match(text) is not None


class SenderRefused(Exception):
    """The caller may not send instances (not in ``LUNGCDS_DICOMWEB_ALLOWED_SENDERS``)."""


def check_sender(settings: Settings, trail: AuditTrail, actor: str, source: str | None) -> None:
    """Refuse (and audit, as a rejected association is) a sender outside the allow-list.

    Raises
    ------
    SenderRefused
        ``actor`` is not listed while the list is not empty.
    """
    allowed = settings.dicomweb_allowed_senders
    if not allowed or actor in allowed:
        return
    reason = f"{actor} is not in LUNGCDS_DICOMWEB_ALLOWED_SENDERS"
    trail.record(
        channel="dicom",
        actor=f"dicom:{actor}",
        source=source,
        action="stow-rs",
        outcome="rejected",
        detail={"reason": reason},
    )
    raise SenderRefused(reason)


@dataclass(frozen=True)
class PartResult:
    """What became of one part: stored (status 0) or refused with its status and reason."""

    number: int
    sop_class_uid: str | None
    sop_instance_uid: str | None
    status: int
    reason: str

    @property
    def ok(self) -> bool:
        """Whether the instance is stored."""
        return self.status == SUCCESS


@dataclass(frozen=True)
class StoreAnswer:
    """The HTTP answer of a STOW-RS request (PS3.18 10.5.3).

    Attributes
    ----------
    status : int
        200 every instance stored, 202 some stored and some refused, 409 none stored.
    body : dict
        The Store Instances Response Module (PS3.18 Table I.1-1) as DICOM JSON (PS3.18 F.2).
    warnings : list of str
        ``Warning`` header values (RFC 7234 5.5, code 299) with the reason of each refusal, in words.
    """

    status: int
    body: dict[str, Any]
    warnings: list[str]


class _AuditingSink:
    """The SCP's sink as a STOW-RS request sees it: instances indexed by the intake, refusals audited."""

    def __init__(self, intake: SeriesIntake, trail: AuditTrail) -> None:
        self._intake = intake
        self._trail = trail

    def instance_stored(self, stored: StoredInstance, assoc: AssociationInfo) -> None:
        """Index the instance, with the identity checks of the intake (as for a C-STORE)."""
        self._intake.instance_stored(stored, assoc)

    def instance_refused(
        self,
        sop_instance_uid: str,
        status: int,
        reason: str,
        assoc: AssociationInfo,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Audit a refused instance with its status, reason and ``detail``, as a refused C-STORE is."""
        self._trail.record(
            channel="dicom",
            actor=f"dicom:{assoc.calling_aet}",
            source=f"{assoc.peer_host}:{assoc.peer_port}",
            action="stow-rs",
            outcome="refused",
            detail={
                **(detail or {}),
                "request": assoc.id,
                "sop_instance_uid": sop_instance_uid,
                "status": f"0x{status:04X}",
                "reason": reason,
            },
        )

    def association_ended(self, assoc: AssociationInfo, series_uids: frozenset[str], released: bool) -> None:
        """A request ends in :meth:`StowReception.finish`, which completes its series itself."""
        raise NotImplementedError("a STOW-RS request ends in StowReception.finish")


def _identify(encoded: bytes) -> tuple[str | None, str | None, str | None]:
    """SOP Class, SOP Instance and Study Instance UIDs of a part, as far as it can be read (else None)."""
    try:
        ds = pydicom.dcmread(BytesIO(encoded), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - an unreadable part is refused by the spool with its reason
        return None, None, None
    meta = getattr(ds, "file_meta", None)
    sop_class = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta is not None else None)
    sop_instance = ds.get("SOPInstanceUID") or (meta.get("MediaStorageSOPInstanceUID") if meta is not None else None)
    study = ds.get("StudyInstanceUID")
    return (str(sop_class) if sop_class else None, str(sop_instance) if sop_instance else None, study and str(study))


def _warning(agent: str, result: PartResult) -> str:
    """A ``Warning`` header value: ``299 agent "text"``, printable ASCII, no quote or backslash inside."""
    which = result.sop_instance_uid or "SOP Instance UID unknown"
    text = f"part {result.number} ({which}): 0x{result.status:04X} {result.reason}"
    clean = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "'" for ch in text)[:_WARNING_TEXT]
    return f'299 {agent} "{clean}"'


class StowReception:
    """One STOW-RS request: its parts stored as they arrive, then its answer and its end.

    Blocking (files, database): call it from a worker thread.

    Parameters
    ----------
    settings, engine, trail
        The installation.
    enqueue : callable
        Puts a job revision on the analysis queue (after commit), as for the SCP's intake.
    origin : AssociationInfo
        The request as an association: audit id, sender identity, client address.
    study_uid : str or None
        The study the URL names (``/studies/{study}``): instances of other studies are refused.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        trail: AuditTrail,
        enqueue: EnqueueAnalysis,
        origin: AssociationInfo,
        study_uid: str | None = None,
    ) -> None:
        self._settings = settings
        self._trail = trail
        self._intake = SeriesIntake(engine, settings, enqueue, trail)
        self._spool = Spool(
            settings.spool_dir, min_free_bytes=settings.min_free_disk_mb * 2**20, admit=self._intake.admit
        )
        self._sink = _AuditingSink(self._intake, trail)
        self.origin = origin
        self.study_uid = study_uid
        self.results: list[PartResult] = []
        self._series: set[str] = set()

    @property
    def stored(self) -> int:
        """Instances stored so far."""
        return sum(result.ok for result in self.results)

    def store(self, part: Part) -> PartResult:
        """Store one part as a C-STORE would be, or refuse it with its reason; its file is removed."""
        try:
            result = self._store(part)
        finally:
            part.path.unlink(missing_ok=True)
        self.results.append(result)
        return result

    def _store(self, part: Part) -> PartResult:
        if part.content_type not in (None, DICOM_MEDIA_TYPE):
            reason = (
                f"part {part.number} is {part.content_type}, not {DICOM_MEDIA_TYPE}: only DICOM instances are stored"
            )
            return self._refused(part, (None, None, None), CANNOT_UNDERSTAND, reason)
        try:
            encoded = part.path.read_bytes()
        except OSError as exc:
            logger.error("a STOW-RS part could not be read back from disk: %s", exc)
            return self._refused(part, (None, None, None), PROCESSING_FAILURE, PROCESSING_FAILURE_REASON)
        sop_class, sop_instance, study = ids = _identify(encoded)
        if self.study_uid is not None and study is not None and study != self.study_uid:
            reason = (
                f"Study Instance UID (0020,000D) {study} is not the study {self.study_uid} "
                "the request URL names (PS3.18 10.5.1)"
            )
            return self._refused(part, ids, STUDY_MISMATCH, reason)
        receipt = receive_instance(self._spool, self._sink, self.origin, lambda: encoded, sop_instance or "")
        if receipt.stored is not None:
            header = receipt.stored.header
            if str(header.series_instance_uid) not in self._series:
                self._series.add(str(header.series_instance_uid))
                _OPEN_REQUESTS.add(str(header.series_instance_uid))
            return PartResult(part.number, header.sop_class_uid, header.sop_instance_uid, SUCCESS, "")
        return PartResult(part.number, sop_class, sop_instance, receipt.status, receipt.reason)

    def _refused(
        self, part: Part, ids: tuple[str | None, str | None, str | None], status: int, reason: str
    ) -> PartResult:
        """A refusal of STOW-RS's own checks, audited as the refusals of the shared path are."""
        self._sink.instance_refused(ids[1] or "", status, reason, self.origin, {"part": part.number})
        return PartResult(part.number, ids[0], ids[1], status, reason)

    def answer(self) -> StoreAnswer:
        """The Store Instances Response (PS3.18 Table I.1-1) and its status (PS3.18 10.5.3.1).

        Retrieve URL is present and empty (type 2): the stored instances are not offered for
        WADO-RS retrieval.
        """
        stored = [r for r in self.results if r.ok]
        failed = [r for r in self.results if not r.ok]
        response = Dataset()
        response.RetrieveURL = ""
        if stored:
            response.ReferencedSOPSequence = [self._item(r) for r in stored]
        if failed:
            response.FailedSOPSequence = [self._item(r) for r in failed]
        status = 200 if not failed else 202 if stored else 409
        agent = self._settings.ae_title
        warnings = [_warning(agent, r) for r in failed[:MAX_WARNINGS]]
        if len(failed) > MAX_WARNINGS:
            warnings.append(f'299 {agent} "{len(failed) - MAX_WARNINGS} more refusals: see the audit trail"')
        return StoreAnswer(status, response.to_json_dict(), warnings)

    @staticmethod
    def _item(result: PartResult) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = result.sop_class_uid or ""
        item.ReferencedSOPInstanceUID = result.sop_instance_uid or ""
        if result.ok:
            item.RetrieveURL = ""
        else:
            item.FailureReason = result.status
        return item

    def finish(self, *, completed: bool) -> None:
        """Audit the request's end; a request read to its end completes its series (never raises).

        As for an association: ``completed`` is a release, after which each series whose
        content says it is complete is finalised; an aborted request leaves its series to the
        idle timer.
        """
        series = sorted(self._series)
        _OPEN_REQUESTS.remove(series)
        self._trail.record(
            channel="dicom",
            actor=f"dicom:{self.origin.calling_aet}",
            source=f"{self.origin.peer_host}:{self.origin.peer_port}",
            action="stow-rs",
            target=",".join(series) or None,
            outcome="released" if completed else "aborted",
            detail={
                "request": self.origin.id,
                "study": self.study_uid,
                "stored": self.stored,
                "refused": len(self.results) - self.stored,
                "series": len(series),
            },
        )
        if not completed:
            return
        for uid in series:
            try:
                self._intake.complete_if_content_says_so(uid, trigger="STOW-RS request ended")
            except Exception:
                logger.exception("series not finalised at the end of its STOW-RS request; the idle timer will")
