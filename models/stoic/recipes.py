"""The training recipe of each STOIC2021 member, found by name (``lungcds train stoic --member``).

Each member's recipe is a function taking its own configuration dataclass, whose defaults are
the authors' settings (thesis 4.2.5 and 4.3.3; models spec section 4).  This module maps the
registry name to both, imported only when asked, and builds a configuration from the command
line's ``key=value`` pairs, converting each value to its field's type, so that a site can change
one setting (epochs, device, a pretrained file) without code and a typo is an error, not ignored.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from models.registry import STOIC_MEMBERS, UnknownModelError

__all__ = ["RECIPES", "RecipeError", "build_config", "recipe"]

#: Registry name -> (module, training function, configuration class).
RECIPES: dict[str, tuple[str, str, str]] = {
    "stoic_baseline": ("models.stoic.training_volumes", "train_baseline", "BaselineTrainingConfig"),
    "stoic_code1055": ("models.stoic.training_volumes", "train_code1055", "Code1055TrainingConfig"),
    "stoic_flyingbird": ("models.stoic.training_volumes", "train_flyingbird", "FlyingBirdTrainingConfig"),
    "stoic_uaux2": ("models.stoic.training_volumes", "train_uaux2", "Uaux2TrainingConfig"),
    "stoic_deakin": ("models.stoic.training_volumes", "train_deakin", "DeakinTrainingConfig"),
    "stoic_simonj": ("models.stoic.training_features", "train_simonj", "SimonjTrainingConfig"),
    "stoic_hal9000": ("models.stoic.training_features", "train_hal9000", "HalTrainingConfig"),
    "stoic_etro": ("models.stoic.training_features", "train_etro", "EtroTrainingConfig"),
}
_SCALARS: dict[type, Callable[[str], Any]] = {int: int, float: float, str: str, Path: Path}


class RecipeError(ValueError):
    """A member without a recipe, or settings its configuration does not accept."""


def recipe(member: str) -> tuple[Callable[[Any], Any], type]:
    """The training function and configuration class of ``member``.

    Raises
    ------
    UnknownModelError
        If ``member`` is not a registered STOIC2021 member.
    """
    if member not in STOIC_MEMBERS or member not in RECIPES:
        raise UnknownModelError(f"{member!r} is not a STOIC2021 member; members are: {', '.join(STOIC_MEMBERS)}")
    module_name, function, config = RECIPES[member]
    module = importlib.import_module(module_name)
    return getattr(module, function), getattr(module, config)


def _convert(name: str, annotation: Any, text: str) -> Any:
    """``text`` as a value of ``annotation`` (scalars, bool, Optional scalars, tuples of scalars)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.lower() in ("none", ""):
            return None
        if len(options) == 1:
            return _convert(name, options[0], text)
    if annotation is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise RecipeError(f"{name} needs true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if origin is tuple:
        args = typing.get_args(annotation)
        item = args[0] if args else str
        return tuple(_convert(name, item, part.strip()) for part in text.split(",") if part.strip())
    if annotation in _SCALARS:
        try:
            return _SCALARS[annotation](text)
        except ValueError as exc:
            raise RecipeError(f"{name} needs a value of type {annotation.__name__}, got {text!r}") from exc
    raise RecipeError(f"{name} cannot be set from the command line (type {annotation}); change it in Python")


def build_config(member: str, csv_path: Path, out: Path, settings: Mapping[str, str]) -> Any:
    """The configuration of ``member``'s recipe: the published defaults, the data, the output, overrides.

    ``out`` is a folder for recipes with an ``output_dir`` and the file ``out/<member>.safetensors``
    for recipes that write one file (``output``).

    Raises
    ------
    RecipeError
        For an unknown setting, a value of the wrong type, or a required setting left out.
    """
    _, config_class = recipe(member)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    values: dict[str, Any] = {"csv_path": csv_path}
    if "output_dir" in fields:
        values["output_dir"] = out
    else:
        values["output"] = out / f"{member}.safetensors"
    for key, text in settings.items():
        if key not in fields or key in values:
            settable = sorted(set(fields) - set(values))
            raise RecipeError(f"{member} has no setting {key!r}; settable: {', '.join(settable)}")
        values[key] = _convert(key, hints[key], text)
    missing = [
        name
        for name, f in fields.items()
        if name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"{member} needs {', '.join(missing)} (pass --set {missing[0]}=...)")
    try:
        return config_class(**values)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{member}: {exc}") from exc
