"""One analysis with learned models: their results reach result.json, the SR and the PDF."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.engine import Engine

from dicom_node.validation import parse_instance
from models.findings import UNVALIDATED_STATEMENTS
from models.runtime import ModelProvider
from models.weights import WeightStore
from reports import codes
from server.api.main import create_app
from server.core.config import Settings
from server.core.db import session_scope
from server.core.security import create_api_key
from server.db_models import Job
from server.routing.rules import Eligibility
from server.services.analysis import run_analysis
from tests.reports.helpers import DCIODVFY, model_groups, not_run_summaries, run_dciodvfy
from tests.small_models import small_corads, small_provider

GENERATED = UNVALIDATED_STATEMENTS["generated_weights"]


def _headers(paths: list[Path]):  # type: ignore[no-untyped-def]
    return [parse_instance(p)[1] for p in paths]


def _pdf_text(path: Path, *, layout: bool = True) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    options = ["-layout"] if layout else []
    return subprocess.run(["pdftotext", *options, str(path), "-"], check=True, capture_output=True, text=True).stdout


def _flat(text: str) -> str:
    return " ".join(text.split())


def _learned_numbers(result: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Every learned number of result.json with the ``validation`` of the nearest object around it that has one.

    Learned: everything under ``corads``, ``stoic``, ``i3dr`` and ``severity``, and the measurements of
    every region whose mask came from a model that is not weight-free.
    """
    found: list[tuple[str, str | None]] = []

    def walk(where: str, value: Any, validation: str | None) -> None:
        if isinstance(value, dict):
            validation = value.get("validation", validation)
            for key, item in value.items():
                walk(f"{where}.{key}", item, validation)
        elif isinstance(value, list):
            for k, item in enumerate(value):
                walk(f"{where}[{k}]", item, validation)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found.append((where, validation))

    for output in ("corads", "stoic", "i3dr", "severity"):
        if output in result:
            walk(output, result[output], None)
    for region, values in result["measurements"].items():
        if values["provenance"] != "weight_free":
            walk(f"measurements.{region}", values, None)
    return found


def _run(paths: list[Path], out_dir: Path, models: ModelProvider):  # type: ignore[no-untyped-def]
    return run_analysis(
        paths=paths,
        out_dir=out_dir,
        eligibility=Eligibility(True, True, ()),
        headers=_headers(paths),
        models=models,
        ae_title="LUNGCDS",
    )


def _sr_text(path: Path) -> str:
    """Every text value and code meaning of the SR content tree, flattened."""
    values: list[str] = []

    def walk(items: pydicom.Sequence) -> None:
        for item in items:
            for keyword in ("TextValue", "UID"):
                if keyword in item:
                    values.append(str(item.get(keyword)))
            for sequence in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
                if sequence in item:
                    values.append(str(item[sequence][0].CodeMeaning))
            if "MeasuredValueSequence" in item:
                values.append(str(item.MeasuredValueSequence[0].NumericValue))
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(pydicom.dcmread(path).ContentSequence)
    return "\n".join(values)


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture()
def run_dciodvfy_tool() -> None:
    if shutil.which(DCIODVFY) is None:
        pytest.skip(f"{DCIODVFY} is not installed")


def _groups(sr: pydicom.Dataset) -> list[pydicom.Dataset]:
    """The measurement groups of a TID 1500 SR."""
    return [
        group
        for container in sr.ContentSequence
        if container.ValueType == "CONTAINER" and container.ConceptNameCodeSequence[0].CodeValue == "126010"
        for group in container.ContentSequence
        if group.ValueType == "CONTAINER"
    ]


def _tracking(group: pydicom.Dataset) -> str:
    return next(str(i.TextValue) for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "112039")


