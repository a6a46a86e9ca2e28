"""Fuzzing (issue 9): malformed instances and inconsistent series, generated with hypothesis.

Every generated instance goes through what the SCP and folder import do with a received file
(parse, validate, durable spool write) and, when accepted, through what routing and the worker
do with it (eligibility rules, volume assembly). The properties:

* an instance is either stored byte for byte with valid identifying UIDs, or refused with a
  C-STORE failure status and a reason in words; no other exception, no hang (deadline);
* once stored, eligibility answers with reasons and the volume loader either builds a volume
  with finite voxels and geometry or raises :class:`~models.volume.VolumeError` with a message;
* a series that eligibility accepts can be assembled into a volume: whatever would stop the
  analysis is refused with its reason when the series is finalised, not discovered by a worker.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_node.spool import Spool
from dicom_node.statuses import CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS
from dicom_node.validation import InvalidInstance, check_uid
from models.volume import VolumeError, load_series
from server.routing.rules import EligibilityRules, evaluate, load_rules
from tests.fuzz_dicom import SERIES_EDITS, Malformed, encode, malformed_instances, slice_of_series

# pydicom warns about every malformed value it reads; here that is the point.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")

FUZZ = settings(
    max_examples=300,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@pytest.fixture(scope="module")
def small_series_rules() -> EligibilityRules:
    """The default rules, with slice count and coverage relaxed for series of a few 16x16 slices."""
    return load_rules(None, 3.0).model_copy(update={"min_slices": 2, "min_coverage_mm": 0.0})


def _check_volume(paths: list[Path]) -> str | None:
    """Load ``paths``; ``None`` for a sound volume, the refusal otherwise; anything else fails the test."""
    try:
        volume = load_series(paths)
    except VolumeError as exc:
        assert str(exc).strip(), "a VolumeError without a message"
        return str(exc)
    assert np.isfinite(volume.hu).all(), "the volume has non-finite voxels"
    assert all(math.isfinite(v) and v > 0 for v in volume.geometry.spacing), volume.geometry
    assert all(math.isfinite(v) for v in volume.geometry.origin), volume.geometry
    return None


@FUZZ
@given(instance=malformed_instances())
def test_a_malformed_instance_is_stored_whole_or_refused_with_a_reason(
    small_series_rules: EligibilityRules, instance: Malformed
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        _store_and_follow(Spool(Path(folder), min_free_bytes=0), small_series_rules, instance)


def _store_and_follow(spool: Spool, small_series_rules: EligibilityRules, instance: Malformed) -> None:
    """Store ``instance``; when accepted, take it through eligibility and the volume loader."""
    try:
        stored = spool.store(instance.data)
    except InvalidInstance as exc:
        assert exc.status in (CANNOT_UNDERSTAND, DATASET_DOES_NOT_MATCH_SOP_CLASS), instance.label
        assert len(exc.reason) > 10, (instance.label, exc.reason)
        return
    # Pixel Data is the last element, so every cut loses some of it: a cut file is never kept.
    assert not instance.label.startswith("truncated"), f"{instance.label}: stored"
    header = stored.header
    for uid in (header.sop_class_uid, header.sop_instance_uid, header.study_instance_uid, header.series_instance_uid):
        assert uid and check_uid(uid) is None, (instance.label, uid)
    assert stored.path.read_bytes() == instance.data, instance.label
    decision = evaluate([header], small_series_rules)
    assert decision.eligible or decision.reasons, instance.label
    _check_volume([stored.path])


@FUZZ
@given(
    edits=st.lists(st.sampled_from(sorted(SERIES_EDITS)), unique=True, min_size=1, max_size=3),
    count=st.integers(2, 8),
)
def test_an_inconsistent_series_is_refused_before_analysis_with_its_reasons(
    tmp_path_factory: pytest.TempPathFactory,
    small_series_rules: EligibilityRules,
    edits: list[str],
    count: int,
) -> None:
    from pydicom.uid import generate_uid

    spool = Spool(tmp_path_factory.mktemp("series"), min_free_bytes=0)
    study, series = generate_uid(), generate_uid()
    stored = [spool.store(encode(slice_of_series(series, study, k, edits))) for k in range(count)]
    decision = evaluate([s.header for s in stored], small_series_rules)
    refusal = _check_volume([s.path for s in stored])
    if decision.eligible:
        assert refusal is None, f"{edits}: eligible, but the volume cannot be built: {refusal}"
    else:
        assert decision.reasons, edits


def test_a_mixed_folder_keeps_each_series_apart(tmp_path: Path) -> None:
    """Two series in one upload are two series: the loader refuses to mix them, eligibility sees each."""
    from pydicom.uid import generate_uid

    spool = Spool(tmp_path / "spool", min_free_bytes=0)
    study = generate_uid()
    a, b = generate_uid(), generate_uid()
    stored = [spool.store(encode(slice_of_series(uid, study, k, []))) for uid in (a, b) for k in range(4)]
    with pytest.raises(VolumeError, match="more than one series"):
        load_series([s.path for s in stored])
    assert {s.header.series_instance_uid for s in stored} == {a, b}


#: What eligibility says for each inconsistency on its own (``None``: the series is sound and accepted).
EXPECTED_REASON: dict[str, str | None] = {
    "one slice in three tilted": "orientation",
    "two slices at one position": "more than one slice at",
    "a slice missing": "missing",
    "one slice with another matrix": "different matrix sizes: 16x16 (5 slices), 8x8 (1 slice)",
    "one slice with another pixel spacing": "different pixel spacings",
    "a slice without Image Position": "have no Image Position",
    "a Secondary Capture among CT slices": "is stored but not analysed",
    "a PT slice among CT slices": "modality CT, PT is not CT",
    "one slice with 8-bit pixels": None,
    "rescale slopes differing per slice": None,
    "two frames of reference": "2 frames of reference",
}


@pytest.mark.parametrize("edit", sorted(SERIES_EDITS))
def test_each_inconsistency_is_named(tmp_path: Path, small_series_rules: EligibilityRules, edit: str) -> None:
    from pydicom.uid import generate_uid

    spool = Spool(tmp_path, min_free_bytes=0)
    study, series = generate_uid(), generate_uid()
    stored = [spool.store(encode(slice_of_series(series, study, k, [edit]))) for k in range(6)]
    decision = evaluate([s.header for s in stored], small_series_rules)
    expected = EXPECTED_REASON[edit]
    if expected is None:
        assert decision.eligible, decision.reasons
        assert _check_volume([s.path for s in stored]) is None
    else:
        assert not decision.eligible
        assert any(expected in reason for reason in decision.reasons), decision.reasons
