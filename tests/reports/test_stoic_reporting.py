"""STOIC2021 in the reports: one output missing, member provenance in the SR and the PDF."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pydicom
from pydicom import Dataset

from models.findings import Findings, ModelRun, StoicResult
from reports import codes
from reports.identity import ReportContext
from reports.pdf import build_pdf
from reports.sr import build_sr
from tests.reports.helpers import (
    expected_values,
    model_groups,
    not_run_summaries,
    pdf_text,
    run_dciodvfy,
    sr_texts,
    sr_values,
    synthetic_findings,
)

NOTE = "incomplete ensemble: P(severe) is the weighted mean of stoic_code1055 only; missing stoic_simonj"


def _severity_only(headers: list[Dataset]) -> Findings:
    """Only Code 1055 installed (demo weights): P(severe) exists, P(COVID-19) does not."""
    base = synthetic_findings(headers, outputs=True, unvalidated=True)
    models = dict(base.models)
    reason = "ran (stoic_top3): P(severe) = mean of stoic_code1055"
    models["stoic"] = ModelRun("stoic", "ran", reason, "1.0.0", "generated_weights", inputs=("stoic_code1055",))
    models["stoic_code1055"] = ModelRun("stoic_code1055", "ran", "generated weights", "1.0.0", "generated_weights")
    models["stoic_simonj"] = ModelRun("stoic_simonj", "not_installed", "no weights installed", "1.0.0")
    stoic = StoicResult(
        p_covid=None,
        p_severe=0.31,
        members={"stoic_code1055": {"p_severe": 0.31}},
        averaged={"p_covid": (), "p_severe": ("stoic_code1055",)},
        complete=False,
        notes=(NOTE,),
    )
    return dataclasses.replace(base, models=models, stoic=stoic)


def test_sr_carries_the_ensemble_and_the_member_and_no_missing_output(
    headers: list[Dataset], context: ReportContext, tmp_path: Path
) -> None:
    findings = _severity_only(headers)
    sr = build_sr(findings, headers, context)
    found = sr_values(sr)
    probabilities = [
        f for f in found if f[1] in (codes.PROBABILITY_COVID19.value, codes.PROBABILITY_SEVERE_OUTCOME.value)
    ]
    assert sorted(probabilities) == sorted(
        [
            ("model stoic", codes.PROBABILITY_SEVERE_OUTCOME.value, 0.31, "1"),
            ("model stoic_code1055", codes.PROBABILITY_SEVERE_OUTCOME.value, 0.31, "1"),
        ]
    )
    assert len(found) == len(expected_values(findings.as_dict()))
    stoic_texts = sr_texts(sr, "model stoic")
    assert any(text == NOTE for _, text in stoic_texts)
    # The member that did not run is stated by the ensemble that ran, as the PDF's member table does.
    assert ("MODELNOTRUN", "STOIC2021 (stoic_simonj), not installed: no weights installed") in stoic_texts
    groups = model_groups(sr)
    assert {"model stoic", "model stoic_code1055"} <= set(groups) and "model stoic_simonj" not in groups
    assert not_run_summaries(sr) == {}
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).SOPInstanceUID == sr.SOPInstanceUID
    assert not run_dciodvfy(path).errors


def test_pdf_lists_members_and_says_why_an_output_is_missing(headers: list[Dataset], context: ReportContext) -> None:
    findings = _severity_only(headers)
    text = pdf_text(build_pdf(findings, headers, context, compress=False))
    assert "Probability of COVID-19 not available: no member of stoic_top3 that ran gives this output" in text
    assert "Probability of severe outcome 0.31" in text
    assert "stoic_code1055" in text and "stoic_simonj" in text
    assert "no weights installed" in text
    assert "incomplete ensemble" in text