def test_demo_weights_run_every_model_and_every_output_says_unvalidated(
    phantom_series: list[Path], tmp_path: Path
) -> None:
    output = run_analysis(
        paths=phantom_series,
        out_dir=tmp_path / "out",
        eligibility=Eligibility(True, True, ()),
        headers=_headers(phantom_series),
        models=small_provider(),
        ae_title="LUNGCDS",
    )
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["corads"]["category"] in range(1, 6) and len(result["corads"]["members"]) == 2
    for name in ("lobes", "lesions", "corads"):
        assert result["models"][name]["status"] == "ran" and result["models"][name]["validated"] is False
    assert {"LUL", "LLL", "RUL", "RML", "RLL"} <= set(result["measurements"])
    assert [s.name for s in output.stages][:3] == ["loading", "lung_mask", "lobes"]
    assert "corads" in [s.name for s in output.stages]

    for name in ("stoic", "i3dr", "stoic_code1055", "stoic_simonj", "stoic_flyingbird", "stoic_hal9000"):
        assert result["models"][name]["status"] == "ran" and result["models"][name]["validated"] is False, name
    assert 0.0 <= result["stoic"]["p_covid"] <= 1.0 and 0.0 <= result["stoic"]["p_severe"] <= 1.0
    assert set(result["stoic"]["members"]) == {"stoic_code1055", "stoic_simonj", "stoic_flyingbird", "stoic_hal9000"}
    lobar = set(result["i3dr"]["lobes"]) == {"LUL", "LLL", "RUL", "RML", "RLL"}
    assert result["i3dr"]["patient"] and (lobar or result["i3dr"]["notes"][0].startswith("no lobar estimates: "))
    assert any("demonstration weights" in note for note in result["i3dr"]["notes"])
    assert {"stoic", "i3dr"} <= {s.name for s in output.stages}

    text = _pdf_text(tmp_path / "out" / "report.pdf")
    pages = text.split("\f")
    assert all("UNVALIDATED" in page for page in pages if page.strip()), "the banner is on every page"
    assert "CO-RADS" in text
    flat = " ".join(text.split())
    assert f"Probability of COVID-19 {result['stoic']['p_covid']:.2f}" in flat
    assert "stoic_hal9000" in flat and "Lung function (I3Dr)" in flat and "I3Dr lung function estimates" in flat
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    assert "UNVALIDATED" in sr.SeriesDescription
    sr_text = _sr_text(tmp_path / "out" / "sr.dcm")
    assert "Probability of COVID-19" in sr_text and "Probability of intubation or death within one month" in sr_text


