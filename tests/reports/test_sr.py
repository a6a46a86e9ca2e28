"""TID 1500 SR: region and model groups, provenance, statements, round trip, dciodvfy."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code

from models.findings import LOBE_NAMES, REGION_NAMES, UNVALIDATED_STATEMENTS, Findings, ModelRun, QualityAssessment
from reports import codes
from reports.identity import ReportContext, analysis_digest
from reports.seg import build_segs
from reports.sr import (
    NOT_ANALYSABLE_SERIES_DESCRIPTION,
    SR_SERIES_DESCRIPTION,
    SR_UNVALIDATED_SERIES_DESCRIPTION,
    build_not_analysable_sr,
    build_sr,
)
from tests.reports.helpers import (
    MEASUREMENT_CONCEPTS,
    Validation,
    algorithm_of,
    expected_values,
    model_groups,
    not_run_summaries,
    report_statements,
    sr_codes,
    sr_texts,
    sr_values,
)

GENERATED = UNVALIDATED_STATEMENTS["generated_weights"]
#: The model groups of the default findings: the models that ran (CO-RADS, STOIC2021 and I3Dr did not).
MODEL_GROUPS = ["model lung_mask", "model lobes", "model lesions"]
INSTALL = "no weights installed; install with `lungcds models install`"
STOIC_NOT_INSTALLED = f"no weights installed for any member of stoic_top3 (stoic_code1055, stoic_simonj); {INSTALL}"


def _write_read(ds: Dataset, path: Path) -> hd.sr.Comprehensive3DSR:
    ds.save_as(path, enforce_file_format=True)
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    return sr


def _report(sr: hd.sr.Comprehensive3DSR) -> hd.sr.MeasurementReport:
    report = sr.content
    assert isinstance(report, hd.sr.MeasurementReport)
    return report


def _measurement(
    group: hd.sr.MeasurementsAndQualitativeEvaluations, concept: Code, derivation: Code | None = None
) -> float:
    matches = [m for m in group.get_measurements(name=concept) if m.derivation == derivation]
    assert len(matches) == 1, [m.name for m in group.get_measurements()]
    return float(matches[0].value)


def test_region_groups_measurements_and_sites(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    report = _report(_write_read(build_sr(findings, headers, context), tmp_path / "sr.dcm"))
    groups = {str(g.tracking_identifier): g for g in report.get_image_measurement_groups()}
    regions = [name for name in REGION_NAMES if name in findings.measurements]
    assert list(groups) == regions + MODEL_GROUPS
    for name in regions:
        group, m = groups[name], findings.measurements[name]
        assert group.finding_sites[0].value == codes.REGION_CODES[name]
        assert group.tracking_uid == context.tracking_uid(headers[0].SeriesInstanceUID, "0.1.0", name)
        assert algorithm_of(group[0])["name"] == ["lobes" if name in LOBE_NAMES else "lung_mask"]
        assert _measurement(group, codes.VOLUME) == round(
            m.volume_ml
        )  # clinically meaningful precision (reports.precision)
        if m.fpv_ml is None:
            texts = sr_texts(report[0], name)
            assert ("MEASNA", "Functional volume (-950 to -500 HU): region is empty") in texts
            assert len([t for t in texts if t[0] == "MEASNA"]) == 5
            assert len(group.get_measurements()) == 1
            continue
        assert _measurement(group, codes.FUNCTIONAL_LUNG_VOLUME) == round(m.fpv_ml)
        assert _measurement(group, codes.LOW_ATTENUATION_AREA_950) == round(m.laa950_pct, 1)
        assert _measurement(group, codes.PERCENTILE_15_ATTENUATION) == round(m.perc15_hu)
        assert _measurement(group, codes.ATTENUATION_COEFFICIENT, codes.MEAN) == round(m.mean_hu)
        assert _measurement(group, codes.HIGH_ATTENUATION_AREA) == round(m.haa_pct, 1)
        units = {mm.name.value: mm.unit.value for mm in group.get_measurements()}
        assert units == dict(MEASUREMENT_CONCEPTS.values())
    assert groups["RML"].get_measurements()[0].value == 0.0


def test_codes_of_lobes_are_lateralised() -> None:
    assert codes.REGION_CODES["RUL"].value == "42400003"
    assert codes.REGION_CODES["LUL"].value == "44714003"
    assert codes.REGION_CODES["RLL"].value == "266005"
    assert codes.REGION_CODES["LLL"].value == "41224006"
    assert len({code.value for code in codes.REGION_CODES.values()}) == len(REGION_NAMES)


def test_observer_procedure_evidence_and_patient(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    sr = _write_read(build_sr(findings, headers, context), tmp_path / "sr.dcm")
    observers = _report(sr).get_observer_contexts(observer_type=dcm_codes.DCM.Device)
    assert len(observers) == 1
    device = observers[0].observer_identifying_attributes
    assert isinstance(device, hd.sr.DeviceObserverIdentifyingAttributes)
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
    assert sr.SeriesDescription == SR_SERIES_DESCRIPTION
    first_slice = findings.volume.source_sop_instance_uids[0]
    digest = analysis_digest(findings, next(h for h in headers if h.SOPInstanceUID == first_slice))
    assert sr.SeriesInstanceUID == context.output_uid(digest, "sr", "series")
    assert sr.SOPInstanceUID == context.output_uid(digest, "sr", "instance")
    schemes = [item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence]
    assert codes.PRIVATE_SCHEME in schemes


def test_models_that_ran_have_a_group_the_others_one_coded_summary_per_status(
    headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    sr = build_sr(findings, headers, context)
    expected = {"model lung_mask": "WEIGHTFREE", "model lobes": "VALIDWEIGHTS", "model lesions": "VALIDWEIGHTS"}
    assert model_groups(sr) == list(expected)
    for group, validation in expected.items():
        coded = dict(sr_codes(sr, group))
        assert (coded["MODELSTATUS"], coded["VALIDATION"]) == ("RAN", validation), group
    statement = [text for concept, text in sr_texts(sr, "model lobes") if concept == "MODELSTATUS"]
    assert len(statement) == 1 and statement[0].startswith("lobes model ran (version 2.0, installed weights")
    assert not_run_summaries(sr) == {
        "NOTINSTALLED": {"CO-RADS (corads): no weights installed": []},
        "SKIPPED": {"STOIC2021 (stoic): slices are 5 mm thick; STOIC2021 needs at most 3 mm": []},
        "FAILED": {"I3Dr (i3dr): RuntimeError: out of memory": []},
    }
    statements = report_statements(sr)
    assert [value for concept, value in statements if concept == "MODELSTATUS"] == ["NOTINSTALLED", "SKIPPED", "FAILED"]
    assert ("DECSUPPORT", codes.DECISION_SUPPORT_STATEMENT) in statements
    assert ("DECSUPPORT", codes.SOFTWARE_STATEMENT) in statements
    assert not [value for concept, value in statements if concept == "VALIDATION"]
    assert statements[-1] == ("PIPEWARNING", "synthetic test data")


def test_models_without_a_result_are_listed_once_under_their_status(
    headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    """Three models ran, three are not installed and one failed: three groups, two coded summaries."""
    ran = {name: run for name, run in findings.models.items() if run.status == "ran"}
    missing = [
        ModelRun("corads", "not_installed", INSTALL, "1.0"),
        ModelRun("i3dr", "not_installed", INSTALL, "1.0"),
        ModelRun("severity", "not_installed", "needs the lobe and lesion models", "1.0"),
        ModelRun("stoic_code1055", "failed", "failed: RuntimeError: CUDA out of memory", "1.0.0"),
    ]
    models = {**ran, **{run.name: run for run in missing}}
    sr = build_sr(dataclasses.replace(findings, models=models), headers, context)
    assert model_groups(sr) == MODEL_GROUPS
    assert not_run_summaries(sr) == {
        "NOTINSTALLED": {
            f"CO-RADS (corads): {INSTALL}": [],
            f"I3Dr (i3dr): {INSTALL}": [],
            "CT severity score (severity): needs the lobe and lesion models": [],
        },
        # Without an ensemble record a STOIC2021 member is a model of its own, as in the PDF.
        "FAILED": {"STOIC2021 (stoic_code1055): failed: RuntimeError: CUDA out of memory": []},
    }
    assert len([concept for concept, _ in report_statements(sr) if concept == "MODELSTATUS"]) == 2
    everything_ran = dataclasses.replace(findings, models=ran)
    assert not_run_summaries(build_sr(everything_ran, headers, context)) == {}


def _stoic2021_not_installed(findings: Findings) -> Findings:
    """``findings`` with the STOIC2021 ensemble not installed, one member not installed and one failed."""
    members = [
        ModelRun("stoic", "not_installed", STOIC_NOT_INSTALLED, "1.0.0"),
        ModelRun("stoic_code1055", "not_installed", INSTALL, "1.0.0"),
        ModelRun("stoic_simonj", "failed", "failed: ValueError: no lung", "1.0.0"),
    ]
    models = {name: run for name, run in findings.models.items() if not name.startswith("stoic")}
    return dataclasses.replace(findings, models={**models, **{run.name: run for run in members}})


def test_stoic2021_members_that_did_not_run_are_stated_by_the_ensemble(
    headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    sr = build_sr(_stoic2021_not_installed(findings), headers, context)
    assert model_groups(sr) == MODEL_GROUPS
    summaries = not_run_summaries(sr)
    assert summaries["NOTINSTALLED"][f"STOIC2021 (stoic): {STOIC_NOT_INSTALLED}"] == [
        f"STOIC2021 (stoic_code1055), not installed: {INSTALL}",
        "STOIC2021 (stoic_simonj), failed: failed: ValueError: no lung",
    ]
    assert set(summaries) == {"NOTINSTALLED", "FAILED"} and "stoic_simonj" not in str(summaries["FAILED"])


def test_a_model_description_is_not_its_run_status(
    headers: list[Dataset], make_findings: Callable[..., Findings], context: ReportContext
) -> None:
    findings = make_findings(headers, outputs=True)
    described = dataclasses.replace(findings.models["corads"], description="CO-RADS from a 3D DenseNet-201 ensemble")
    texts = sr_texts(
        build_sr(dataclasses.replace(findings, models={**findings.models, "corads": described}), headers, context),
        "model corads",
    )
    # What a model is goes under its own concept, not as its run status.
    assert ("MODELDESC", described.description) in texts and ("MODELSTATUS", described.description) not in texts


def test_model_outputs_with_unvalidated_weights(
    tmp_path: Path, headers: list[Dataset], make_findings: Callable[..., Findings], context: ReportContext
) -> None:
    findings = make_findings(headers, outputs=True, unvalidated=True)
    sr = _write_read(build_sr(findings, headers, context), tmp_path / "sr.dcm")
    report = _report(sr)
    groups = {str(g.tracking_identifier): g for g in report.get_image_measurement_groups()}
    corads = groups["model corads"]
    assert _measurement(corads, codes.CORADS_SCORE) == pytest.approx(0.71)
    (category,) = corads.get_qualitative_evaluations(name=codes.CORADS_CATEGORY)
    assert category.value == codes.CORADS_CATEGORY_VALUES[4]
    assert algorithm_of(corads[0]) == {
        "name": ["corads"],
        "version": ["1.0"],
        "parameters": ["provenance: generated demonstration weights"],
    }
    assert ("VALIDATION", "DEMOWEIGHTS") in sr_codes(sr, "model corads")
    assert ("VALIDATION", GENERATED) in sr_texts(sr, "model corads")
    stoic = groups["model stoic"]
    assert _measurement(stoic, codes.PROBABILITY_COVID19) == pytest.approx(0.62)
    assert _measurement(stoic, codes.PROBABILITY_SEVERE_OUTCOME) == pytest.approx(0.18)
    assert ("VALIDATION", "VALIDWEIGHTS") in sr_codes(sr, "model stoic")
    assert not [text for concept, text in sr_texts(sr, "model stoic") if "UNVALIDATED" in text]
    lungs = groups["lungs"]
    fev1 = lungs.get_measurements(name=codes.I3DR_OUTPUT_CODES["fev1_pre_l"])[0]
    assert fev1.value == pytest.approx(2.9) and fev1.unit.value == "l"
    assert algorithm_of(fev1[0])["name"] == ["i3dr"]
    dlco = lungs.get_measurements(name=codes.I3DR_OUTPUT_CODES["dlco"])[0]
    assert dlco.value == pytest.approx(24.5) and dlco.unit.value == "ml/min/mm[Hg]"
    assert _measurement(lungs, codes.CT_SEVERITY_SCORE) == 2
    (severity,) = lungs.get_qualitative_evaluations(name=codes.CT_SEVERITY_CATEGORY)
    assert severity.value == codes.SEVERITY_CATEGORY_VALUES["mild"]
    lul = groups["LUL"]
    assert lul.get_measurements(name=codes.I3DR_OUTPUT_CODES["dlco"])[0].value == pytest.approx(5.0)
    assert _measurement(lul, codes.CT_SEVERITY_SCORE) == 0
    lul_texts = sr_texts(sr, "LUL")
    assert ("VALIDATION", f"I3Dr: {GENERATED}") in lul_texts
    assert ("VALIDATION", f"lobes mask: {GENERATED}") in lul_texts
    assert ("VALIDATION", f"CT severity score: {GENERATED}") in lul_texts
    assert {value for concept, value in sr_codes(sr, "LUL") if concept == "VALIDATION"} == {"DEMOWEIGHTS"}
    assert {value for concept, value in sr_codes(sr, "lungs") if concept == "VALIDATION"} == {
        "WEIGHTFREE",
        "DEMOWEIGHTS",
    }
    lul_volume = lul.get_measurements(name=codes.VOLUME)[0]
    assert "on the mask of model lobes (generated demonstration weights)" in algorithm_of(lul_volume[0])["parameters"]
    rll = groups["RLL"]
    assert _measurement(rll, codes.CT_SEVERITY_SCORE) == 2
    assert _measurement(rll, codes.LOBE_INVOLVEMENT) == pytest.approx(12.5)
    assert ("VALIDATION", "DEMOWEIGHTS") in sr_codes(sr, "model severity")
    assert "model severity" in groups and list(groups).index("model severity") == len(groups) - 1
    statements = report_statements(sr)
    assert ("VALIDATION", "DEMOWEIGHTS") in statements
    assert ("VALIDATION", codes.UNVALIDATED_BANNER) in statements
    assert sr.SeriesDescription == SR_UNVALIDATED_SERIES_DESCRIPTION


def test_every_result_number_is_in_the_sr(
    headers: list[Dataset], make_findings: Callable[..., Findings], context: ReportContext
) -> None:
    findings = make_findings(headers, outputs=True, unvalidated=True)
    sr = build_sr(findings, headers, context, segs=list(build_segs(findings, headers, context).values()))
    found = sr_values(sr)
    expected = expected_values(findings.as_dict())
    assert len(expected) > 50
    for region, concept, value, unit in expected:
        matches = [f for f in found if f[:2] == (region, concept)]
        assert len(matches) == 1, (region, concept, matches)
        assert matches[0][2] == pytest.approx(value, rel=1e-12, abs=1e-12), (region, concept)
        assert matches[0][3] == unit, (region, concept)
    assert len(found) == len(expected)


def test_quality_gate_reasons(headers: list[Dataset], findings: Findings, context: ReportContext) -> None:
    failed = dataclasses.replace(
        findings, quality=QualityAssessment(False, ("lung volume 0.4 L is outside 1-10 L", "lungs touch the border"))
    )
    statements = report_statements(build_sr(failed, headers, context))
    assert ("MASKQUALITY", "IMPLAUSIBLE") in statements
    assert ("QUALITYREASON", "lung volume 0.4 L is outside 1-10 L") in statements
    assert ("QUALITYREASON", "lungs touch the border") in statements
    passed = dataclasses.replace(findings, quality=QualityAssessment(True))
    assert ("MASKQUALITY", "PLAUSIBLE") in report_statements(build_sr(passed, headers, context))


def test_region_groups_reference_the_segment_in_the_seg_instance_of_its_layer(
    tmp_path: Path, headers: list[Dataset], findings: Findings, context: ReportContext
) -> None:
    segs = build_segs(findings, headers, context)
    assert list(segs) == ["lungs", "lobes", "lesions"]
    sr = _write_read(build_sr(findings, headers, context, segs=list(segs.values())), tmp_path / "sr.dcm")
    report = _report(sr)
    volumetric = {str(g.tracking_identifier): g for g in report.get_volumetric_roi_measurement_groups()}
    segments = {str(item.TrackingID): (seg, item) for seg in segs.values() for item in seg.SegmentSequence}
    assert set(volumetric) == set(segments) - {"lesions"}  # the lesions are not measured as a region
    assert "lungs" not in segments and "lungs" in {
        str(g.tracking_identifier) for g in report.get_image_measurement_groups()
    }
    for name, group in volumetric.items():
        seg, item = segments[name]
        ref = group.referenced_segment
        assert isinstance(ref, hd.sr.ReferencedSegment)
        assert ref.referenced_segment_numbers == [int(item.SegmentNumber)]
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID, name
        assert group.tracking_uid == item.TrackingUID
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm_of(group[0])["name"] == [algorithm.AlgorithmName]
    assert volumetric["lung_right"].referenced_segment.referenced_sop_instance_uid == segs["lungs"].SOPInstanceUID
    assert volumetric["RUL"].referenced_segment.referenced_sop_instance_uid == segs["lobes"].SOPInstanceUID
    assert volumetric["RUL"].referenced_segment.referenced_segment_numbers == [3]  # LUL, LLL, RUL in the lobes
    image_groups = {str(g.tracking_identifier) for g in report.get_image_measurement_groups()}
    assert "RML" in image_groups
    evidence = {uid for _, _, uid, _ in sr.get_evidence(current_procedure_only=True)}
    assert {seg.SOPInstanceUID for seg in segs.values()} <= evidence, "every SEG instance is evidence"
    assert len(evidence) == len(headers) + len(segs)


def test_rejects_foreign_seg_and_empty_findings(
    headers: list[Dataset], findings: Findings, context: ReportContext, make_headers: Callable[..., list[Dataset]]
) -> None:
    segs = list(build_segs(findings, headers, context).values())
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
        build_sr(other, other_headers, context, segs=segs)
    with pytest.raises(ValueError, match="'lung_left' is a segment of more than one SEG instance"):
        build_sr(findings, headers, context, segs=[segs[0], segs[0]])
    empty = dataclasses.replace(findings, measurements={}, models={}, masks={}, mask_sources={})
    with pytest.raises(ValueError, match="nothing to report"):
        build_sr(empty, headers, context)


def test_deterministic_uids_across_runs(headers: list[Dataset], findings: Findings, context: ReportContext) -> None:
    first = build_sr(findings, headers, context)
    second = build_sr(findings, list(reversed(headers)), context)
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (second.SeriesInstanceUID, second.SOPInstanceUID)
    newer = build_sr(dataclasses.replace(findings, pipeline_version="0.2.0"), headers, context)
    assert newer.SOPInstanceUID != first.SOPInstanceUID and newer.SeriesInstanceUID != first.SeriesInstanceUID


def test_dciodvfy_accepts_sr(
    tmp_path: Path,
    headers: list[Dataset],
    make_findings: Callable[..., Findings],
    context: ReportContext,
    dciodvfy: Callable[[Path], Validation],
) -> None:
    """Every model ran; and models that did not run, summarised with a STOIC2021 ensemble's members below it."""
    full = make_findings(headers, outputs=True, unvalidated=True)
    full = dataclasses.replace(full, quality=QualityAssessment(False, ("lung volume 0.4 L",)))
    not_run = _stoic2021_not_installed(make_findings(headers))
    for name, findings in (("full", full), ("not run", not_run)):
        segs = list(build_segs(findings, headers, context).values())
        path = tmp_path / f"{name}.dcm"
        build_sr(findings, headers, context, segs=segs).save_as(path, enforce_file_format=True)
        result = dciodvfy(path)
        assert not result.errors, (name, "\n".join(result.errors))
    assert not_run_summaries(pydicom.dcmread(path))["NOTINSTALLED"], "the summaries were checked"


