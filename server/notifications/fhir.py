"""The FHIR R4 form of an event: a transaction Bundle of one DiagnosticReport and its Observations.

Built as FHIR JSON and validated by constructing the ``fhir.resources`` models: the R4B models
(``fhir.resources.R4B``, FHIR 4.3.0), because the package's R4 (4.0.1) models exist only in
its releases before 7, which are written for pydantic 1.  For every element used here (Bundle,
DiagnosticReport, Observation and their data types) R4B has exactly R4's elements and codes, so
the Bundle is R4.

* **DiagnosticReport**: ``final`` when everything reported is validated (weight-free, or installed
  weights with a validation statement), ``preliminary`` when an UNVALIDATED output was made (the
  conclusion then carries each UNVALIDATED statement), ``cancelled`` with the reasons in the
  conclusion for a series not analysable, failed or rejected.  Coded LOINC 24627-2 "CT Chest
  Report"; its subject is the patient by identifier (Patient ID, with the DICOM Issuer of Patient
  ID as assigner), never by name; ``imagingStudy`` is the study by its Study Instance UID
  (``urn:dicom:uid``, ``urn:oid:...``); ``basedOn`` the order by its accession number;
  ``presentedForm`` links our PDF when ``LUNGCDS_PUBLIC_API_URL`` is set.
* **Observation**: one per weight-free headline number, coded as in our SR, with its UCUM unit,
  the value at the precision of the PDF, and its provenance in ``method`` and a ``note``.
  Numbers measured on a mask made with generated weights are never sent (see
  :mod:`server.notifications.facts`).

Every resource has a stable identifier (a name-based UUID of the series, the pipeline version and
what it is) and is written with a conditional update (``PUT Type?identifier=...``), so a retry or
a later re-analysis of the series replaces its resources instead of adding copies.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

from fhir.resources.R4B.bundle import Bundle
from pydicom.sr.coding import Code

from models.findings import HEADLINE_KEYS
from reports import codes
from reports.precision import headline_value
from server.notifications.facts import EventFacts
from server.notifications.links import resource_links

__all__ = ["FHIR_JSON", "HEADLINE_CODES", "PRIVATE_SYSTEM", "fhir_bundle"]

FHIR_JSON = "application/fhir+json"
#: FHIR system of our private DICOM coding scheme (``99LUNGCDS``, :data:`reports.codes.PRIVATE_SCHEME`).
PRIVATE_SYSTEM = f"urn:lungcds:coding-scheme:{codes.PRIVATE_SCHEME}"
#: FHIR systems of the DICOM coding scheme designators our codes use (FHIR R4 terminologies page).
_SYSTEMS: Mapping[str, str] = MappingProxyType(
    {
        "SCT": "http://snomed.info/sct",
        "LN": "http://loinc.org",
        "DCM": "http://dicom.nema.org/resources/ontology/DCM",
        "UCUM": "http://unitsofmeasure.org",
        codes.PRIVATE_SCHEME: PRIVATE_SYSTEM,
    }
)
#: The concept of each headline number, as the SR codes it for both lungs.
HEADLINE_CODES: Mapping[str, Code] = MappingProxyType(
    {
        "lung_volume_ml": codes.VOLUME,
        "well_aerated_pct": codes.WELL_AERATED_SHARE,
        "zone_score_total": codes.ZONE_SCORE_TOTAL,
        "laa950_pct": codes.LOW_ATTENUATION_AREA_950,
        "perc15_hu": codes.PERCENTILE_15_ATTENUATION,
        "lung_mass_g": codes.TISSUE_MASS,
    }
)
assert set(HEADLINE_CODES) == set(HEADLINE_KEYS)

_URI = "urn:ietf:rfc:3986"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:lungcds:fhir")
_RADIOLOGY = {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
_IMAGING = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}
_ACCESSION = {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}


def _coding(code: Code) -> dict[str, str]:
    return {"system": _SYSTEMS[code.scheme_designator], "code": code.value, "display": code.meaning}


def _uuid(facts: EventFacts, what: str) -> str:
    """A stable ``urn:uuid`` of one resource of the analysis of this series under this pipeline version."""
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{facts.series_instance_uid}/{facts.pipeline_version}/{what}')}"


def _entry(resource: dict[str, Any], full_url: str) -> dict[str, Any]:
    """A transaction entry that creates the resource or replaces the one with its identifier."""
    identifier = resource["identifier"][0]
    query = urlencode({"identifier": f"{identifier['system']}|{identifier['value']}"})
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}?{query}"},
    }


def _fhir_date(dicom_date: str | None) -> str | None:
    """A DICOM DA (YYYYMMDD) as a FHIR date, None when it is not one."""
    if dicom_date is None or len(dicom_date) != 8 or not dicom_date.isdigit():
        return None
    return f"{dicom_date[:4]}-{dicom_date[4:6]}-{dicom_date[6:]}"


def _subject(facts: EventFacts, patient_system: str | None) -> dict[str, Any] | None:
    """The patient by identifier: Patient ID, in the site's namespace when configured, issuer as assigner."""
    if not facts.patient_id:
        return None
    identifier: dict[str, Any] = {"value": facts.patient_id}
    if patient_system:
        identifier["system"] = patient_system
    if facts.issuer_of_patient_id:
        identifier["assigner"] = {"display": facts.issuer_of_patient_id}
    return {"type": "Patient", "identifier": identifier}