def test_demo_weights_label_every_learned_number_and_withhold_the_impossible(
    phantom_series: list[Path], tmp_path: Path
) -> None:
    """Issue 14 section 6: provenance next to every learned number; learned masks never under a
    weight-free heading; impossible numbers withheld with the reason, the same in result.json, SR and PDF."""
    _run(phantom_series, tmp_path / "out", small_provider())
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    numbers = _learned_numbers(result)
    assert len(numbers) > 20
    unlabelled = [where for where, validation in numbers if validation != GENERATED]
    assert not unlabelled, f"learned numbers without UNVALIDATED next to them: {unlabelled}"
    for output in ("corads", "stoic", "i3dr", "severity"):
        assert result[output]["provenance"] == "generated_weights" and result[output]["validation"] == GENERATED
    for name in result["stoic"]["members"]:
        assert result["stoic"]["members"][name]["provenance"] == "generated_weights", name
    assert result["measurements"]["lungs"]["provenance"] == "weight_free"
    assert result["measurements"]["lungs"]["validation"] == "weight-free method (no trained weights)"
    lobes = [r for r in ("LUL", "LLL", "RUL", "RML", "RLL") if r in result["measurements"]]
    assert lobes and all(result["measurements"][r]["provenance"] == "generated_weights" for r in lobes)

    sr_text = _sr_text(tmp_path / "out" / "sr.dcm")
    pdf_text = _pdf_text(tmp_path / "out" / "report.pdf")
    everything = json.dumps(result) + sr_text + pdf_text
    assert not re.search(r"UNVALIDATED[^\n]{0,80}method|method[^\n]{0,40}(not|without) clinical", everything), (
        "generated weights are never called a method"
    )

    sections = pdf_text.split("Measurements on learned masks: ")
    assert len(sections) == 2, "one learned heading: the lobe network"
    weight_free = sections[0].split("Measurements (weight-free lung mask)")[1]
    learned = sections[1]
    heading = _flat(learned.split("Region")[0])
    assert heading.startswith("model lobes (version 1.0.0), generated demonstration weights "), heading
    assert GENERATED in heading
    for lobe in ("LUL", "LLL", "RUL", "RML", "RLL"):
        assert f"\n     {lobe} " not in weight_free and f" {lobe} " not in _flat(weight_free), lobe
        assert f" {lobe} " in _flat(learned.split("Model outputs")[0]), lobe

    withheld = [
        w for output in ("i3dr", "severity", "corads", "stoic") for w in result.get(output, {}).get("withheld", [])
    ]
    withheld += [{"reason": v["withheld"]} for v in result["measurements"].values() if v.get("withheld")]
    assert any("is not physiological" in w["reason"] for w in withheld), "the untrained I3Dr gives negative volumes"
    assert any("below the plausible minimum" in w["reason"] for w in withheld), "and lobe fragments"
    flat_pdf = _flat(_pdf_text(tmp_path / "out" / "report.pdf", layout=False))
    for w in withheld:
        assert w["reason"] in sr_text, w["reason"]
        assert w["reason"] in flat_pdf, w["reason"]
    for w in result["i3dr"]["withheld"]:
        if w["site"] == "patient" and w["quantity"]:
            assert result["i3dr"]["patient"][w["quantity"]] is None
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    lungs_group = [g for g in _groups(sr) if _tracking(g) == "lungs"][0]
    estimates = {
        str(item.ConceptNameCodeSequence[0].CodeValue)
        for item in lungs_group.ContentSequence
        if item.ValueType == "NUM"
    }
    for w in result["i3dr"]["withheld"]:
        if w["site"] == "patient":
            assert codes.I3DR_OUTPUT_CODES[w["quantity"]].value not in estimates, w["reason"]


def test_installed_weights_put_their_hash_and_model_card_into_the_outputs(
    phantom_series: list[Path], tmp_path: Path
) -> None:
    weights_file = small_corads().save(tmp_path / "corads_small.safetensors")
    store = WeightStore(tmp_path / "weights")
    installed = store.install(weights_file, "corads")
    provider = ModelProvider(store)
    run_analysis(
        paths=phantom_series,
        out_dir=tmp_path / "out",
        eligibility=Eligibility(True, True, ()),
        headers=_headers(phantom_series),
        models=provider,
        ae_title="LUNGCDS",
    )
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    corads = result["models"]["corads"]
    assert corads["status"] == "ran" and corads["weights_sha256"] == installed.sha256
    assert corads["validated"] is False and "no validation statement recorded" in corads["reason"]
    assert corads["provenance"] == "installed_unvalidated" and corads["weights_origin"].startswith("installed from")
    assert result["corads"]["validation"] == UNVALIDATED_STATEMENTS["installed_unvalidated"]
    assert result["models"]["lobes"]["status"] == "not_installed"
    sr_text = _sr_text(tmp_path / "out" / "sr.dcm")
    pdf_text = _pdf_text(tmp_path / "out" / "report.pdf")
    assert installed.sha256 in sr_text
    assert installed.sha256[:16] in pdf_text.replace("\n", "").replace(" ", "")
    assert UNVALIDATED_STATEMENTS["installed_unvalidated"] in sr_text
    assert "weights without validation statement" in pdf_text, "the banner"
    for text in (json.dumps(result), sr_text, pdf_text):
        assert not re.search(r"generated (demonstration )?weights", text, re.IGNORECASE), "never called generated"


