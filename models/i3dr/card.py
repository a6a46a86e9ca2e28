"""The I3Dr weights file: models A and B in one safetensors file with a JSON model card.

Model A's state dict is stored under the prefix ``a.``, model B's under ``b.``; the file's
metadata holds the model card under ``model_card``.  The card says how to rebuild each part
(backbone name and options, regions), what its outputs mean (names, units, and the *label
scales*: a network's raw output ``k`` times ``label_scales[k]`` is the estimate in the output's
unit, because training divided every label by its training-set spread, T§2.4.5), which outputs
each part was trained on, the preprocessing (T§2.4.4), and where the weights came from
(training data, hyperparameters, metrics, or ``"demo": true`` for generated weights).

A training run (``lungcds train i3dr --model a|b``) writes a file with one part;
:func:`merge_cards` and :meth:`models.i3dr.inference.I3dr.from_parts` join an A file and a B file.
safetensors holds tensors only, so reading a file cannot execute code (a property that matters
for files operators install on a hospital server).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from models import PIPELINE_VERSION
from models.card_file import MODEL_CARD_KEY, read_card_file, write_card_file
from models.findings import LOBE_NAMES
from models.i3dr.model import (
    OUTPUT_UNITS,
    OUTPUTS,
    BackboneSpec,
    RegionSumRegressor,
    build_model_a,
    build_model_b,
)
from models.i3dr.preprocessing import I3drPreprocessingConfig

__all__ = [
    "CARD_FORMAT",
    "I3DR_MODEL_VERSION",
    "MIN_DENOMINATOR_FRACTION",
    "MODEL_CARD_KEY",
    "PARTS",
    "build_part",
    "load_i3dr_file",
    "make_model_card",
    "make_part_card",
    "merge_cards",
    "save_i3dr_file",
]

#: Version of this I3Dr implementation (architecture, preprocessing, output mapping); bump it
#: when any of them changes what a given weights file computes.
I3DR_MODEL_VERSION = "1.0.0"
#: Value of ``format`` in every I3Dr model card written by this version.
CARD_FORMAT = "lungcds.i3dr/1"
#: The two models of T§2.3.1: ``a`` (patient level, lung-masked CT), ``b`` (five lobes).
PARTS: tuple[str, ...] = ("a", "b")
#: An output is rescaled (T§2.3.1, y^l = y_B^l y_A / y_B) only when |y_B| is at least this
#: fraction of model B's label scale for that output; below it the ratio is numerically
#: meaningless (not from the thesis, which does not discuss a vanishing y_B).
MIN_DENOMINATOR_FRACTION = 1e-3

_PART_KEY = re.compile(r"^([ab])\.(.+)$")


def _regions(part: str) -> list[str]:
    return ["lungs"] if part == "a" else list(LOBE_NAMES)


def make_part_card(
    part: str,
    *,
    backbone: BackboneSpec,
    label_scales: Mapping[str, float],
    trained_outputs: list[str],
    demo: bool = False,
    **provenance: Any,
) -> dict[str, Any]:
    """The card of one part (``a`` or ``b``).

    Parameters
    ----------
    part : {"a", "b"}
        Which model.
    backbone : BackboneSpec
        How to rebuild its feature extractor.
    label_scales : mapping of str to float
        Per output, the training-set spread the labels were divided by (1.0 for outputs
        without training labels); raw output times scale is the estimate in the output's unit.
    trained_outputs : list of str
        Outputs that had training labels (every output for demo weights, so that the whole
        path can be exercised; those outputs mean nothing).
    demo : bool
        True for generated weights that were never trained.
    **provenance
        Further JSON-serialisable facts: ``data``, ``training``, ``metrics``...

    Raises
    ------
    ValueError
        For an unknown part, scales that do not cover every output or are not positive, or an
        unknown trained output.
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if set(label_scales) != set(OUTPUTS) or min(float(v) for v in label_scales.values()) <= 0:
        raise ValueError(f"label scales must be positive for exactly {OUTPUTS}, got {dict(label_scales)}")
    unknown = set(trained_outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown trained outputs {sorted(unknown)}")
    return {
        "regions": _regions(part),
        "backbone": backbone.as_dict(),
        "label_scales": {name: float(label_scales[name]) for name in OUTPUTS},
        "trained_outputs": [name for name in OUTPUTS if name in trained_outputs],
        "demo": demo,
        **json.loads(json.dumps(provenance)),
    }


def make_model_card(preprocessing: I3drPreprocessingConfig, parts: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The file's card: outputs, units, preprocessing, rescaling rule and the part cards.

    Raises
    ------
    ValueError
        For an unknown part name or no part.
    """
    if not parts or set(parts) - set(PARTS):
        raise ValueError(f"parts must be a non-empty subset of {PARTS}, got {sorted(parts)}")
    return {
        "format": CARD_FORMAT,
        "task": "lung function per patient and per lobe from chest CT, I3Dr (thesis chapter 2)",
        "version": I3DR_MODEL_VERSION,
        "outputs": list(OUTPUTS),
        "units": dict(OUTPUT_UNITS),
        "preprocessing": preprocessing.as_dict(),
        "rescale": {
            "rule": "lobe_l = yB_l * yA / yB per output (T2.3.1); not rescaled when |yB| < fraction * scale_B",
            "min_denominator_fraction": MIN_DENOMINATOR_FRACTION,
        },
        "parts": {name: dict(parts[name]) for name in PARTS if name in parts},
        "demo": any(bool(p.get("demo")) for p in parts.values()),
        "code_version": f"lungcds models {PIPELINE_VERSION}, i3dr {I3DR_MODEL_VERSION}",
    }


def merge_cards(card_a: Mapping[str, Any], card_b: Mapping[str, Any]) -> dict[str, Any]:
    """One card from the card of an A file and that of a B file.

    Raises
    ------
    ValueError
        If the files lack their part or were trained on different preprocessing.
    """
    if "a" not in card_a.get("parts", {}) or "b" not in card_b.get("parts", {}):
        raise ValueError("need a file with model A and a file with model B")
    if card_a["preprocessing"] != card_b["preprocessing"]:
        raise ValueError(
            f"models A and B were trained on different inputs: {card_a['preprocessing']} vs {card_b['preprocessing']}"
        )
    preprocessing = I3drPreprocessingConfig.from_dict(card_a["preprocessing"])
    return make_model_card(preprocessing, {"a": card_a["parts"]["a"], "b": card_b["parts"]["b"]})


def build_part(part: str, part_card: Mapping[str, Any]) -> RegionSumRegressor:
    """A freshly initialised model A or B as its part card describes it."""
    spec = BackboneSpec.from_dict(part_card["backbone"])
    return build_model_a(spec) if part == "a" else build_model_b(spec)


def save_i3dr_file(path: Path, models: Mapping[str, RegionSumRegressor], card: Mapping[str, Any]) -> Path:
    """Write the parts (``a.``/``b.`` prefixes) and the card to one safetensors file.

    Written beside the target and renamed, so a crash never leaves a half-written file.

    Raises
    ------
    ValueError
        If the card's parts differ from the models given.
    """
    if set(models) != set(card["parts"]):
        raise ValueError(f"the card describes parts {sorted(card['parts'])}, models {sorted(models)} were given")
    tensors = {
        f"{part}.{key}": value.detach().to("cpu").contiguous()
        for part, model in models.items()
        for key, value in model.state_dict().items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        write_card_file(partial, tensors, card)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def load_i3dr_file(path: Path) -> tuple[dict[str, RegionSumRegressor], dict[str, Any]]:
    """The parts (CPU, eval mode) and the card of a file written by :func:`save_i3dr_file`.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If it is not a readable safetensors file, has no card or one of another format, holds
        tensors without an ``a.``/``b.`` prefix, or parts that do not fit their card.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3Dr weights file {path} does not exist")
    try:
        tensors, card = read_card_file(path, CARD_FORMAT, "an I3Dr file")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file: {error}") from error
    states: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        match = _PART_KEY.match(key)
        if match is None:
            raise ValueError(f"{path}: tensor {key!r} has no a. or b. prefix")
        states.setdefault(match.group(1), {})[match.group(2)] = value
    if set(states) != set(card["parts"]):
        raise ValueError(f"{path}: the card describes parts {sorted(card['parts'])}, the file holds {sorted(states)}")
    models: dict[str, RegionSumRegressor] = {}
    for part, state in states.items():
        model = build_part(part, card["parts"][part])
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{path}: part {part} does not fit its card: {error}") from error
        models[part] = model.eval()
    return models, card