def _conclusion(facts: EventFacts) -> str:
    """The report in words: the numbers, or why there are none, with every UNVALIDATED statement."""
    reasons = "; ".join(facts.reasons) or "no reason recorded"
    if facts.event == "not_analysable":
        return f"Series not analysable: no results. {reasons}."
    if facts.event == "failed":
        return f"Analysis failed: no results. {reasons}."
    if facts.event == "rejected":
        return f"Series not analysed: it does not meet the eligibility criteria. {reasons}."
    parts = [f"lungcds {facts.pipeline_version}, weight-free quantitative CT of both lungs."]
    if facts.headline:
        parts.append("; ".join(f"{n.name}: {headline_value(n.key, n.value, 'n/a')}" for n in facts.headline) + ".")
    if facts.headline_withheld:
        parts.append(f"Headline numbers left out: {facts.headline_withheld}.")
    parts += [f"UNVALIDATED output, not a clinical result: {statement}." for statement in facts.unvalidated]
    parts.append(codes.DECISION_SUPPORT_STATEMENT)
    return " ".join(parts)


def _observation(facts: EventFacts, key: str, subject: dict[str, Any] | None, study: dict[str, Any]) -> dict[str, Any]:
    number = next(n for n in facts.headline if n.key == key)
    method = f"{number.provenance_words}" + (f", {number.model}" if number.model else "")
    note = number.validation or number.provenance_words
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": _URI, "value": _uuid(facts, f"observation/{key}")}],
        "status": "final" if number.validated else "preliminary",
        "category": [{"coding": [_IMAGING]}],
        "code": {"coding": [_coding(HEADLINE_CODES[key])], "text": number.name},
        "issued": facts.occurred_at.isoformat(),
        "valueQuantity": {
            "value": number.value,
            "unit": number.unit,
            "system": _SYSTEMS["UCUM"],
            "code": number.ucum,
        },
        "bodySite": {"coding": [_coding(codes.REGION_CODES["lungs"])], "text": "Both lungs"},
        "method": {"text": f"provenance: {method}"},
        "note": [{"text": note}],
        "derivedFrom": [study],
    }
    if subject is not None:
        resource["subject"] = subject
    effective = _fhir_date(facts.study_date)
    if effective is not None:
        resource["effectiveDateTime"] = effective
    return resource


def fhir_bundle(facts: EventFacts, *, patient_system: str | None, public_api_url: str | None) -> Bundle:
    """The transaction Bundle of one event, validated by the ``fhir.resources`` models.

    Raises
    ------
    pydantic.ValidationError
        A resource does not validate (then nothing is sent, and the notification says why).
    """
    subject = _subject(facts, patient_system)
    study = {
        "type": "ImagingStudy",
        "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{facts.study_instance_uid}"},
    }
    observations = [
        _entry(_observation(facts, n.key, subject, study), _uuid(facts, f"entry/{n.key}"))
        for n in facts.headline
        if facts.event == "done"
    ]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": _URI, "value": _uuid(facts, "diagnostic-report")}],
        "status": "cancelled" if facts.event != "done" else "final" if facts.validated else "preliminary",
        "category": [{"coding": [_RADIOLOGY]}],
        "code": {"coding": [_coding(codes.CT_CHEST_REPORT)], "text": "lungcds quantitative chest CT"},
        "issued": facts.occurred_at.isoformat(),
        "imagingStudy": [study],
        "conclusion": _conclusion(facts),
    }
    if subject is not None:
        report["subject"] = subject
    if facts.accession_number:
        report["basedOn"] = [
            {
                "type": "ServiceRequest",
                "identifier": {"type": {"coding": [_ACCESSION]}, "value": facts.accession_number},
            }
        ]
    effective = _fhir_date(facts.study_date)
    if effective is not None:
        report["effectiveDateTime"] = effective
    if observations:
        report["result"] = [{"reference": entry["fullUrl"]} for entry in observations]
    pdf = resource_links(facts, public_api_url).get("pdf")
    if facts.reports and public_api_url and pdf:
        report["presentedForm"] = [{"contentType": "application/pdf", "url": pdf, "title": "lungcds report (PDF)"}]
    entries = [_entry(report, _uuid(facts, "entry/diagnostic-report")), *observations]
    return Bundle.model_validate({"resourceType": "Bundle", "type": "transaction", "entry": entries})