def test_not_analysable_sr(
    tmp_path: Path,
    headers: list[Dataset],
    findings: Findings,
    context: ReportContext,
    dciodvfy: Callable[[Path], Validation],
) -> None:
    reasons = ["only 12 slices; at least 40 are needed", "unreadable pixel data in 3 instances"]
    path = tmp_path / "sr.dcm"
    build_not_analysable_sr(headers, context, reasons, "0.1.0").save_as(path, enforce_file_format=True)
    sr = _write_read(pydicom.dcmread(path), tmp_path / "again.dcm")
    report = _report(sr)
    assert report.get_image_measurement_groups() == []
    statements = report_statements(sr)
    assert statements[0] == ("ANALYSIS", "NOTANALYSABLE")
    assert [value for concept, value in statements if concept == "NAREASON"] == reasons
    assert ("DECSUPPORT", codes.NOT_ANALYSABLE_STATEMENT) in statements
    assert ("DECSUPPORT", "lungcds pipeline version 0.1.0") in statements
    assert {e[2] for e in sr.get_evidence(current_procedure_only=True)} == {str(h.SOPInstanceUID) for h in headers}
    assert sr.SeriesDescription == NOT_ANALYSABLE_SERIES_DESCRIPTION
    analysed = build_sr(findings, headers, context, predecessors=[sr])
    assert sr.SeriesInstanceUID != analysed.SeriesInstanceUID and sr.SOPInstanceUID != analysed.SOPInstanceUID
    (replaced,) = analysed.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert replaced.ReferencedSOPInstanceUID == sr.SOPInstanceUID, "the analysis replaces the not-analysable SR"
    result = dciodvfy(path)
    assert not result.errors, "\n".join(result.errors)
    with pytest.raises(ValueError, match="at least one"):
        build_not_analysable_sr(headers, context, [], "0.1.0")
    with pytest.raises(ValueError, match="pipeline_version"):
        build_not_analysable_sr(headers, context, ["x"], "")
