"""DIMSE status codes used by the DICOM node.

The values come from the DICOM standard:

* PS3.7 Annex C (status type encoding) and C.1 to C.5 (general statuses);
* PS3.7 10.1.4.1.10 (N-ACTION statuses) and PS3.4 J.3.3 (the Failure Reasons of a Storage
  Commitment result, general statuses of PS3.7 Annex C);
* PS3.4 Annex B.2.3 (Storage Service Class C-STORE statuses): ``0xA7xx``
  *Refused: Out of Resources*, ``0xA9xx`` *Error: Data Set does not match SOP
  Class*, ``0xCxxx`` *Error: Cannot understand*, and the warnings ``0xB000``,
  ``0xB006`` and ``0xB007``.

Only these named constants are used in the package; no bare status numbers.
"""

from __future__ import annotations

__all__ = [
    "CANNOT_UNDERSTAND",
    "CLASS_INSTANCE_CONFLICT",
    "COERCION_OF_DATA_ELEMENTS",
    "DATASET_DOES_NOT_MATCH_SOP_CLASS",
    "DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING",
    "DUPLICATE_SOP_INSTANCE",
    "ELEMENTS_DISCARDED",
    "INVALID_ARGUMENT_VALUE",
    "MISSING_ATTRIBUTE",
    "NOT_SENT",
    "NO_SUCH_ACTION_TYPE",
    "NO_SUCH_OBJECT_INSTANCE",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SUCCESS",
    "WARNING_STATUSES",
    "is_success_or_warning",
    "status_name",
]

SUCCESS: int = 0x0000
"""Success (PS3.7 C.1.1)."""

PROCESSING_FAILURE: int = 0x0110
"""Failure: Processing failure (PS3.7 C.4.2)."""

NO_SUCH_OBJECT_INSTANCE: int = 0x0112
"""Failure: No such object instance (PS3.7 C.4, 0112H): as N-ACTION status, another Requested SOP Instance
than the well-known one; as Failure Reason of Storage Commitment (PS3.4 J.3.3), an instance we do not hold."""

INVALID_ARGUMENT_VALUE: int = 0x0115
"""Failure: Invalid argument value (PS3.7 C.4, 0115H): an N-ACTION argument that is not valid (e.g. a bad UID)."""

CLASS_INSTANCE_CONFLICT: int = 0x0119
"""Failure: Class-instance conflict (PS3.7 C.4, 0119H): Failure Reason of Storage Commitment for an instance
held under another SOP class than the request names (PS3.4 J.3.3)."""

MISSING_ATTRIBUTE: int = 0x0120
"""Failure: Missing attribute (PS3.7 C.4, 0120H): a required attribute of the Action Information is absent."""

NO_SUCH_ACTION_TYPE: int = 0x0123
"""Failure: No such action (PS3.7 C.4, 0123H): an Action Type ID the SOP class does not define."""

DUPLICATE_SOP_INSTANCE: int = 0xC111
"""Error: Cannot understand (PS3.4 Annex B.2.3, range ``0xCxxx``), used for a SOP Instance UID already
in use for other content or in another series. C-STORE has no status of its own for it (the general
*Duplicate SOP Instance* ``0x0111`` of PS3.7 C.4 is not among the C-STORE statuses of PS3.7 9.1.1.1.9,
and senders such as DCMTK's storescu report it as unknown); the Error Comment names the conflict."""

OUT_OF_RESOURCES: int = 0xA700
"""Refused: Out of Resources (PS3.4 Annex B.2.3, range ``0xA7xx``)."""

DATASET_DOES_NOT_MATCH_SOP_CLASS: int = 0xA900
"""Error: Data Set does not match SOP Class (PS3.4 Annex B.2.3, range ``0xA9xx``)."""

CANNOT_UNDERSTAND: int = 0xC000
"""Error: Cannot understand, the SCP cannot parse the Data Set (PS3.4 Annex B.2.3, ``0xCxxx``)."""

COERCION_OF_DATA_ELEMENTS: int = 0xB000
"""Warning: Coercion of Data Elements (PS3.4 Annex B.2.3); the instance was stored."""

ELEMENTS_DISCARDED: int = 0xB006
"""Warning: Elements Discarded (PS3.4 Annex B.2.3); the instance was stored."""

DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: int = 0xB007
"""Warning: Data Set does not match SOP Class (PS3.4 Annex B.2.3); the instance was stored."""

NOT_SENT: int = -1
"""Not a DIMSE status: the SCU did not send the object, so there is no C-STORE response.

Used in :class:`dicom_node.scu.SendResult` for objects that could not be read
or had no accepted presentation context (PS3.8 9.3.2.2).
"""

WARNING_STATUSES: frozenset[int] = frozenset(
    {COERCION_OF_DATA_ELEMENTS, ELEMENTS_DISCARDED, DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING}
)
"""The C-STORE warning statuses of PS3.4 Annex B.2.3: the SCP stored the instance."""

_NAMES: dict[int, str] = {
    SUCCESS: "Success",
    PROCESSING_FAILURE: "Failure: processing failure",
    NO_SUCH_OBJECT_INSTANCE: "Failure: no such object instance",
    INVALID_ARGUMENT_VALUE: "Failure: invalid argument value",
    CLASS_INSTANCE_CONFLICT: "Failure: class-instance conflict",
    MISSING_ATTRIBUTE: "Failure: missing attribute",
    NO_SUCH_ACTION_TYPE: "Failure: no such action",
    DUPLICATE_SOP_INSTANCE: "Error: cannot understand (SOP Instance UID already in use)",
    COERCION_OF_DATA_ELEMENTS: "Warning: coercion of data elements",
    ELEMENTS_DISCARDED: "Warning: elements discarded",
    DATA_SET_DOES_NOT_MATCH_SOP_CLASS_WARNING: "Warning: data set does not match SOP class",
}


def is_success_or_warning(status: int) -> bool:
    """Tell whether a C-STORE response status means the peer stored the instance.

    Parameters
    ----------
    status : int
        The Status (0000,0900) of a C-STORE response.

    Returns
    -------
    bool
        ``True`` for Success and for the warnings of PS3.4 Annex B.2.3
        (the instance was stored, possibly with changes), else ``False``.
    """
    return status == SUCCESS or status in WARNING_STATUSES


def status_name(status: int) -> str:
    """Describe a DIMSE status in words, for log lines and error texts.

    Parameters
    ----------
    status : int
        A Status (0000,0900) value.

    Returns
    -------
    str
        For example ``"0xA700 Refused: out of resources"``, following the
        ranges of PS3.4 Annex B.2.3 and PS3.7 Annex C.
    """
    if status == NOT_SENT:
        return "not sent"
    if status in _NAMES:
        text = _NAMES[status]
    elif 0xA700 <= status <= 0xA7FF:
        text = "Refused: out of resources"
    elif 0xA900 <= status <= 0xA9FF:
        text = "Error: data set does not match SOP class"
    elif 0xC000 <= status <= 0xCFFF:
        text = "Error: cannot understand"
    elif 0xA000 <= status <= 0xAFFF or 0x0100 <= status <= 0x01FF or 0x0200 <= status <= 0x02FF:
        text = "Failure"
    elif 0xB000 <= status <= 0xBFFF:
        text = "Warning"
    else:
        text = "Unknown status"
    return f"0x{status:04X} {text}"
