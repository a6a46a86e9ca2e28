"""I3Dr inference (thesis section 2.3.1): model A, model B with the swap, and the rescaling.

For one CT with lung mask and five lobe masks:

* model A on the lung-masked input gives the patient estimate ``y_A = W_A f_A(x) + b_A``;
* model B runs its shared backbone on each lobe input; with the sum and the linear layer swapped
  each lobe gets ``y_B^l = W_B f_B(x_l) + b_B / 5`` and ``y_B = sum_l y_B^l``, which equals the
  training form ``W_B sum_l f_B(x_l) + b_B`` (T§2.3.1, "Inference");
* I3Dr rescales the lobes with model A, ``y^l = y_B^l y_A / y_B``, so that they sum to ``y_A``
  (T§2.3.1, "Combined model"; model A was the better patient-level model).

Raw network outputs are in units of the training-set label spread (T§2.4.5) and are multiplied
by the part's label scales (model card) to give L and mL/min/mmHg; a per-output scale commutes
with the sum and the ratio, so the identities above hold in either unit.  The rescaling is done
in float64 on the lobe values themselves (``y_B`` is their sum), so the rescaled lobes sum to
``y_A`` to float64 rounding.

A vanishing ``y_B``: when ``|y_B|`` for an output is below :data:`~models.i3dr.card.MIN_DENOMINATOR_FRACTION`
of model B's label scale, the ratio ``y_A / y_B`` would amplify noise without bound (and divide
by zero at 0), so that output is *not rescaled*: it is left out of the lobe estimates of
:meth:`I3drPrediction.to_result`, and :attr:`I3drPrediction.not_rescaled` says why (the
unscaled lobe values stay in the details).  Non-finite network outputs raise ``ValueError``.
Nothing here ever returns NaN or infinity.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.device import folded_for_inference, inference_context, memory_format_for, place_network, to_device
from models.findings import LOBE_NAMES, I3drResult, Volume
from models.i3dr.card import (
    I3DR_MODEL_VERSION,
    build_part,
    load_i3dr_file,
    make_model_card,
    make_part_card,
    merge_cards,
    save_i3dr_file,
)
from models.i3dr.model import NUM_LOBES, OUTPUT_UNITS, OUTPUTS, BackboneSpec, RegionSumRegressor
from models.i3dr.preprocessing import I3drPreprocessingConfig, preprocess_regions, replicate_channels, stack_regions
from models.segmentation.weights import demo_state

__all__ = ["I3dr", "I3drPrediction"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class I3drPrediction:
    """The estimates of one CT: model A, model B per lobe and summed, and the rescaled lobes.

    Values are in each output's unit (L; DLCO in mL/min/mmHg).

    Attributes
    ----------
    patient_a : mapping of str to float
        Model A's patient estimate ``y_A`` per output (the I3Dr patient estimate).
    patient_b : mapping of str to float or None
        Model B's patient estimate ``y_B = sum_l y_B^l``; None when only model A ran.
    lobes_unscaled : mapping
        Per lobe, model B's estimate ``y_B^l`` per output ("I3Dr (no rescaling)", Table 2.2).
    lobes : mapping
        Per lobe, the rescaled estimate ``y_B^l y_A / y_B`` for every output that could be
        rescaled ("I3Dr", Table 2.2).
    rescale_factors : mapping of str to float or None
        ``y_A / y_B`` per output; None where it was not computed.
    not_rescaled : mapping of str to str
        Outputs left out of ``lobes``, with the reason.
    reported_outputs : tuple of str
        Outputs model A was trained on (all of them for demo weights); :meth:`to_result`
        reports only these.
    model_b_outputs : tuple of str
        Outputs model B was trained on; :meth:`to_result` reports model B's own (unscaled)
        estimates only for these.
    records : mapping
        Per region, the preprocessing record (JSON-serialisable).
    demo : bool
        True when the weights were generated, never trained.
    version : str
        I3Dr implementation version.
    """

    patient_a: Mapping[str, float]
    patient_b: Mapping[str, float] | None
    lobes_unscaled: Mapping[str, Mapping[str, float]]
    lobes: Mapping[str, Mapping[str, float]]
    rescale_factors: Mapping[str, float | None]
    not_rescaled: Mapping[str, str]
    reported_outputs: tuple[str, ...]
    model_b_outputs: tuple[str, ...] = ()
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    demo: bool = False
    version: str = I3DR_MODEL_VERSION

    def to_result(self) -> I3drResult:
        """The ``Findings`` entry, reported outputs only (those model A was trained on).

        ``patient`` is model A's estimate and ``lobes`` the rescaled lobe estimates (T§2.3.1,
        "Combined model"); ``lobes_unscaled`` and ``patient_b`` are model B's own estimates
        (Table 2.2, "no rescaling") for the outputs model B was trained on; ``notes`` are
        :meth:`notes`.
        """
        reported = self.reported_outputs
        from_b = [name for name in reported if name in self.model_b_outputs]
        return I3drResult(
            patient={name: self.patient_a[name] for name in reported},
            lobes={lobe: {n: values[n] for n in reported if n in values} for lobe, values in self.lobes.items()},
            lobes_unscaled={lobe: {n: values[n] for n in from_b} for lobe, values in self.lobes_unscaled.items()},
            patient_b=None if self.patient_b is None else {name: self.patient_b[name] for name in from_b},
            notes=self.notes(),
        )

    def notes(self) -> tuple[str, ...]:
        """In words, what the result does not contain and why, and whether the weights are a demo."""
        notes = []
        if self.demo:
            notes.append("generated demonstration weights, never trained: the estimates have no clinical meaning")
        if self.patient_b is None:
            notes.append("patient level only (model A): lobe estimates need the five lobe masks and model B")
        notes += [
            f"{name} has no lobe estimate: {self.not_rescaled[name]}"
            for name in self.reported_outputs
            if name in self.not_rescaled
        ]
        withheld = [name for name in OUTPUTS if name not in self.reported_outputs]
        if withheld:
            notes.append(f"not estimated: {', '.join(withheld)} (model A was not trained on them)")
        return tuple(notes)

    def details(self) -> dict[str, Any]:
        """Everything, JSON-serialisable: both models' estimates, factors, reasons, records."""
        return {
            "version": self.version,
            "demo": self.demo,
            "units": dict(OUTPUT_UNITS),
            "reported_outputs": list(self.reported_outputs),
            "model_b_outputs": list(self.model_b_outputs),
            "patient_a": dict(self.patient_a),
            "patient_b": dict(self.patient_b) if self.patient_b is not None else None,
            "lobes_unscaled": {k: dict(v) for k, v in self.lobes_unscaled.items()},
            "lobes_rescaled": {k: dict(v) for k, v in self.lobes.items()},
            "rescale_factors": dict(self.rescale_factors),
            "not_rescaled": dict(self.not_rescaled),
            "preprocessing": {k: dict(v) for k, v in self.records.items()},
        }


