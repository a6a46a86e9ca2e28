"""Who made a report object, about whom, from which images, and how far it can be trusted.

* :class:`ReportContext` names the device (General Equipment module, PS3.3 C.7.5.1; Device
  Observer, TID 1004) and derives the UIDs of our outputs from a digest of what they depend on.
* :func:`check_source_series` refuses source headers that are not one series of one patient,
  and :func:`index_source_headers` validates them against the ``Findings`` volume.
* :func:`copy_patient_study` and :func:`evidence_headers` carry the Patient, General Study and
  Patient Study modules (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2) into our objects, leaving out what
  must not propagate (the source's Referenced Study Sequence, whose items may lack the Type 1
  Referenced SOP Class UID).  Every object of one analysis takes them from the same header,
  :func:`identity_source` (the first slice of the volume).
* :func:`model_statement` and :func:`banner_text` put every model's status and provenance
  (``ModelRun.provenance``, set by the pipeline; never inferred here) into words that SR, PDF
  and API show verbatim; :func:`model_words` and :func:`model_label` name a model the same way
  in the PDF and the SR, and :func:`is_stoic_member` says which runs the STOIC2021 ensemble
  reports for.
* :func:`validate_findings` checks everything a report shows before any object is built.

Placement and UIDs
------------------
Every output goes into the *source study* (same Study Instance UID, Patient and Study modules
copied) in a *new series per output type*: SR (Series Number 9901), SEG (9902) and encapsulated
PDF (9903) by default.  Their UIDs (PS3.5 section 9) are derived, never random:

``UID = root + decimal(SHA-512(json(["lungcds output", content digest, kind, part])))``,
truncated to 64 characters,

computed by :func:`pydicom.uid.generate_uid` with that single JSON string as entropy source
(JSON, so that no two different argument lists can concatenate to the same text).  ``kind`` is
``"sr"``, ``"seg"``, ``"pdf"``, ``"sc"`` or ``"kos"`` and ``part`` is ``"series"`` (Series
Instance UID) or ``"instance"`` (SOP Instance UID).  An output of several instances in one series
names each further instance by a fifth element: the SEG's ``"lobes"`` and ``"lesions"`` layers
(:data:`reports.seg.SEG_LAYERS`) derive from ``[..., "seg", "instance", layer]``, while its
``"lungs"`` layer keeps the four-element UID that the single SEG had before the layers.  The
*content digest* is a SHA-256 over everything the content depends on:

* :func:`analysis_digest` (an analysis): the sorted source SOP Instance UIDs (with frame
  numbers), the digest of the HU volume and its grid (``Volume.content_sha256``), the Patient
  and Study attributes the objects copy (:func:`identity_source`), the pipeline version, every
  model's status, version and provenance with its weights SHA-256, origin, validation statement
  and inputs, the configuration the models ran with (``Findings.configuration``), the
  follow-up as the reports show it (the prior, its values, the changes, reasons and caveats)
  and, for the PDF, the eligibility notes it prints;
* :func:`not_analysable_digest` (a series that could not be analysed): the source Series
  Instance UID, the sorted source SOP Instance UIDs, the Patient and Study attributes of the
  first header, the pipeline version and the reasons.

``root`` is :attr:`ReportContext.uid_prefix` -- a site's own registered root, e.g.
``"1.2.826.0.1.9999."`` -- or, when none is configured, pydicom's documented root
``1.2.826.0.1.3680043.8.498.`` (:data:`pydicom.uid.PYDICOM_ROOT_UID`); a root is at most 40
characters so that at least 24 hash digits (about 80 bits) remain.  Hence:

* re-running the same analysis (same instances and pixels, pipeline version, weights and
  configuration) gives the same Series and SOP Instance UIDs, whatever the order of the
  headers, the time, the software build or the device serial number, so the new object
  replaces the old one in PACS instead of duplicating it;
* anything that changes the content -- one more slice, new pixels, a new pipeline version,
  other weights, a validation statement recorded, other settings, a not-analysable report
  followed by an analysis -- gives new UIDs: one UID never names two contents.  The caller
  (``server.services.analysis``) then references what is replaced: the new SR lists the
  earlier SR in its Predecessor Documents Sequence (PS3.3 C.17.2.3), result.json in
  ``replaces``.

Tracking UIDs (TID 4108) of regions and model groups derive from
``["lungcds tracking", series UID, pipeline version, name]`` (the region, not the content, is
tracked), and the Device Observer UID (TID 1004) from ``["lungcds device observer", station
name]``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.uid import PYDICOM_ROOT_UID, UID, generate_uid
from pydicom.valuerep import VR, PersonName

from models.findings import (
    DENSITY_BANDS,
    HEADLINE_KEYS,
    LESION_NAMES,
    LOBE_NAMES,
    REGION_NAMES,
    UNVALIDATED_STATEMENTS,
    ZONE_NAMES,
    Findings,
    ModelRun,
    RegionMeasurements,
)
from reports import codes
from reports.severity import check_severity

__all__ = [
    "IDENTITY_KEYWORDS",
    "OUTPUT_CHARACTER_SET",
    "STATUS_WORDS",
    "OutputKind",
    "ReportContext",
    "UidPart",
    "analysis_digest",
    "banner_text",
    "check_finite",
    "check_reasons",
    "check_source_series",
    "copy_patient_study",
    "evidence_headers",
    "format_da",
    "format_person_name",
    "identity_source",
    "index_source_headers",
    "is_stoic_member",
    "model_display_name",
    "model_label",
    "model_statement",
    "models_not_run",
    "model_words",
    "not_analysable_digest",
    "sop_reference",
    "validate_findings",
]

OutputKind = Literal["sr", "seg", "pdf", "sc", "kos"]
UidPart = Literal["series", "instance"]

#: Specific Character Set of every object we write (UTF-8, PS3.3 C.12.1.1.2), whatever the
#: source used, so that names and free-text reasons in any script survive.
OUTPUT_CHARACTER_SET = "ISO_IR 192"

_KINDS: frozenset[str] = frozenset(get_args(OutputKind))
_PARTS: frozenset[str] = frozenset({"series", "instance"})
_UID_PREFIX = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")

#: Attributes copied from the source header: Patient (C.7.1.1), General Study (C.7.2.1)
#: and Patient Study (C.7.2.2) modules.  Referenced Study Sequence is deliberately absent.
_PATIENT_STUDY_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
)
#: Type 2 attributes of those modules: present, possibly empty, in every object.
_TYPE2_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: Source attributes that must not be inherited by derived objects (see module docstring).
_NOT_INHERITED: tuple[str, ...] = ("ReferencedStudySequence",)

#: Attributes on which every source header of one series must agree (PS3.3 C.7.1.1 Patient,
#: C.7.2.1 General Study, C.7.3.1 General Series, C.7.4.1 Frame of Reference), with the words
#: of a refusal ("2 patients in one series: ...").
IDENTITY_KEYWORDS: Mapping[str, str] = {
    "PatientID": "patients",
    "IssuerOfPatientID": "issuers of patient ID",
    "PatientName": "patient names",
    "PatientBirthDate": "birth dates",
    "PatientSex": "sexes",
    "StudyInstanceUID": "studies",
    "SeriesInstanceUID": "Series Instance UIDs",
    "Modality": "modalities",
    "FrameOfReferenceUID": "frames of reference",
}
_DISPLAY_NAMES: Mapping[str, str] = {
    "corads": "CO-RADS",
    "stoic": "STOIC2021",
    "i3dr": "I3Dr",
    "severity": "CT severity score",
}
#: Words for the learned segmentation models that :func:`model_display_name` leaves under their
#: registry names (the outputs' models have human names there).
_SEGMENTATION_WORDS: Mapping[str, str] = {"lobes": "lobe segmentation", "lesions": "lesion segmentation"}
#: Model status (``ModelRun.status``) in words.
STATUS_WORDS: Mapping[str, str] = {
    "ran": "ran",
    "not_installed": "not installed",
    "skipped": "skipped",
    "failed": "failed",
}


def _check_lo(name: str, value: str) -> None:
    """Check a value for a DICOM LO element (PS3.5 6.2: 1-64 characters, no backslash)."""
    if not value.strip():
        raise ValueError(f"{name} must not be empty")
    if len(value) > 64 or "\\" in value:
        raise ValueError(f"{name} must be at most 64 characters without backslash, got {value!r}")


@dataclass(frozen=True)
class ReportContext:
    """Identity of the lungcds device and numbering of its output series.

    Parameters
    ----------
    software_version : str
        Software Versions (0018,1020) of every object, e.g. the package version.
    device_serial_number : str
        Device Serial Number (0018,1000), from the site configuration.
    manufacturer : str
        Manufacturer (0008,0070), General Equipment module (PS3.3 C.7.5.1).
    manufacturer_model_name : str
        Manufacturer's Model Name (0008,1090).
    institution_name : str or None
        Institution Name (0008,0080), optional.
    station_name : str
        Configured device name; also the Device Observer Name of the SR (TID 1004) and the
        seed of :attr:`device_observer_uid`.
    sr_series_number, seg_series_number, pdf_series_number, sc_series_number, kos_series_number : int
        Series Number (0020,0011) of the SR, SEG, encapsulated-PDF, key-image Secondary Capture
        and Key Object Selection series.
    uid_prefix : str or None
        Organisation root for generated UIDs (ending in "."); pydicom's root when None.
    """

    software_version: str
    device_serial_number: str = "lungcds-1"
    manufacturer: str = "lungcds project"
    manufacturer_model_name: str = "lungcds"
    institution_name: str | None = None
    station_name: str = "lungcds"
    sr_series_number: int = 9901
    seg_series_number: int = 9902
    pdf_series_number: int = 9903
    sc_series_number: int = 9904
    kos_series_number: int = 9905
    uid_prefix: str | None = None

    def __post_init__(self) -> None:
        _check_lo("software_version", self.software_version)
        _check_lo("device_serial_number", self.device_serial_number)
        _check_lo("manufacturer", self.manufacturer)
        _check_lo("manufacturer_model_name", self.manufacturer_model_name)
        if self.institution_name is not None:
            _check_lo("institution_name", self.institution_name)
        if not self.station_name.strip() or len(self.station_name) > 16:
            raise ValueError(f"station_name must be 1-16 characters (SH), got {self.station_name!r}")
        numbers = (
            self.sr_series_number,
            self.seg_series_number,
            self.pdf_series_number,
            self.sc_series_number,
            self.kos_series_number,
        )
        if any(n < 1 or n > 2**31 - 1 for n in numbers):
            raise ValueError(f"series numbers must be positive 32-bit integers, got {numbers}")
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"SR, SEG, PDF, SC and KOS series numbers must differ, got {numbers}")
        if self.uid_prefix is not None and (not _UID_PREFIX.match(self.uid_prefix) or len(self.uid_prefix) > 40):
            raise ValueError(f"uid_prefix must look like '1.2.3.' (at most 40 characters), got {self.uid_prefix!r}")

    @property
    def _prefix(self) -> str:
        return self.uid_prefix if self.uid_prefix is not None else PYDICOM_ROOT_UID

    def _derive(self, *sources: str) -> str:
        """A UID under the root, hashed from one unambiguous JSON text of ``sources``."""
        return str(generate_uid(self._prefix, entropy_srcs=[json.dumps(list(sources))]))

    @property
    def device_observer_uid(self) -> str:
        """Device Observer UID (DCM 121012, TID 1004), stable for a given station name."""
        return self._derive("lungcds device observer", self.station_name)

    def output_uid(self, content_digest: str, kind: OutputKind, part: UidPart, instance_name: str | None = None) -> str:
        """Series or SOP Instance UID of one of our outputs, derived from what its content depends on.

        Parameters
        ----------
        content_digest : str
            :func:`analysis_digest` or :func:`not_analysable_digest` of the content.
        kind : {"sr", "seg", "pdf", "sc", "kos"}
            Which output.
        part : {"series", "instance"}
            Series Instance UID (0020,000E) or SOP Instance UID (0008,0018).
        instance_name : str or None
            Which further instance of an output that has several in its series (a SEG layer such
            as ``"lobes"``); None for the first, or only, instance.

        Returns
        -------
        str
            A UID under :attr:`uid_prefix`, hashed from the arguments (PS3.5 9.1; the module
            docstring gives the derivation).
        """
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
        if part not in _PARTS:
            raise ValueError(f"part must be one of {sorted(_PARTS)}, got {part!r}")
        if not content_digest:
            raise ValueError("content_digest must not be empty")
        if instance_name is None:
            return self._derive("lungcds output", content_digest, kind, part)
        if part != "instance" or not instance_name:
            raise ValueError(f"an instance name names a SOP Instance UID, got part {part!r}, name {instance_name!r}")
        return self._derive("lungcds output", content_digest, kind, part, instance_name)

    def tracking_uid(self, source_series_uid: str, pipeline_version: str, name: str) -> str:
        """Tracking Unique Identifier (DCM 112040, TID 4108) of a region or lesion.

        The SR measurement group and the SEG segment of the same region share this UID.
        """
        if not source_series_uid or not pipeline_version or not name:
            raise ValueError("source_series_uid, pipeline_version and name must not be empty")
        return self._derive("lungcds tracking", source_series_uid, pipeline_version, name)


def _disagreements(source_headers: Sequence[Dataset]) -> list[str]:
    """Each attribute of :data:`IDENTITY_KEYWORDS` on which the headers disagree, in words."""
    found = []
    for keyword, words in IDENTITY_KEYWORDS.items():
        counts = Counter(str(ds.get(keyword, "") or "") for ds in source_headers)
        if len(counts) > 1:
            values = ", ".join(
                f"{value or '(empty)'} ({count} slice{'s' if count != 1 else ''})"
                for value, count in sorted(counts.items())
            )
            found.append(f"{len(counts)} {words} in one series: {values}")
    return found


def check_source_series(source_headers: Sequence[Dataset]) -> dict[str, Dataset]:
    """Check that the headers are one series of one patient and study, and index them by SOP Instance UID.

    Defence in depth (the server refuses such series at intake too): an object built from
    headers of two patients would carry one patient's identity over the other's images.

    Raises
    ------
    TypeError
        When an item is not a pydicom Dataset.
    ValueError
        When no header is given, a header lacks a Type 1 identifying attribute (SOP Class,
        SOP Instance, Study Instance or Series Instance UID), or the headers disagree on any
        attribute of :data:`IDENTITY_KEYWORDS`; the message names every disagreement, e.g.
        "2 patients in one series: PAT-A (15 slices), PAT-B (15 slices)".
    """
    if len(source_headers) == 0:
        raise ValueError("no source headers given")
    by_uid: dict[str, Dataset] = {}
    for ds in source_headers:
        if not isinstance(ds, Dataset):
            raise TypeError(f"source headers must be pydicom Datasets, got {type(ds).__name__}")
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not ds.get(keyword):
                raise ValueError(f"source header lacks {keyword}")
        by_uid[str(ds.SOPInstanceUID)] = ds
    disagreements = _disagreements(source_headers)
    if disagreements:
        raise ValueError("; ".join(disagreements))
    return by_uid


def index_source_headers(findings: Findings, source_headers: Sequence[Dataset]) -> dict[str, Dataset]:
    """Validate the source CT headers against ``findings.volume`` and index them by SOP UID.

    Parameters
    ----------
    findings : Findings
        The analysis whose volume was built from these headers.
    source_headers : sequence of pydicom.Dataset
        Headers of the source series, in any order, with or without Pixel Data.

    Returns
    -------
    dict of str to pydicom.Dataset
        Headers keyed by SOP Instance UID.

    Raises
    ------
    ValueError
        As :func:`check_source_series`, or when a slice of the volume has no header.
    """
    by_uid = check_source_series(source_headers)
    missing = set(findings.volume.source_sop_instance_uids) - set(by_uid)
    if missing:
        raise ValueError(f"{len(missing)} slice(s) of the volume have no source header, e.g. {min(missing)}")
    return by_uid


def identity_source(findings: Findings, by_uid: Mapping[str, Dataset]) -> Dataset:
    """The header every object of the analysis takes patient and study data from.

    The header of the volume's first slice: highdicom's Segmentation copies from its first
    source image, which is that slice, so the SR, PDF and encapsulated PDF take the same one.
    """
    return by_uid[findings.volume.source_sop_instance_uids[0]]


def analysis_digest(findings: Findings, identity: Dataset, notes: Sequence[str] = ()) -> str:
    """Hex SHA-256 of everything an analysis' reports depend on (module docstring, "Placement and UIDs").

    ``identity`` is the :func:`identity_source` header; ``notes`` any text the object shows
    besides the findings (the PDF's eligibility notes).
    """
    volume = findings.volume
    frames = volume.source_frame_numbers or (0,) * len(volume.source_sop_instance_uids)
    runs = [
        {
            key: value
            for key, value in run.as_dict().items()
            if key not in ("reason", "description", "validated", "validation")
        }
        | {"name": name}
        for name, run in sorted(findings.models.items())
    ]
    return _digest(
        {
            "content": "lungcds analysis",
            "sources": sorted(zip(volume.source_sop_instance_uids, frames, strict=True)),
            "pixels": volume.content_sha256,
            "identity": _identity_values(identity),
            "notes": list(notes),
            "pipeline_version": findings.pipeline_version,
            "models": runs,
            "configuration": dict(sorted(findings.configuration.items())),
            "followup": _followup_identity(findings),
        }
    )


def _followup_identity(findings: Findings) -> dict[str, object] | None:
    """Everything of the follow-up the reports show (the prior, its values, the changes, the words)."""
    return findings.followup.as_dict() if findings.followup is not None else None


def not_analysable_digest(source_headers: Sequence[Dataset], reasons: Sequence[str], pipeline_version: str) -> str:
    """Hex SHA-256 of what the report of a series that could not be analysed depends on."""
    return _digest(
        {
            "content": "lungcds not analysable",
            "series": sorted({str(ds.SeriesInstanceUID) for ds in source_headers}),
            "sources": sorted(str(ds.SOPInstanceUID) for ds in source_headers),
            "identity": _identity_values(source_headers[0]),
            "pipeline_version": pipeline_version,
            "reasons": list(reasons),
        }
    )


def _identity_values(header: Dataset) -> dict[str, str]:
    """The Patient and Study attributes our objects copy from ``header``, as text."""
    return {keyword: str(header.get(keyword, "")) for keyword in _PATIENT_STUDY_KEYWORDS}


def _digest(payload: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def evidence_headers(source_headers: Sequence[Dataset]) -> list[Dataset]:
    """Copies of the source headers that highdicom may inherit patient and study data from.

    highdicom copies every root attribute of the Patient and Study modules from the first
    evidence dataset; the copies returned here lack the attributes of ``_NOT_INHERITED`` and
    the Pixel Data, so nothing invalid (and nothing large) reaches our objects.

    Elements not yet decoded are carried over as they are (immutable raw elements, decoded only
    if highdicom reads them); decoded ones are copied, sequences deeply. Deep-copying every
    element of every slice cost about 2 s per report for a 64-slice series.
    """
    cleaned = []
    for ds in source_headers:
        clone = Dataset()
        for tag in ds.keys():
            element = ds.get_item(tag)
            if tag.group == 0x7FE0 or element is None:
                continue
            if isinstance(element, DataElement):
                if element.keyword in _NOT_INHERITED:
                    continue
                element = copy.deepcopy(element) if element.VR == VR.SQ else copy.copy(element)
            elif keyword_for_tag(tag) in _NOT_INHERITED:
                continue
            clone[tag] = element
        if hasattr(ds, "file_meta"):
            clone.file_meta = copy.deepcopy(ds.file_meta)
        cleaned.append(clone)
    return cleaned


def copy_patient_study(source: Dataset, target: Dataset) -> None:
    """Copy the Patient, General Study and Patient Study modules from ``source`` to ``target``.

    Type 2 attributes (PS3.5 7.4) absent from the source are written empty.  Values are copied
    decoded, so ``target`` may declare its own Specific Character Set (0008,0005); our objects
    use :data:`OUTPUT_CHARACTER_SET`.
    """
    for keyword in _PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            target[keyword] = copy.deepcopy(source[keyword])
    for keyword in _TYPE2_KEYWORDS:
        if keyword not in target:
            setattr(target, keyword, None)


def format_da(value: object) -> str | None:
    """A DA value (YYYYMMDD) as YYYY-MM-DD for people to read; None when absent or not a date."""
    text = str(value or "").strip()
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else None


def format_person_name(value: object) -> str:
    """Readable form of a DICOM PN value (PS3.5 6.2.1): "FAMILY, Given Middle (ideographic)".

    Empty or absent names give an empty string.
    """
    if value is None or str(value) == "":
        return ""
    name = value if isinstance(value, PersonName) else PersonName(str(value))
    alphabetic = name.alphabetic
    parts = alphabetic.split("^") if alphabetic else []
    family = parts[0] if parts else ""
    given = " ".join(p for p in parts[1:3] if p)
    shown = f"{family}, {given}" if family and given else (family or given)
    ideographic = name.ideographic.replace("^", " ").strip() if name.ideographic else ""
    if ideographic:
        shown = f"{shown} ({ideographic})" if shown else ideographic
    return shown.strip()


def model_display_name(run: ModelRun) -> str:
    """Human name of a model ("CO-RADS" for ``corads``), else its registry name."""
    for key, display in _DISPLAY_NAMES.items():
        if run.name.lower().startswith(key):
            return display
    return run.name


def model_words(run: ModelRun) -> str:
    """A model in the words a reader knows it by ("lobe segmentation", "CO-RADS"), the same in PDF and SR."""
    return _SEGMENTATION_WORDS.get(run.name, model_display_name(run))


def model_label(run: ModelRun) -> str:
    """:func:`model_words` with the registry name in brackets when they differ ("CO-RADS (corads)"), so
    that two STOIC2021 members, both "STOIC2021" in words, stay apart and an administrator finds the
    model the install command names."""
    words = model_words(run)
    return run.name if words == run.name else f"{words} ({run.name})"


def is_stoic_member(findings: Findings, name: str) -> bool:
    """A STOIC2021 ensemble member while the ensemble has a record.  The ensemble reports for it (its
    reason names every member that did not run and why): the PDF in the ensemble's line and member
    table, the SR under the ensemble's item, so neither lists such a member as a model of its own."""
    return name.startswith("stoic_") and "stoic" in findings.models


def models_not_run(findings: Findings) -> list[ModelRun]:
    """The models that did not run and are reported on their own (not a STOIC2021 member while the
    ensemble has a record, :func:`is_stoic_member`), in ``Findings.models`` order: the PDF's not-run
    line, the SR's not-run summaries and the key-image picture name the same ones."""
    return [run for run in findings.models.values() if run.status != "ran" and not is_stoic_member(findings, run.name)]


def sop_reference(ds: Dataset) -> Dataset:
    """A reference item (Referenced SOP Class and Instance UID, PS3.3 10.8) to the object ``ds``."""
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def model_statement(run: ModelRun) -> str:
    """One sentence on what happened to a model and where its numbers come from, e.g.
    "CO-RADS model ran (version 1.0, generated demonstration weights): ..." or "CO-RADS model
    not run (not installed): no weights installed".  The UNVALIDATED statement
    (``ModelRun.unvalidated_statement``) is shown separately."""
    display = model_display_name(run)
    if run.status == "ran" and run.provenance is not None:
        details = [f"version {run.version}", run.provenance_words]
        if run.weights_sha256:
            details.append(f"weights SHA-256 {run.weights_sha256}")
        if run.weights_origin:
            details.append(run.weights_origin)
        if run.inputs:
            details.append(f"computed from {', '.join(run.inputs)}")
        sentence = f"{display} model ran ({', '.join(details)})"
        return f"{sentence}: {run.reason}" if run.reason else sentence
    return f"{display} model not run ({STATUS_WORDS[run.status]}): {run.reason or 'no reason given'}"


def banner_text(findings: Findings) -> str | None:
    """Text of the red banner on every PDF page, or None when no model that ran is unvalidated.

    It names what makes the outputs unvalidated: generated weights, installed weights without
    a validation statement, or both.
    """
    unvalidated = {run.provenance for run in findings.models.values() if run.provenance in UNVALIDATED_STATEMENTS}
    if not unvalidated:
        return None
    if unvalidated == {"generated_weights"}:
        return codes.UNVALIDATED_BANNER
    if unvalidated == {"installed_unvalidated"}:
        return codes.UNVALIDATED_INSTALLED_BANNER
    return codes.UNVALIDATED_MIXED_BANNER


def check_finite(name: str, value: float) -> float:
    """Return ``value`` as float, raising ValueError when it is not a finite number."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def validate_findings(findings: Findings) -> None:
    """Check everything a report shows from ``findings`` before any object is built.

    Raises
    ------
    TypeError
        When ``findings`` is not a :class:`models.findings.Findings`.
    ValueError
        When a measurement is filed under another region's name or is not finite, a withheld
        region is not a region or is measured all the same, a mask is neither a region nor a
        lesion, ``mask_sources`` names a mask that does not exist (``Findings`` itself refuses a
        mask without a source that ran), an implausible quality verdict has no reason, a
        CO-RADS category is outside 1-5, a probability outside [0, 1], an I3Dr output or lobe
        is unknown, the CT severity scores break the seeds/003 rules (see
        :func:`reports.severity.check_severity`), or a weight-free zone number, density band or
        follow-up value is not finite or out of its range (:func:`_check_weight_free`).
    """
    if not isinstance(findings, Findings):
        raise TypeError(f"expected models.findings.Findings, got {type(findings).__name__}")
    if not findings.pipeline_version:
        raise ValueError("findings.pipeline_version must not be empty")
    for name, m in findings.measurements.items():
        if name != m.region:
            raise ValueError(f"measurements[{name!r}] describes region {m.region!r}")
        check_finite(f"{name}.volume_ml", m.volume_ml)
        for attr in ("fpv_ml", "laa950_pct", "perc15_hu", "mean_hu", "haa_pct"):
            value = getattr(m, attr)
            if value is not None:
                check_finite(f"{name}.{attr}", value)
    for withheld in findings.withheld_values("measurements"):
        if withheld.site not in REGION_NAMES or withheld.site in findings.measurements:
            raise ValueError(f"withheld region {withheld.site!r} must be a region name without measurements")
    for key, run in findings.models.items():
        if key != run.name:
            raise ValueError(f"models[{key!r}] describes model {run.name!r}")
    for name in findings.masks:
        if name not in REGION_NAMES and name not in LESION_NAMES:
            raise ValueError(f"mask {name!r} is neither a region {REGION_NAMES} nor a lesion {LESION_NAMES}")
    for name in findings.mask_sources:
        if name not in findings.masks and name not in findings.measurements:
            raise ValueError(f"mask_sources names mask {name!r}, which findings.masks lacks")
    if findings.quality is not None:
        if not findings.quality.plausible and not findings.quality.reasons:
            raise ValueError("an implausible lung mask (findings.quality) must say why")
    if findings.corads is not None:
        if findings.corads.category not in codes.CORADS_CATEGORY_VALUES:
            raise ValueError(f"CO-RADS category must be 1-5, got {findings.corads.category}")
        check_finite("corads.score", findings.corads.score)
    if findings.stoic is not None:
        _check_stoic(findings)
    if findings.i3dr is not None:
        outputs = [("patient", findings.i3dr.patient)] + list(findings.i3dr.lobes.items())
        for site, values in outputs:
            if site != "patient" and site not in LOBE_NAMES:
                raise ValueError(f"i3dr lobe {site!r} is not one of {LOBE_NAMES}")
            for key, value in values.items():
                if key not in codes.I3DR_OUTPUT_CODES:
                    raise ValueError(f"unknown I3Dr output {key!r} for {site}")
                check_finite(f"i3dr.{site}.{key}", value)
    if findings.severity is not None:
        for lobe, values in findings.severity.lobes.items():
            for key, value in values.items():
                check_finite(f"severity.{lobe}.{key}", value)
        check_severity(findings.severity)
    _check_weight_free(findings)


def _check_optional(name: str, value: float | None) -> None:
    if value is not None:
        check_finite(name, value)


def _check_region_bands(name: str, m: RegionMeasurements) -> None:
    """Raise ValueError unless the density bands and mass of a region are finite (bands all or none)."""
    if m.density_bands and set(m.density_bands) != set(DENSITY_BANDS):
        raise ValueError(f"{name}.density_bands must hold every band of {DENSITY_BANDS}, got {sorted(m.density_bands)}")
    for band, share in m.density_bands.items():
        check_finite(f"{name}.density_bands.{band}.volume_ml", share.volume_ml)
        _check_optional(f"{name}.density_bands.{band}.pct", share.pct)
    _check_optional(f"{name}.mass_g", m.mass_g)


def _check_weight_free(findings: Findings) -> None:
    """Check the numbers of issue 15 (densitometry, bands, mass, follow-up) before anything is built.

    Raises
    ------
    ValueError
        When a value is not finite, a zone score is outside 0-5 (total 0-30), a follow-up
        change is not of a headline number, or the prior of the follow-up has an invalid UID.
    """
    for name, m in findings.measurements.items():
        _check_region_bands(name, m)
    d = findings.densitometry
    if d is not None:
        for name, m in d.regions.items():
            check_finite(f"{name}.volume_ml", m.volume_ml)
            for attr in ("fpv_ml", "laa950_pct", "perc15_hu", "mean_hu", "haa_pct"):
                _check_optional(f"{name}.{attr}", getattr(m, attr))
            _check_region_bands(name, m)
        for name, score in d.zone_scores.items():
            _check_optional(f"zone_scores.{name}.involvement_pct", score.involvement_pct)
            if score.score is not None and score.score not in range(6):
                raise ValueError(f"zone score of {name} must be an integer 0-5, got {score.score!r}")
        if d.zone_score_total is not None and d.zone_score_total not in range(5 * len(ZONE_NAMES) + 1):
            raise ValueError(f"zone score total must be an integer 0-30, got {d.zone_score_total!r}")
        _check_optional("densitometry.well_aerated_pct", d.well_aerated_pct)
        check_finite("densitometry.well_aerated_cutoff_pct", d.well_aerated_cutoff_pct)
        _check_optional("emphysema.upper_lower_ratio", d.emphysema.upper_lower_ratio)
        _check_optional("emphysema.cluster_exponent_d", d.emphysema.cluster_exponent_d)
    followup = findings.followup
    if followup is None:
        return
    for key, change in followup.changes.items():
        if key not in HEADLINE_KEYS:
            raise ValueError(f"follow-up change {key!r} is not a headline number {HEADLINE_KEYS}")
        _check_optional(f"followup.{key}.prior", change.prior)
        _check_optional(f"followup.{key}.current", change.current)
    prior = followup.prior
    if prior is None:
        return
    uids = (
        prior.study_instance_uid,
        prior.series_instance_uid,
        prior.sr_sop_instance_uid,
        prior.sr_series_instance_uid,
    )
    for uid in uids:
        if uid is not None and not UID(uid).is_valid:
            raise ValueError(f"the prior analysis of the follow-up has an invalid UID {uid!r}")


def check_reasons(reasons: Sequence[str]) -> list[str]:
    """The reasons a series could not be analysed, checked: at least one, none blank.

    Raises
    ------
    TypeError
        When ``reasons`` is a single string or holds something other than strings.
    ValueError
        When there is no reason or a reason is blank.
    """
    if isinstance(reasons, str):
        raise TypeError("reasons must be a sequence of strings, not one string")
    checked = []
    for reason in reasons:
        if not isinstance(reason, str):
            raise TypeError(f"reasons must be strings, got {type(reason).__name__}")
        if not reason.strip():
            raise ValueError("a reason must not be blank")
        checked.append(reason.strip())
    if not checked:
        raise ValueError("at least one reason is needed to report a series as not analysable")
    return checked


def _check_stoic(findings: Findings) -> None:
    """Every STOIC2021 probability (ensemble and members) is finite and in [0, 1]; one exists or was withheld."""
    stoic = findings.stoic
    assert stoic is not None
    if stoic.p_covid is None and stoic.p_severe is None and not findings.withheld_values("stoic", ""):
        raise ValueError("a STOIC2021 result needs P(COVID-19) or P(severe), or the reason they were withheld")
    values = [(f"stoic.{attr}", getattr(stoic, attr)) for attr in ("p_covid", "p_severe")]
    values += [(f"stoic.members.{m}.{k}", v) for m, outputs in stoic.members.items() for k, v in outputs.items()]
    for where, value in values:
        if value is None:
            continue
        p = check_finite(where, value)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{where} must be a probability in [0, 1], got {p}")
