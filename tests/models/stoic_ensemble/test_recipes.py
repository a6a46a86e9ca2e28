"""Every STOIC2021 member has a training recipe that the command line can configure."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.registry import STOIC_MEMBERS, UnknownModelError
from models.stoic.recipes import RECIPES, RecipeError, build_config, recipe

CSV, OUT = Path("cases.csv"), Path("out")


@pytest.mark.parametrize("member", list(STOIC_MEMBERS))
def test_every_member_has_a_recipe_with_published_defaults(member: str) -> None:
    train, config_class = recipe(member)
    assert callable(train) and member in RECIPES
    extra = {"backbone": "simonj.safetensors"} if member == "stoic_simonj" else {}
    config = build_config(member, CSV, OUT, extra)
    assert isinstance(config, config_class) and config.csv_path == CSV
    output = getattr(config, "output_dir", None) or config.output
    assert output in (OUT, OUT / f"{member}.safetensors")


def test_settings_are_converted_to_their_field_types() -> None:
    config = build_config(
        "stoic_code1055", CSV, OUT, {"max_epochs": "3", "augment": "false", "learning_rate": "2e-4", "cache_dir": "c"}
    )
    assert (config.max_epochs, config.augment, config.learning_rate, config.cache_dir) == (3, False, 2e-4, Path("c"))
    assert build_config("stoic_code1055", CSV, OUT, {"cache_dir": "none"}).cache_dir is None


@pytest.mark.parametrize(
    ("member", "settings", "message"),
    [
        ("stoic_hal9000", {"epoch": "1"}, "has no setting 'epoch'; settable: .*epochs"),
        ("stoic_hal9000", {"csv_path": "other.csv"}, "has no setting 'csv_path'"),
        ("stoic_flyingbird", {"seed": "x"}, "seed needs a value of type int"),
        ("stoic_code1055", {"augment": "maybe"}, "augment needs true or false"),
        ("stoic_simonj", {}, "stoic_simonj needs backbone"),
        ("stoic_hal9000", {"network": "small"}, "cannot be set from the command line"),
    ],
)
def test_bad_settings_are_refused_with_the_reason(member: str, settings: dict[str, str], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        build_config(member, CSV, OUT, settings)


def test_unknown_member() -> None:
    with pytest.raises(UnknownModelError, match="not a STOIC2021 member"):
        recipe("stoic_top3")