def _as_values(row: np.ndarray) -> dict[str, float]:
    return {name: float(v) for name, v in zip(OUTPUTS, row, strict=True)}


class I3dr:
    """Models A and B of I3Dr with their preprocessing and label scales (T§2.3.1).

    Parameters
    ----------
    a, b : RegionSumRegressor
        Model A (one region) and model B (five lobes), seven outputs each.
    card : mapping
        The model card with both parts (:func:`models.i3dr.card.make_model_card`).
    device : torch.device or str, optional
        Where to run (CPU by default).

    Raises
    ------
    ValueError
        If the models do not have 1 and 5 regions and seven outputs, or the card lacks a part.
    """

    def __init__(
        self,
        a: RegionSumRegressor,
        b: RegionSumRegressor,
        card: Mapping[str, Any],
        *,
        device: torch.device | str | None = None,
    ) -> None:
        if a.num_regions != 1 or b.num_regions != NUM_LOBES:
            raise ValueError(f"model A needs 1 region and model B {NUM_LOBES}, got {a.num_regions}, {b.num_regions}")
        if a.num_outputs != len(OUTPUTS) or b.num_outputs != len(OUTPUTS):
            raise ValueError(f"both heads need {len(OUTPUTS)} outputs, got {a.num_outputs}, {b.num_outputs}")
        if set(card.get("parts", {})) != {"a", "b"}:
            raise ValueError("the model card must describe both parts, a and b")
        self.card: dict[str, Any] = dict(card)
        self.device = torch.device(device or "cpu")
        self.preprocessing = I3drPreprocessingConfig.from_dict(card["preprocessing"])
        parts = card["parts"]
        self.scales = {p: np.array([parts[p]["label_scales"][o] for o in OUTPUTS], dtype=np.float64) for p in "ab"}
        self.trained = {p: tuple(parts[p]["trained_outputs"]) for p in "ab"}
        self.min_denominator_fraction = float(card["rescale"]["min_denominator_fraction"])
        self.a = self._prepare(a)
        self.b = self._prepare(b)
        # The layout of each part's input blocks, found once (it walks the network's modules).
        self._layouts = {id(self.a): memory_format_for(self.a), id(self.b): memory_format_for(self.b)}

    def _prepare(self, model: RegionSumRegressor) -> RegionSumRegressor:
        model = place_network(model, self.device).eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        return model

    @property
    def is_demo(self) -> bool:
        """True when any part has generated, never trained weights."""
        return bool(self.card.get("demo"))

    @classmethod
    def from_safetensors(cls, path: Path | str, *, device: torch.device | str | None = None) -> I3dr:
        """Load a file holding both parts (``a.``/``b.`` prefixes, card in the metadata).

        Raises
        ------
        ValueError
            If the file is not an I3Dr file or lacks a part (see :func:`models.i3dr.card.load_i3dr_file`).
        """
        models, card = load_i3dr_file(Path(path))
        if set(models) != {"a", "b"}:
            raise ValueError(f"{path} holds part(s) {sorted(models)}; I3Dr needs a and b (see I3dr.from_parts)")
        return cls(models["a"], models["b"], card, device=device)

    @classmethod
    def from_parts(cls, a_path: Path | str, b_path: Path | str, *, device: torch.device | str | None = None) -> I3dr:
        """Join the file of a model A training run and that of a model B run (same preprocessing)."""
        models_a, card_a = load_i3dr_file(Path(a_path))
        models_b, card_b = load_i3dr_file(Path(b_path))
        if "a" not in models_a or "b" not in models_b:
            raise ValueError(f"{a_path} must hold model A and {b_path} model B")
        return cls(models_a["a"], models_b["b"], merge_cards(card_a, card_b), device=device)

    @classmethod
    def demo(
        cls,
        seed: int,
        backbone_factory: BackboneSpec | None = None,
        *,
        preprocessing: I3drPreprocessingConfig | None = None,
        device: torch.device | str | None = None,
    ) -> I3dr:
        """I3Dr with generated, deterministic, untrained weights (card says ``"demo": true``).

        Weights come from :func:`models.segmentation.weights.demo_state` with seeds
        ``2 * seed`` (A) and ``2 * seed + 1`` (B); label scales are 1, and every output is
        "reported" so that the whole path runs.  The numbers mean nothing clinically.

        Parameters
        ----------
        seed : int
            Seed of both parts.
        backbone_factory : BackboneSpec, optional
            The backbone (I3D by default; ``BackboneSpec("small_3d")`` for quick tests).  A
            spec rather than an arbitrary callable, so that the card can record it.
        preprocessing : I3drPreprocessingConfig, optional
            Input size (T§2.4.4 by default; small blocks for tests).
        device : torch.device or str, optional
            Where to run.
        """
        spec = backbone_factory or BackboneSpec()
        parts: dict[str, Any] = {}
        models: dict[str, RegionSumRegressor] = {}
        for offset, part in enumerate("ab"):
            card = make_part_card(
                part,
                backbone=spec,
                label_scales=dict.fromkeys(OUTPUTS, 1.0),
                trained_outputs=list(OUTPUTS),
                demo=True,
                seed=2 * seed + offset,
                description="generated demonstration weights: never trained, no clinical meaning",
            )
            model = build_part(part, card)
            demo_state(model, 2 * seed + offset)
            models[part], parts[part] = model, card
        card = make_model_card(preprocessing or I3drPreprocessingConfig(), parts)
        return cls(models["a"], models["b"], card, device=device)

    def save(self, path: Path | str) -> Path:
        """Write both parts and the card to one safetensors file."""
        return save_i3dr_file(Path(path), {"a": self.a, "b": self.b}, self.card)

    def _run(self, model: RegionSumRegressor, backbone: nn.Module, block: Tensor) -> Tensor:
        """Features ``(1, F)`` of one one-channel block ``(1, D, H, W)`` from ``model``'s (folded) ``backbone``."""
        self._check_block(block)
        x = replicate_channels(to_device(block.float(), self.device)[None])
        x = x.contiguous(memory_format=self._layouts[id(model)])
        features: Tensor = backbone(x)
        return features

    def _check_block(self, block: Tensor) -> None:
        if tuple(block.shape) != (1, *self.preprocessing.size):
            raise ValueError(f"expected a block (1, {', '.join(map(str, self.preprocessing.size))}), got {block.shape}")

    def _patient_a(self, lungs: Tensor) -> np.ndarray:
        with inference_context(self.device, bf16=False):  # measurements, not probabilities (models.device)
            backbone = folded_for_inference(self.a.backbone)  # a copy for this prediction (models.device)
            raw = self.a.outputs_from_features(self._run(self.a, backbone, lungs)[:, None])
        values = raw[0, 0].double().cpu().numpy() * self.scales["a"]
        if not np.isfinite(values).all():
            raise ValueError(f"model A produced non-finite outputs {values.tolist()}")
        return values

    def _lobes_b(self, lobes: Tensor) -> np.ndarray:
        """``(5, 7)`` lobe estimates ``y_B^l``, one backbone pass per lobe (peak memory of one pass)."""
        if lobes.shape[0] != NUM_LOBES:
            raise ValueError(f"expected {NUM_LOBES} lobe blocks, got {lobes.shape[0]}")
        with inference_context(self.device, bf16=False):  # measurements, not probabilities (models.device)
            backbone = folded_for_inference(self.b.backbone)  # a copy for this prediction (models.device)
            features = torch.stack([self._run(self.b, backbone, block) for block in lobes], dim=1)
            raw = self.b.outputs_from_features(features)
        values = raw[0].double().cpu().numpy() * self.scales["b"][None, :]
        if not np.isfinite(values).all():
            raise ValueError(f"model B produced non-finite lobe outputs {values.tolist()}")
        return values

    def predict_inputs(
        self, lungs: Tensor, lobes: Tensor | None, records: Mapping[str, Mapping[str, Any]] | None = None
    ) -> I3drPrediction:
        """I3Dr on preprocessed one-channel blocks.

        Parameters
        ----------
        lungs : torch.Tensor
            Model A's input ``(1, D, H, W)`` (lung-masked CT, T§2.4.4).
        lobes : torch.Tensor or None
            Model B's inputs ``(5, 1, D, H, W)`` in the order of :data:`models.findings.LOBE_NAMES`;
            None for model A alone.
        records : mapping, optional
            Preprocessing records to carry into the prediction's details.

        Returns
        -------
        I3drPrediction
            All estimates; see the module docstring for the rescaling rule.
        """
        patient_a = self._patient_a(lungs)
        records = dict(records or {})
        if lobes is None:
            return I3drPrediction(
                patient_a=_as_values(patient_a),
                patient_b=None,
                lobes_unscaled={},
                lobes={},
                rescale_factors=dict.fromkeys(OUTPUTS),
                not_rescaled={},
                reported_outputs=self.trained["a"],
                records=records,
                demo=self.is_demo,
            )
        lobe_values = self._lobes_b(lobes)
        patient_b = lobe_values.sum(axis=0)
        factors: dict[str, float | None] = {}
        not_rescaled: dict[str, str] = {}
        for k, name in enumerate(OUTPUTS):
            tolerance = self.min_denominator_fraction * self.scales["b"][k]
            if name not in self.trained["b"] or name not in self.trained["a"]:
                factors[name] = None
                not_rescaled[name] = "not rescaled: model A or model B was not trained on this output"
            elif abs(patient_b[k]) < tolerance:
                factors[name] = None
                not_rescaled[name] = (
                    f"not rescaled: model B's patient estimate {patient_b[k]:.3g} is within {tolerance:.3g} of 0, "
                    "so y_A / y_B is meaningless"
                )
                logger.warning("I3Dr output %s not rescaled: y_B = %.3g", name, patient_b[k])
            else:
                factors[name] = float(patient_a[k] / patient_b[k])
        rescaled = {
            lobe: {
                name: float(lobe_values[i, k] * f) for k, name in enumerate(OUTPUTS) if (f := factors[name]) is not None
            }
            for i, lobe in enumerate(LOBE_NAMES)
        }
        return I3drPrediction(
            patient_a=_as_values(patient_a),
            patient_b=_as_values(patient_b),
            lobes_unscaled={lobe: _as_values(lobe_values[i]) for i, lobe in enumerate(LOBE_NAMES)},
            lobes=rescaled,
            rescale_factors=factors,
            not_rescaled=not_rescaled,
            reported_outputs=self.trained["a"],
            model_b_outputs=self.trained["b"],
            records=records,
            demo=self.is_demo,
        )

    def predict(self, volume: Volume, lungs: np.ndarray, lobes: Mapping[str, np.ndarray]) -> I3drPrediction:
        """I3Dr on one CT: preprocess (T§2.4.4), model A, model B per lobe, rescale (T§2.3.1).

        Parameters
        ----------
        volume : Volume
            The CT in HU.
        lungs : numpy.ndarray
            Boolean lung mask on the volume's grid (model A's region).
        lobes : mapping of str to numpy.ndarray
            Boolean masks of the five lobes of :data:`models.findings.LOBE_NAMES`.

        Raises
        ------
        ValueError
            For a missing, empty or misshapen mask, or non-finite network outputs.
        """
        missing = [name for name in LOBE_NAMES if name not in lobes]
        if missing:
            raise ValueError(f"lobe masks missing: {', '.join(missing)} (use predict_patient_only without lobes)")
        inputs = preprocess_regions(
            volume, {"lungs": lungs, **{name: lobes[name] for name in LOBE_NAMES}}, self.preprocessing
        )
        records = {name: item.record.as_dict() for name, item in inputs.items()}
        lobe_blocks = stack_regions([inputs[name] for name in LOBE_NAMES])
        return self.predict_inputs(stack_regions([inputs["lungs"]])[0], lobe_blocks, records)

    def predict_patient_only(self, volume: Volume, lungs: np.ndarray) -> I3drPrediction:
        """Model A alone, for a CT without lobe masks: patient estimates, no lobes.

        Raises
        ------
        ValueError
            For an empty or misshapen lung mask, or non-finite network outputs.
        """
        inputs = preprocess_regions(volume, {"lungs": lungs}, self.preprocessing)
        records = {"lungs": inputs["lungs"].record.as_dict()}
        return self.predict_inputs(stack_regions([inputs["lungs"]])[0], None, records)
