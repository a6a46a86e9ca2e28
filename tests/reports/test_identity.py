"""ReportContext, deterministic UIDs, header validation, provenance wording."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydicom.valuerep import PersonName

from models.findings import ModelRun
from reports import codes
from reports.identity import (
    ReportContext,
    banner_text,
    copy_patient_study,
    evidence_headers,
    format_person_name,
    index_source_headers,
    model_statement,
    output_provenance,
    unvalidated_statement,
    validate_findings,
)

UID_MAX = 64


def test_output_uids_are_deterministic_and_distinct(context: ReportContext) -> None:
    series = "1.2.3.4.5"
    uids = {
        (kind, part): context.output_uid(series, "0.1.0", kind, part)
        for kind in ("sr", "seg", "pdf")
        for part in ("series", "instance")
    }
    assert len(set(uids.values())) == 6
    again = ReportContext(software_version="9.9", device_serial_number="other")
    assert again.output_uid(series, "0.1.0", "sr", "instance") == uids[("sr", "instance")]
    assert context.output_uid(series, "0.2.0", "sr", "instance") != uids[("sr", "instance")]
    assert context.output_uid("1.2.3.4.6", "0.1.0", "sr", "instance") != uids[("sr", "instance")]
    for uid in uids.values():
        assert len(uid) <= UID_MAX
        assert all(part.isdigit() and (part == "0" or not part.startswith("0")) for part in uid.split("."))


def test_uid_prefix_and_device_observer(context: ReportContext) -> None:
    custom = ReportContext(software_version="1", uid_prefix="1.2.826.0.1.9999.")
    assert custom.output_uid("1.2.3", "1", "seg", "series").startswith("1.2.826.0.1.9999.")
    assert context.device_observer_uid == ReportContext(software_version="2").device_observer_uid
    assert context.device_observer_uid != ReportContext(software_version="1", station_name="ct2").device_observer_uid


@pytest.mark.parametrize(
    "changes",
    [
        {"sr_series_number": 9902},
        {"seg_series_number": 0},
        {"software_version": ""},
        {"manufacturer": "x" * 65},
        {"station_name": "a-very-long-station-name"},
        {"uid_prefix": "1.2.3"},
    ],
)
def test_context_rejects_bad_configuration(context: ReportContext, changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(context, **changes)


def test_output_uid_rejects_unknown_kind(context: ReportContext) -> None:
    with pytest.raises(ValueError, match="kind"):
        context.output_uid("1.2.3", "1", "ko", "series")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="part"):
        context.output_uid("1.2.3", "1", "sr", "frame")  # type: ignore[arg-type]


def test_index_source_headers_checks_consistency(headers, findings) -> None:
    by_uid = index_source_headers(findings, headers)
    assert set(by_uid) == set(findings.volume.source_sop_instance_uids)
    with pytest.raises(ValueError, match="no source header"):
        index_source_headers(findings, headers[1:])
    other = headers[0].copy()
    other.SeriesInstanceUID = "1.2.3.999"
    with pytest.raises(ValueError, match="series"):
        index_source_headers(findings, [*headers[1:], other])
    with pytest.raises(ValueError, match="no source headers"):
        index_source_headers(findings, [])


def test_evidence_headers_drop_referenced_study_and_pixels(headers) -> None:
    source = headers[0].copy()
    source.PixelData = b"\x00\x00" * 4
    assert "ReferencedStudySequence" in source
    cleaned = evidence_headers([source])[0]
    assert "ReferencedStudySequence" not in cleaned
    assert "PixelData" not in cleaned
    assert cleaned.SOPInstanceUID == source.SOPInstanceUID
    assert "ReferencedStudySequence" in source


def test_copy_patient_study_writes_type2_empty(headers) -> None:
    from pydicom import Dataset

    source = headers[0].copy()
    del source.AccessionNumber
    target = Dataset()
    copy_patient_study(source, target)
    assert target.PatientName == "Doe^Jane"
    assert target.StudyInstanceUID == source.StudyInstanceUID
    assert "AccessionNumber" in target and target.AccessionNumber in (None, "")
    assert "ReferencedStudySequence" not in target


def test_format_person_name() -> None:
    assert format_person_name(PersonName("Doe^Jane^Q")) == "Doe, Jane Q"
    assert format_person_name("Yamada^Tarou=山田^太郎=やまだ^たろう") == "Yamada, Tarou (山田 太郎)"
    assert format_person_name("Lung_Dx-A0001") == "Lung_Dx-A0001"
    assert format_person_name("") == ""
    assert format_person_name(None) == ""


def test_model_statements_in_words() -> None:
    missing = ModelRun("corads", "not_installed", "no weights installed", False, "1.0")
    assert model_statement(missing) == "CO-RADS model not run (not installed): no weights installed"
    assert unvalidated_statement(missing) is None
    demo = ModelRun("stoic_ensemble", "ran", "demo", False, "2.0", "ab" * 32)
    assert model_statement(demo).startswith("STOIC2021 model ran (version 2.0, weights SHA-256 abab")
    assert unvalidated_statement(demo) == codes.UNVALIDATED_WEIGHTS_STATEMENT
    weight_free = ModelRun("lung_mask", "ran", "", False, "0.1")
    assert unvalidated_statement(weight_free) == codes.UNVALIDATED_METHOD_STATEMENT
    assert unvalidated_statement(None) == codes.UNVALIDATED_NO_PROVENANCE_STATEMENT


def test_provenance_and_banner(headers, make_findings) -> None:
    plain = make_findings(headers)
    assert output_provenance(plain) == {}
    assert banner_text(plain) is None
    demo = make_findings(headers, outputs=True, unvalidated=True)
    provenance = output_provenance(demo)
    assert set(provenance) == {"corads", "stoic", "i3dr", "severity"}
    assert provenance["stoic"].validated and provenance["stoic"].statement is None
    assert not provenance["corads"].validated
    assert provenance["severity"].run is None
    assert banner_text(demo) == codes.UNVALIDATED_BANNER
    models = dict(plain.models)
    models["lung_mask"] = dataclasses.replace(models["lung_mask"], validated=False)
    assert banner_text(dataclasses.replace(plain, models=models)) == codes.UNVALIDATED_METHOD_BANNER


def test_validate_findings_rejects_bad_values(headers, make_findings) -> None:
    findings = make_findings(headers, outputs=True)
    validate_findings(findings)
    bad_measurement = dataclasses.replace(findings.measurements["lungs"], mean_hu=float("nan"))
    with pytest.raises(ValueError, match="finite"):
        validate_findings(
            dataclasses.replace(findings, measurements={**findings.measurements, "lungs": bad_measurement})
        )
    with pytest.raises(ValueError, match="CO-RADS"):
        validate_findings(dataclasses.replace(findings, corads=dataclasses.replace(findings.corads, category=6)))
    with pytest.raises(ValueError, match="probability"):
        validate_findings(dataclasses.replace(findings, stoic=dataclasses.replace(findings.stoic, p_covid=1.5)))
    with pytest.raises(ValueError, match="unknown I3Dr output"):
        validate_findings(
            dataclasses.replace(findings, i3dr=dataclasses.replace(findings.i3dr, patient={"tlc_l": 6.0}))
        )
    with pytest.raises(ValueError, match="0-25"):
        validate_findings(dataclasses.replace(findings, severity=dataclasses.replace(findings.severity, total_ctss=30)))
    with pytest.raises(TypeError):
        validate_findings(np.zeros(3))  # type: ignore[arg-type]
