"""``lungcds models install`` of an authors' folder, ``models formats`` and ``models verify``."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from models.stoic.flyingbird import TASKS, FlyingBirdConfig, StoicFlyingBird
from server.cli.main import app
from tests.models.published.layouts import authors_names, distinct_state

runner = CliRunner()


def _flyingbird_folder(root: Path) -> Path:
    names = authors_names("flyingbird_resnet")
    for task in TASKS:
        for split in range(5):
            folder = root / f"weight_{task}" / f"split{split}"
            folder.mkdir(parents=True)
            torch.save({"state_dict": distinct_state(names, split)}, folder / f"{task}_best.pkl")
    return root


def test_an_authors_folder_installs_without_naming_it(env: Path, tmp_path: Path) -> None:
    folder = _flyingbird_folder(tmp_path / "classification")
    result = runner.invoke(app, ["models", "install", str(folder)])
    assert result.exit_code == 0, result.output
    assert "installed stoic_flyingbird from flyingbird-folds" in result.output
    assert result.output.count("NOT a published file's bytes") == 10
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
    row = next(r for r in listed if r["name"] == "stoic_flyingbird")
    assert row["weights_sha256"] is not None
    assert row["origin"] == (
        "imported from https://github.com/DIAGNijmegen/stoic2021-finalphase-submission-flyingbird "
        "(flyingbird-folds, 10 files, NOT the published files' bytes (trained or changed elsewhere); licence MIT)"
    )
    manifest = json.loads((env / "weights" / "stoic_flyingbird" / "manifest.json").read_text())
    assert manifest["origin"]["format"] == "flyingbird-folds" and len(manifest["origin"]["files"]) == 10
    assert manifest["source_filename"] == "classification"


def test_the_wrong_name_or_no_layout_is_refused(env: Path, tmp_path: Path) -> None:
    folder = _flyingbird_folder(tmp_path / "classification")
    wrong = runner.invoke(app, ["models", "install", str(folder), "--name", "stoic_simonj"])
    assert wrong.exit_code == 2 and "installs stoic_flyingbird, not stoic_simonj" in wrong.output
    other = tmp_path / "weights.bin"
    other.write_bytes(b"not a checkpoint")
    unnamed = runner.invoke(app, ["models", "install", str(other)])
    assert unnamed.exit_code == 2 and "needs --name" in unnamed.output
    unknown = runner.invoke(app, ["models", "install", str(folder), "--format", "nonesuch"])
    assert unknown.exit_code == 2 and "unknown format 'nonesuch'" in unknown.output


def test_formats_lists_each_published_file_with_its_hash(env: Path) -> None:
    result = runner.invoke(app, ["models", "formats", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["format"]: row for row in json.loads(result.stdout)}
    flyingbird = rows["flyingbird-folds"]
    assert flyingbird["model"] == "stoic_flyingbird" and flyingbird["licence"] == "MIT"
    assert len(flyingbird["files"]) == 10 and all(len(f["sha256"]) == 64 for f in flyingbird["files"])


def test_verify_runs_an_installed_member_on_the_phantom_and_detects_a_changed_file(env: Path, tmp_path: Path) -> None:
    config = FlyingBirdConfig(shape=(32, 32, 32), folds=1)
    member = StoicFlyingBird.trained(
        config,
        {task: [StoicFlyingBird.build_network(config, task)] for task in TASKS},
        weights="a small test member",
    )
    path = member.save(tmp_path / "small.safetensors")
    assert runner.invoke(app, ["models", "install", str(path), "--name", "stoic_flyingbird"]).exit_code == 0
    first = runner.invoke(app, ["models", "verify", "stoic_flyingbird", "--json"])
    assert first.exit_code == 0, first.output
    document = json.loads(first.stdout)
    assert document["intact"] and document["status"] == "ran"
    assert 0.0 <= document["outputs"]["p_covid"] <= 1.0 and 0.0 <= document["outputs"]["p_severe"] <= 1.0
    assert "not a clinical result" in document["note"]
    again = json.loads(runner.invoke(app, ["models", "verify", "stoic_flyingbird", "--json"]).stdout)
    assert again["output_digest"] == document["output_digest"]
    installed = next((env / "weights" / "stoic_flyingbird").glob("*.safetensors"))
    installed.write_bytes(installed.read_bytes()[:-1] + b"\x00")
    changed = runner.invoke(app, ["models", "verify", "stoic_flyingbird"])
    assert changed.exit_code == 1 and "CHANGED since installation" in changed.stdout
    assert runner.invoke(app, ["models", "verify", "stoic_code1055"]).exit_code == 2
