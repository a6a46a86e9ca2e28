"""etro: the 13 features (geometry, moments, fallbacks, rescaling), the bag, the ConvNeXt input, weights files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from models.stoic.etro import (
    FEATURES,
    RESCALED,
    EtroHeads,
    EtroMember,
    KeepLungComponentsd,
    LesionStatistics,
    age_sex,
    build_convnext_transforms,
    feature_vector,
    itk_moments,
    lesion_statistics,
    severity_statistics,
)
from models.stoic.member import MemberInputs, MemberUnavailable

SMALL: dict[str, Any] = {"depths": (1, 1, 1, 1), "dims": (8, 8, 8, 8), "convnext_input": (32, 32, 32)}


@pytest.fixture(scope="module")
def small() -> EtroMember:
    """The bag of 20 regressions and a one-block-per-stage, 8-channel ConvNeXt on 32^3."""
    return EtroMember.demo(0, **SMALL)


def _bounds(mask: np.ndarray, margin: int) -> list[tuple[int, int]]:
    """ETRO crop_around_mask: per axis [first - margin, last + margin) within the array."""
    out = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        out.append((max(int(present[0]) - margin, 0), min(int(present[-1]) + margin, mask.shape[axis])))
    return out


@pytest.mark.parametrize(
    ("age", "sex", "expected"),
    [(58.0, "M", (0.0, 1.0)), (80.0, "F", (1.5, 0.0)), (31.0, None, (-1.0, 1.0)), (66.5, "O", (0.5, 1.0))],
)
def test_age_is_the_stoic_bin_minus_55_over_20_and_only_female_is_0(
    age: float, sex: str | None, expected: tuple[float, float]
) -> None:
    assert age_sex(age, sex) == pytest.approx(expected)


def test_missing_age_or_lesion_mask_makes_the_member_unavailable(
    small: EtroMember, synthetic_inputs: MemberInputs
) -> None:
    with pytest.raises(MemberUnavailable, match="age unknown"):
        small.predict(replace(synthetic_inputs, age_years=None))
    with pytest.raises(MemberUnavailable, match="no lesion mask"):
        small.predict(replace(synthetic_inputs, lesions=None))
    empty = np.zeros_like(synthetic_inputs.lungs)
    with pytest.raises(MemberUnavailable, match="lung mask is empty"):
        small.predict(replace(synthetic_inputs, lungs=empty, lung_left=empty, lung_right=empty))


def test_moments_match_simpleitk_label_intensity_statistics(rng: np.random.Generator) -> None:
    image = rng.gamma(2.0, 0.2, size=(6, 7, 8)) - 1.0
    labels = rng.integers(1, 4, size=image.shape).astype(np.uint8)
    statistics = sitk.LabelIntensityStatisticsImageFilter()  # type: ignore[no-untyped-call]
    statistics.Execute(sitk.GetImageFromArray(labels), sitk.GetImageFromArray(image))  # type: ignore[no-untyped-call]
    for label in (1, 2, 3):
        mean, kurtosis, skewness = itk_moments(image[labels == label])
        assert mean == pytest.approx(statistics.GetMean(label), rel=1e-9)  # type: ignore[no-untyped-call]
        assert kurtosis == pytest.approx(statistics.GetKurtosis(label), rel=1e-6)  # type: ignore[no-untyped-call]
        assert skewness == pytest.approx(statistics.GetSkewness(label), rel=1e-6)  # type: ignore[no-untyped-call]


def test_fractions_and_the_authors_fallbacks_for_absent_classes() -> None:
    image = np.linspace(-1.0, 1.0, 60).reshape(3, 4, 5)
    labels = np.full(image.shape, 3, dtype=np.uint8)
    labels[0, 0, :3] = 1
    healthy = itk_moments(image[labels == 3])
    stats = lesion_statistics(image, labels)
    assert (stats.fraction_ggo, stats.fraction_cons) == (3 / 60, 0.0)
    # No consolidation: mean -1, kurtosis and skewness of the healthy lung.
    assert (stats.mean_cons, stats.kurtosis_cons, stats.skewness_cons) == (-1.0, healthy[1], healthy[2])
    assert stats.mean_ggo == pytest.approx(image[0, 0, :3].mean())
    only_lesion = lesion_statistics(image, np.full(image.shape, 2, dtype=np.uint8))
    assert (only_lesion.mean_healthy, only_lesion.kurtosis_healthy, only_lesion.skewness_healthy) == (-1.0, 6.1, 2.3)
    assert (only_lesion.kurtosis_ggo, only_lesion.skewness_ggo) == (6.1, 2.3)
    with pytest.raises(MemberUnavailable, match="no lung or lesion voxel"):
        lesion_statistics(image, np.zeros(image.shape, dtype=np.uint8))


def test_feature_vector_orders_13_features_and_rescales_kurtosis_and_skewness_with_training_extrema() -> None:
    stats = LesionStatistics(0.1, 0.02, -0.4, 0.1, -0.7, 2.0, 3.0, 4.0, 0.5, 1.0, 1.5)
    low, high = np.asarray([0.0, 2.0, 3.0, 0.0, 0.5, 1.0]), np.asarray([8.0, 4.0, 5.0, 3.0, 1.5, 2.0])
    vector = feature_vector(stats, 0.5, 1.0, low, high)
    values = dict(zip(FEATURES, vector.tolist(), strict=True))
    assert len(vector) == 13 and list(FEATURES[:4]) == ["age", "sex", "fraction_ggo", "fraction_cons"]
    assert (values["age"], values["sex"], values["fraction_ggo"], values["mean_healthy"]) == (0.5, 1.0, 0.1, -0.7)
    # RESCALED order: kurtosis healthy, ggo, cons; skewness healthy, ggo, cons.
    assert list(RESCALED[:2]) == ["kurtosis_healthy", "kurtosis_ggo"]
    assert values["kurtosis_healthy"] == pytest.approx(2 * (4.0 - 0.0) / 8.0 - 1)  # 0
    assert values["kurtosis_ggo"] == pytest.approx(-1.0) and values["kurtosis_cons"] == pytest.approx(-1.0)
    assert values["skewness_healthy"] == pytest.approx(2 * 1.5 / 3.0 - 1)
    assert values["skewness_ggo"] == pytest.approx(-1.0) and values["skewness_cons"] == pytest.approx(-1.0)


def test_bag_probability_is_the_mean_of_the_regressions_sigmoids() -> None:
    coef = np.zeros((3, 13))
    coef[:, 0] = [1.0, -2.0, 0.5]
    heads = EtroHeads(coef, np.asarray([0.0, 1.0, -1.0]), np.zeros(6), np.ones(6))
    x = np.zeros(13)
    x[0] = 2.0
    expected = np.mean(1 / (1 + np.exp(-np.asarray([2.0, -3.0, 0.0]))))
    assert heads.probability(x) == pytest.approx(expected)
    with pytest.raises(ValueError, match="maximum"):
        EtroHeads(coef, np.zeros(3), np.ones(6), np.ones(6))


def test_synthetic_geometry_crop_plus_5_voxels_then_1_mm(synthetic_inputs: MemberInputs) -> None:
    statistics, lungs, record, notes = severity_statistics(synthetic_inputs)
    bounds = _bounds(lungs, 5)
    assert record["crop"] == tuple(bounds)
    spacing = synthetic_inputs.volume.geometry.spacing
    expected = tuple(int(round((hi - lo) * s)) for (lo, hi), s in zip(bounds, spacing, strict=True))
    assert record["resampled_shape"] == expected
    # Lesion burden of the synthetic case, measured at 1 mm, close to the voxel ratio on the 5 x 3 x 3 mm grid.
    lesions = synthetic_inputs.lesions
    assert lesions is not None
    ratio = lesions.sum() / (lesions | synthetic_inputs.lungs).sum()
    assert statistics.fraction_ggo + statistics.fraction_cons == pytest.approx(ratio, abs=0.02)
    assert statistics.fraction_cons > 0  # the case has +20 HU consolidation blobs
    assert -1.0 <= statistics.mean_healthy < statistics.mean_ggo < statistics.mean_cons <= 1.0
    assert any("-300 HU" in note for note in notes)


def test_lung_postprocessing_keeps_a_second_component_only_from_100000_voxels() -> None:
    mask = np.zeros((10, 10, 30), dtype=bool)
    mask[2:8, 2:8, 2:12] = True  # 360 voxels
    mask[2:8, 2:8, 15:20] = True  # 180 voxels
    assert KeepLungComponentsd(["m"], min_second=100)({"m": mask})["m"].sum() == 540
    assert KeepLungComponentsd(["m"], min_second=200)({"m": mask})["m"].sum() == 360


def test_convnext_input_is_the_lung_only_ct_cropped_and_padded(synthetic_inputs: MemberInputs) -> None:
    lungs = synthetic_inputs.lungs
    out = build_convnext_transforms((40, 80, 72))({"image": synthetic_inputs.volume.hu, "lungs": lungs})
    image = out["image"]
    assert tuple(image.shape) == (3, 40, 80, 72) and torch.equal(image[0], image[2])
    (z0, z1), (y0, y1), (x0, x1) = out["record"]["convnext_crop"]
    present = np.flatnonzero(lungs.any(axis=(1, 2)))
    assert (z0, z1) == (int(present[0]), int(present[-1]))  # the last lung slice excluded, as coded
    cropped = (z1 - z0, y1 - y0, x1 - x0)
    before = [(t - n) // 2 for t, n in zip((40, 80, 72), cropped, strict=True)]
    assert image[0, : before[0]].abs().sum() == 0  # zero padding
    inner = image[
        0, before[0] : before[0] + cropped[0], before[1] : before[1] + cropped[1], before[2] : before[2] + cropped[2]
    ]
    lung = torch.from_numpy(lungs[z0:z1, y0:y1, x0:x1])
    hu = torch.from_numpy(synthetic_inputs.volume.hu[z0:z1, y0:y1, x0:x1])
    assert torch.allclose(inner[~lung], torch.tensor(1150.0 / 1500.0))  # 0 HU outside the lungs
    assert torch.allclose(inner[lung], ((hu[lung] + 1150.0) / 1500.0).clamp(0, 1), atol=1e-6)


def test_real_series_features(small: EtroMember, real_inputs: MemberInputs) -> None:
    prepared = small.preprocess(real_inputs)
    assert prepared.features.shape == (13,) and np.isfinite(prepared.features).all()
    assert prepared.features[0] == 0.0 and prepared.features[1] == 1.0  # 58 y -> bin 55; male
    assert 0.0 < prepared.statistics.fraction_ggo + prepared.statistics.fraction_cons < 1.0
    assert prepared.convnext is not None and tuple(prepared.convnext.shape) == (3, 32, 32, 32)
    geometry = real_inputs.volume.geometry
    bounds = prepared.record["crop"]
    assert prepared.record["resampled_shape"] == tuple(
        int(round((hi - lo) * s)) for (lo, hi), s in zip(bounds, geometry.spacing, strict=True)
    )


def test_predict_combines_the_bag_and_the_convnext_softmax(small: EtroMember, synthetic_inputs: MemberInputs) -> None:
    prepared = small.preprocess(synthetic_inputs)
    output = small.predict(synthetic_inputs)
    logits = 1 / (1 + np.exp(-(small.heads.coef @ prepared.features + small.heads.intercept)))
    assert output.p_severe == pytest.approx(float(np.mean(logits)))
    assert small.convnext is not None and prepared.convnext is not None
    with torch.no_grad():
        scores = small.convnext(prepared.convnext[None]).double()[0]
    assert output.p_covid == pytest.approx(float(torch.exp(scores[1]) / torch.exp(scores).sum()))
    assert output.details["age"] == 0.0 and set(output.details) == set(FEATURES)


def test_demo_weights_round_trip_and_a_file_without_convnext(
    small: EtroMember, synthetic_inputs: MemberInputs, tmp_path: Path
) -> None:
    assert small.card["demo"] is True and small.card["member"] == "stoic_etro"
    loaded = EtroMember.from_safetensors(small.save(tmp_path / "etro.safetensors"))
    assert loaded.card == small.card and loaded.predict(synthetic_inputs) == small.predict(synthetic_inputs)
    bag_only = EtroMember.from_safetensors(EtroMember.demo(0, convnext=False).save(tmp_path / "bag.safetensors"))
    output = bag_only.predict(synthetic_inputs)
    assert output.p_covid is None and output.p_severe == small.predict(synthetic_inputs).p_severe
    assert any("no ConvNeXt" in note for note in output.notes)
