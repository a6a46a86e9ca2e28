"""ReportContext, deterministic UIDs, header validation, provenance wording, input validation."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid
from pydicom.valuerep import PersonName

from models.findings import Findings, ModelRun, QualityAssessment
from reports import codes
from reports.identity import (
    ReportContext,
    banner_text,
    check_reasons,
    copy_patient_study,
    evidence_headers,
    find_output_run,
    format_person_name,
    index_source_headers,
    mask_source_run,
    model_statement,
    output_provenance,
    unvalidated_statement,
    validate_findings,
    validation_key,
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
        assert uid.startswith(PYDICOM_ROOT_UID)
        assert len(uid) <= UID_MAX
        assert all(part.isdigit() and (part == "0" or not part.startswith("0")) for part in uid.split("."))


def test_uid_derivation_is_the_documented_one(context: ReportContext) -> None:
    """The identity module documents UID = root + SHA-512 of the JSON list of the inputs."""
    documented = generate_uid(
        PYDICOM_ROOT_UID, entropy_srcs=[json.dumps(["lungcds output", "1.2.3", "0.1.0", "seg", "instance"])]
    )
    assert context.output_uid("1.2.3", "0.1.0", "seg", "instance") == documented


def test_uid_inputs_cannot_run_together(context: ReportContext) -> None:
    """Series "1.2.3" + version "10.1" must not collide with series "1.2.31" + version "0.1"."""
    assert context.output_uid("1.2.3", "10.1", "sr", "instance") != context.output_uid(
        "1.2.31", "0.1", "sr", "instance"
    )
    assert context.tracking_uid("1.2.3", "10.1", "lungs") != context.tracking_uid("1.2.31", "0.1", "lungs")


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
def test_context_rejects_bad_configuration(context: ReportContext, changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(context, **changes)


def test_output_uid_rejects_unknown_kind(context: ReportContext) -> None:
    with pytest.raises(ValueError, match="kind"):
        context.output_uid("1.2.3", "1", "ko", "series")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="part"):
        context.output_uid("1.2.3", "1", "sr", "frame")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        context.tracking_uid("1.2.3", "1", "")


def test_index_source_headers_checks_consistency(headers: list[Dataset], findings: Findings) -> None:
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


def test_evidence_headers_drop_referenced_study_and_pixels(headers: list[Dataset]) -> None:
    source = headers[0].copy()
    source.PixelData = b"\x00\x00" * 4
    assert "ReferencedStudySequence" in source
    cleaned = evidence_headers([source])[0]
    assert "ReferencedStudySequence" not in cleaned
    assert "PixelData" not in cleaned
    assert cleaned.SOPInstanceUID == source.SOPInstanceUID
    assert "ReferencedStudySequence" in source


def test_copy_patient_study_writes_type2_empty(headers: list[Dataset]) -> None:
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


def test_model_statements_and_validation_keys() -> None:
    missing = ModelRun("corads", "not_installed", "no weights installed", False, "1.0")
    assert model_statement(missing) == "CO-RADS model not run (not installed): no weights installed"
    assert unvalidated_statement(missing) is None
    assert validation_key(missing) is None
    demo = ModelRun("stoic_ensemble", "ran", "demo", False, "2.0", "ab" * 32)
    assert model_statement(demo).startswith("STOIC2021 model ran (version 2.0, weights SHA-256 abab")
    assert unvalidated_statement(demo) == codes.UNVALIDATED_WEIGHTS_STATEMENT
    assert validation_key(demo) == "demo_weights"
    weight_free = ModelRun("lung_mask", "ran", "", False, "0.1")
    assert unvalidated_statement(weight_free) == codes.UNVALIDATED_METHOD_STATEMENT
    assert validation_key(weight_free) == "unvalidated_method"
    assert validation_key(dataclasses.replace(weight_free, validated=True)) == "weight_free"
    assert validation_key(dataclasses.replace(demo, validated=True)) == "validated_weights"
    assert unvalidated_statement(None) == codes.UNVALIDATED_NO_PROVENANCE_STATEMENT
    assert validation_key(None) == "no_provenance"


def test_provenance_and_banner(headers: list[Dataset], make_findings: Callable[..., Findings]) -> None:
    plain = make_findings(headers)
    assert output_provenance(plain) == {}
    assert banner_text(plain) is None
    assert find_output_run(plain, "corads") is plain.models["corads"]
    assert mask_source_run(plain, "LUL") is plain.models["lobes"]
    assert mask_source_run(plain, "RML") is plain.models["lobes"]
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


def test_validate_findings_rejects_bad_values(headers: list[Dataset], make_findings: Callable[..., Findings]) -> None:
    findings = make_findings(headers, outputs=True)
    validate_findings(findings)
    assert findings.corads is not None and findings.stoic is not None
    assert findings.i3dr is not None and findings.severity is not None
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
    with pytest.raises(ValueError, match="sum of lobe scores"):
        validate_findings(dataclasses.replace(findings, severity=dataclasses.replace(findings.severity, total_ctss=3)))
    wrong_score = {**findings.severity.lobes, "RLL": {"involvement_pct": 12.5, "ctss": 4}}
    with pytest.raises(ValueError, match="contradicts involvement"):
        validate_findings(
            dataclasses.replace(
                findings, severity=dataclasses.replace(findings.severity, lobes=wrong_score, total_ctss=4)
            )
        )
    with pytest.raises(TypeError):
        validate_findings(np.zeros(3))  # type: ignore[arg-type]


def test_validate_findings_checks_mask_sources_and_quality(headers: list[Dataset], findings: Findings) -> None:
    with pytest.raises(ValueError, match="which findings.models lacks"):
        validate_findings(dataclasses.replace(findings, mask_sources={**findings.mask_sources, "lungs": "unknown"}))
    with pytest.raises(ValueError, match="which findings.masks lacks"):
        validate_findings(dataclasses.replace(findings, mask_sources={**findings.mask_sources, "ggo": "lesions"}))
    idle = {**findings.models, "lobes": dataclasses.replace(findings.models["lobes"], status="skipped")}
    with pytest.raises(ValueError, match="did not run"):
        validate_findings(dataclasses.replace(findings, models=idle))
    masks = {**findings.masks, "heart": np.zeros_like(findings.masks["lungs"])}
    with pytest.raises(ValueError, match="is neither a region"):
        validate_findings(dataclasses.replace(findings, masks=masks))
    with pytest.raises(ValueError, match="must say why"):
        validate_findings(dataclasses.replace(findings, quality=QualityAssessment(plausible=False)))
    validate_findings(dataclasses.replace(findings, quality=QualityAssessment(False, ("lung volume 0.4 L",))))


def test_check_reasons() -> None:
    assert check_reasons([" too few slices "]) == ["too few slices"]
    with pytest.raises(ValueError, match="at least one"):
        check_reasons([])
    with pytest.raises(ValueError, match="blank"):
        check_reasons(["ok", "  "])
    with pytest.raises(TypeError):
        check_reasons("too few slices")
    with pytest.raises(TypeError):
        check_reasons([3])  # type: ignore[list-item]