def test_validated_weights_carry_no_unvalidated(phantom_series: list[Path], tmp_path: Path) -> None:
    store = WeightStore(tmp_path / "weights")
    statement = "validated on 200 local chest CTs against two radiologists, QA report 2026-17"
    store.install(small_corads().save(tmp_path / "corads_small.safetensors"), "corads", validation=statement)
    _run(phantom_series, tmp_path / "out", ModelProvider(store))
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["corads"]["provenance"] == "installed_validated"
    assert result["corads"]["validation"] == f"installed weights with a validation statement: {statement}"
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    texts = (json.dumps(result), _sr_text(tmp_path / "out" / "sr.dcm"), _pdf_text(tmp_path / "out" / "report.pdf"))
    for text in (*texts, str(sr.SeriesDescription)):
        assert "UNVALIDATED" not in text
    assert statement in _flat(texts[2])


def test_a_fresh_install_states_the_models_without_a_result_once_and_gives_them_no_group(
    phantom_series: list[Path], tmp_path: Path, run_dciodvfy_tool: None
) -> None:
    """Issue 17 part 2: an SR viewer lists measurement groups; a model that did not run has none and is
    named, with its record's reason, below the one coded item of its status."""
    out = tmp_path / "out"
    _run(phantom_series, out, ModelProvider(None))
    models = json.loads((out / "result.json").read_text())["models"]
    sr = pydicom.dcmread(out / "sr.dcm")
    assert model_groups(sr) == [f"model {name}" for name, run in models.items() if run["status"] == "ran"]
    assert models["corads"]["status"] == "not_installed" and "model corads" not in model_groups(sr)
    summaries = not_run_summaries(sr)
    not_installed = summaries["NOTINSTALLED"]
    stated = [text for texts in summaries.values() for text in texts]
    members = not_installed.pop(next(text for text in not_installed if text.startswith("STOIC2021 (stoic): ")))
    assert sorted(text.split(", ")[0] for text in members) == sorted(
        f"STOIC2021 ({name})" for name in models if name.startswith("stoic_") and models[name]["status"] != "ran"
    ), "the ensemble states its members"
    for name, run in models.items():
        if run["status"] == "ran" or name.startswith("stoic_"):
            continue
        (text,) = [text for text in stated if f"({name}): " in text]
        assert text.endswith(f": {run['reason']}"), text
    assert "install with `lungcds models install`" in " ".join(not_installed)
    validation = run_dciodvfy(out / "sr.dcm")
    assert not validation.errors, "\n".join(validation.errors)


def test_same_inputs_same_uids_one_more_slice_new_uids_that_replace_the_old(
    phantom_series: list[Path], tmp_path: Path, run_dciodvfy_tool: None
) -> None:
    """Issue 14 section 1: one UID never names two contents; a changed analysis references what it replaces."""
    out = tmp_path / "out"
    plain = ModelProvider(None)
    first = _run(phantom_series[:-1], out, plain).result
    again = _run(phantom_series[:-1], out, plain).result
    assert again["outputs"] == first["outputs"] and again["replaces"] == {}
    assert "PredecessorDocumentsSequence" not in pydicom.dcmread(out / "sr.dcm")
    more = _run(phantom_series, out, plain).result
    for kind in ("sr", "seg", "pdf", "sc", "kos"):
        for part in ("sop_instance_uid", "series_instance_uid"):
            assert more["outputs"][kind][part] != first["outputs"][kind][part], (kind, part)
    kinds = ("pdf", "seg", "sr", "sc", "kos")
    assert more["replaces"] == {kind: first["outputs"][kind]["sop_instance_uid"] for kind in kinds}
    sr = pydicom.dcmread(out / "sr.dcm")
    (study,) = sr.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    (document,) = series.ReferencedSOPSequence
    assert document.ReferencedSOPInstanceUID == first["outputs"]["sr"]["sop_instance_uid"]
    assert series.SeriesInstanceUID == first["outputs"]["sr"]["series_instance_uid"]
    assert study.StudyInstanceUID == sr.StudyInstanceUID
    validation = run_dciodvfy(out / "sr.dcm")
    assert not validation.errors, "\n".join(validation.errors)


