"""Our report objects to a DICOMweb origin server: one STOW-RS request per object (PS3.18 10.5).

The outbox (:mod:`server.tasks.delivery`) calls :func:`store_object` for a destination whose
address is ``NAME@stow+http(s)://host/base``; the request goes to ``base/studies`` through
``dicomweb_client.DICOMwebClient.store_instances``.  Each call is one attempt: the client's own
retries are off, because the outbox retries with its back-off and records every attempt.  What the
origin server answers decides whether a retry can help (:class:`StowOutcome`):

* 200, or 202 without our instance in the Failed SOP Sequence: stored;
* 202 or 409 naming our instance in the Failed SOP Sequence: its Failure Reason (PS3.18 I.2.2)
  decides, as a C-STORE status would (``0xA7xx`` out of resources may pass, the others do not);
* any other 4xx (bad request, unauthorised, not found, too large, unsupported media type): final,
  except 408 and 429, which say "not now";
* 5xx, no connection, a timeout: transient.

The credential of a destination (``LUNGCDS_DICOMWEB_CREDENTIALS[NAME]``, ``bearer:<token>`` or
``basic:<user>:<password>``) is added to each request by ``requests``' authentication hook, so it
is in no header dictionary that a library logs at debug level, and in no message of ours.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from pydicom.dataset import Dataset
from requests.auth import AuthBase, HTTPBasicAuth

from dicom_node.scu import decoded_dataset, is_decodable
from server.core.config import Settings

__all__ = ["CONNECT_TIMEOUT_S", "READ_TIMEOUT_S", "StowOutcome", "probe", "stow_client", "store_object"]

logger = logging.getLogger(__name__)

#: Seconds to connect to the origin server, and to wait for its answer once the object is sent.
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
#: HTTP statuses below 500 that mean "not now" (RFC 9110 15.5.9, RFC 6585 4).
_TRANSIENT_CLIENT_ERRORS = frozenset({408, 429})
#: Characters of an error body kept in the outbox row's error.
_BODY_EXCERPT = 300


class _Bearer(AuthBase):
    """``Authorization: Bearer <token>`` (RFC 6750 2.1), added when the request is prepared."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request


@dataclass(frozen=True)
class StowOutcome:
    """One STOW-RS attempt: stored, or why not and whether a later attempt may succeed.

    ``failure_reason`` is the Failure Reason (0008,1197) the origin server gave for our
    instance, when it named it; the caller judges it as a C-STORE status.
    """

    stored: bool
    error: str | None = None
    transient: bool = False
    failure_reason: int | None = None


def _auth(settings: Settings, name: str) -> AuthBase | None:
    credential = settings.dicomweb_credentials.get(name)
    if credential is None:
        return None
    kind, _, secret = credential.partition(":")
    if kind == "bearer":
        return _Bearer(secret)
    user, _, password = secret.partition(":")
    return HTTPBasicAuth(user, password)


def stow_client(settings: Settings, name: str, base_url: str) -> DICOMwebClient:
    """A client of the DICOMweb base URL ``base_url`` with destination ``name``'s credential, retries off."""
    session = requests.Session()
    session.auth = _auth(settings, name)
    session.verify = str(settings.dicomweb_ca) if settings.dicomweb_ca is not None else True
    client = DICOMwebClient(base_url, session=session, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    client.set_http_retry_params(retry=False)
    return client


def _outgoing(path: Path, uncompressed: bool) -> Dataset:
    """The object as stored, or decoded when the destination takes compressed objects only decoded."""
    ds = pydicom.dcmread(path)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if uncompressed and syntax and is_decodable(syntax):
        return decoded_dataset(ds)
    return ds


def _failed_reason(response: Dataset, sop_instance_uid: str) -> int | None:
    """The Failure Reason the Store Instances Response gives for ``sop_instance_uid``, if it lists it as failed."""
    for item in response.get("FailedSOPSequence", []):
        if str(item.get("ReferencedSOPInstanceUID", "")) == sop_instance_uid:
            return int(item.get("FailureReason", 0x0110))
    return None


def _response_dataset(response: requests.Response) -> Dataset | None:
    """The Store Instances Response Module of an error answer (DICOM JSON), when it carries one."""
    if "json" not in response.headers.get("Content-Type", ""):
        return None
    try:
        return Dataset.from_json(response.json())
    except Exception:  # noqa: BLE001 - a body that is not DICOM JSON is reported as text instead
        return None


def store_object(
    settings: Settings, name: str, base_url: str, path: Path, *, uncompressed: bool = False
) -> StowOutcome:
    """Send the DICOM file ``path`` to the STOW-RS destination ``name`` at ``base_url`` (one attempt).

    Parameters
    ----------
    settings : Settings
        For the destination's credential and the CA bundle.
    name : str
        The destination's name (the part of its address before ``@``).
    base_url : str
        The DICOMweb base URL; the request goes to ``base_url/studies``.
    path : pathlib.Path
        A Part 10 file of ours.
    uncompressed : bool, optional
        Send a compressed object decoded (Explicit VR Little Endian), same SOP Instance UID.

    Returns
    -------
    StowOutcome
        Stored, or the error in words with whether it is worth another attempt.

    Raises
    ------
    OSError, pydicom.errors.InvalidDicomError
        When ``path`` cannot be read.
    """
    ds = _outgoing(path, uncompressed)
    sop_uid = str(ds.SOPInstanceUID)
    target = f"STOW-RS {base_url}/studies"
    try:
        response = stow_client(settings, name, base_url).store_instances([ds])
    except requests.HTTPError as exc:
        answer = exc.response
        if answer is None:
            return StowOutcome(False, f"{target}: {exc}", transient=True)
        status = answer.status_code
        detail = _response_dataset(answer)
        reason = _failed_reason(detail, sop_uid) if detail is not None else None
        text = f"{target} answered {status} {answer.reason}"
        if reason is not None:
            return StowOutcome(False, f"{text}: Failure Reason 0x{reason:04X}", failure_reason=reason)
        excerpt = " ".join(answer.text[:_BODY_EXCERPT].split())
        transient = status >= 500 or status in _TRANSIENT_CLIENT_ERRORS
        return StowOutcome(False, f"{text}: {excerpt}" if excerpt else text, transient=transient)
    except (requests.ConnectionError, requests.Timeout) as exc:
        return StowOutcome(False, f"{target}: {type(exc).__name__}: {exc}", transient=True)
    except requests.RequestException as exc:
        return StowOutcome(False, f"{target}: {type(exc).__name__}: {exc}")
    reason = _failed_reason(response, sop_uid)
    if reason is not None:
        return StowOutcome(False, f"{target} refused the object: Failure Reason 0x{reason:04X}", failure_reason=reason)
    return StowOutcome(True)


def probe(settings: Settings, name: str, base_url: str) -> tuple[bool, str]:
    """Whether the STOW-RS destination answers, and in words: a QIDO-RS search for one study (PS3.18 10.6).

    Any answer but a server error, or a refusal of our credential, shows that the origin server is there
    and takes requests from us; nothing is stored.
    """
    client = stow_client(settings, name, base_url)
    try:
        client.search_for_studies(limit=1)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403) or status >= 500:
            return False, f"{base_url} answered {status} to a QIDO-RS search"
        return True, f"{base_url} answered {status} to a QIDO-RS search"
    except requests.RequestException as exc:
        return False, f"{base_url} did not answer: {type(exc).__name__}"
    return True, f"{base_url} answered a QIDO-RS search"
