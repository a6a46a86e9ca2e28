"""``lungcds train`` and ``lungcds bench``: arguments checked before any work, results printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from server.cli.main import app

runner = CliRunner()


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "cases.csv"
    path.write_text("image,covid,severe\n")
    return path


def test_bench_i3dr_digits_prints_one_json_line() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = runner.invoke(app, ["bench", "i3dr-digits", "--bag-size", "2", "--steps", "40"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    body = json.loads(lines[0])
    assert body["bag_size"] == 2 and body["fixed_bags"] is False
    assert 0.0 <= body["digit_accuracy"] <= 1.0 and body["digit_mae"] >= 0.0


def test_bench_i3dr_digits_fixed_bags_follows_the_thesis_protocol() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = runner.invoke(app, ["bench", "i3dr-digits", "--bag-size", "4", "--steps", "20", "--fixed-bags"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout.strip())
    assert body["fixed_bags"] is True and body["bag_size"] == 4 and body["steps"] == 20


def test_bench_i3dr_digits_help_calls_it_an_analogue() -> None:
    result = runner.invoke(app, ["bench", "i3dr-digits", "--help"])
    assert result.exit_code == 0
    assert "analogue" in result.stdout and "--fixed-bags" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--member", "stoic_nope"], "not a STOIC2021 member"),
        (["--member", "stoic_simonj"], "stoic_simonj needs backbone"),
        (["--member", "stoic_hal9000", "--set", "epochs"], "--set needs KEY=VALUE"),
        (["--member", "stoic_hal9000", "--set", "epoch=3"], "has no setting 'epoch'"),
    ],
)
def test_train_stoic_refuses_bad_arguments_with_the_reason(
    csv_file: Path, tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = runner.invoke(app, ["train", "stoic", str(csv_file), "--out", str(tmp_path / "out"), *arguments])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()


def test_train_i3dr_refuses_an_unknown_model(csv_file: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "i3dr", str(csv_file), "--model", "c", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--model must be a or b" in result.output


def test_train_stoic_runs_the_member_recipe_and_says_how_to_install(tmp_path: Path) -> None:
    from models.stoic.etro import EtroMember
    from tests.models.stoic.synthetic import write_training_set

    (tmp_path / "cases").mkdir()
    data = write_training_set(tmp_path / "cases", seed=3, train=16, test=2)
    out = tmp_path / "out"
    result = runner.invoke(app, ["train", "stoic", str(data.train_csv), "--member", "stoic_etro", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = out / "stoic_etro.safetensors"
    assert f"lungcds models install {written} --name stoic_etro" in " ".join(result.output.split())
    member = EtroMember.from_safetensors(written)
    assert member.convnext is None, "without --set convnext_from the member gives no P(COVID-19)"
