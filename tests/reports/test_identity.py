"""ReportContext, deterministic UIDs, header validation, provenance wording, input validation."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.uid import PYDICOM_ROOT_UID, generate_uid
from pydicom.valuerep import PersonName

from models.findings import UNVALIDATED_STATEMENTS, Findings, ModelRun, QualityAssessment
from reports import codes
from reports.identity import (
    ReportContext,
    analysis_digest,
    banner_text,
    check_reasons,
    check_source_series,
    copy_patient_study,
    evidence_headers,
    format_person_name,
    index_source_headers,
    model_statement,
    not_analysable_digest,
    validate_findings,
)
from tests.reports.helpers import SHA_VALID, VALIDATED_WEIGHTS

UID_MAX = 64
DIGEST = "0" * 64


def test_output_uids_are_deterministic_and_distinct(context: ReportContext) -> None:
    uids = {
        (kind, part): context.output_uid(DIGEST, kind, part)
        for kind in ("sr", "seg", "pdf", "sc", "kos")
        for part in ("series", "instance")
    }
    assert len(set(uids.values())) == 10
    again = ReportContext(software_version="9.9", device_serial_number="other")
    assert again.output_uid(DIGEST, "sr", "instance") == uids[("sr", "instance")]
    assert context.output_uid("1" * 64, "sr", "instance") != uids[("sr", "instance")]
    for uid in uids.values():
        assert uid.startswith(PYDICOM_ROOT_UID)
        assert len(uid) <= UID_MAX
        assert all(part.isdigit() and (part == "0" or not part.startswith("0")) for part in uid.split("."))


def test_uid_derivation_is_the_documented_one(context: ReportContext) -> None:
    """The identity module documents UID = root + SHA-512 of the JSON list of the inputs."""
    documented = generate_uid(
        PYDICOM_ROOT_UID, entropy_srcs=[json.dumps(["lungcds output", DIGEST, "seg", "instance"])]
    )
    assert context.output_uid(DIGEST, "seg", "instance") == documented
    layer = generate_uid(
        PYDICOM_ROOT_UID, entropy_srcs=[json.dumps(["lungcds output", DIGEST, "seg", "instance", "lobes"])]
    )
    assert context.output_uid(DIGEST, "seg", "instance", "lobes") == layer


def test_further_instances_of_one_output_get_uids_of_their_own(context: ReportContext) -> None:
    """The SEG layers: one series, one SOP Instance UID each, none equal to another output's."""
    others = {
        context.output_uid(DIGEST, kind, part) for kind in ("sr", "seg", "pdf") for part in ("series", "instance")
    }
    layers = {context.output_uid(DIGEST, "seg", "instance", name) for name in ("lobes", "lesions")}
    assert len(layers) == 2 and not layers & others
    with pytest.raises(ValueError, match="names a SOP Instance UID"):
        context.output_uid(DIGEST, "seg", "series", "lobes")
    with pytest.raises(ValueError, match="names a SOP Instance UID"):
        context.output_uid(DIGEST, "seg", "instance", "")


def test_uid_inputs_cannot_run_together(context: ReportContext) -> None:
    """Series "1.2.3" + version "10.1" must not collide with series "1.2.31" + version "0.1"."""
    assert context.tracking_uid("1.2.3", "10.1", "lungs") != context.tracking_uid("1.2.31", "0.1", "lungs")


def test_uid_prefix_and_device_observer(context: ReportContext) -> None:
    custom = ReportContext(software_version="1", uid_prefix="1.2.826.0.1.9999.")
    assert custom.output_uid(DIGEST, "seg", "series").startswith("1.2.826.0.1.9999.")
    assert context.device_observer_uid == ReportContext(software_version="2").device_observer_uid
    assert context.device_observer_uid != ReportContext(software_version="1", station_name="ct2").device_observer_uid


