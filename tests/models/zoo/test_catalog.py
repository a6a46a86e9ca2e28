"""Thesis Table 3.3 reproduced by the zoo: parameters within 0.5 %, FLOPs within 1 %, all 14 networks."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from models.zoo import TABLE_3_3, build, build_features, count_parameters, names, summary
from models.zoo.catalog import I3D_BACKBONE_PARAMETERS, NO_REFERENCE, ParameterReference


@pytest.fixture(scope="module")
def rows() -> dict[str, dict[str, Any]]:
    """``summary()`` by name (meta-device counting of all 14 networks, a few seconds)."""
    return {row["name"]: row for row in summary()}


def test_names_are_the_fourteen_of_table_3_3() -> None:
    assert sorted(names()) == sorted(TABLE_3_3)
    assert len(names()) == 14
    assert {name.rsplit("_", 1)[1] for name in names()} == {"2d", "3d"}


@pytest.mark.parametrize("name", sorted(TABLE_3_3))
def test_parameters_reproduce_table_3_3(rows: dict[str, dict[str, Any]], name: str) -> None:
    row = rows[name]
    assert abs(row["parameters_relative_difference"]) < 0.005, row
    # The printed values have two decimals: ours must round to them, which is far stricter.
    assert round(row["parameters_table_convention"] / 1e6, 2) == pytest.approx(TABLE_3_3[name].parameters_millions)


@pytest.mark.parametrize("name", sorted(TABLE_3_3))
def test_flops_reproduce_table_3_3(rows: dict[str, dict[str, Any]], name: str) -> None:
    row = rows[name]
    assert row["input_shape"] == [3, 128, 240, 240]
    assert abs(row["flops_relative_difference"]) < 0.01, row
    assert round(row["flops"] / 1e11, 2) == pytest.approx(TABLE_3_3[name].flops_e11)


def test_2d_counts_leave_out_batchnorm_and_3d_counts_include_it(rows: dict[str, dict[str, Any]]) -> None:
    # torchvision's DenseNet-121 has 83 648 BatchNorm affine parameters (models spec section 2).
    dense_2d = rows["densenet121_2d"]
    assert dense_2d["parameters"] - dense_2d["parameters_table_convention"] == 83_648
    for name, row in rows.items():
        if name.endswith("_3d"):
            assert row["parameters"] == row["parameters_table_convention"]


def test_every_row_names_its_published_reference(rows: dict[str, dict[str, Any]]) -> None:
    for name, row in rows.items():
        published = round(TABLE_3_3[name].parameters_millions * 1e6)
        assert row["reference_parameters"] == row["published_parameters"] == published, name
        assert row["reference_parameters_kind"] == "published"
        assert row["reference_parameters_source"] == "thesis Table 3.3"


def test_parameter_reference_keeps_published_and_computed_apart() -> None:
    published = ParameterReference.published(1000, "thesis Table 3.3").fields(1010)
    assert published["published_parameters"] == published["reference_parameters"] == 1000
    assert published["parameters_relative_difference"] == pytest.approx(0.01)
    computed = ParameterReference.computed(1000, "authors' model.py, counted by us").fields(990)
    assert computed["published_parameters"] is None and computed["reference_parameters"] == 1000
    assert computed["reference_parameters_kind"] == "computed_from_authors_code"
    assert computed["parameters_relative_difference"] == pytest.approx(-0.01)
    empty = NO_REFERENCE.fields(5)
    assert empty["reference_parameters_kind"] == "none"
    assert empty["reference_parameters"] is empty["published_parameters"] is empty["parameters_relative_difference"]
    assert empty["parameters_relative_difference"] is None


@pytest.mark.parametrize(
    ("count", "kind", "source"),
    [(None, "published", "thesis"), (10, "none", None), (10, "computed_from_authors_code", None)],
)
def test_parameter_reference_refuses_inconsistent_fields(count: int | None, kind: Any, source: str | None) -> None:
    with pytest.raises(ValueError):
        ParameterReference(count, kind, source)


def test_summary_is_json_for_the_cli(rows: dict[str, dict[str, Any]]) -> None:
    text = json.dumps(list(rows.values()))
    assert json.loads(text)[0].keys() == rows[names()[0]].keys()


def test_published_deployed_member_and_i3d_backbone_sizes() -> None:
    with torch.device("meta"):
        member = build("densenet201_3d", num_outputs=1)
        i3d = build("inception_v1_3d")
        backbone = build_features("inception_v1_3d")
    # Models spec section 2: 25 320 193 parameters with one output; section 5: I3D backbone
    # 12 287 264 parameters, and 12 292 389 with the 5-output logits layer.
    assert count_parameters(member) == 25_320_193
    assert count_parameters(backbone) == 12_287_264 == I3D_BACKBONE_PARAMETERS
    assert count_parameters(i3d) == 12_292_389


def test_unknown_names_and_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build("densenet264_3d")
    with pytest.raises(ValueError, match="num_outputs"):
        build("resnet18_3d", num_outputs=0)
    with pytest.raises(TypeError):
        build("resnet18_3d", no_such_option=1)
