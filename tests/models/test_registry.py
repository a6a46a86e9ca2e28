"""models.registry: the models as data and honest statuses for models that did not run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from models import PIPELINE_VERSION
from models.registry import (
    CLASSICAL_LUNG_MASK,
    I3DR,
    MODEL_SPECS,
    REGISTRY,
    SEVERITY,
    STOIC,
    STOIC_MEMBERS,
    UnknownModelError,
    get_spec,
    unavailable_run,
)
from models.weights import WeightStore

IMPLEMENTED = ("lobes", "lesions", "corads", *STOIC_MEMBERS, I3DR)


def _hypothetical_unimplemented(name: str) -> object:
    """A registered model as a pipeline version without its architecture would list it."""
    return replace(get_spec(name), implemented=False, version="n/a")


def test_every_model_is_registered_once_in_report_order() -> None:
    expected = (CLASSICAL_LUNG_MASK, "lobes", "lesions", SEVERITY, "corads", STOIC, *STOIC_MEMBERS, I3DR)
    assert tuple(REGISTRY) == expected
    assert len(STOIC_MEMBERS) == 8 and all(name.startswith("stoic_") for name in STOIC_MEMBERS)
    assert tuple(spec.name for spec in MODEL_SPECS) == tuple(REGISTRY)
    with pytest.raises(TypeError):
        REGISTRY["extra"] = MODEL_SPECS[0]  # type: ignore[index]


def test_which_models_are_implemented_and_which_need_weights() -> None:
    for name in (CLASSICAL_LUNG_MASK, SEVERITY, STOIC):
        spec = get_spec(name)
        assert spec.implemented and not spec.needs_weights
    for name in IMPLEMENTED:
        spec = get_spec(name)
        assert spec.implemented and spec.needs_weights and spec.version != "n/a"
    assert all(spec.description for spec in MODEL_SPECS)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'corads2'.*lung_mask_classical.*i3dr"):
        get_spec("corads2")
    assert issubclass(UnknownModelError, ValueError)


@pytest.mark.parametrize("name", ("stoic_code1055", I3DR))
def test_unimplemented_model_says_it_is_not_available(name: str, tmp_path: Path) -> None:
    run = unavailable_run(_hypothetical_unimplemented(name), WeightStore(tmp_path))  # type: ignore[arg-type]
    assert run.status == "not_installed"
    assert f"not available in pipeline version {PIPELINE_VERSION}" in run.reason
    assert not run.validated
    assert run.weights_sha256 is None
    assert run.name == name


def test_unimplemented_model_with_weights_still_does_not_run(tmp_path: Path) -> None:
    source = tmp_path / "i3dr.pt"
    source.write_bytes(b"weights")
    store = WeightStore(tmp_path / "store")
    sha = store.install(source, I3DR).sha256
    run = unavailable_run(_hypothetical_unimplemented(I3DR), store, demo_weights=True)  # type: ignore[arg-type]
    assert run.status == "not_installed"
    assert sha in run.reason and "unused" in run.reason
    assert "demonstration weights" in run.reason
    assert run.weights_sha256 is None


def test_implemented_model_without_weights_asks_for_installation(tmp_path: Path) -> None:
    spec = get_spec("corads")
    run = unavailable_run(spec, WeightStore(tmp_path))
    assert run.status == "not_installed"
    assert run.reason == "no weights installed; install with `lungcds models install`"
    assert unavailable_run(spec, None).reason == run.reason


def test_implemented_model_with_weights_is_skipped_not_ran(tmp_path: Path) -> None:
    source = tmp_path / "w.bin"
    source.write_bytes(b"x" * 10)
    store = WeightStore(tmp_path / "store")
    store.install(source, I3DR)
    run = unavailable_run(get_spec(I3DR), store)
    assert run.status == "skipped"
    assert not run.validated