def test_analysis_digest_follows_what_the_content_depends_on(headers: list[Dataset], findings: Findings) -> None:
    """Same inputs, same digest (whatever the header order); anything the content depends on changes it."""
    identity = headers[0]
    digest = analysis_digest(findings, identity)
    assert digest == analysis_digest(dataclasses.replace(findings, warnings=("another wording",)), identity)
    hu = findings.volume.hu.copy()
    hu[0, 0, 0] += 1.0
    renamed = copy.deepcopy(identity)
    renamed.PatientName = "Doe^Janet"
    lobes = dataclasses.replace(findings.models["lobes"], weights_sha256="ef" * 32)
    changed = {
        "pixels": (dataclasses.replace(findings, volume=dataclasses.replace(findings.volume, hu=hu)), identity),
        "pipeline version": (dataclasses.replace(findings, pipeline_version="0.1.1"), identity),
        "weights": (dataclasses.replace(findings, models={**findings.models, "lobes": lobes}), identity),
        "configuration": (dataclasses.replace(findings, configuration={"lesion_network": "resnet18_unet"}), identity),
        "patient name": (findings, renamed),
    }
    for what, (other, header) in changed.items():
        assert analysis_digest(other, header) != digest, what
    assert analysis_digest(findings, identity, ["a note"]) != digest, "the PDF's eligibility notes"
    reasons = ["too few slices"]
    assert not_analysable_digest(headers, reasons, "1") == not_analysable_digest(headers[::-1], reasons, "1")
    assert not_analysable_digest(headers[1:], reasons, "1") != not_analysable_digest(headers, reasons, "1")
    assert not_analysable_digest(headers, ["other"], "1") != not_analysable_digest(headers, reasons, "1")


