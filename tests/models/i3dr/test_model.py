"""Models A and B (thesis 2.3.1): sizes, argument checks and the sum/linear swap."""

from __future__ import annotations

import pytest
import torch

from models.i3dr import summary as i3dr_summary
from models.i3dr.model import (
    NUM_LOBES,
    OUTPUTS,
    BackboneSpec,
    RegionSumRegressor,
    SmallBackbone3d,
    build_model_a,
    build_model_b,
)
from models.zoo import count_parameters
from tests.models.i3dr.conftest import SMALL_BACKBONE

#: Models spec section 5: I3D without its final layer.
I3D_BACKBONE_PARAMETERS = 12_287_264
#: Linear(1024 -> 7): 1024 x 7 weights and 7 biases.
HEAD_PARAMETERS = 1024 * 7 + 7


def test_i3d_backbone_and_head_parameter_counts() -> None:
    with torch.device("meta"):
        a = build_model_a()
        b = build_model_b()
    assert count_parameters(a.backbone) == I3D_BACKBONE_PARAMETERS
    assert count_parameters(a.head) == HEAD_PARAMETERS == count_parameters(b.head)
    assert count_parameters(b) == I3D_BACKBONE_PARAMETERS + HEAD_PARAMETERS  # one backbone shared by five lobes
    assert (a.num_regions, b.num_regions, a.num_features, a.num_outputs) == (1, NUM_LOBES, 1024, len(OUTPUTS))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_swapped_form_sums_to_training_form(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = build_model_b(SMALL_BACKBONE).to(dtype)
    with torch.no_grad():
        model.head.bias.uniform_(-3.0, 3.0)  # a bias far from 0, so splitting it by 5 matters
    x = torch.rand(3, NUM_LOBES, 3, 16, 16, 16, dtype=dtype)
    with torch.no_grad():
        training_form = model(x)
        per_lobe = model.region_outputs(x)
        features = model.features(x)
        by_hand = features.sum(dim=1) @ model.head.weight.T + model.head.bias
    assert per_lobe.shape == (3, NUM_LOBES, len(OUTPUTS))
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(per_lobe.sum(dim=1), training_form, rtol=tolerance, atol=tolerance)
    torch.testing.assert_close(training_form, by_hand, rtol=tolerance, atol=tolerance)
    # Each lobe's estimate depends on that lobe only: W f(x_l) + b / 5.
    torch.testing.assert_close(
        per_lobe[:, 2],
        features[:, 2] @ model.head.weight.T + model.head.bias / NUM_LOBES,
        rtol=tolerance,
        atol=tolerance,
    )


def test_model_a_is_the_one_region_case() -> None:
    torch.manual_seed(1)
    model = build_model_a(SMALL_BACKBONE)
    x = torch.rand(2, 1, 3, 16, 16, 16)
    with torch.no_grad():
        expected = model.head(model.backbone(x[:, 0]))
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model.region_outputs(x)[:, 0], expected)


def test_arguments_are_validated() -> None:
    backbone = SmallBackbone3d(3, (4,))
    with pytest.raises(ValueError, match="positive"):
        RegionSumRegressor(backbone, 4, 7, 0)
    with pytest.raises(ValueError, match="positive"):
        SmallBackbone3d(3, ())
    with pytest.raises(ValueError, match="unknown backbone"):
        BackboneSpec("resnet9000")
    model = RegionSumRegressor(backbone, 4, 7, NUM_LOBES)
    with pytest.raises(ValueError, match=r"\(N, 5, C"):
        model(torch.rand(1, 4, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="features"):
        model.outputs_from_features(torch.rand(1, 5, 3))


def test_backbone_spec_round_trips_and_builds() -> None:
    spec = BackboneSpec("small_3d", {"widths": (4, 8)})
    assert BackboneSpec.from_dict(spec.as_dict()).as_dict() == spec.as_dict()
    network = BackboneSpec.from_dict(spec.as_dict())()
    assert isinstance(network, SmallBackbone3d) and network.num_features == 8
    assert network(torch.rand(2, 3, 16, 16, 16)).shape == (2, 8)


def test_package_exports_resolve() -> None:
    import models.i3dr as package

    assert all(getattr(package, name) is not None for name in package.__all__)
    assert dict(package.OUTPUT_UNITS) == {**dict.fromkeys(OUTPUTS, "L"), "dlco": "mL/min/mmHg"}
    with pytest.raises(AttributeError, match="no attribute"):
        package.__getattr__("unknown_name")


def test_summary_counts_the_head_once_against_a_computed_reference() -> None:
    rows = {row["name"]: row for row in i3dr_summary()}
    assert set(rows) == {"i3dr_model_a", "i3dr_model_b"}
    for row in rows.values():
        # Table 3.3's 12.29 M already holds a 5-way head: the reference is the bare backbone + 1 head.
        assert row["parameters"] == row["reference_parameters"] == I3D_BACKBONE_PARAMETERS + HEAD_PARAMETERS
        assert row["reference_parameters_kind"] == "computed_from_authors_code"
        assert row["published_parameters"] is None and row["parameters_relative_difference"] == 0.0
    assert rows["i3dr_model_b"]["forward_passes_per_prediction"] == NUM_LOBES
