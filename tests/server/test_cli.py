"""The ``lungcds`` command line: analyze exit codes and outputs, import, apikey, models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from models.registry import STOIC_MEMBERS
from server.cli.main import app
from server.core.db import make_engine
from server.db_models import AuditEvent, Series
from tests.peers import SHARED_DATA

runner = CliRunner()


def test_analyze_writes_every_contract_file(env: Path, phantom_series: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", str(phantom_series[0].parent), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {
        "result.json",
        "sr.dcm",
        "seg.dcm",
        "report.pdf",
        "report_pdf.dcm",
        "key_images_sc.dcm",
        "key_objects.dcm",
    }
    body = json.loads((out / "result.json").read_text())
    assert body["eligibility"] == {"eligible": True, "reasons": []}
    lungs_and_zones = {"lungs", "lung_left", "lung_right", "RU", "RM", "RL", "LU", "LM", "LL", "core", "rind"}
    assert set(body["measurements"]) == lungs_and_zones
    assert body["followup"]["reasons"] == ["offline analysis: no history of this patient to compare with"]
    for key in ("volume_ml", "fpv_ml", "laa950_pct", "perc15_hu", "mean_hu", "haa_pct", "mass_g"):
        assert body["measurements"]["lungs"][key] is not None
    assert body["models"]["stoic"]["status"] == "not_installed" and body["models"]["stoic"]["validated"] is False
    sr = pydicom.dcmread(out / "sr.dcm")
    assert sr.StudyInstanceUID == pydicom.dcmread(phantom_series[0], stop_before_pixels=True).StudyInstanceUID
    assert body["outputs"]["sr"]["sop_instance_uid"] == sr.SOPInstanceUID


def test_analyze_is_deterministic_about_output_uids(env: Path, phantom_series: list[Path], tmp_path: Path) -> None:
    uids = []
    for name in ("a", "b"):
        assert (
            runner.invoke(app, ["analyze", str(phantom_series[0].parent), "--out", str(tmp_path / name)]).exit_code == 0
        )
        uids.append(json.loads((tmp_path / name / "result.json").read_text())["outputs"])
    assert uids[0] == uids[1], "a re-run replaces the earlier objects instead of duplicating them"


def test_analyze_exit_2_with_reasons_when_ineligible(
    env: Path, phantom_series: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LUNGCDS_MAX_SLICE_THICKNESS_MM", "2.0")
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", str(phantom_series[0].parent), "--out", str(out)])
    assert result.exit_code == 2
    assert "slice thickness 2.5 mm exceeds 2.0 mm" in result.output
    assert json.loads((out / "result.json").read_text())["eligibility"]["eligible"] is False
    assert not (out / "sr.dcm").exists()


def test_analyze_exit_1_for_a_folder_without_valid_dicom(env: Path, tmp_path: Path) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "truncated.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    result = runner.invoke(app, ["analyze", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "no valid DICOM instance" in result.output
    assert "refused notes.txt" in result.output


def test_analyze_refuses_the_empty_uid_series(env: Path, tmp_path: Path) -> None:
    folder = SHARED_DATA / "ct" / "abdomen-jpeg2000-3mm"
    if not folder.is_dir():
        pytest.skip(f"real CT data not found at {folder}")
    result = runner.invoke(app, ["analyze", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "SOP Class UID (0008,0016) is empty" in result.output


def test_analyze_asks_which_series_when_a_folder_has_two(env: Path, phantom_series: list[Path], tmp_path: Path) -> None:
    from models.phantom import chest_phantom, write_ct_series

    folder = tmp_path / "two"
    shutil.copytree(phantom_series[0].parent, folder / "a")
    phantom = chest_phantom(shape_zyx=(72, 96, 96), spacing_zyx=(2.5, 3.5, 3.5), seed=1)
    write_ct_series(
        phantom,
        phantom.geometry,
        folder / "b",
        patient_id="P2",
        patient_name="B^B",
        patient_age="040Y",
        patient_sex="F",
        slice_thickness=2.5,
    )
    result = runner.invoke(app, ["analyze", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "holds 2 series" in result.output


def test_import_goes_through_validation_and_routing(env: Path, phantom_series: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    shutil.copytree(phantom_series[0].parent, folder)
    (folder / "garbage.dcm").write_bytes(b"garbage")
    result = runner.invoke(app, ["import", str(folder)])
    assert result.exit_code == 0, result.output
    assert "refused garbage.dcm" in result.output
    with Session(make_engine(f"sqlite:///{env / 'lungcds.db'}")) as session:
        series = session.exec(select(Series)).one()
    assert series.state == "queued" and series.instance_count == len(phantom_series)
    assert series.completion_trigger == "folder import"
    assert len(list((env / "spool").rglob("*.dcm"))) == len(phantom_series)
    with Session(make_engine(f"sqlite:///{env / 'lungcds.db'}")) as session:
        [refusal] = session.exec(select(AuditEvent).where(AuditEvent.outcome == "refused")).all()
    assert (refusal.action, refusal.source, refusal.detail["file"]) == ("import", str(folder), "garbage.dcm")
    assert refusal.detail["status"] == "0xC000" and "could not parse" in refusal.detail["reason"]


def test_apikey_create_prints_the_key_once(env: Path) -> None:
    result = runner.invoke(app, ["apikey", "create", "--role", "viewer"])
    assert result.exit_code == 0
    secret = result.stdout.strip().splitlines()[-1]
    assert secret.startswith("lcds_") and len(secret) > 40
    listing = runner.invoke(app, ["apikey", "list"])
    assert secret not in listing.output and "viewer" in listing.output
    assert runner.invoke(app, ["apikey", "create", "--role", "root"]).exit_code == 2


def test_models_list_and_install(env: Path, tmp_path: Path) -> None:
    listing = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    names = {row["name"] for row in listing}
    assert {"lung_mask_classical", "corads", "stoic", "i3dr", "lobes", "lesions"} <= names
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"\x00" * 1000)
    assert runner.invoke(app, ["models", "install", str(weights), "--name", "nonsense"]).exit_code == 2
    installed = runner.invoke(app, ["models", "install", str(weights), "--name", "corads"])
    assert installed.exit_code == 0, installed.output
    rows = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    corads = next(r for r in rows if r["name"] == "corads")
    assert corads["weights_sha256"] == "541b3e9daa09b20bf85fa273e5cbd3e80185aa4ec298e765db87742b70138a53"


def test_models_summary_json_reproduces_table_3_3(env: Path) -> None:
    result = runner.invoke(app, ["models", "summary", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    zoo = [row for row in rows.values() if row["source"].startswith("thesis Table 3.3")]
    assert len(zoo) == 14
    for row in zoo:
        assert abs(row["parameters_relative_difference"]) < 0.005, row["name"]
        assert abs(row["flops_relative_difference"]) < 0.01, row["name"]
    assert rows["densenet201_3d"]["input_shape"] == [3, 128, 240, 240]
    nnunet = rows["lesion_nnunet"]
    assert abs(nnunet["parameters"] / nnunet["published_parameters"] - 1) < 0.005
    members = {row["member"] for row in rows.values() if "member" in row}
    assert members == set(STOIC_MEMBERS)
    for name, computed in (
        ("stoic_code1055_convnext_tiny_3d", 31.9e6),
        ("stoic_flyingbird_resnet18_half", 8.30e6),
        ("stoic_baseline_i3d_backbone", 12_287_264),
    ):
        assert abs(rows[name]["parameters"] / computed - 1) < 0.01, name
    assert rows["stoic_simonj_vit_l16_full_24_blocks"]["parameters"] == 303_299_584
    assert rows["i3dr_model_a"]["parameters"] == 12_287_264 + 1024 * 7 + 7
    assert rows["i3dr_model_b"]["forward_passes_per_prediction"] == 5


def test_models_summary_says_where_every_reference_count_comes_from(env: Path) -> None:
    result = runner.invoke(app, ["models", "summary", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    published = {name for name, row in rows.items() if row["reference_parameters_kind"] == "published"}
    computed = {name for name, row in rows.items() if row["reference_parameters_kind"] == "computed_from_authors_code"}
    assert {row["reference_parameters_kind"] for row in rows.values()} <= {
        "published",
        "computed_from_authors_code",
        "none",
    }
    # Only thesis Table 3.3 and the lesion nnU-Net of thesis 3.4.5 print a count.
    assert published == {row["name"] for row in rows.values() if row["source"].startswith("thesis Table 3.3")} | {
        "lesion_nnunet"
    }
    # Issue 16: the counts the developers computed are never labelled published, and I3Dr counts its head once.
    assert computed == {
        "stoic_baseline_i3d_backbone",
        "stoic_code1055_convnext_tiny_3d",
        "stoic_flyingbird_resnet18_half",
        "i3dr_model_a",
        "i3dr_model_b",
    }
    for name, row in rows.items():
        assert (row["published_parameters"] is not None) == (name in published), name
        assert (row["reference_parameters"] is None) == (row["reference_parameters_kind"] == "none"), name
        if row["reference_parameters"] is not None:
            assert row["reference_parameters_source"], name
            assert abs(row["parameters_relative_difference"]) < 0.01, name
    assert rows["i3dr_model_a"]["reference_parameters"] == 12_287_264 + 1024 * 7 + 7
    assert rows["lobe_unet"]["source"].startswith("reconstruction")
    assert rows["lesion_nnunet"]["source"].startswith("reconstruction")
    table = runner.invoke(app, ["models", "summary"])
    assert table.exit_code == 0 and "12.29 code" in table.stdout and "25.33 pub" in table.stdout


def test_models_install_refuses_control_characters_in_the_validation_statement(env: Path, tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"\x00" * 1000)
    refused = runner.invoke(
        app, ["models", "install", str(weights), "--name", "corads", "--validation", "ok\n[oops\x1b[2J"]
    )
    assert refused.exit_code == 2 and "control character U+000A" in refused.output
    rows = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    assert next(r for r in rows if r["name"] == "corads")["weights_sha256"] is None
