"""The deployed CO-RADS model: an ensemble of 3D DenseNet-201 networks with one sigmoid output.

Thesis sections 3.3.3 and 3.3.6: each member outputs ``p = sigmoid(logit)``, "the ensemble output
was obtained by simply taking the mean of the individual model outputs", and CO-RADS is
``round(4 * mean p) + 1`` (:func:`~models.corads.scoring.category_from_probability`; the mean is
taken *before* rounding).  Ten members trained with different seeds were deployed.

Weights live in one safetensors file: member ``i``'s state dict under the prefix ``member{i}.``
and a JSON model card in the file's metadata (key ``model_card``) that says how to rebuild the
members (architecture name, overrides, outputs, preprocessing) and where the weights came from
(training data, seeds, metrics, code version, or ``"demo": true`` for generated weights).

Serving follows house rules 4 and 12: members are built and loaded once, kept in eval mode and
run under ``torch.inference_mode``; inputs are batched up to ``batch_size``; members and inputs are
laid out channels last, as every convolutional network the model code places
(:func:`models.device.memory_format_for`, measured by ``benchmarks/channels_last.py``), and run
with bf16 autocast on CUDA.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models import PIPELINE_VERSION
from models.card_file import MODEL_CARD_KEY, read_card_file, write_card_file
from models.corads.preprocessing import PreprocessedInput, PreprocessingConfig, preprocess
from models.corads.scoring import category_from_probability
from models.device import inference_context, memory_format_for, place_network, to_device
from models.findings import CoradsResult, Volume
from models.zoo import build

__all__ = [
    "CARD_FORMAT",
    "CORADS_MODEL_VERSION",
    "DEPLOYED_ARCHITECTURE",
    "DEPLOYED_MEMBERS",
    "MODEL_CARD_KEY",
    "CoradsEnsemble",
    "combine_members",
    "load_ensemble_file",
    "make_model_card",
    "save_ensemble_file",
]

#: Version of this CO-RADS implementation (architecture, preprocessing, output mapping); bump it
#: when any of them changes what a given weights file computes.
CORADS_MODEL_VERSION = "1.0.0"
#: Value of ``format`` in every CO-RADS model card written by this version.
CARD_FORMAT = "lungcds.corads-ensemble/1"
#: The thesis' deployed member architecture (T§3.4.1: 3D DenseNet-201 performed best on QWK).
DEPLOYED_ARCHITECTURE = "densenet201_3d"
#: Members of the deployed ensemble (T§3.3.6: 10 instances with different random seeds).
DEPLOYED_MEMBERS = 10

_MEMBER_KEY = re.compile(r"^member(\d+)\.(.+)$")


def combine_members(probabilities: Sequence[float]) -> CoradsResult:
    """The ensemble result from the members' sigmoid outputs: mean first, then the category.

    Raises
    ------
    ValueError
        For no members or an output outside [0, 1].
    """
    if not probabilities:
        raise ValueError("an ensemble needs at least one member output")
    members = tuple(float(p) for p in probabilities)
    score = float(np.mean(np.asarray(members, dtype=np.float64)))
    return CoradsResult(category=category_from_probability(score), score=score, members=members)


def make_model_card(
    *,
    architecture: str,
    members: int,
    preprocessing: PreprocessingConfig,
    architecture_overrides: Mapping[str, Any] | None = None,
    demo: bool = False,
    **provenance: Any,
) -> dict[str, Any]:
    """A model card for an ensemble file.

    Parameters
    ----------
    architecture : str
        Zoo name of every member (``densenet201_3d`` as deployed).
    members : int
        Number of members.
    preprocessing : PreprocessingConfig
        The input the members were trained on.
    architecture_overrides : mapping, optional
        Keyword arguments passed to :func:`models.zoo.build` (small experimental networks).
    demo : bool
        True for generated weights that were never trained.
    **provenance
        Further JSON-serialisable facts: ``seeds``, ``data``, ``metrics``, ``training``...

    Returns
    -------
    dict
        The card, including the output definition and the code version.
    """
    return {
        "format": CARD_FORMAT,
        "task": "CO-RADS 1-5 from chest CT (thesis chapter 3)",
        "architecture": architecture,
        # Through JSON, so the card equals itself after a round trip through the file.
        "architecture_overrides": json.loads(json.dumps(dict(architecture_overrides or {}))),
        "num_outputs": 1,
        "in_channels": 3,
        "members": members,
        "output": "mean over members of sigmoid(logit) = p; CO-RADS = floor(4p + 1/2) + 1 (thesis 3.3.3, 3.3.6)",
        "preprocessing": preprocessing.as_dict(),
        "demo": demo,
        "code_version": f"lungcds models {PIPELINE_VERSION}, corads {CORADS_MODEL_VERSION}",
        **provenance,
    }


def save_ensemble_file(path: Path, members: Sequence[nn.Module], card: Mapping[str, Any]) -> Path:
    """Write members and model card to one safetensors file (``member{i}.`` prefixes).

    Raises
    ------
    ValueError
        If the card's member count differs from ``len(members)``.
    """
    if int(card["members"]) != len(members):
        raise ValueError(f"the card says {card['members']} members, {len(members)} were given")
    tensors = {
        f"member{i}.{key}": value.detach().to("cpu").contiguous()
        for i, member in enumerate(members)
        for key, value in member.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_card_file(path, tensors, card)
    return path


def _build_member(card: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised member as the card describes it (on CPU: building on the meta
    device and assigning would save the initialisation but is slower in torch 2.13)."""
    return build(
        str(card["architecture"]),
        num_outputs=int(card["num_outputs"]),
        in_channels=int(card["in_channels"]),
        **dict(card.get("architecture_overrides", {})),
    )


