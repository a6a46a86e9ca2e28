"""TID 1500 SR: content per region and model, round trip through highdicom, dciodvfy."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes as dcm_codes

from models.findings import REGION_NAMES
from reports import codes
from reports.seg import build_seg
from reports.sr import build_sr

TEXT_NAME_TAG = "ConceptNameCodeSequence"


def _write_read(ds: pydicom.Dataset, path: Path) -> hd.sr.Comprehensive3DSR:
    ds.save_as(path, enforce_file_format=True)
    return hd.sr.srread(path)


def _texts(item: pydicom.Dataset) -> list[tuple[str, str]]:
    """(concept code value, text) of the TEXT children of a content item."""
    return [
        (child.ConceptNameCodeSequence[0].CodeValue, str(child.TextValue))
        for child in item.ContentSequence
        if child.ValueType == "TEXT"
    ]


def _report_statements(sr: pydicom.Dataset) -> list[tuple[str, str]]:
    containers = [
        item
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]
    assert len(containers) == 1
    return _texts(containers[0])


def _measurement(group: hd.sr.MeasurementsAndQualitativeEvaluations, concept, derivation=None) -> float:
    matches = [m for m in group.get_measurements(name=concept) if m.derivation == derivation]
    assert len(matches) == 1, [m.name for m in group.get_measurements()]
    return float(matches[0].value)


def test_region_groups_measurements_and_sites(tmp_path, headers, findings, context) -> None:
    sr = _write_read(build_sr(findings, headers, context), tmp_path / "sr.dcm")
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    groups = {g.tracking_identifier: g for g in report.get_image_measurement_groups()}
    assert list(groups) == [name for name in REGION_NAMES if name in findings.measurements]
    for name, group in groups.items():
        m = findings.measurements[name]
        assert [site.value.value for site in group.finding_sites] == [codes.REGION_CODES[name].value]
        assert group.finding_sites[0].value.scheme_designator == "SCT"
        assert group.tracking_uid == context.tracking_uid(headers[0].SeriesInstanceUID, "0.1.0", name)
        assert _measurement(group, codes.VOLUME) == pytest.approx(m.volume_ml)
        if m.fpv_ml is None:
            texts = _texts(group[0])
            assert ("MEASNA", "Functional volume (-950 to -500 HU): region is empty") in texts
            assert len([t for t in texts if t[0] == "MEASNA"]) == 5
            assert len(group.get_measurements()) == 1
            continue
        assert _measurement(group, codes.FUNCTIONAL_LUNG_VOLUME) == pytest.approx(m.fpv_ml)
        assert _measurement(group, codes.LOW_ATTENUATION_AREA_950) == pytest.approx(m.laa950_pct)
        assert _measurement(group, codes.PERCENTILE_15_ATTENUATION) == pytest.approx(m.perc15_hu)
        assert _measurement(group, codes.ATTENUATION_COEFFICIENT, codes.MEAN) == pytest.approx(m.mean_hu)
        assert _measurement(group, codes.HIGH_ATTENUATION_AREA) == pytest.approx(m.haa_pct)
        units = {mm.name.value: mm.unit.value for mm in group.get_measurements()}
        assert units == {
            "118565006": "ml",
            "FPV": "ml",
            "LAA950": "%",
            "PERC15": "[hnsf'U]",
            "112031": "[hnsf'U]",
            "HAA": "%",
        }
    assert groups["RML"].get_measurements()[0].value == 0.0


def test_codes_of_lobes_are_lateralised() -> None:
    assert codes.REGION_CODES["RUL"].value == "42400003"
    assert codes.REGION_CODES["LUL"].value == "44714003"
    assert codes.REGION_CODES["RLL"].value == "266005"
    assert codes.REGION_CODES["LLL"].value == "41224006"
    assert len({code.value for code in codes.REGION_CODES.values()}) == len(REGION_NAMES)


def test_observer_procedure_evidence_and_patient(tmp_path, headers, findings, context) -> None:
    sr = _write_read(build_sr(findings, headers, context), tmp_path / "sr.dcm")
    observers = sr.content.get_observer_contexts(observer_type=dcm_codes.DCM.Device)
    assert len(observers) == 1
    device = observers[0].observer_identifying_attributes
    assert device.uid == context.device_observer_uid
    assert device.manufacturer_name == "lungcds project"
    procedures = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert procedures[0].ConceptCodeSequence[0].CodeValue == codes.CT_OF_CHEST.value
    evidence = sr.get_evidence(current_procedure_only=True)
    assert {e[2] for e in evidence} == {str(h.SOPInstanceUID) for h in headers}
    source = headers[0]
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
    ):
        assert str(sr[keyword].value) == str(source[keyword].value), keyword
    assert "ReferencedStudySequence" not in sr
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    assert sr.SeriesNumber == context.sr_series_number
    assert sr.SeriesInstanceUID == context.output_uid(source.SeriesInstanceUID, "0.1.0", "sr", "series")
    assert sr.SOPInstanceUID == context.output_uid(source.SeriesInstanceUID, "0.1.0", "sr", "instance")
    schemes = [item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence]
    assert codes.PRIVATE_SCHEME in schemes


def test_model_statements_and_decision_support(tmp_path, headers, findings, context) -> None:
    sr = _write_read(build_sr(findings, headers, context), tmp_path / "sr.dcm")
    statements = _report_statements(sr)
    assert ("DECSUPPORT", codes.DECISION_SUPPORT_STATEMENT) in statements
    status = [text for code, text in statements if code == "MODELSTATUS"]
    assert "CO-RADS model not run (not installed): no weights installed" in status
    assert any(text.startswith("STOIC2021 model not run (skipped): slices are 5 mm") for text in status)
    assert "I3Dr model not run (failed): RuntimeError: out of memory" in status
    assert not [code for code, _ in statements if code == "VALIDATION"]
    assert ("PIPEWARNING", "synthetic test data") in statements


def test_model_outputs_with_unvalidated_weights(tmp_path, headers, make_findings, context) -> None:
    findings = make_findings(headers, outputs=True, unvalidated=True)
    sr = _write_read(build_sr(findings, headers, context), tmp_path / "sr.dcm")
    groups = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
    corads = groups["corads"]
    assert _measurement(corads, codes.CORADS_SCORE) == pytest.approx(0.71)
    (category,) = corads.get_qualitative_evaluations(name=codes.CORADS_CATEGORY)
    assert category.value.value == "CORADS4"
    assert ("VALIDATION", codes.UNVALIDATED_WEIGHTS_STATEMENT) in _texts(corads[0])
    stoic = groups["stoic"]
    assert _measurement(stoic, codes.PROBABILITY_COVID19) == pytest.approx(0.62)
    assert _measurement(stoic, codes.PROBABILITY_SEVERE_OUTCOME) == pytest.approx(0.18)
    assert not [t for t in _texts(stoic[0]) if t[0] == "VALIDATION"]
    patient = groups["i3dr patient"]
    fev1 = patient.get_measurements(name=codes.I3DR_OUTPUT_CODES["fev1_pre_l"])[0]
    assert fev1.value == pytest.approx(2.9) and fev1.unit.value == "l"
    dlco = patient.get_measurements(name=codes.I3DR_OUTPUT_CODES["dlco"])[0]
    assert dlco.value == pytest.approx(24.5) and dlco.unit.value == "ml/min/mm[Hg]"
    lul = groups["i3dr LUL"]
    assert lul.finding_sites[0].value.value == codes.REGION_CODES["LUL"].value
    assert ("VALIDATION", codes.UNVALIDATED_WEIGHTS_STATEMENT) in _texts(lul[0])
    rll = groups["severity RLL"]
    assert _measurement(rll, codes.CT_SEVERITY_SCORE) == 2
    assert _measurement(rll, codes.LOBE_INVOLVEMENT) == pytest.approx(12.5)
    assert _measurement(groups["severity total"], codes.CT_SEVERITY_SCORE) == 2
    assert ("VALIDATION", codes.UNVALIDATED_NO_PROVENANCE_STATEMENT) in _texts(rll[0])
    statements = _report_statements(sr)
    assert ("VALIDATION", f"corads: {codes.UNVALIDATED_WEIGHTS_STATEMENT}") in statements
    assert ("VALIDATION", f"i3dr: {codes.UNVALIDATED_WEIGHTS_STATEMENT}") in statements
    assert not any(text.startswith("stoic:") for _, text in statements)


def test_region_groups_reference_seg_segments(tmp_path, headers, findings, context) -> None:
    seg = build_seg(findings, headers, context)
    sr = _write_read(build_sr(findings, headers, context, seg=seg), tmp_path / "sr.dcm")
    volumetric = {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}
    labels = {item.SegmentLabel: item.SegmentNumber for item in seg.SegmentSequence}
    assert set(volumetric) == set(labels) - {"lesions"}
    for name, group in volumetric.items():
        ref = group.referenced_segment
        assert ref.referenced_segment_numbers == [labels[name]]
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert group.tracking_uid == seg.SegmentSequence[labels[name] - 1].TrackingUID
    image_groups = {g.tracking_identifier for g in sr.content.get_image_measurement_groups()}
    assert "RML" in image_groups
    series = {uid for _, uid in sr.get_evidence_series()}
    assert seg.SeriesInstanceUID in series and headers[0].SeriesInstanceUID in series


def test_rejects_foreign_seg_and_empty_findings(headers, findings, context, make_headers) -> None:
    seg = build_seg(findings, headers, context)
    other_headers = make_headers()
    other = dataclasses.replace(
        findings,
        volume=dataclasses.replace(
            findings.volume,
            source_sop_instance_uids=tuple(
                str(h.SOPInstanceUID) for h in sorted(other_headers, key=lambda h: float(h.ImagePositionPatient[2]))
            ),
        ),
    )
    with pytest.raises(ValueError, match="another study"):
        build_sr(other, other_headers, context, seg=seg)
    empty = dataclasses.replace(findings, measurements={})
    with pytest.raises(ValueError, match="nothing to report"):
        build_sr(empty, headers, context)


def test_deterministic_uids_across_runs(headers, findings, context) -> None:
    first = build_sr(findings, headers, context)
    second = build_sr(findings, list(reversed(headers)), context)
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (second.SeriesInstanceUID, second.SOPInstanceUID)


def test_dciodvfy_accepts_sr(tmp_path, headers, make_findings, context, dciodvfy) -> None:
    findings = make_findings(headers, outputs=True, unvalidated=True)
    seg = build_seg(findings, headers, context)
    path = tmp_path / "sr.dcm"
    build_sr(findings, headers, context, seg=seg).save_as(path, enforce_file_format=True)
    result = dciodvfy(path)
    assert not result.errors, "\n".join(result.errors)


def test_real_series_sr(tmp_path, real_series, context, dciodvfy) -> None:
    seg = build_seg(real_series.findings, real_series.headers, context)
    path = tmp_path / "sr.dcm"
    build_sr(real_series.findings, real_series.headers, context, seg=seg).save_as(path, enforce_file_format=True)
    sr = hd.sr.srread(path)
    groups = {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()}
    assert set(groups) == {"lungs", "lung_left", "lung_right"}
    lungs = real_series.findings.measurements["lungs"]
    assert _measurement(groups["lungs"], codes.VOLUME) == pytest.approx(lungs.volume_ml)
    assert "ReferencedStudySequence" not in sr
    assert len(sr.get_evidence(current_procedure_only=True)) == len(real_series.headers) + 1
    result = dciodvfy(path)
    assert not result.errors, "\n".join(result.errors)
