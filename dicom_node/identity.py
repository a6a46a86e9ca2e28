"""Whose images a series holds: the identity its instances must share.

A series is one acquisition of one patient in one study (PS3.3 C.7.3.1: the General Series
module sits under one study, which sits under one patient, PS3.3 Section A.1.2). A sender
that reuses a Series Instance UID for two patients, or mixes studies, modalities or frames
of reference under it, produces a "series" that must never be analysed as one lung volume,
nor reported under either patient's name. This module names those disagreements:

* :func:`series_disagreements` over every instance of a series, e.g.
  ``"2 patients in one series: PAT-A (15 slices), PAT-B (15 slices)"``, used when a series
  is finalised and again before it is analysed;
* :func:`instance_disagreements` for one arriving instance against the identity the series
  (or its study) already holds, used at intake so that the conflict is on record at once.

Values are compared after the normalisation PS3.5 allows for their value representation:
surrounding spaces are not significant (PS3.5 6.2), nor are trailing empty components of a
Person Name (PS3.5 6.2.1.1). A value that is absent on some instances and present on others
is a disagreement too: the instances cannot be shown to belong together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dicom_node.header import InstanceHeader

__all__ = [
    "IDENTITY_ATTRIBUTES",
    "IdentityAttribute",
    "PATIENT_FIELDS",
    "identity_of",
    "instance_disagreements",
    "series_disagreements",
]

_ABSENT = "(none)"


@dataclass(frozen=True)
class IdentityAttribute:
    """One attribute every instance of a series must share.

    Attributes
    ----------
    field : str
        The :class:`~dicom_node.header.InstanceHeader` field.
    name : str
        The attribute in words, with its tag, for per-instance reasons.
    plural : str
        What two different values are two of, e.g. ``"patients"`` for Patient ID.
    """

    field: str
    name: str
    plural: str


IDENTITY_ATTRIBUTES: tuple[IdentityAttribute, ...] = (
    IdentityAttribute("patient_id", "Patient ID (0010,0020)", "patients"),
    IdentityAttribute("issuer_of_patient_id", "Issuer of Patient ID (0010,0021)", "issuers of patient ID"),
    IdentityAttribute("patient_name", "Patient's Name (0010,0010)", "patient names"),
    IdentityAttribute("patient_birth_date", "Patient's Birth Date (0010,0030)", "birth dates"),
    IdentityAttribute("patient_sex", "Patient's Sex (0010,0040)", "patient sexes"),
    IdentityAttribute("study_instance_uid", "Study Instance UID (0020,000D)", "studies"),
    IdentityAttribute("modality", "Modality (0008,0060)", "modalities"),
    IdentityAttribute("frame_of_reference_uid", "Frame of Reference UID (0020,0052)", "frames of reference"),
)
"""Patient (PS3.3 C.7.1.1), study (C.7.2.1), modality (C.7.3.1) and frame of reference (C.7.4.1)."""

#: The attributes that say whose images these are (a study holds one patient).
PATIENT_FIELDS: frozenset[str] = frozenset(
    {"patient_id", "issuer_of_patient_id", "patient_name", "patient_birth_date", "patient_sex"}
)


def _normalised(field: str, value: str | None) -> str:
    """The comparable form of one value: stripped, Person Name without trailing empty components."""
    text = (value or "").strip()
    if field == "patient_name":
        text = "=".join(group.rstrip("^ ") for group in text.split("=")).rstrip("=")
    return text or _ABSENT


def identity_of(header: InstanceHeader) -> dict[str, str]:
    """The normalised identity of one instance, by :class:`~dicom_node.header.InstanceHeader` field."""
    return {a.field: _normalised(a.field, getattr(header, a.field)) for a in IDENTITY_ATTRIBUTES}


def _slices(count: int) -> str:
    return f"{count} slice" if count == 1 else f"{count} slices"


def series_disagreements(headers: Sequence[InstanceHeader]) -> list[str]:
    """Every identity attribute on which the instances of one series disagree, in words.

    Parameters
    ----------
    headers : Sequence of InstanceHeader
        All instances of the series.

    Returns
    -------
    list of str
        One reason per attribute with more than one value, each value with how many
        instances carry it, most frequent first, e.g. ``"2 patients in one series: PAT-A
        (15 slices), PAT-B (15 slices)"``; empty when the instances agree.
    """
    identities = [identity_of(h) for h in headers]
    reasons: list[str] = []
    for attribute in IDENTITY_ATTRIBUTES:
        counts = Counter(identity[attribute.field] for identity in identities)
        if len(counts) < 2:
            continue
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        shown = ", ".join(f"{value} ({_slices(count)})" for value, count in ordered)
        reasons.append(f"{len(counts)} {attribute.plural} in one series: {shown}")
    return reasons


def instance_disagreements(
    held: Mapping[str, str], header: InstanceHeader, fields: frozenset[str] | None = None
) -> list[str]:
    """How one arriving instance differs from the identity already held, in words.

    Parameters
    ----------
    held : Mapping
        A normalised identity from :func:`identity_of` (the series' first instance, or the
        patient of the study as first received).
    header : InstanceHeader
        The arriving instance.
    fields : frozenset of str, optional
        Compare only these fields (e.g. :data:`PATIENT_FIELDS` against a study); all by default.

    Returns
    -------
    list of str
        E.g. ``"Patient ID (0010,0020) is PAT-B, the series holds PAT-A"``; empty when it agrees.
    """
    received = identity_of(header)
    return [
        f"{a.name} is {received[a.field]}, already held: {held[a.field]}"
        for a in IDENTITY_ATTRIBUTES
        if (fields is None or a.field in fields) and a.field in held and received[a.field] != held[a.field]
    ]