def load_ensemble_file(path: Path) -> tuple[list[nn.Module], dict[str, Any]]:
    """Members (on CPU, eval mode) and model card from a file written by :func:`save_ensemble_file`.

    Raises
    ------
    ValueError
        If the file has no card, a card of another format, member prefixes that do not match the
        card, or state dicts that do not fit the architecture.
    """
    tensors, card = read_card_file(path, CARD_FORMAT, "a CO-RADS ensemble file")
    states: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        match = _MEMBER_KEY.match(key)
        if match is None:
            raise ValueError(f"{path}: tensor {key!r} has no member{{i}}. prefix")
        states.setdefault(int(match.group(1)), {})[match.group(2)] = value
    if sorted(states) != list(range(int(card["members"]))):
        raise ValueError(f"{path}: the card says {card['members']} members, the file has {sorted(states)}")
    members = []
    for i in range(len(states)):
        member = _build_member(card)
        member.load_state_dict(states[i], strict=True)
        members.append(member.eval())
    return members, card


class CoradsEnsemble:
    """An ensemble of CO-RADS networks with the preprocessing it was trained with.

    Parameters
    ----------
    members : sequence of torch.nn.Module
        Networks mapping ``(N, 3, D, H, W)`` inputs to one logit each.
    card : mapping
        The model card (:func:`make_model_card`).
    device : torch.device or str, optional
        Where to run (CPU by default), in the layout of :func:`models.device.memory_format_for`
        (channels last: faster on this CPU).
    batch_size : int
        Inputs per forward pass in :meth:`member_probabilities`.

    Raises
    ------
    ValueError
        For no members or a non-positive batch size.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        card: Mapping[str, Any],
        *,
        device: torch.device | str | None = None,
        batch_size: int = 1,
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device or "cpu")
        self.card: dict[str, Any] = dict(card)
        self.preprocessing = PreprocessingConfig.from_dict(card["preprocessing"])
        self.batch_size = batch_size
        self.memory_format = memory_format_for(members[0])
        self.members = [self._prepare(m) for m in members]

    def _prepare(self, member: nn.Module) -> nn.Module:
        member = place_network(member, self.device).eval()
        for parameter in member.parameters():
            parameter.requires_grad_(False)
        return member

    def __len__(self) -> int:
        """Number of members."""
        return len(self.members)

    @classmethod
    def from_safetensors(
        cls,
        path: Path | str,
        *,
        device: torch.device | str | None = None,
        batch_size: int = 1,
    ) -> CoradsEnsemble:
        """Load an ensemble file (members under ``member{i}.``, card in the metadata)."""
        members, card = load_ensemble_file(Path(path))
        return cls(members, card, device=device, batch_size=batch_size)

    @classmethod
    def demo(
        cls,
        seed: int,
        members: int = DEPLOYED_MEMBERS,
        *,
        architecture: str = DEPLOYED_ARCHITECTURE,
        architecture_overrides: Mapping[str, Any] | None = None,
        preprocessing: PreprocessingConfig | None = None,
        device: torch.device | str | None = None,
    ) -> CoradsEnsemble:
        """An ensemble with generated, deterministic, untrained weights (clearly marked ``demo``).

        Member ``i`` is initialised with the architecture's own initialisation under the torch
        seed ``1000 * seed + i`` (the caller's random state is left untouched), so the same
        arguments always give the same weights and outputs.  The outputs mean nothing clinically.

        Parameters
        ----------
        seed : int
            Seed of the whole ensemble.
        members : int
            Number of members (10 as deployed; fewer for quick tests).
        architecture, architecture_overrides, preprocessing
            Network and input size (deployed values by default; small ones for tests).
        device
            As for the constructor.
        """
        if members < 1:
            raise ValueError(f"members must be positive, got {members}")
        config = preprocessing or PreprocessingConfig()
        networks = []
        for i in range(members):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1000 * seed + i)
                networks.append(build(architecture, num_outputs=1, **dict(architecture_overrides or {})))
        card = make_model_card(
            architecture=architecture,
            members=members,
            preprocessing=config,
            architecture_overrides=architecture_overrides,
            demo=True,
            seeds=[1000 * seed + i for i in range(members)],
            description="generated demonstration weights: never trained, no clinical meaning",
        )
        return cls(networks, card, device=device)

    def save(self, path: Path | str) -> Path:
        """Write this ensemble to one safetensors file with its model card."""
        return save_ensemble_file(Path(path), self.members, self.card)

    def preprocess(
        self, volume: Volume, lung_mask: np.ndarray, lesion_map: np.ndarray | None = None
    ) -> PreprocessedInput:
        """The members' input for one series (T§3.3.4), with the record of what was done."""
        return preprocess(volume, lung_mask, lesion_map, self.preprocessing)

    def member_probabilities(self, inputs: Tensor) -> Tensor:
        """Sigmoid outputs ``(N, members)`` (float32, CPU) of inputs ``(N, 3, D, H, W)``.

        Raises
        ------
        ValueError
            If the inputs do not have the shape the members were trained on.
        """
        expected = self.preprocessing.input_shape
        if inputs.ndim != 5 or tuple(inputs.shape[1:]) != expected:
            raise ValueError(f"expected inputs (N, {', '.join(map(str, expected))}), got {tuple(inputs.shape)}")
        outputs = []
        with inference_context(self.device, bf16=True):
            for batch in torch.split(inputs, self.batch_size):
                x = to_device(batch.float(), self.device).contiguous(memory_format=self.memory_format)
                logits = torch.cat([member(x).float().reshape(-1, 1) for member in self.members], dim=1)
                outputs.append(torch.sigmoid(logits).cpu())
        return torch.cat(outputs)

    def predict_inputs(self, inputs: Tensor) -> list[CoradsResult]:
        """One result per preprocessed input of a batch ``(N, 3, D, H, W)``."""
        return [combine_members(row.tolist()) for row in self.member_probabilities(inputs)]

    def predict(self, volume: Volume, lung_mask: np.ndarray, lesion_map: np.ndarray | None = None) -> CoradsResult:
        """CO-RADS of one series: preprocess, run every member, average, categorise.

        Parameters
        ----------
        volume : Volume
            The CT in HU.
        lung_mask : numpy.ndarray
            Boolean lung mask on the volume's grid.
        lesion_map : numpy.ndarray, optional
            Lesion map on the volume's grid (channel 2); the CT is repeated without it.

        Returns
        -------
        CoradsResult
            ``category`` 1-5, ``score`` the mean member probability, ``members`` each member's.
        """
        prepared = self.preprocess(volume, lung_mask, lesion_map)
        return self.predict_inputs(prepared.tensor.unsqueeze(0))[0]