@pytest.mark.parametrize(
    "changes",
    [
        {"sr_series_number": 9902},
        {"seg_series_number": 0},
        {"sc_series_number": 9903},
        {"kos_series_number": 9904},
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
        context.output_uid(DIGEST, "ko", "series")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="part"):
        context.output_uid(DIGEST, "sr", "frame")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        context.output_uid("", "sr", "series")
    with pytest.raises(ValueError, match="empty"):
        context.tracking_uid("1.2.3", "1", "")


def test_index_source_headers_checks_consistency(headers: list[Dataset], findings: Findings) -> None:
    by_uid = index_source_headers(findings, headers)
    assert set(by_uid) == set(findings.volume.source_sop_instance_uids)
    with pytest.raises(ValueError, match="no source header"):
        index_source_headers(findings, headers[1:])
    other = headers[0].copy()
    other.SeriesInstanceUID = "1.2.3.999"
    with pytest.raises(ValueError, match="2 Series Instance UIDs in one series"):
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


def _texts(run: ModelRun) -> str:
    """Everything a report says about a run's provenance."""
    return " ".join(str(t) for t in (model_statement(run), run.validation, run.unvalidated_statement))


def test_provenance_is_explicit_and_worded_by_kind() -> None:
    missing = ModelRun("corads", "not_installed", "no weights installed", "1.0")
    assert model_statement(missing) == "CO-RADS model not run (not installed): no weights installed"
    assert missing.unvalidated_statement is None and missing.validation is None and not missing.validated

    generated = ModelRun("corads", "ran", "demo", "1.0", "generated_weights")
    assert model_statement(generated).startswith("CO-RADS model ran (version 1.0, generated demonstration weights)")
    assert generated.unvalidated_statement == UNVALIDATED_STATEMENTS["generated_weights"]
    assert "UNVALIDATED" in _texts(generated) and "method" not in _texts(generated), "generated weights are no method"

    installed = ModelRun("corads", "ran", "site file", "1.0", "installed_unvalidated", SHA_VALID, "installed from x")
    assert installed.unvalidated_statement == UNVALIDATED_STATEMENTS["installed_unvalidated"]
    assert "without a validation statement" in _texts(installed) and SHA_VALID in model_statement(installed)
    assert "generated" not in _texts(installed), "installed weights are never called generated"

    validated = ModelRun("corads", "ran", "site file", "1.0", *VALIDATED_WEIGHTS)
    assert validated.validated and validated.unvalidated_statement is None
    assert "UNVALIDATED" not in _texts(validated) and VALIDATED_WEIGHTS[3] in str(validated.validation)

    weight_free = ModelRun("lung_mask", "ran", "", "0.1", "weight_free")
    assert weight_free.validated and weight_free.validation == "weight-free method (no trained weights)"
    assert "UNVALIDATED" not in _texts(weight_free)

    severity = ModelRun("severity", "ran", "", "1.0", "installed_unvalidated", inputs=("lobes", "lesions"))
    assert "computed from lobes, lesions" in model_statement(severity)


@pytest.mark.parametrize(
    "arguments",
    [
        ("ran", None, None, None, None),
        ("failed", "generated_weights", None, None, None),
        ("ran", "installed_unvalidated", None, None, None),
        ("ran", "installed_validated", SHA_VALID, "installed from x", None),
        ("ran", "generated_weights", SHA_VALID, None, None),
        ("ran", "weight_free", None, None, "validated by us"),
        ("ran", "demo", None, None, None),
    ],
)
def test_model_run_refuses_inconsistent_provenance(arguments: tuple[Any, ...]) -> None:
    status, provenance, sha, origin, statement = arguments
    with pytest.raises(ValueError):
        ModelRun("corads", status, "", "1.0", provenance, sha, origin, statement)


def test_banner_names_what_is_unvalidated(headers: list[Dataset], make_findings: Callable[..., Findings]) -> None:
    plain = make_findings(headers)
    assert banner_text(plain) is None
    assert plain.mask_run("LUL") is plain.models["lobes"] and plain.mask_run("RML") is plain.models["lobes"]
    demo = make_findings(headers, outputs=True, unvalidated=True)
    assert banner_text(demo) == codes.UNVALIDATED_BANNER
    assert demo.models["stoic"].validated and not demo.models["corads"].validated
    installed = ModelRun("lobes", "ran", "site file", "2.0", "installed_unvalidated", SHA_VALID, "installed from x")
    alone = dataclasses.replace(plain, models={**plain.models, "lobes": installed})
    assert banner_text(alone) == codes.UNVALIDATED_INSTALLED_BANNER
    mixed = dataclasses.replace(demo, models={**demo.models, "lobes": installed})
    assert banner_text(mixed) == codes.UNVALIDATED_MIXED_BANNER


def test_an_output_needs_the_record_of_its_run(headers: list[Dataset], make_findings: Callable[..., Findings]) -> None:
    findings = make_findings(headers, outputs=True)
    models = {name: run for name, run in findings.models.items() if name != "severity"}
    with pytest.raises(ValueError, match="needs the record of model 'severity'"):
        dataclasses.replace(findings, models=models)


@pytest.mark.parametrize(
    ("keyword", "words", "values"),
    [
        ("PatientID", "patients", ("PAT-A", "PAT-B")),
        ("IssuerOfPatientID", "issuers of patient ID", ("HOSP-A", "HOSP-B")),
        ("PatientName", "patient names", ("A^A", "B^B")),
        ("PatientBirthDate", "birth dates", ("19600102", "19700102")),
        ("PatientSex", "sexes", ("F", "M")),
        ("StudyInstanceUID", "studies", ("1.2.3.4", "1.2.3.5")),
        ("Modality", "modalities", ("CT", "PT")),
        ("FrameOfReferenceUID", "frames of reference", ("1.2.3.6", "1.2.3.7")),
    ],
)
def test_source_headers_of_two_identities_are_refused(
    headers: list[Dataset], keyword: str, words: str, values: tuple[str, str]
) -> None:
    mixed = [ds.copy() for ds in headers]
    for k, ds in enumerate(mixed):
        setattr(ds, keyword, values[k % 2])
    with pytest.raises(ValueError, match=f"^2 {words} in one series: {re.escape(values[0])} \\(5 slices\\)"):
        check_source_series(mixed)


def test_a_refusal_names_every_disagreement(headers: list[Dataset]) -> None:
    mixed = [copy.deepcopy(ds) for ds in headers * 3]
    for k, ds in enumerate(mixed):
        ds.SOPInstanceUID = f"1.2.3.{k + 1}"
        ds.PatientID = "PAT-A" if k < 15 else "PAT-B"
        ds.PatientName = "A^A" if k < 15 else "B^B"
    with pytest.raises(ValueError) as raised:
        check_source_series(mixed)
    assert str(raised.value) == (
        "2 patients in one series: PAT-A (15 slices), PAT-B (15 slices); "
        "2 patient names in one series: A^A (15 slices), B^B (15 slices)"
    )


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
    with pytest.raises(ValueError, match="no mask source that ran"):
        dataclasses.replace(findings, mask_sources={**findings.mask_sources, "lungs": "unknown"})
    with pytest.raises(ValueError, match="no mask source that ran"):
        dataclasses.replace(findings, models={**findings.models, "lesions": ModelRun("lesions", "skipped", "", "3.0")})
    with pytest.raises(ValueError, match="which findings.masks lacks"):
        validate_findings(dataclasses.replace(findings, mask_sources={**findings.mask_sources, "ggo": "lesions"}))
    masks = {**findings.masks, "heart": np.zeros_like(findings.masks["lungs"])}
    with pytest.raises(ValueError, match="is neither a region"):
        validate_findings(
            dataclasses.replace(findings, masks=masks, mask_sources={**findings.mask_sources, "heart": "lesions"})
        )
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