def test_rest_gives_every_model_and_learned_number_its_provenance(
    phantom_series: list[Path], queued: tuple[int, int, str], settings: Settings, engine: Engine, tmp_path: Path
) -> None:
    """Issue 14 section 6 over REST: ``GET /series/{uid}/result`` of an analysis with generated weights
    names each model's provenance and puts UNVALIDATED next to every learned number, weight-free next to the rest."""
    job_id, _, uid = queued
    _run(phantom_series, tmp_path / "out", small_provider())
    with session_scope(engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(result_dir=str(tmp_path / "out")))  # type: ignore[arg-type]
        key = create_api_key(session, "viewer").secret
    response = TestClient(create_app(settings, engine)).get(
        f"/api/v1/series/{uid}/result", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200
    result = response.json()
    ran = {name: run for name, run in result["models"].items() if run["status"] == "ran"}
    assert {"lung_mask_classical", "lobes", "corads", "stoic", "i3dr"} <= set(ran)
    for name, run in result["models"].items():
        assert (run["provenance"] is not None) == (run["status"] == "ran"), name
    for name, run in ran.items():
        expected = "weight-free method (no trained weights)" if run["provenance"] == "weight_free" else GENERATED
        assert run["provenance"] in ("weight_free", "generated_weights") and run["validation"] == expected, name
    numbers = _learned_numbers(result)
    assert len(numbers) > 20 and {validation for _, validation in numbers} == {GENERATED}
    weight_free = [v for v in result["measurements"].values() if v["provenance"] == "weight_free"]
    assert weight_free and all(v["validation"] == "weight-free method (no trained weights)" for v in weight_free)


def test_learned_masks_give_one_seg_per_layer_each_delivered_as_seg_and_replaced_when_gone(
    phantom_series: list[Path], tmp_path: Path, run_dciodvfy_tool: None
) -> None:
    """Issue 17 part 3: lungs, lobes and lesions are separate SEG instances of one series, named in
    result.json by their keys and all routed as "seg"; a re-run without them replaces and removes them."""
    out = tmp_path / "out"
    learned = _run(phantom_series, out, small_provider())
    result = learned.result
    keys = [o.key for o in learned.dicom_outputs]
    assert keys == ["sr", "seg", "seg_lobes", "seg_lesions", "pdf", "sc", "kos"], "lobes and lesions found"
    assert set(result["outputs"]) == set(keys)
    segs = [o for o in learned.dicom_outputs if o.key.startswith("seg")]
    assert {o.kind for o in segs} == {"seg"} and [o.path.name for o in segs] == [f"{o.key}.dcm" for o in segs]
    assert len({o.series_instance_uid for o in segs}) == 1 and len({o.sop_instance_uid for o in segs}) == 3
    for number, o in enumerate(segs, start=1):
        assert result["outputs"][o.key] == {
            "file": o.path.name,
            "sop_instance_uid": o.sop_instance_uid,
            "series_instance_uid": o.series_instance_uid,
        }
        seg = pydicom.dcmread(o.path)
        assert int(seg.InstanceNumber) == number and seg.SOPInstanceUID == o.sop_instance_uid
        validation = run_dciodvfy(o.path)
        assert not validation.errors, (o.key, "\n".join(validation.errors))
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for study in pydicom.dcmread(out / "sr.dcm").CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert {o.sop_instance_uid for o in segs} <= referenced

    plain = _run(phantom_series, out, ModelProvider(None)).result
    assert set(plain["outputs"]) == {"sr", "seg", "pdf", "sc", "kos"}
    assert not (out / "seg_lobes.dcm").exists() and not (out / "seg_lesions.dcm").exists()
    assert plain["replaces"] == {key: result["outputs"][key]["sop_instance_uid"] for key in keys}
