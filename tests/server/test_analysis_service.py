"""One analysis with learned models: their results reach result.json, the SR and the PDF."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
import torch

from dicom_node.validation import parse_instance
from models.runtime import ModelProvider
from models.weights import WeightStore
from server.routing.rules import Eligibility
from server.services.analysis import run_analysis
from tests.small_models import small_corads, small_provider


def _headers(paths: list[Path]):  # type: ignore[no-untyped-def]
    return [parse_instance(p)[1] for p in paths]


def _pdf_text(path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True).stdout


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
    assert result["models"]["lobes"]["status"] == "not_installed"
    assert installed.sha256 in _sr_text(tmp_path / "out" / "sr.dcm")
    assert installed.sha256[:16] in _pdf_text(tmp_path / "out" / "report.pdf").replace("\n", "").replace(" ", "")
